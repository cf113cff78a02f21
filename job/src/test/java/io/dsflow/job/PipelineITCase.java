package io.dsflow.job;

import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.kv.KvPolicy;
import io.dsflow.operators.DecodeSettings;
import io.dsflow.operators.Limits;
import io.dsflow.operators.OutputRecord;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.MemorySize;
import org.apache.flink.configuration.TaskManagerOptions;
import org.apache.flink.runtime.testutils.MiniClusterResourceConfiguration;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.test.junit5.MiniClusterExtension;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The pipeline on a MiniCluster with a bounded in-memory source: the decode operator's contract. */
class PipelineITCase {
    @RegisterExtension
    static final MiniClusterExtension CLUSTER = new MiniClusterExtension(new MiniClusterResourceConfiguration.Builder()
            .setNumberTaskManagers(1).setNumberSlotsPerTaskManager(2)
            .setConfiguration(memory("64m")).build());


    static Configuration memory(String managed) {
        Configuration c = new Configuration();
        c.set(TaskManagerOptions.MANAGED_MEMORY_SIZE, MemorySize.parse(managed));
        return c;
    }

    static DecodeSettings settings(int maxRunning) {
        return new DecodeSettings(Conversations.MODEL.toString(), "cpu", KvConfig.defaults(KvPolicy.DSPP),
                new Limits(1 << 20, 4096, 512, maxRunning, 100_000, 256), 32);
    }

    static List<OutputRecord> run(List<String> lines, DecodeSettings s, int parallelism) throws Exception {
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        env.setParallelism(parallelism);
        List<OutputRecord> out = new ArrayList<>();
        try (var it = Pipeline.build(env.fromData(lines), s).executeAndCollect()) {
            it.forEachRemaining(out::add);
        }
        return out;
    }

    @Test
    void conversationsAreServedAsGenerateServesThem() throws Exception {
        Conversations c = Conversations.random(12, 1);
        List<OutputRecord> out = run(c.jsonLines(), settings(8), 2);
        c.check(out, Conversations.reference());
    }

    @Test
    void concurrentConversationsInterleave() throws Exception {
        Conversations c = Conversations.random(6, 4);
        List<OutputRecord> out = run(c.jsonLines(), settings(8), 1);
        List<String> chunkOwners = out.stream().filter(r -> OutputRecord.CHUNK.equals(r.kind)).map(r -> r.requestId).toList();
        // some request's chunks are separated by another request's chunk: the conversations were batched together
        boolean interleaved = false;
        for (String id : chunkOwners.stream().distinct().toList()) {
            int first = chunkOwners.indexOf(id), last = chunkOwners.lastIndexOf(id);
            if (chunkOwners.subList(first, last).stream().anyMatch(o -> !o.equals(id))) interleaved = true;
        }
        assertTrue(interleaved, "tokens of concurrent conversations interleave: " + chunkOwners);
        c.check(out, Conversations.reference());
    }

    @Test
    void badRecordsGetOneErrorEachAndTheRestIsServed() throws Exception {
        Conversations c = Conversations.random(4, 2);
        List<String> lines = new ArrayList<>(c.jsonLines());
        lines.add(1, "{not json");
        lines.add(3, "{\"conversation_id\":\"x\",\"request_id\":\"bad-vocab\",\"prompt_ids\":[0,99999]}");
        lines.add("{\"conversation_id\":\"x\",\"request_id\":\"r\",\"prompt\":\"hi\",\"temperature\":-3}");
        lines.add("[1,2,3]");
        List<OutputRecord> out = run(lines, settings(8), 1);
        List<OutputRecord> errors = out.stream().filter(OutputRecord::isError).toList();
        assertEquals(4, errors.size(), errors.toString());
        assertTrue(errors.stream().anyMatch(e -> "bad-vocab".equals(e.requestId) && e.errorMessage.contains("vocabulary")));
        c.check(out.stream().filter(r -> !r.isError() && !"bad-vocab".equals(r.requestId)).toList(), Conversations.reference());
    }

    /** One subtask holding at most 4 conversations: the 5th and 6th get an error record per request, the 4 are served. */
    @Test
    void conversationsPastTheSubtaskLimitGetAnErrorRecordEachAndTheOthersAreServed() throws Exception {
        Conversations c = Conversations.random(6, 5);   // conv-0 and conv-3 have two turns
        DecodeSettings s = settings(8);
        Limits l = s.limits();
        DecodeSettings limited = new DecodeSettings(s.modelDir(), s.backend(), s.kv(), new Limits(l.maxRequestBytes(),
                l.maxPromptTokens(), l.maxTokens(), l.maxRunning(), 4, l.maxIdLength()), s.prefillChunk());
        List<OutputRecord> out = run(c.jsonLines(), limited, 1);
        List<OutputRecord> errors = out.stream().filter(OutputRecord::isError).toList();
        assertEquals(List.of("conv-4", "conv-5"), errors.stream().map(e -> e.conversationId).sorted().toList(), errors.toString());
        assertTrue(errors.stream().allMatch(e -> "conversation_limit".equals(e.errorCode)), errors.toString());
        Conversations served = new Conversations();
        served.requests.addAll(c.requests.stream().filter(r -> !r.conversationId().equals("conv-4")
                && !r.conversationId().equals("conv-5")).toList());
        served.check(out.stream().filter(r -> !r.isError()).toList(), Conversations.reference());
    }
}
