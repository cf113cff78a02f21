package io.dsflow.job.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.dsflow.cli.Args;
import io.dsflow.engine.Engine;
import io.dsflow.engine.GenerationResult;
import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.kv.KvPolicy;
import io.dsflow.engine.sample.SamplingParams;
import io.dsflow.job.EmbeddedJob;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;

import java.io.PrintStream;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Locale;
import java.util.Properties;
import java.util.Random;
import java.util.Set;

/**
 * {@code overhead [--model DIR] [--requests N] [--prompt-tokens P] [--max-tokens M] [--kv-policy dense|ds|dspp]}: what
 * the streaming layer costs. The same prompts run through {@code generate} in this process, then one at a time
 * through Kafka and the Flink job (embedded broker, local cluster), measured at the Kafka client: decode tokens/s
 * from the arrival of the first to the last chunk, and TTFT from sending the request to the first chunk.
 */
final class OverheadCommand {
    static final String USAGE = "overhead [--model DIR] [--requests N] [--prompt-tokens P] [--max-tokens M]"
            + " [--kv-policy dense|ds|dspp] [--backend cpu|cuda|auto]";
    private static final ObjectMapper JSON = new ObjectMapper();

    private OverheadCommand() {
    }

    /** @param progress where a line per measured request goes while the command runs (stderr from the command line) */
    static int run(String[] argv, PrintStream out, PrintStream progress) throws Exception {
        Args a = Args.parse("overhead", argv, 1, Set.of("model", "requests", "prompt-tokens", "max-tokens", "kv-policy",
                "backend"), Set.of());
        Path model = BundledModel.modelDir(a, "overhead");
        int requests = a.getInt("requests", 5), promptTokens = a.getInt("prompt-tokens", 1000), maxTokens = a.getInt("max-tokens", 128);
        KvPolicy policy = KvPolicy.parse(a.get("kv-policy", "dense"));
        String backend = a.get("backend", "auto");
        int[][] prompts = new int[requests][promptTokens];
        Random rnd = new Random(11);
        double[][] gen = new double[requests][3];
        int[] lengths = new int[requests];
        try (Engine engine = Engine.load(model, backend)) {
            for (int[] p : prompts) {
                p[0] = engine.config().bosTokenId() >= 0 ? engine.config().bosTokenId() : 3;
                for (int i = 1; i < p.length; i++) p[i] = 3 + rnd.nextInt(engine.config().vocabSize() - 3);
            }
            progress.println("overhead: " + requests + " requests through generate, then through Kafka and Flink");
            engine.generate(prompts[0], SamplingParams.greedy(maxTokens), KvConfig.defaults(policy)); // warm the JIT
            for (int i = 0; i < requests; i++) {
                GenerationResult r = engine.generate(prompts[i], SamplingParams.greedy(maxTokens), KvConfig.defaults(policy));
                gen[i][0] = r.prefillMs();
                gen[i][1] = r.decodeTokensPerSecond();
                lengths[i] = r.tokenIds().length;
                // progress on stderr: stdout keeps only the table, for scripts
                progress.printf(Locale.ROOT, "overhead: generate %d/%d: prefill %.1f ms, %.1f tokens/s%n", i + 1,
                        requests, gen[i][0], gen[i][1]);
            }
        }
        Properties p = new Properties();
        p.setProperty("model.dir", model.toString());
        p.setProperty("backend", backend);
        p.setProperty("kv.policy", policy.id());
        double[][] job = new double[requests + 1][2];
        try (EmbeddedJob embedded = EmbeddedJob.start(p, "512m");
             KafkaProducer<String, String> producer = embedded.producer();
             KafkaConsumer<String, String> consumer = embedded.consumer("overhead")) {
            for (int i = -1; i < requests; i++) { // request -1 warms the job up and is not counted
                int[] prompt = prompts[Math.max(i, 0)];
                ObjectNode r = JSON.createObjectNode();
                r.put("conversation_id", "overhead-" + i);
                r.put("request_id", "overhead-" + i);
                ArrayNode ids = r.putArray("prompt_ids");
                for (int t : prompt) ids.add(t);
                r.put("max_tokens", maxTokens);
                r.put("temperature", 0);
                long sent = System.nanoTime(), first = 0, last = 0;
                int chunks = 0;
                producer.send(new ProducerRecord<>(embedded.config().promptsTopic(), "overhead-" + i, r.toString())).get();
                boolean done = false;
                long deadline = sent + 300_000_000_000L;
                while (!done && System.nanoTime() < deadline) {
                    for (ConsumerRecord<String, String> rec : consumer.poll(Duration.ofMillis(5))) {
                        JsonNode n = JSON.readTree(rec.value());
                        if (!("overhead-" + i).equals(n.path("request_id").asText())) continue;
                        long now = System.nanoTime();
                        switch (n.path("type").asText()) {
                            case "chunk" -> {
                                if (chunks++ == 0) first = now;
                                last = now;
                            }
                            case "final" -> done = true;
                            default -> throw new IllegalStateException("request failed: " + rec.value());
                        }
                    }
                }
                if (!done) throw new IllegalStateException("no final record for request " + i);
                if (i >= 0) {
                    job[i][0] = (first - sent) / 1e6;
                    job[i][1] = chunks > 1 ? (chunks - 1) / ((last - first) / 1e9) : 0;
                    progress.printf(Locale.ROOT, "overhead: job %d/%d: TTFT %.1f ms, %.1f tokens/s%n", i + 1, requests,
                            job[i][0], job[i][1]);
                } else {
                    progress.println("overhead: the job is warm; measuring " + requests + " requests through Kafka and Flink");
                }
            }
        }
        out.printf(Locale.ROOT, "%-8s %8s %12s %12s %10s %14s %14s %7s%n", "request", "tokens", "prefill_ms",
                "job_ttft_ms", "added_ms", "generate_tok/s", "job_tok/s", "ratio");
        double sumAdded = 0, sumRatio = 0;
        for (int i = 0; i < requests; i++) {
            double added = job[i][0] - gen[i][0], ratio = job[i][1] / gen[i][1];
            sumAdded += added;
            sumRatio += ratio;
            out.printf(Locale.ROOT, "%-8d %8d %12.1f %12.1f %10.1f %14.1f %14.1f %7.3f%n", i, lengths[i], gen[i][0],
                    job[i][0], added, gen[i][1], job[i][1], ratio);
        }
        out.printf(Locale.ROOT, "mean: TTFT added by Kafka + Flink %.1f ms; job decode tokens/s = %.3f x generate (%d-token"
                + " prompts, %s, one request at a time)%n", sumAdded / requests, sumRatio / requests, promptTokens, policy.id());
        return 0;
    }
}
