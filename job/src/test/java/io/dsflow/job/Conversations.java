package io.dsflow.job;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.dsflow.engine.Engine;
import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.sample.SamplingParams;
import io.dsflow.operators.OutputRecord;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A workload of conversations (some multi-turn, greedy and seeded sampling) and the check that the job served each
 * request exactly as {@code generate} does on the same inputs.
 */
final class Conversations {
    static final Path MODEL = Path.of("..", "models", "probe-retrieval");
    private static final ObjectMapper JSON = new ObjectMapper();
    private static Engine reference;

    /** The engine the job's output is checked against: one for the whole test run, on the CPU. */
    static synchronized Engine reference() {
        if (reference == null) reference = Engine.load(MODEL, "cpu");
        return reference;
    }

    /** A request; {@code kv} its kv object's options, as the request sends them (the dense policy unless given). */
    record Req(String conversationId, String requestId, int turn, int[] prompt, SamplingParams params,
               Map<String, String> kv) {
        Req(String conversationId, String requestId, int turn, int[] prompt, SamplingParams params) {
            this(conversationId, requestId, turn, prompt, params, Map.of("policy", "dense"));
        }

        /** The configuration the decode operator serves it with (a request's policy resets the job's defaults). */
        KvConfig kvConfig() {
            return KvConfig.DENSE.with(kv);
        }

        String json() {
            ObjectNode o = JSON.createObjectNode();
            o.put("conversation_id", conversationId);
            o.put("request_id", requestId);
            ArrayNode ids = o.putArray("prompt_ids");
            for (int t : prompt) ids.add(t);
            o.put("max_tokens", params.maxNewTokens());
            o.put("temperature", params.temperature());
            o.put("top_p", params.topP());
            o.put("top_k", params.topK());
            o.put("seed", params.seed());
            ObjectNode options = o.putObject("kv");
            kv.forEach(options::put);
            return o.toString();
        }
    }

    final List<Req> requests = new ArrayList<>();

    /** {@code n} conversations; every third has a second turn. */
    static Conversations random(int n, long seed) {
        Conversations c = new Conversations();
        Random rnd = new Random(seed);
        for (int i = 0; i < n; i++) {
            int turns = i % 3 == 0 ? 2 : 1;
            for (int t = 0; t < turns; t++) {
                int len = 3 + rnd.nextInt(t == 0 ? 60 : 10);
                int[] p = new int[len];
                for (int j = 0; j < len; j++) p[j] = 3 + rnd.nextInt(509);
                if (t == 0) p[0] = 0;
                SamplingParams sp = i % 2 == 0 ? SamplingParams.greedy(4 + rnd.nextInt(6))
                        : new SamplingParams(0.9, 0.95, 40, 1000 + i * 10L + t, 4 + rnd.nextInt(6), List.of());
                c.requests.add(new Req("conv-" + i, "req-" + i + "-" + t, t, p, sp));
            }
        }
        return c;
    }

    /** {@code n} conversations of {@code turns} turns each (greedy and seeded alternately); turn t of all comes t-th. */
    static Conversations withTurns(int n, int turns, long seed) {
        Conversations c = new Conversations();
        Random rnd = new Random(seed);
        for (int t = 0; t < turns; t++) {
            for (int i = 0; i < n; i++) {
                int len = 3 + rnd.nextInt(t == 0 ? 40 : 8);
                int[] p = new int[len];
                for (int j = 0; j < len; j++) p[j] = 3 + rnd.nextInt(509);
                if (t == 0) p[0] = 0;
                SamplingParams sp = i % 2 == 0 ? SamplingParams.greedy(5)
                        : new SamplingParams(0.9, 0.95, 40, 500 + i * 10L + t, 5, List.of());
                c.requests.add(new Req("conv-" + i, "req-" + i + "-" + t, t, p, sp));
            }
        }
        return c;
    }

    /** The requests of one turn. */
    List<Req> turn(int t) {
        return requests.stream().filter(r -> r.turn() == t).toList();
    }

    List<String> jsonLines() {
        return requests.stream().map(Req::json).toList();
    }

    /** The output must hold, per request, chunks 0..n-1 in order then one final; completions equal generate's. */
    void check(List<OutputRecord> output, Engine engine) {
        // by conversation and request: request ids are the clients', and two conversations may use the same one
        Map<String, List<OutputRecord>> byRequest = new HashMap<>();
        for (OutputRecord r : output) {
            byRequest.computeIfAbsent(r.conversationId + "/" + r.requestId, k -> new ArrayList<>()).add(r);
        }
        Map<String, int[]> historyOf = new HashMap<>();
        for (Req q : requests) {
            List<OutputRecord> recs = byRequest.get(q.conversationId() + "/" + q.requestId());
            assertNotNull(recs, "no output for " + q.requestId());
            OutputRecord last = recs.get(recs.size() - 1);
            assertEquals(OutputRecord.FINAL, last.kind, q.requestId() + " ends with its final record");
            assertEquals(1, recs.stream().filter(r -> OutputRecord.FINAL.equals(r.kind)).count());
            int[] got = new int[recs.size() - 1];
            for (int i = 0; i < got.length; i++) {
                assertEquals(OutputRecord.CHUNK, recs.get(i).kind);
                assertEquals(i, recs.get(i).index, q.requestId() + " chunks in index order");
                got[i] = recs.get(i).tokenId;
            }
            assertEquals(got.length, last.completionTokens);
            int[] history = historyOf.getOrDefault(q.conversationId(), new int[0]);
            int[] input = concat(history, q.prompt());
            int[] expected = engine.generate(input, q.params(), q.kvConfig()).tokenIds();
            assertArrayEquals(expected, got, q.requestId() + " equals generate on the same inputs");
            // the chunks' texts add up to the completion's text (unless it ends inside a multi-byte character)
            String whole = engine.tokenizer().decode(got);
            if (!whole.endsWith("\uFFFD")) {
                StringBuilder text = new StringBuilder();
                for (int i = 0; i < got.length; i++) text.append(recs.get(i).text);
                assertEquals(whole, text.toString(), q.requestId() + " chunk texts");
            }
            // what the model saw: the history, the prompt and the completion except an EOS
            historyOf.put(q.conversationId(), concat(input, got));
            assertTrue(last.ttftMs >= 0);
        }
    }

    static int[] concat(int[] a, int[] b) {
        int[] r = java.util.Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, r, a.length, b.length);
        return r;
    }

    static OutputRecord parse(String json) {
        try {
            JsonNode n = JSON.readTree(json);
            OutputRecord r = new OutputRecord();
            r.kind = n.get("type").asText();
            r.requestId = n.path("request_id").asText(null);
            r.conversationId = n.path("conversation_id").asText(null);
            r.index = n.path("index").asInt();
            r.tokenId = n.path("token_id").asInt();
            r.text = n.path("text").asText(null);
            r.finishReason = n.path("finish_reason").asText(null);
            r.completionTokens = n.path("usage").path("completion_tokens").asInt();
            r.promptTokens = n.path("usage").path("prompt_tokens").asInt();
            r.ttftMs = n.path("timings").path("ttft_ms").asDouble();
            r.errorCode = n.path("error").path("code").asText(null);
            r.errorMessage = n.path("error").path("message").asText(null);
            r.input = n.path("input").asText(null);
            return r;
        } catch (Exception e) {
            throw new AssertionError("not a JSON record: " + json, e);
        }
    }
}
