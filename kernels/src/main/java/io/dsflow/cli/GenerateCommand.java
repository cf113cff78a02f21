package io.dsflow.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.dsflow.engine.DsflowException;
import io.dsflow.engine.Engine;
import io.dsflow.engine.GenerationResult;
import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.kv.KvPolicy;
import io.dsflow.engine.sample.SamplingParams;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Set;

/**
 * {@code generate --model DIR (--prompt TEXT | --prompt-ids 1,2,3) [--max-new-tokens N] [--temperature T]
 * [--top-p P] [--top-k K] [--seed S] [--stop STR]... [--kv-policy dense|ds|dspp] [--backend cpu|cuda]
 * [--dump-logits FILE] [--json]}: one completion, no Flink. Scripts depend on this interface and on the JSON fields.
 */
public final class GenerateCommand {
    public static final String USAGE = "generate --model DIR (--prompt TEXT | --prompt-ids 1,2,3) [--max-new-tokens N]"
            + " [--temperature T] [--top-p P] [--top-k K] [--seed S] [--stop STR]... [--kv-policy dense|ds|dspp]"
            + " [--backend cpu|cuda] [--dump-logits FILE] [--json] " + KvOptions.USAGE;
    private static final Set<String> VALUED = Args.union(Set.of("model", "prompt", "prompt-ids", "max-new-tokens",
            "temperature", "top-p", "top-k", "seed", "stop", "kv-policy", "backend", "dump-logits"), KvOptions.NAMES);



    private GenerateCommand() {
    }

    public static int run(String[] argv, PrintStream out) {
        Args a = Args.parse("generate", argv, 1, VALUED, Set.of("json"));
        Path model = Path.of(a.require("model"));
        if (a.has("prompt") == a.has("prompt-ids")) {
            throw new UsageException("generate: give exactly one of --prompt and --prompt-ids");
        }
        SamplingParams params = new SamplingParams(a.getDouble("temperature", 1.0), a.getDouble("top-p", 1.0),
                a.getInt("top-k", 0), a.getLong("seed", 0), a.getInt("max-new-tokens", 64), a.all("stop"));
        KvConfig kv = KvOptions.config(KvPolicy.parse(a.get("kv-policy", "dense")), KvOptions.overrides(a));
        String backend = a.getBackend("auto");
        try (Engine engine = Engine.load(model, backend)) {
            KvOptions.applyChannelFile(a, engine);
            int[] prompt = a.has("prompt-ids") ? a.getIntList("prompt-ids")
                    : engine.tokenizer().encode(a.get("prompt", ""), true);
            GenerationResult r = engine.generate(prompt, params, kv);
            if (a.has("dump-logits")) writeLogits(Path.of(a.get("dump-logits", null)), r.lastPromptLogits());
            if (a.has("json")) {
                out.println(json(r));
            } else {
                out.println(r.text());
                out.printf("[%d prompt tokens, %d generated, finish %s; prefill %.1f ms, decode %.1f tokens/s]%n",
                        r.promptTokens(), r.tokenIds().length, r.finishReason().id(), r.prefillMs(),
                        r.decodeTokensPerSecond());
            }
        }
        return 0;
    }

    static String json(GenerationResult r) {
        ObjectMapper m = new ObjectMapper();
        ObjectNode o = m.createObjectNode();
        ArrayNode ids = o.putArray("token_ids");
        for (int t : r.tokenIds()) ids.add(t);
        o.put("text", r.text());
        o.put("finish_reason", r.finishReason().id());
        o.put("prompt_tokens", r.promptTokens());
        ObjectNode t = o.putObject("timings");
        t.put("prefill_ms", Math.round(r.prefillMs() * 1000) / 1000.0);
        t.put("decode_tokens_per_s", Math.round(r.decodeTokensPerSecond() * 100) / 100.0);
        return o.toString();
    }

    private static void writeLogits(Path file, float[] logits) {
        StringBuilder b = new StringBuilder(logits.length * 12).append('[');
        for (int i = 0; i < logits.length; i++) b.append(i == 0 ? "" : ",").append(logits[i]);
        try {
            Files.writeString(file, b.append("]\n"));
        } catch (IOException e) {
            throw new DsflowException("cannot write " + file + ": " + e.getMessage(), e);
        }
    }
}
