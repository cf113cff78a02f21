package io.dsflow.job;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.dsflow.operators.DecodeOperator;
import org.apache.flink.configuration.MemorySize;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;

import java.io.PrintStream;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.Random;

/**
 * A soak of the whole product in one process (embedded Kafka, local Flink job): N conversations kept busy turn after
 * turn for a while, measured at the Kafka client. A conversation lasts a number of turns drawn uniformly from 1 to
 * {@code 2 turns - 1} (mean {@code turns}) and a new one takes its place when it ends (real conversations end, so the
 * load is stationary: with unbounded conversations every context grows for the whole run and each step costs more,
 * whatever admission does); 0 keeps them going. The lengths differ because real ones do: conversations that all last
 * the same number of turns start together and end together, again and again, and the load runs in waves of new
 * conversations' prompts (+-15-20% a minute on the CPU, a period of about two minutes) that no server smooths. Reports requests served and TTFT
 * p99 per interval (30 s, or a minute for runs of 5 minutes or more), overall throughput and latency percentiles, the
 * drain, heap use (the live heap: used after a full collection at the end of each interval, not the heap
 * allocated), and checks that nothing is lost
 * (every request gets one final, its chunks in index order, no duplicate), that the heap the run keeps is what the KV
 * caches' budget allows (a leak grows past it) and that throughput holds (the last full interval serves at least 80%
 * of the best).
 */
public final class Soak {
    private static final ObjectMapper JSON = new ObjectMapper();
    /** Managed memory of the embedded job: the decode operator's budget for the KV caches (on the CPU, heap arrays). */
    public static final String CACHE_BUDGET = "256m";

    /**
     * Heap use: the most seen in use, and what is live after a full GC once the job serves (at the first final: the job
     * deployed, its model loaded, the first batch's caches allocated) and after the run (every request served, the
     * conversations' caches still held).
     */
    public record Heap(long peakBytes, long liveAtStartBytes, long liveAtEndBytes, long cacheBudgetBytes) {
        /** Room for what grows under load apart from the caches: Kafka's and Flink's buffers, the keyed state. */
        static final long BUFFERS_ALLOWANCE = 96L << 20;

        /** Heap the run kept: the conversations' KV caches and state, and whatever leaked. */
        public long growthBytes() {
            return liveAtEndBytes - liveAtStartBytes;
        }

        /**
         * What a run may keep: the decode operator admits caches only within its budget, and a CPU cache allocates
         * exactly what is reserved for it (Engine.estimateCacheBytes), so the budget; and the buffers. A leak grows
         * past it.
         */
        public long allowanceBytes() {
            return cacheBudgetBytes + BUFFERS_ALLOWANCE;
        }

        public boolean withinAllowance() {
            return growthBytes() <= allowanceBytes();
        }
    }

    /**
     * An interval of the run while requests were sent: requests served (finals received) and their TTFT p99, the live
     * heap at its end (heap used after a full collection), and what the decode operator did for memory in it: caches
     * evicted, and conversations whose history was prefilled again (their cache had been evicted).
     */
    public record Interval(double endSeconds, double seconds, long served, double ttftP99Ms, long liveHeapBytes,
                           long evictions, long historyPrefills) {
    }

