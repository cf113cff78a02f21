package io.dsflow.job;

import io.dsflow.operators.DecodeOperator;
import io.dsflow.operators.OutputRecord;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.MemorySize;
import org.apache.flink.configuration.TaskManagerOptions;
import org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer;
import org.apache.flink.core.execution.JobClient;
import org.apache.flink.runtime.testutils.MiniClusterResourceConfiguration;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.test.junit5.MiniClusterExtension;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * Acceptance 2 of the streaming job: the embedded broker and a MiniCluster, 50 conversations (some multi-turn,
 * sampling seeded) through the exactly-once Kafka sink, read back with read_committed.
 */
class KafkaPipelineITCase {
    @RegisterExtension
    static final MiniClusterExtension CLUSTER = new MiniClusterExtension(new MiniClusterResourceConfiguration.Builder()
            .setNumberTaskManagers(1).setNumberSlotsPerTaskManager(2).setConfiguration(memory()).build());

    static EmbeddedKafka kafka;

    static Configuration memory() {
        Configuration c = new Configuration();
        c.set(TaskManagerOptions.MANAGED_MEMORY_SIZE, MemorySize.parse("128m"));
        return c;
    }

    @BeforeAll
    static void start() throws Exception {
        kafka = EmbeddedKafka.start();
    }

    @AfterAll
    static void stop() {
        kafka.close();
    }

    @Test
    void fiftyConversationsThroughKafkaEqualGenerateWithNoHistoryReprefill() throws Exception {
        JobConfig config = KafkaTestJob.config(kafka, "it", true, 500);
        Conversations c = Conversations.random(50, 3);
        KafkaTestJob.send(kafka, config, c.requests);
        // a replay of the topic up to its end at start: the job finishes, and its accumulators can be read
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        env.setParallelism(2);
        env.enableCheckpointing(config.checkpointIntervalMs());
        KafkaIO.sinkTo(KafkaIO.pipeline(env, config, OffsetsInitializer.earliest(), OffsetsInitializer.latest()), config);
        JobClient job = env.executeAsync("kafka it");
        List<OutputRecord> out = new ArrayList<>();
        try (KafkaConsumer<String, String> consumer = KafkaTestJob.consumer(kafka, config, true)) {
            KafkaTestJob.readFinals(consumer, out, c.requests.size(), Duration.ofMinutes(4));
        }
        Map<String, Object> acc = job.getJobExecutionResult().get().getAllAccumulatorResults();
        assertEquals(0, out.stream().filter(OutputRecord::isError).count(), "no errors");
        c.check(out, Conversations.reference());
        assertEquals(0L, ((Number) acc.get(DecodeOperator.HISTORY_PREFILLS)).longValue(),
                "follow-up turns continue their caches: no history is prefilled again");
        long promptTokens = c.requests.stream().mapToLong(q -> q.prompt().length + (q.turn() > 0 ? 1 : 0)).sum();
        assertEquals(promptTokens, ((Number) acc.get(DecodeOperator.PREFILLED_TOKENS)).longValue(),
                "prefill fed each prompt once (plus the unfed last token of the previous turn)");
    }
}
