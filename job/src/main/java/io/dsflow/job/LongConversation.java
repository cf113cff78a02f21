package io.dsflow.job;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.dsflow.engine.Tokenizer;
import io.dsflow.engine.probe.ProbePrompts;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Locale;
import java.util.Optional;
import java.util.Properties;
import java.util.Random;

/**
 * One conversation that grows without end, through the whole product in one process (embedded Kafka, local Flink
 * job): turn after turn of about {@code turnTokens} tokens of the probe's filler text, each answered with a few
 * tokens, under a cache capacity ({@code kv.capacity}), so its text grows far past the cache and, given turns enough,
 * past the model's positions (KvStore: positions within the cache). The turn before the last plants a pass key, the
 * last asks for it. Every {@code every} turns it reports the text so far, the newest checkpoint's size on disk and the
 * live heap (used after a full collection): with a capacity both stay flat once the cache is full (the keyed state
 * keeps what a rebuild needs: the sinks and the last tokens).
 */
public final class LongConversation {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final String CONVERSATION = "long";
    private static final Duration TURN_PATIENCE = Duration.ofMinutes(10);
    /** Tokens each ordinary turn's answer takes. */
    static final int ANSWER_TOKENS = 8;

    /**
     * The state of the run after a turn: the text so far, the first checkpoint completed after the turn was served
     * (bytes on disk), the live heap and the turn's time.
     */
    public record Mark(int turn, long textTokens, long checkpointBytes, long liveHeapBytes, double turnSeconds) {
    }

    /**
     * What the run saw: turns sent and served (a final not in error), error records, the text's tokens (prompts and
     * answers), the marks, the pass key and what the last turn answered.
     */
    public record Report(int turns, int served, long errors, long textTokens, int capacity, List<Mark> marks,
                         String passKey, String answer, double seconds) {
        public boolean answered() {
            return answer.strip().startsWith(passKey);
        }

        /** The marks taken once the cache was full for good (the text past twice the capacity). */
        public List<Mark> afterTheCacheFilled() {
            return marks.stream().filter(m -> m.textTokens() > 2L * capacity).toList();
        }

        /**
         * Whether checkpoints and the live heap stayed flat once the cache was full: the last mark's within 10% (and
         * 2 KB) of the first one's checkpoint, and within 10% (and 32 MB) of its live heap. True with fewer than two
         * such marks.
         */
        public boolean flat() {
            List<Mark> full = afterTheCacheFilled();
            if (full.size() < 2) return true;
            Mark first = full.get(0), last = full.get(full.size() - 1);
            return last.checkpointBytes() <= first.checkpointBytes() * 1.1 + 2048
                    && last.liveHeapBytes() <= first.liveHeapBytes() * 1.1 + (32L << 20);
        }

        public String summary() {
            StringBuilder b = new StringBuilder(String.format(Locale.ROOT, "long conversation: %d turns sent,"
                    + " %d served, %d errors, %,d tokens of text over a cache of %d, in %.0f s; pass key %s, answered \"%s\" (%s);"
                    + " checkpoint and live heap %s once the cache was full%n", turns, served, errors, textTokens,
                    capacity, seconds, passKey, answer.strip(), answered() ? "right" : "WRONG", flat() ? "flat"
                            : "NOT flat"));
            b.append(String.format(Locale.ROOT, "%6s %14s %16s %15s %10s%n", "turn", "text tokens", "checkpoint KB",
                    "live heap MB", "turn s"));
            for (Mark m : marks) {
                b.append(String.format(Locale.ROOT, "%6d %,14d %16.1f %15.0f %10.2f%n", m.turn(), m.textTokens(),
                        m.checkpointBytes() / 1e3, m.liveHeapBytes() / 1e6, m.turnSeconds()));
            }
            return b.toString();
        }
    }

    private LongConversation() {
    }