    /** What the soak saw. */
    public record Report(long requests, long finals, long tokens, long lost, long outOfOrder, long errors,
                         double seconds, double drainSeconds, double[] ttftMs, double[] itlMs, List<Interval> intervals,
                         long maxLiveHeapBytes, Heap heap) {
        public static double percentile(double[] sorted, double p) {
            return sorted.length == 0 ? 0 : sorted[Math.min(sorted.length - 1, (int) Math.floor(p * sorted.length))];
        }

        /** The last full interval's requests served over the best full interval's (1 with fewer than two). */
        public double lastOverBest() {
            double longest = intervals.stream().mapToDouble(Interval::seconds).max().orElse(0);
            List<Interval> full = intervals.stream().filter(i -> i.seconds() >= longest - 1e-9).toList();
            if (full.size() < 2) return 1;
            long best = full.stream().mapToLong(Interval::served).max().orElse(0);
            return best == 0 ? 0 : full.get(full.size() - 1).served() / (double) best;
        }

        /** Whether throughput held: the last full interval served at least 80% of the best one. */
        public boolean throughputHeld() {
            return lastOverBest() >= 0.8;
        }

        public String summary() {
            StringBuilder served = new StringBuilder(), p99 = new StringBuilder(), live = new StringBuilder();
            StringBuilder memory = new StringBuilder();
            for (Interval i : intervals) {
                served.append(served.length() == 0 ? "" : ", ").append(i.served());
                memory.append(memory.length() == 0 ? "" : ", ").append(i.evictions()).append('/')
                        .append(i.historyPrefills());
                p99.append(p99.length() == 0 ? "" : ", ").append(String.format(Locale.ROOT, "%.1f", i.ttftP99Ms / 1e3));
                live.append(live.length() == 0 ? "" : ", ").append(Math.round(i.liveHeapBytes / 1e6));
            }
            return String.format(Locale.ROOT, "soak: %.0f s (drain %.0f s), %d requests sent, %d finals, %d lost, %d out"
                            + " of order or duplicated, %d errors; %.1f tokens/s, %.2f requests/s; served per interval:"
                            + " %s (the last full one %.0f%% of the best); caches evicted / histories prefilled again per"
                            + " interval: %s; TTFT p99 per interval (s): %s; TTFT p50 %.0f ms"
                            + " p99 %.0f ms; ITL p50 %.1f ms p99 %.1f ms; live heap per interval (MB): %s, at most %.0f MB;"
                            + " live heap after a full GC %.0f MB -> %.0f MB (growth allowed: %.0f MB); max heap used"
                            + " %.0f MB", seconds, drainSeconds, requests, finals, lost, outOfOrder, errors,
                    tokens / seconds, finals / seconds, served, 100 * lastOverBest(), memory, p99, percentile(ttftMs, 0.5),
                    percentile(ttftMs, 0.99), percentile(itlMs, 0.5), percentile(itlMs, 0.99), live,
                    maxLiveHeapBytes / 1e6, heap.liveAtStartBytes / 1e6, heap.liveAtEndBytes / 1e6,
                    heap.allowanceBytes() / 1e6, heap.peakBytes / 1e6);
        }
    }

    private static final class InFlight {
        final long sent = System.nanoTime();
        long last;
        int next;
        final List<Double> gaps = new ArrayList<>();
        double ttft = -1;
    }

    private Soak() {
    }

    /** A soak whose conversations end after 16 turns (see the class comment). */
    public static Report run(String modelDir, String backend, int conversations, Duration length, int maxTokens,
                             long seed, PrintStream progress) throws Exception {
        return run(modelDir, backend, conversations, 16, length, maxTokens, seed, progress);
    }

    public static Report run(String modelDir, String backend, int conversations, int turns, Duration length,
                             int maxTokens, long seed, PrintStream progress) throws Exception {
        return run(modelDir, backend, conversations, turns, length, maxTokens, seed, CACHE_BUDGET, progress);
    }

