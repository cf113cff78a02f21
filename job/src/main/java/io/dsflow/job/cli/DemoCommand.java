package io.dsflow.job.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.dsflow.cli.Args;
import io.dsflow.cli.UsageException;
import io.dsflow.engine.probe.ProbePrompts;
import io.dsflow.job.EmbeddedJob;
import io.dsflow.job.JobConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;

import java.io.PrintStream;
import java.nio.file.Path;
import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.Random;
import java.util.Set;

/**
 * {@code demo [--model DIR] [--timeout-s N]}: an in-process Kafka broker and a local Flink job with the bundled probe
 * model; sends pass-key and record questions, prints each token as it arrives on the completions topic, then per
 * request the answer, TTFT and tokens/s, and exits. No external service; the CPU when there is no GPU.
 */
final class DemoCommand {
    static final String USAGE = "demo [--model DIR] [--backend cpu|cuda|auto] [--timeout-s N]";
    private static final ObjectMapper JSON = new ObjectMapper();

    private DemoCommand() {
    }

    private record Question(String requestId, String prompt, String answer) {
    }

    static int run(String[] argv, PrintStream out) throws Exception {
        Args a = Args.parse("demo", argv, 1, Set.of("model", "backend", "timeout-s"), Set.of());
        Path model = BundledModel.modelDir(a, "demo");
        int timeoutS = a.getInt("timeout-s", 55);
        if (!model.resolve("config.json").toFile().isFile()) {
            throw new UsageException("demo: no model at " + model + " (no config.json there)");
        }
        long t0 = System.nanoTime();
        Random rnd = new Random(2024);
        Map<String, Question> questions = new LinkedHashMap<>();
        for (int i = 0; i < 4; i++) {
            ProbePrompts.Sample s = i % 2 == 0 ? ProbePrompts.passKey(rnd, 40 + 25 * i) : ProbePrompts.records(rnd, 40 + 25 * i);
            String id = s.task() + "-" + (i / 2 + 1);
            questions.put(id, new Question(id, s.prompt(), s.answer()));
        }
        Properties p = new Properties();
        p.setProperty("model.dir", model.toString());
        p.setProperty("backend", a.get("backend", "auto"));
        p.setProperty("kv.policy", "dspp");
        try (EmbeddedJob job = EmbeddedJob.start(p, "256m")) {
            JobConfig config = job.config();
            out.printf(Locale.ROOT, "demo: Kafka broker at %s, Flink job reading %s, writing %s (+ %s); sending %d questions%n",
                    job.bootstrapServers(), config.promptsTopic(), config.completionsTopic(), config.errorsTopic(), questions.size());
            try (KafkaProducer<String, String> producer = job.producer();
                 KafkaConsumer<String, String> consumer = job.consumer("demo-reader")) {
                for (Question q : questions.values()) {
                    ObjectNode r = JSON.createObjectNode();
                    r.put("conversation_id", "demo-" + q.requestId());
                    r.put("request_id", q.requestId());
                    r.put("prompt", q.prompt());
                    r.put("max_tokens", q.answer().length() + 2);
                    r.put("temperature", 0);
                    producer.send(new ProducerRecord<>(config.promptsTopic(), "demo-" + q.requestId(), r.toString()));
                }
                producer.flush();
                Map<String, StringBuilder> text = new LinkedHashMap<>();
                Map<String, JsonNode> finals = new LinkedHashMap<>();
                long deadline = System.nanoTime() + timeoutS * 1_000_000_000L;
                while (finals.size() < questions.size() && System.nanoTime() < deadline) {
                    for (ConsumerRecord<String, String> rec : consumer.poll(Duration.ofMillis(100))) {
                        JsonNode n = JSON.readTree(rec.value());
                        String id = n.path("request_id").asText();
                        switch (n.path("type").asText()) {
                            case "chunk" -> {
                                text.computeIfAbsent(id, k -> new StringBuilder()).append(n.get("text").asText());
                                out.printf(Locale.ROOT, "  %6.2fs  %-10s token %2d: %-8s -> \"%s\"%n", (System.nanoTime() - t0) / 1e9,
                                        id, n.get("index").asInt(), JSON.writeValueAsString(n.get("text").asText()), text.get(id).toString().trim());
                            }
                            case "final" -> finals.put(id, n);
                            default -> out.println("  error: " + rec.value());
                        }
                    }
                }
                out.println();
                int correct = 0;
                for (Question q : questions.values()) {
                    JsonNode f = finals.get(q.requestId());
                    String answer = text.getOrDefault(q.requestId(), new StringBuilder()).toString().trim();
                    boolean ok = answer.startsWith(q.answer());
                    if (ok) correct++;
                    if (f == null) {
                        out.printf("  %-10s no final record within %d s%n", q.requestId(), timeoutS);
                        continue;
                    }
                    int n = f.path("usage").path("completion_tokens").asInt();
                    double ttft = f.path("timings").path("ttft_ms").asDouble(), itl = f.path("timings").path("itl_ms").asDouble();
                    out.printf(Locale.ROOT, "  %-10s answer \"%s\" (expected %s) %s  prompt %d tokens, TTFT %.0f ms, %.1f tokens/s%n",
                            q.requestId(), answer, q.answer(), ok ? "correct" : "WRONG",
                            f.path("usage").path("prompt_tokens").asInt(), ttft, itl > 0 ? 1000 / itl : 0.0);
                    if (n == 0) out.println("    (no tokens)");
                }
                out.printf(Locale.ROOT, "demo: %d/%d answered correctly in %.1f s%n", correct, questions.size(),
                        (System.nanoTime() - t0) / 1e9);
                return finals.size() == questions.size() ? 0 : 1;
            }
        }
    }
}
