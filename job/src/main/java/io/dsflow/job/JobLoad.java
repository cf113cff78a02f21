package io.dsflow.job;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.dsflow.cli.KvOptions;
import io.dsflow.engine.BackendName;
import io.dsflow.engine.BatchScheduler;
import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.load.Latencies;
import io.dsflow.engine.load.Load;
import io.dsflow.engine.load.LoadReport;
import io.dsflow.engine.model.ModelConfig;
import io.dsflow.engine.cuda.CudaRuntime;
import io.dsflow.engine.model.SyntheticModels;
import io.dsflow.operators.DecodeOperator;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;

import java.io.PrintStream;
import java.nio.file.Path;
import java.time.Duration;
import java.util.BitSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.function.Consumer;

/**
 * A {@link Load} through the whole product (embedded Kafka, the dsflow job on a local Flink cluster), measured at the
 * Kafka client the way {@code loadgen} measures the engine alone, so the two reports side by side say what Kafka and
 * Flink cost: each request is one record on the prompts topic (its prompt as {@code prompt_ids}, seeded sampling at
 * temperature 1, {@code ignore_eos}, the same prompts and seeds as the engine's load generator), each token one chunk
 * record back.
 * <ul>
 *   <li>times are taken when a record reaches the client: under exactly-once, records are readable only once their
 *       checkpoint commits, so TTFT and ITL there include the checkpoint interval; throughput does not;</li>
 *   <li>delivery is checked per request: every index from 0 to its length exactly once, in order, and one final
 *       (at-least-once after a failure may repeat records: counted, not hidden);</li>
 *   <li>each conversation has one turn: an end_conversation record follows its request at once, so the operator ends
 *       it, and frees its cache, as the request ends, as the engine's load generator frees it;</li>
 *   <li>the engine's steps, decode rows and tokens a step come from the decode operator's accumulators.</li>
 * </ul>
 */
public final class JobLoad {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final long PROGRESS_NANOS = 10_000_000_000L;
    /** A run ends when no record arrives for this long with requests still open (what is missing is reported). */
    private static final long STALL_NANOS = 180_000_000_000L;

    private JobLoad() {
    }

    /**
     * What the run measured: the engine load generator's report, and the delivery checks.
     *
     * @param duplicates chunk records seen again (same request and index)
     * @param missing    chunk records never seen (indexes skipped, or requests without a final)
     * @param errors     records on the errors topic
     */
    public record Report(LoadReport load, boolean exactlyOnce, long duplicates, long missing, long errors) {
        public boolean deliveredExactlyOnce() {
            return duplicates == 0 && missing == 0 && errors == 0 && load.failed() == 0
                    && load.served() == load.load().requests();
        }

        public void print(PrintStream out) {
            out.printf(Locale.ROOT, "loadgen through the job (embedded Kafka, %s):%n",
                    exactlyOnce ? "exactly-once" : "at-least-once");
            load.print(out);
            out.printf(Locale.ROOT, "  delivery: %d finals for %d requests, %d duplicate and %d missing chunks, %d error"
                            + " records: %s%n", load.served() + load.failed(), load.load().requests(), duplicates,
                    missing, errors, deliveredExactlyOnce() ? "every request completed exactly once" : "NOT exact");
        }

        public ObjectNode toJson() {
            ObjectNode o = load.toJson();
            o.put("through", "job");
            o.put("delivery", exactlyOnce ? "exactly-once" : "at-least-once");
            o.put("duplicate_chunks", duplicates);
            o.put("missing_chunks", missing);
            o.put("error_records", errors);
            o.put("delivered_exactly_once", deliveredExactlyOnce());
            return o;
        }
    }