    /**
     * @param turns       turns a conversation lasts before a new one takes its place; 0: conversations never end
     * @param cacheBudget the job's managed memory, the KV caches' budget ("256m")
     */
    public static Report run(String modelDir, String backend, int conversations, int turns, Duration length,
                             int maxTokens, long seed, String cacheBudget, PrintStream progress) throws Exception {
        Properties p = new Properties();
        p.setProperty("model.dir", modelDir);
        p.setProperty("backend", backend);
        p.setProperty("limits.max-running", "64");
        Random rnd = new Random(seed);
        Map<String, InFlight> inflight = new HashMap<>();
        Map<String, Integer> turnOf = new HashMap<>(), lifetimeOf = new HashMap<>();
        List<Double> ttft = new ArrayList<>(), itl = new ArrayList<>(), intervalTtft = new ArrayList<>();
        List<Interval> intervals = new ArrayList<>();
        long requests = 0, finals = 0, tokens = 0, outOfOrder = 0, errors = 0, maxHeap = 0, maxLive = 0;
        long liveAtStart = -1, liveAtEnd, intervalServed = 0, nextConversation = conversations;
        long intervalNanos = length.compareTo(Duration.ofMinutes(5)) >= 0 ? 60_000_000_000L : 30_000_000_000L;
        long start = System.nanoTime(), end = start + length.toNanos(), nextInterval = start + intervalNanos;
        double drainSeconds = 0;
        try (EmbeddedJob job = EmbeddedJob.start(p, cacheBudget);
             KafkaProducer<String, String> producer = job.producer();
             KafkaConsumer<String, String> consumer = job.consumer("soak")) {
            String topic = job.config().promptsTopic();
            for (int c = 0; c < conversations; c++) {
                send(producer, topic, "soak-" + c, 0, maxTokens, rnd, inflight);
                turnOf.put("soak-" + c, 0);
                lifetimeOf.put("soak-" + c, lifetime(turns, rnd));
                requests++;
            }
            long[] memoryAtInterval = memoryCounts(job);
            long drainUntil = Long.MAX_VALUE;
            while (!inflight.isEmpty() && System.nanoTime() < drainUntil) {
                if (System.nanoTime() >= end && drainUntil == Long.MAX_VALUE) drainUntil = System.nanoTime() + 120_000_000_000L;
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(50))) {
                    JsonNode n = JSON.readTree(r.value());
                    String id = n.path("request_id").asText();
                    InFlight f = inflight.get(id);
                    long now = System.nanoTime();
                    switch (n.path("type").asText()) {
                        case "chunk" -> {
                            if (f == null || n.get("index").asInt() != f.next) {
                                outOfOrder++;
                                continue;
                            }
                            f.next++;
                            tokens++;
                            if (f.ttft < 0) f.ttft = (now - f.sent) / 1e6;
                            else f.gaps.add((now - f.last) / 1e6);
                            f.last = now;
                        }
                        case "final" -> {
                            if (f == null) {
                                outOfOrder++;
                                continue;
                            }
                            inflight.remove(id);
                            finals++;
                            if (now < end) intervalServed++;
                            if (liveAtStart < 0) liveAtStart = liveHeap();
                            if (f.ttft >= 0) {
                                ttft.add(f.ttft);
                                if (now < end) intervalTtft.add(f.ttft);
                            }
                            itl.addAll(f.gaps);
                            String conv = n.path("conversation_id").asText();
                            if (now < end) { // the conversation goes on with another turn, or a new one starts
                                int turn = turnOf.merge(conv, 1, Integer::sum);
                                if (turns > 0 && turn >= lifetimeOf.get(conv)) {
                                    turnOf.remove(conv);
                                    lifetimeOf.remove(conv);
                                    conv = "soak-" + nextConversation++;
                                    turn = 0;
                                    turnOf.put(conv, 0);
                                    lifetimeOf.put(conv, lifetime(turns, rnd));
                                }
                                send(producer, topic, conv, turn, maxTokens, rnd, inflight);
                                requests++;
                            }
                        }
                        default -> errors++;
                    }
                }
                Runtime rt = Runtime.getRuntime();
                maxHeap = Math.max(maxHeap, rt.totalMemory() - rt.freeMemory());
                long now = System.nanoTime();
                if (now >= nextInterval && nextInterval <= end) {
                    long live = liveHeap();
                    maxLive = Math.max(maxLive, live);
                    double[] t = intervalTtft.stream().mapToDouble(Double::doubleValue).sorted().toArray();
                    long[] memory = memoryCounts(job);
                    Interval i = new Interval((nextInterval - start) / 1e9, intervalNanos / 1e9, intervalServed,
                            Report.percentile(t, 0.99), live, memory[0] - memoryAtInterval[0],
                            memory[1] - memoryAtInterval[1]);
                    memoryAtInterval = memory;
                    intervals.add(i);
                    progress.printf(Locale.ROOT, "soak: %.0f s, %d served in the last %d s (TTFT p99 %.1f s; %d"
                                    + " caches evicted, %d histories prefilled again), %d tokens in all, %d in flight,"
                                    + " live heap %.0f MB, heap used %.0f MB%n",
                            i.endSeconds(), i.served(), intervalNanos / 1_000_000_000L, i.ttftP99Ms() / 1e3,
                            i.evictions(), i.historyPrefills(), tokens, inflight.size(), live / 1e6,
                            (rt.totalMemory() - rt.freeMemory()) / 1e6);
                    intervalServed = 0;
                    intervalTtft.clear();
                    nextInterval += intervalNanos;
                }
            }
            drainSeconds = Math.max(0, (System.nanoTime() - end) / 1e9);
            liveAtEnd = liveHeap();
            maxLive = Math.max(maxLive, liveAtEnd);
            if (intervalServed > 0) {   // the part of an interval before the end
                double[] t = intervalTtft.stream().mapToDouble(Double::doubleValue).sorted().toArray();
                double from = (nextInterval - intervalNanos - start) / 1e9, to = (end - start) / 1e9;
                long[] memory = memoryCounts(job);
                intervals.add(new Interval(to, to - from, intervalServed, Report.percentile(t, 0.99), liveAtEnd,
                        memory[0] - memoryAtInterval[0], memory[1] - memoryAtInterval[1]));
            }
        }
        double[] t = ttft.stream().mapToDouble(Double::doubleValue).sorted().toArray();
        double[] g = itl.stream().mapToDouble(Double::doubleValue).sorted().toArray();
        return new Report(requests, finals, tokens, inflight.size(), outOfOrder, errors,
                (System.nanoTime() - start) / 1e9, drainSeconds, t, g, intervals, maxLive,
                new Heap(maxHeap, liveAtStart, liveAtEnd, MemorySize.parse(cacheBudget).getBytes()));
    }

    /** A conversation's length in turns: uniform in [1, 2 turns - 1], mean {@code turns}; 0 for endless ones. */
    private static int lifetime(int turns, Random rnd) {
        return turns == 0 ? 0 : 1 + rnd.nextInt(2 * turns - 1);
    }

    /** The decode operator's caches evicted and histories prefilled again so far (its accumulators). */
    private static long[] memoryCounts(EmbeddedJob job) {
        Map<String, Object> a = job.accumulators();
        return new long[]{EmbeddedJob.count(a, DecodeOperator.CACHE_EVICTIONS),
                EmbeddedJob.count(a, DecodeOperator.HISTORY_PREFILLS)};
    }

    /** Heap in use after a full collection: what is reachable. */
    static long liveHeap() {
        System.gc();
        Runtime rt = Runtime.getRuntime();
        return rt.totalMemory() - rt.freeMemory();
    }

    private static void send(KafkaProducer<String, String> producer, String topic, String conv, int turn, int maxTokens,
                             Random rnd, Map<String, InFlight> inflight) {
        ObjectNode r = JSON.createObjectNode();
        String id = conv + "-t" + turn;
        r.put("conversation_id", conv);
        r.put("request_id", id);
        ArrayNode ids = r.putArray("prompt_ids");
        int len = turn == 0 ? 20 + rnd.nextInt(200) : 3 + rnd.nextInt(12);
        for (int i = 0; i < len; i++) ids.add(i == 0 && turn == 0 ? 0 : 3 + rnd.nextInt(509));
        r.put("max_tokens", maxTokens);
        r.put("temperature", turn % 2 == 0 ? 0 : 0.8);
        r.put("seed", rnd.nextInt(1000));
        inflight.put(id, new InFlight());
        producer.send(new ProducerRecord<>(topic, conv, r.toString()));
    }
}