    /**
     * @param policy     kv.policy of the job (dense, ds, dspp)
     * @param capacity   kv.capacity, the tokens the conversation's cache holds
     * @param turns      turns in all (at least 2: the last two carry the pass key and its question)
     * @param turnTokens tokens of text a turn sends (the model's tokenizer counts them)
     * @param every      a mark every this many turns (and after the last)
     */
    public static Report run(String modelDir, String backend, String policy, int capacity, int turns, int turnTokens,
                             int every, long seed, PrintStream progress) throws Exception {
        if (turns < 2) throw new IllegalArgumentException("a long conversation needs at least 2 turns");
        Properties p = new Properties();
        p.setProperty("model.dir", modelDir);
        p.setProperty("backend", backend);
        p.setProperty("kv.policy", policy);
        p.setProperty("kv.capacity", Integer.toString(capacity));
        Random rnd = new Random(seed);
        String key = String.format(Locale.ROOT, "%05d", rnd.nextInt(100000));
        List<Mark> marks = new ArrayList<>();
        long errors = 0, textTokens = 0;
        int served = 0;
        String answer = "";
        long start = System.nanoTime();
        try (Tokenizer tokenizer = new Tokenizer(Path.of(modelDir, "tokenizer.json"));
             EmbeddedJob job = EmbeddedJob.start(p, Soak.CACHE_BUDGET);
             KafkaProducer<String, String> producer = job.producer();
             KafkaConsumer<String, String> consumer = job.consumer("long-conversation")) {
            progress.printf(Locale.ROOT, "long conversation: %d turns of about %d tokens, %s with a capacity of %d;"
                    + " the pass key goes into turn %d%n", turns, turnTokens, policy, capacity, turns - 1);
            for (int turn = 1; turn <= turns; turn++) {
                boolean plant = turn == turns - 1, ask = turn == turns;
                String text = ask ? filler(rnd, tokenizer, Math.min(turnTokens, 200))
                        + " What is the pass key? The pass key is"
                        : plant ? withPassKey(rnd, tokenizer, turnTokens, key) : filler(rnd, tokenizer, turnTokens);
                long t0 = System.nanoTime();
                String id = "t" + turn;
                producer.send(new ProducerRecord<>(job.config().promptsTopic(), CONVERSATION,
                        request(id, text, ask ? 6 : ANSWER_TOKENS)));
                producer.flush();
                Turn result = await(consumer, id);
                errors += result.errors;
                if (result.fin != null) {
                    if (!"error".equals(result.fin.path("finish_reason").asText())) served++;
                    JsonNode usage = result.fin.path("usage");
                    textTokens += usage.path("prompt_tokens").asLong() + usage.path("completion_tokens").asLong();
                } else {
                    progress.printf(Locale.ROOT, "long conversation: turn %d not served within %s%n", turn,
                            TURN_PATIENCE);
                    break;
                }
                if (ask) answer = result.text.toString();
                double seconds = (System.nanoTime() - t0) / 1e9;
                if (turn % every == 0 || turn == turns) {
                    Mark m = new Mark(turn, textTokens, nextCheckpoint(job.checkpointFolder()).bytes(), Soak.liveHeap(),
                            seconds);
                    marks.add(m);
                    progress.printf(Locale.ROOT, "long conversation: turn %d/%d, %,d tokens of text, checkpoint %.1f"
                                    + " KB, live heap %.0f MB, the turn %.2f s%n", turn, turns, textTokens,
                            m.checkpointBytes() / 1e3, m.liveHeapBytes() / 1e6, seconds);
                }
            }
        }
        return new Report(turns, served, errors, textTokens, capacity, marks, key, answer,
                (System.nanoTime() - start) / 1e9);
    }

    /** One turn's final record (null if none came in time), its chunks' text and the error records seen. */
    private static final class Turn {
        JsonNode fin;
        final StringBuilder text = new StringBuilder();
        long errors;
    }

