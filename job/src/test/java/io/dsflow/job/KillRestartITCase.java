package io.dsflow.job;

import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.sample.SamplingParams;
import io.dsflow.operators.OutputRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Issue 22, acceptance 3: {@code dsflow run --config FILE} (local mode, a child JVM) is killed with SIGKILL while
 * tokens are being generated and then started again with the same command. Every request must end with exactly one
 * final record, its tokens equal to a failure-free run ({@code generate} on the same history, which the job's output
 * equals without failures: KafkaPipelineITCase), second turns must continue their conversation's history; with
 * exactly-once nothing is duplicated, with at-least-once a duplicate is identical to the record it repeats, by
 * (request_id, index). Before durable checkpoints the restarted job found no checkpoint, started at the committed
 * offsets, and the requests in flight at the kill never got a final record.
 */
class KillRestartITCase {
    static EmbeddedKafka kafka;
    /** The tokens each request must produce, computed once for both delivery modes. */
    static final Map<String, int[]> EXPECTED = new HashMap<>();
    static final Conversations WORKLOAD = workload();

    @TempDir
    Path tmp;

    @BeforeAll
    static void start() throws Exception {
        kafka = EmbeddedKafka.start();
    }

    @AfterAll
    static void stop() {
        if (kafka != null) kafka.close();
    }

    /**
     * 10 conversations of 150-token completions (greedy and seeded), two with a second turn queued behind: long enough
     * that checkpoints (every 300 ms) land while tokens are generated, on a slow machine and a fast one.
     */
    static Conversations workload() {
        Conversations c = new Conversations();
        Random rnd = new Random(22);
        for (int t = 0; t < 2; t++) {
            for (int i = 0; i < 10; i++) {
                if (t == 1 && i % 5 != 0) continue;
                int[] p = new int[3 + rnd.nextInt(t == 0 ? 30 : 6)];
                for (int j = 0; j < p.length; j++) p[j] = 3 + rnd.nextInt(509);
                if (t == 0) p[0] = 0;
                SamplingParams sp = i % 2 == 0 ? SamplingParams.greedy(150)
                        : new SamplingParams(0.9, 0.95, 40, 700 + i * 10L + t, 150, List.of());
                c.requests.add(new Conversations.Req("conv-" + i, "req-" + i + "-" + t, t, p, sp));
            }
        }
        return c;
    }

    @Test
    void exactlyOnceKilledMidGenerationAndRestartedEqualsAFailureFreeRun() throws Exception {
        List<OutputRecord> out = killAndRestart("kill-eo", true);
        for (OutputRecord r : out) {
            long same = out.stream().filter(o -> Objects.equals(o.requestId, r.requestId) && o.kind.equals(r.kind)
                    && (!r.kind.equals(OutputRecord.CHUNK) || o.index == r.index)).count();
            assertEquals(1, same, "exactly once: " + r.requestId + " " + r.kind + " " + r.index + " appears once");
        }
        check(out);
    }

    @Test
    void atLeastOnceKilledMidGenerationAndRestartedRepeatsOnlyIdenticalRecords() throws Exception {
        List<OutputRecord> out = killAndRestart("kill-alo", false);
        // a duplicate (the tokens since the last checkpoint, sent again) is identical by (request_id, index); a final
        // sent again carries its usage and finish reason again (its timings are measured anew)
        Map<String, OutputRecord> first = new LinkedHashMap<>();
        for (OutputRecord r : out) {
            String key = r.requestId + "/" + r.kind + "/" + (r.kind.equals(OutputRecord.CHUNK) ? r.index : 0);
            OutputRecord seen = first.putIfAbsent(key, r);
            if (seen != null) {
                assertEquals(seen.tokenId, r.tokenId, key + ": a duplicate repeats the token");
                assertEquals(seen.text, r.text, key + ": a duplicate repeats the text");
                assertEquals(seen.finishReason, r.finishReason, key + ": a duplicate final repeats the finish reason");
                assertEquals(seen.completionTokens, r.completionTokens, key + ": a duplicate final repeats the usage");
            }
        }
        check(new ArrayList<>(first.values()));
    }