    /**
     * Runs the load through a fresh embedded job and closes it.
     *
     * @param kvPolicy      the job's kv policy as loadgen spells it ("dense", "dspp:gqa=mean:channels=qk-group")
     * @param maxRunning    limits.max-running, 0 for the job's auto
     * @param prefillTokens prefill.chunk, 0 for the job's auto
     */
    public static Report run(String model, String backend, Load load, String kvPolicy, int maxRunning,
                             int prefillTokens, boolean exactlyOnce, Consumer<String> progress) throws Exception {
        Properties p = new Properties();
        p.setProperty("model.dir", model);
        p.setProperty("backend", backend);
        p.putAll(kvProperties(kvPolicy));
        if (maxRunning > 0) p.setProperty("limits.max-running", Integer.toString(maxRunning));
        if (prefillTokens > 0) p.setProperty("prefill.chunk", Integer.toString(prefillTokens));
        int longest = load.prompt().max() + load.output().max();
        p.setProperty("limits.max-prompt-tokens", Integer.toString(Math.max(32768, load.prompt().max())));
        p.setProperty("limits.max-tokens", Integer.toString(Math.max(4096, load.output().max())));
        p.setProperty("limits.max-conversations", Integer.toString(Math.max(100_000, 2 * load.requests())));
        int vocab = vocab(model);
        List<Load.Request> requests = load.requests(vocab);
        try (EmbeddedJob job = EmbeddedJob.start(p, "512m", exactlyOnce);
             KafkaProducer<String, String> producer = job.producer();
             KafkaConsumer<String, String> consumer = job.consumer("loadgen", exactlyOnce)) {
            progress.accept("loadgen: the job is up; warming it up (JIT, CUDA graphs) with " + Math.min(256,
                    load.requests()) + " short requests, " + longest + " tokens at most a request");
            Load warm = new Load(Math.min(256, load.requests()), new Load.Lengths(32, 32), new Load.Lengths(8, 8), 0,
                    load.kv(), 99);
            new Client(job, producer, consumer, warm, warm.requests(vocab), "warm-").serve(s -> { });
            Map<String, Object> before = settledAccumulators(job);
            Client c = new Client(job, producer, consumer, load, requests, "load-");
            c.serve(progress);
            Map<String, Object> after = settledAccumulators(job);
            long steps = delta(before, after, DecodeOperator.ENGINE_STEPS);
            double rows = delta(before, after, DecodeOperator.ENGINE_DECODE_ROWS);
            double tokens = delta(before, after, DecodeOperator.ENGINE_STEP_TOKENS);
            boolean gpu = !BackendName.parse(backend).isCpu() && CudaRuntime.deviceCount() > 0;
            LoadReport r = new LoadReport(load,
                    prefillTokens > 0 ? prefillTokens : BatchScheduler.defaultPrefillTokens(gpu),
                    maxRunning > 0 ? maxRunning : BatchScheduler.defaultMaxRunning(gpu), c.served, c.failed,
                    c.seconds, requests.stream().mapToLong(q -> q.prompt().length).sum(), c.outputTokens,
                    c.latencies.ttftMs(), c.latencies.itlMs(), c.lastFirstTokenS, (int) steps,
                    steps == 0 ? 0 : rows / steps, steps == 0 ? 0 : tokens / steps, -1);
            return new Report(r, exactlyOnce, c.duplicates, c.missing(), c.errors);
        }
    }

    /** The kv configuration the job runs for a policy as loadgen spells it (what its config makes of it). */
    public static KvConfig kvConfig(String spec) {
        return JobConfig.from(kvProperties(spec)).decode().kv();
    }

    /** "dspp:gqa=mean:channels=qk-group" as the job's properties: kv.policy=dspp, kv.gqa=mean, kv.channels=qk-group. */
    static Properties kvProperties(String spec) {
        KvOptions.PolicySpec parsed = KvOptions.PolicySpec.parse(spec);
        Properties p = new Properties();
        p.setProperty("kv.policy", parsed.policy());
        parsed.options().forEach((key, value) -> p.setProperty("kv." + key, value));
        return p;
    }

    private static int vocab(String model) {
        return model.startsWith(SyntheticModels.PREFIX)
                ? SyntheticModels.get(model.substring(SyntheticModels.PREFIX.length())).vocabSize()
                : ModelConfig.load(Path.of(model, "config.json")).vocabSize();
    }

    /** The accumulators once the engine's last steps have reached them (they travel with the 1 s heartbeats). */
    private static Map<String, Object> settledAccumulators(EmbeddedJob job) throws InterruptedException {
        Thread.sleep(2500);
        return job.accumulators();
    }

    private static long delta(Map<String, Object> before, Map<String, Object> after, String name) {
        return EmbeddedJob.count(after, name) - EmbeddedJob.count(before, name);
    }

    /** Sends a load's requests at their times and follows their records to the last final. */
    private static final class Client {
        final EmbeddedJob job;
        final KafkaProducer<String, String> producer;
        final KafkaConsumer<String, String> consumer;
        final Load load;
        final List<Load.Request> requests;
        final String prefix;
        final Latencies latencies;
        final int[] next;
        final BitSet finished = new BitSet();
        int served, failed;
        long outputTokens, duplicates, errors, skipped;
        double seconds, lastFirstTokenS;

