package io.dsflow.job;

import io.dsflow.job.cli.Main;
import io.dsflow.operators.OutputRecord;
import org.apache.flink.runtime.testutils.MiniClusterResourceConfiguration;
import org.apache.flink.test.junit5.MiniClusterExtension;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;

/** Acceptance 5 of the streaming job: run --replay-file over valid and malformed requests. */
class ReplayFileITCase {
    @RegisterExtension
    static final MiniClusterExtension CLUSTER = new MiniClusterExtension(new MiniClusterResourceConfiguration.Builder()
            .setNumberTaskManagers(1).setNumberSlotsPerTaskManager(1)
            .setConfiguration(PipelineITCase.memory("64m")).build());

    @TempDir
    Path tmp;

    @Test
    void oneFinalPerValidRequestOneErrorPerBadOneExitZero() throws Exception {
        Conversations c = Conversations.random(8, 6);
        List<String> lines = new ArrayList<>(c.jsonLines());
        lines.add(2, "this is not json");
        lines.add(5, "{\"conversation_id\":\"z\",\"request_id\":\"no-prompt\"}");
        lines.add(7, "{\"conversation_id\":\"z\",\"request_id\":\"huge\",\"prompt_ids\":[0,1],\"max_tokens\":1e12}");
        lines.add("");
        Path in = Files.write(tmp.resolve("requests.jsonl"), lines);
        Path out = tmp.resolve("out.jsonl");
        ByteArrayOutputStream stdout = new ByteArrayOutputStream(), stderr = new ByteArrayOutputStream();
        int exit = Main.run(new String[]{"run", "--replay-file", in.toString(), "--output-file", out.toString(),
                "--model", Conversations.MODEL.toString(), "--backend", "cpu"}, new PrintStream(stdout), new PrintStream(stderr));
        assertEquals(0, exit, stderr.toString());
        List<OutputRecord> records = Files.readAllLines(out).stream().map(Conversations::parse).toList();
        assertEquals(3, records.stream().filter(OutputRecord::isError).count());
        // the bad records whose ids can be read (no-prompt, huge) get a final record with finish_reason error too
        List<OutputRecord> finals = records.stream().filter(r -> OutputRecord.FINAL.equals(r.kind)).toList();
        assertEquals(List.of("huge", "no-prompt"), finals.stream().filter(r -> "error".equals(r.finishReason))
                .map(r -> r.requestId).sorted().toList());
        assertEquals(c.requests.size() + 2, finals.size());
        assertEquals(c.requests.size() + 2, finals.stream().map(r -> r.requestId).distinct().count());
    }
}