    /**
     * Sends the workload, starts {@code run --config}, kills it with SIGKILL once a checkpoint completed while tokens
     * flowed and before every request finished, starts it again and reads until every request has a final record (a
     * second more for anything sent twice). Returns the records a consumer of the mode sees.
     */
    private List<OutputRecord> killAndRestart(String prefix, boolean exactlyOnce) throws Exception {
        JobConfig config = KafkaTestJob.config(kafka, prefix, exactlyOnce, 300);
        Path state = tmp.resolve("state");
        Path file = tmp.resolve(prefix + ".properties");
        Files.writeString(file, String.join("\n",
                "kafka.bootstrap.servers=" + kafka.bootstrapServers(),
                "kafka.group.id=" + config.groupId(),
                "topic.prompts=" + config.promptsTopic(),
                "topic.completions=" + config.completionsTopic(),
                "topic.errors=" + config.errorsTopic(),
                "delivery=" + (exactlyOnce ? "exactly_once" : "at_least_once"),
                "checkpoint.interval.ms=300",
                "model.dir=" + Conversations.MODEL.toAbsolutePath().normalize(),
                "backend=cpu",
                "state.dir=" + state) + "\n");
        KafkaTestJob.send(kafka, config, WORKLOAD.requests);
        int requests = WORKLOAD.requests.size();

        Process first = startRun(file, tmp.resolve(prefix + "-1.log"));
        int finalsAtKill;
        try (KafkaConsumer<String, String> live = consumer(config, "live", false)) {
            // a read_uncommitted consumer sees tokens as they are produced, in open transactions too
            List<OutputRecord> seen = new ArrayList<>();
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(90);
            long checkpointAtFirstTokens = -2, firstTokensAt = 0;
            while (true) {
                assertTrue(System.nanoTime() < deadline, "no checkpoint mid-generation within 90 s; log:\n"
                        + Files.readString(tmp.resolve(prefix + "-1.log")));
                assertTrue(first.isAlive(), "run exited early; log:\n" + Files.readString(tmp.resolve(prefix + "-1.log")));
                KafkaTestJob.readFinals(live, seen, Long.MAX_VALUE, Duration.ofMillis(100));
                long chunks = seen.stream().filter(r -> OutputRecord.CHUNK.equals(r.kind)).count();
                if (chunks > 0 && checkpointAtFirstTokens == -2) {
                    checkpointAtFirstTokens = newestCheckpoint(state);
                    firstTokensAt = System.nanoTime();
                }
                // a checkpoint completed after tokens flowed: it holds requests in flight. (A build that writes no
                // checkpoint to the state dir at all is killed 2 s into generation all the same, to show what it loses.)
                long newest = newestCheckpoint(state);
                if (chunks >= 30 && (newest > checkpointAtFirstTokens
                        || newest < 0 && System.nanoTime() - firstTokensAt > TimeUnit.SECONDS.toNanos(2))) break;
            }
            first.destroyForcibly().waitFor();   // SIGKILL: no cancellation, no final checkpoint
            finalsAtKill = (int) seen.stream().filter(r -> OutputRecord.FINAL.equals(r.kind)).count();
        } finally {
            first.destroyForcibly().waitFor();   // whatever failed above, the child does not outlive the test
        }
        assertTrue(finalsAtKill < requests, "killed mid-generation: " + finalsAtKill + " of " + requests
                + " finished; log:\n" + Files.readString(tmp.resolve(prefix + "-1.log")));

        Path log2 = tmp.resolve(prefix + "-2.log");
        Process second = startRun(file, log2);
        List<OutputRecord> out = new ArrayList<>();
        try (KafkaConsumer<String, String> consumer = consumer(config, "all", exactlyOnce)) {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
            while (distinctFinals(out) < requests && System.nanoTime() < deadline && second.isAlive()) {
                KafkaTestJob.readFinals(consumer, out, Long.MAX_VALUE, Duration.ofMillis(200));
            }
            // anything sent or committed after the last final would be a duplicate: read on over a few checkpoints
            KafkaTestJob.readFinals(consumer, out, Long.MAX_VALUE, Duration.ofSeconds(1));
        } finally {
            second.destroyForcibly().waitFor();
        }
        String log = Files.readString(log2);
        assertEquals(requests, distinctFinals(out), "every request has a final record after the restart; log:\n" + log);
        assertTrue(log.contains("restoring from checkpoint " + state.toAbsolutePath()), "restored from the state dir:\n" + log);
        Matcher resumed = Pattern.compile("(\\d+) with a request in progress").matcher(log);
        assertTrue(resumed.find() && Integer.parseInt(resumed.group(1)) > 0,
                "the checkpoint restored held requests in progress:\n" + log);
        assertEquals(0, out.stream().filter(OutputRecord::isError).count(), "no errors");
        // a checkpoint every 300 ms: Flink's committer metric collision would be logged at each (issue 22, item 10)
        for (Path l : new Path[]{tmp.resolve(prefix + "-1.log"), log2}) {
            assertEquals(List.of(), Files.readAllLines(l).stream().filter(x -> x.contains("Name collision")).toList(), l.toString());
        }
        return out;
    }