        Client(EmbeddedJob job, KafkaProducer<String, String> producer, KafkaConsumer<String, String> consumer,
               Load load, List<Load.Request> requests, String prefix) {
            this.job = job;
            this.producer = producer;
            this.consumer = consumer;
            this.load = load;
            this.requests = requests;
            this.prefix = prefix;
            int n = requests.size();
            latencies = new Latencies(n);
            next = new int[n];
        }

        void serve(Consumer<String> progress) throws Exception {
            int n = requests.size(), queued = 0;
            long t0 = System.nanoTime(), lastRecord = t0, lastProgress = t0, outputAtProgress = 0;
            String topic = job.config().promptsTopic();
            while (finished.cardinality() < n) {
                long now = System.nanoTime();
                for (; queued < n && t0 + requests.get(queued).arrivalNanos() <= now; queued++) {
                    latencies.sent(queued, System.nanoTime());
                    producer.send(new ProducerRecord<>(topic, prefix + queued, record(queued)));
                    // one turn each, ended up front (the operator ends the conversation, and drops its cache, as its
                    // request ends), as the engine's load generator drops each cache when its request ends: an end
                    // sent on reading the final came a commit interval later under exactly-once, and meanwhile
                    // admission held the next requests back for the idle caches of the ones just ended
                    producer.send(new ProducerRecord<>(topic, prefix + queued,
                            "{\"conversation_id\":\"" + prefix + queued + "\",\"end_conversation\":true}"));
                }
                producer.flush();
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(20))) {
                    lastRecord = System.nanoTime();
                    take(JSON.readTree(r.value()), lastRecord);
                }
                now = System.nanoTime();
                if (now - lastRecord > STALL_NANOS && queued == n) {
                    progress.accept("loadgen: no record for " + STALL_NANOS / 1_000_000_000L + " s; "
                            + (n - finished.cardinality()) + " requests without a final");
                    break;
                }
                if (now - lastProgress >= PROGRESS_NANOS) {
                    double window = (now - lastProgress) / 1e9;
                    progress.accept(String.format(Locale.ROOT, "loadgen: %.0f s, %d/%d requests done, %.0f output"
                                    + " tokens/s (last %.0f s)", (now - t0) / 1e9, finished.cardinality(), n,
                            (outputTokens - outputAtProgress) / window, window));
                    lastProgress = now;
                    outputAtProgress = outputTokens;
                }
            }
            seconds = (lastRecord - t0) / 1e9;
            lastFirstTokenS = latencies.lastFirstTokenSeconds(t0);
        }

        private String record(int i) {
            Load.Request q = requests.get(i);
            ObjectNode r = JSON.createObjectNode();
            r.put("conversation_id", prefix + i);
            r.put("request_id", prefix + i);
            ArrayNode ids = r.putArray("prompt_ids");
            for (int t : q.prompt()) ids.add(t);
            r.put("max_tokens", q.outputTokens());
            r.put("temperature", 1.0);
            r.put("seed", load.samplingSeed(i));
            r.put("ignore_eos", true);
            return r.toString();
        }

        private void take(JsonNode n, long now) {
            String id = n.path("request_id").asText();
            if (!id.startsWith(prefix)) return;   // the warm-up's, read late
            int i;
            try {
                i = Integer.parseInt(id.substring(prefix.length()));
            } catch (NumberFormatException e) {
                return;
            }
            switch (n.path("type").asText()) {
                case "chunk" -> {
                    int index = n.path("index").asInt();
                    if (index < next[i]) {
                        duplicates++;
                        return;
                    }
                    skipped += index - next[i];
                    next[i] = index + 1;
                    outputTokens++;
                    latencies.token(i, index == 0 || !latencies.hasFirstToken(i), now);
                }
                case "final" -> {
                    if (finished.get(i)) {
                        duplicates++;
                        return;
                    }
                    finished.set(i);
                    if ("error".equals(n.path("finish_reason").asText())) failed++;
                    else served++;
                    skipped += Math.max(0, requests.get(i).outputTokens() - next[i]);   // a final before its length
                }
                default -> errors++;
            }
        }

        /** Chunks skipped within requests, and the tokens of requests that never ended. */
        long missing() {
            long m = skipped;
            for (int i = 0; i < requests.size(); i++) {
                if (!finished.get(i)) m += Math.max(0, requests.get(i).outputTokens() - next[i]);
            }
            return m;
        }
    }
}