    private static Turn await(KafkaConsumer<String, String> consumer, String requestId) throws IOException {
        Turn t = new Turn();
        long deadline = System.nanoTime() + TURN_PATIENCE.toNanos();
        while (t.fin == null && System.nanoTime() < deadline) {
            for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(50))) {
                JsonNode n = JSON.readTree(r.value());
                switch (n.path("type").asText()) {
                    case "chunk" -> {
                        if (requestId.equals(n.path("request_id").asText())) t.text.append(n.path("text").asText());
                    }
                    case "final" -> {
                        if (requestId.equals(n.path("request_id").asText())) t.fin = n;
                    }
                    default -> t.errors++;
                }
            }
        }
        return t;
    }

    private static String request(String id, String text, int maxTokens) {
        ObjectNode r = JSON.createObjectNode();
        r.put("conversation_id", CONVERSATION);
        r.put("request_id", id);
        r.put("prompt", text);
        r.put("max_tokens", maxTokens);
        r.put("temperature", 0);
        return r.toString();
    }

    /** Filler sentences of about {@code tokens} tokens (the tokenizer's count, sentence by sentence). */
    private static String filler(Random rnd, Tokenizer tokenizer, int tokens) {
        StringBuilder b = new StringBuilder();
        for (int n = 0; n < tokens; ) {
            String s = ProbePrompts.filler(rnd);
            n += tokenizer.encode(s, false).length;
            b.append(s);
        }
        return b.toString();
    }

    /** Filler of about {@code tokens} tokens with the pass key planted at a random depth in it. */
    private static String withPassKey(Random rnd, Tokenizer tokenizer, int tokens, String key) {
        String fact = " The pass key is " + key + ". Remember it. " + key + " is the pass key.";
        int rest = Math.max(0, tokens - tokenizer.encode(fact, false).length);
        int before = rnd.nextInt(rest + 1);
        return filler(rnd, tokenizer, before) + fact + filler(rnd, tokenizer, rest - before);
    }

    /** A completed checkpoint: its number and its bytes on disk (0 and 0 before the first). */
    record Checkpoint(long number, long bytes) {
    }

    /**
     * The first checkpoint completed after this call (the state as of now: the turn just served), waiting up to 30 s
     * for it; the newest one if none comes.
     */
    static Checkpoint nextCheckpoint(Path folder) throws IOException, InterruptedException {
        long before = newestCheckpoint(folder).number(), deadline = System.nanoTime() + 30_000_000_000L;
        Checkpoint c = newestCheckpoint(folder);
        while (c.number() <= before && System.nanoTime() < deadline) {
            Thread.sleep(100);
            c = newestCheckpoint(folder);
        }
        return c;
    }

    /**
     * The newest completed checkpoint (a chk-N folder with its _metadata): the files of its folder, read again from the
     * next one where the folder went while it was read (Flink keeps one: a newer one subsumes it).
     */
    static Checkpoint newestCheckpoint(Path folder) throws IOException {
        for (int attempt = 0; ; attempt++) {
            try (var paths = Files.walk(folder, 2)) {
                Optional<Path> newest = paths.filter(d -> d.getFileName().toString().startsWith("chk-")
                                && Files.exists(d.resolve("_metadata")))
                        .max(Comparator.comparingLong(LongConversation::checkpointNumber));
                if (newest.isEmpty()) return new Checkpoint(0, 0);
                long bytes = 0;
                try (var files = Files.walk(newest.get())) {
                    for (Path f : files.filter(Files::isRegularFile).toList()) bytes += Files.size(f);
                }
                if (Files.exists(newest.get())) return new Checkpoint(checkpointNumber(newest.get()), bytes);
            } catch (IOException | java.io.UncheckedIOException e) {
                if (attempt == 5) throw e instanceof IOException io ? io : new IOException(e);
            }
        }
    }

    private static long checkpointNumber(Path chk) {
        return Long.parseLong(chk.getFileName().toString().substring(4));
    }
}