    /** A consumer of the completions and errors topics from their beginning, in a group of its own, committing nothing. */
    private static KafkaConsumer<String, String> consumer(JobConfig c, String name, boolean readCommitted) {
        Map<String, Object> props = new HashMap<>(Map.of("bootstrap.servers", kafka.bootstrapServers(),
                "group.id", c.groupId() + "-" + name, "auto.offset.reset", "earliest", "enable.auto.commit", "false"));
        if (readCommitted) props.put("isolation.level", "read_committed");
        KafkaConsumer<String, String> consumer = new KafkaConsumer<>(props, new StringDeserializer(), new StringDeserializer());
        consumer.subscribe(List.of(c.completionsTopic(), c.errorsTopic()));
        return consumer;
    }

    /**
     * Starts {@code dsflow run --config FILE} in a child JVM on the test classpath with the shipped log configuration,
     * its output into {@code log}.
     */
    private static Process startRun(Path config, Path log) throws IOException {
        // the log configuration the command line ships (dsflow's lines at INFO), not the tests' one
        Path logConfig = Path.of("target", "classes", "log4j2.properties").toAbsolutePath();
        ProcessBuilder pb = new ProcessBuilder(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "-Xmx1g", "-XX:+UseParallelGC", "-Dai.djl.offline=true", "-Dlog4j2.configurationFile=" + logConfig,
                "-cp", System.getProperty("java.class.path"),
                "io.dsflow.job.cli.Main", "run", "--config", config.toString());
        pb.environment().put("RUST_FLAVOR", "cpu");
        pb.redirectErrorStream(true).redirectOutput(log.toFile());
        return pb.start();
    }

    /**
     * The number of the newest completed checkpoint (a chk-N folder with its _metadata) under the state folder, -1 if
     * none. (Not a count: with one retained, each completed checkpoint deletes the one before.)
     */
    private static long newestCheckpoint(Path state) throws IOException {
        if (!Files.isDirectory(state)) return -1;
        try (Stream<Path> files = Files.walk(state, 5)) {
            return files.filter(p -> p.getFileName().toString().equals("_metadata"))
                    .map(p -> p.getParent().getFileName().toString())
                    .filter(n -> n.matches("chk-\\d+")).mapToLong(n -> Long.parseLong(n.substring(4))).max().orElse(-1);
        } catch (java.io.UncheckedIOException e) {
            return -1; // a checkpoint subsumed while we walked: look again at the next poll
        }
    }

    private static long distinctFinals(List<OutputRecord> out) {
        return out.stream().filter(r -> OutputRecord.FINAL.equals(r.kind)).map(r -> r.requestId).distinct().count();
    }

    /**
     * Per request: chunks 0..n-1 in order, then one final counting them, the tokens those of a failure-free run
     * ({@code generate} on the conversation's history and the prompt).
     */
    private static void check(List<OutputRecord> out) {
        Map<String, int[]> history = new HashMap<>();
        for (Conversations.Req q : WORKLOAD.requests) {
            List<OutputRecord> recs = out.stream().filter(r -> q.requestId().equals(r.requestId)).toList();
            assertTrue(recs.size() > 1, q.requestId() + " has chunks and a final");
            assertEquals(OutputRecord.FINAL, recs.get(recs.size() - 1).kind, q.requestId() + " ends with its final");
            int[] got = new int[recs.size() - 1];
            for (int i = 0; i < got.length; i++) {
                assertEquals(OutputRecord.CHUNK, recs.get(i).kind, q.requestId() + " one final, after the chunks");
                assertEquals(i, recs.get(i).index, q.requestId() + " chunks 0..n-1 in order");
                got[i] = recs.get(i).tokenId;
            }
            assertEquals(got.length, recs.get(recs.size() - 1).completionTokens, q.requestId() + " usage");
            int[] input = Conversations.concat(history.getOrDefault(q.conversationId(), new int[0]), q.prompt());
            int[] expected;
            synchronized (EXPECTED) {
                expected = EXPECTED.computeIfAbsent(q.requestId(),
                        k -> Conversations.reference().generate(input, q.params(), KvConfig.DENSE).tokenIds());
            }
            assertArrayEquals(expected, got, q.requestId() + " equals a failure-free run (generate on its history)");
            history.put(q.conversationId(), Conversations.concat(input, got));
        }
    }
}
