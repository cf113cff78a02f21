package io.dsflow.job.cli;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Issue 22, item 10, as a user meets it: {@code dsflow overhead} started from a folder other than the project's (a
 * child JVM, with the log configuration the command line ships) finds the bundled model by itself, prints a progress
 * line per measured request while it runs, and its log (the embedded Kafka broker and Flink cluster starting, the
 * job's checkpoints) holds no warning: a WARN in the embedded mode's log must mean something.
 */
class EmbeddedStartITCase {
    @TempDir
    Path elsewhere;

    @Test
    void overheadFromAnotherFolderFindsTheModelShowsProgressAndLogsNoWarning() throws Exception {
        Path logConfig = Path.of("target", "classes", "log4j2.properties").toAbsolutePath();
        Path out = elsewhere.resolve("out.txt"), err = elsewhere.resolve("err.txt");
        ProcessBuilder pb = new ProcessBuilder(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "-Xmx1g", "-XX:+UseParallelGC", "-Dai.djl.offline=true", "-Dlog4j2.configurationFile=" + logConfig,
                "-cp", System.getProperty("java.class.path"), "io.dsflow.job.cli.Main",
                "overhead", "--requests", "2", "--prompt-tokens", "16", "--max-tokens", "4", "--backend", "cpu");
        pb.directory(elsewhere.toFile()).redirectOutput(out.toFile()).redirectError(err.toFile());
        pb.environment().put("RUST_FLAVOR", "cpu");
        pb.environment().remove("DSFLOW_HOME");
        Process p = pb.start();
        if (!p.waitFor(150, TimeUnit.SECONDS)) {
            p.destroyForcibly().waitFor();
        }
        String stdout = Files.readString(out), stderr = Files.readString(err);
        assertEquals(0, p.exitValue(), "overhead from " + elsewhere + ":\n" + stdout + stderr);
        assertTrue(stdout.contains("mean: TTFT added by Kafka + Flink"), stdout);
        List<String> progress = stderr.lines().filter(l -> l.startsWith("overhead: ")).toList();
        assertTrue(progress.stream().anyMatch(l -> l.startsWith("overhead: generate 2/2")),
                "a progress line per generate request:\n" + stderr);
        assertTrue(progress.stream().anyMatch(l -> l.startsWith("overhead: job 2/2")), "a progress line per job request:\n" + stderr);
        List<String> warnings = stderr.lines().filter(l -> l.matches("^\\S+ WARN .*")).toList();
        assertEquals(List.of(), warnings, "no warnings in the embedded mode's log:\n" + stderr);
    }
}
