package io.dsflow.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import io.dsflow.engine.BatchScheduler;
import io.dsflow.engine.Engine;
import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.load.Load;
import io.dsflow.engine.load.LoadGenerator;
import io.dsflow.engine.load.LoadReport;
import io.dsflow.engine.probe.Eval;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Set;

/**
 * {@code loadgen --model DIR|synthetic:NAME [--requests 1024] [--prompt-tokens 1024|512-2048] [--output-tokens 1024]
 * [--rate R] [--kv-policy dense,dspp] [--max-running N] [--prefill-tokens T] [--prefill-baseline N] [--json FILE]}:
 * a serving load through the engine's scheduler, after vLLM's {@code bench throughput} (all queued at once) and
 * {@code bench serve} (a request rate); one report a policy, on one engine.
 */
public final class LoadgenCommand {
    public static final String USAGE = "loadgen --model DIR|synthetic:NAME [--backend cpu|cuda] [--requests 1024]"
            + " [--prompt-tokens 1024|MIN-MAX] [--output-tokens 1024|MIN-MAX] [--rate REQ/S] [--kv-policy dense,dspp]"
            + " [--max-running N] [--prefill-tokens T] [--prefill-baseline N] [--seed S] [--json FILE]";

    private LoadgenCommand() {
    }

    /** The load both loadgen commands (the engine's and --through job) take: requests, rate and lengths. */
    public record Shape(int requests, double rate, Load.Lengths prompt, Load.Lengths output) {
    }

    /** --requests, --rate, --prompt-tokens and --output-tokens, checked. */
    public static Shape shape(Args a) {
        int requests = a.getInt("requests", 1024);
        double rate = a.getDouble("rate", 0);
        if (requests < 1) throw new UsageException("loadgen: --requests must be >= 1");
        if (rate < 0) throw new UsageException("loadgen: --rate must be >= 0 (0: all queued at once)");
        return new Shape(requests, rate, lengths(a, "prompt-tokens"), lengths(a, "output-tokens"));
    }

    public static int run(String[] argv, PrintStream out) throws IOException {
        Args a = Args.parse("loadgen", argv, 1, Set.of("model", "backend", "requests", "prompt-tokens",
                "output-tokens", "rate", "kv-policy", "max-running", "prefill-tokens", "prefill-baseline", "seed",
                "json"), Set.of());
        String model = a.require("model");
        Shape shape = shape(a);
        Load.Lengths prompt = shape.prompt(), output = shape.output();
        int requests = shape.requests();
        double rate = shape.rate();
        List<Eval.Policy> policies = new ArrayList<>();
        for (String spec : a.get("kv-policy", "dense").split(",")) {
            policies.add(EvalCommand.policy(spec.trim(), java.util.Map.of()));
        }
        ArrayNode json = new ObjectMapper().createArrayNode();
        try (Engine engine = Engine.open(model, a.get("backend", "auto"), 0)) {
            boolean gpu = engine.backend().gpu();
            int prefillTokens = a.getInt("prefill-tokens", BatchScheduler.defaultPrefillTokens(gpu));
            if (prefillTokens < 1) throw new UsageException("loadgen: --prefill-tokens must be >= 1");
            if (prompt.max() + output.max() + 1 > engine.config().maxPositions()) {
                throw new UsageException("loadgen: prompt and output tokens exceed the model's "
                        + engine.config().maxPositions() + " positions");
            }
            for (Eval.Policy p : policies) {
                Load load = new Load(requests, prompt, output, rate, p.kv(), a.getLong("seed", 1));
                int maxRunning = maxRunning(a, engine, p.kv(), prompt.max() + output.max() + 1, gpu);
                // warm-up: the JIT, and the CUDA graphs of the batch sizes the load will reach
                LoadGenerator.run(engine, new Load(Math.min(requests, maxRunning), new Load.Lengths(32, 32),
                        new Load.Lengths(8, 8), 0, p.kv(), 99), prefillTokens, maxRunning, s -> { });
                if (a.has("prefill-baseline")) {
                    int count = a.getInt("prefill-baseline", requests);
                    double s = LoadGenerator.prefillBackToBackSeconds(engine, load, count, prefillTokens);
                    out.printf(Locale.ROOT, "loadgen: %s: %d prompts prefilled back to back, alone: %.2f s%n",
                            p.name(), count, s);
                }
                LoadReport r = LoadGenerator.run(engine, load, prefillTokens, maxRunning, out::println);
                r.print(out);
                var o = r.toJson();
                o.put("policy", p.name());
                json.add(o);
            }
        }
        if (a.has("json")) Files.writeString(Path.of(a.get("json", null)), json.toPrettyString());
        return 0;
    }

    /** --prompt-tokens or --output-tokens: N or MIN-MAX (default 1024), else a usage error. */
    private static Load.Lengths lengths(Args a, String option) {
        String s = a.get(option, "1024");
        try {
            return Load.Lengths.parse(s);
        } catch (IllegalArgumentException e) {
            throw new UsageException("loadgen: --" + option + " must be N or MIN-MAX with 1 <= MIN <= MAX, got '" + s
                    + "'");
        }
    }

    /**
     * As asked, else as many as the device memory (a GPU's, or the CPU's cpu:device-memory) holds at their longest, at
     * most the backend's default.
     */
    private static int maxRunning(Args a, Engine engine, KvConfig kv, long tokens, boolean gpu) {
        if (a.has("max-running")) {
            int n = a.getInt("max-running", 1);
            if (n < 1) throw new UsageException("loadgen: --max-running must be >= 1");
            return n;
        }
        engine.backend().prepare(kv);
        long budget = engine.backend().deviceCacheBudget();
        if (budget < 0) return BatchScheduler.defaultMaxRunning(gpu);
        long fit = budget / Math.max(1, engine.estimateCacheBytes(kv, tokens));
        if (fit < 1) throw new UsageException("loadgen: one request's cache does not fit the device memory");
        return (int) Math.min(BatchScheduler.defaultMaxRunning(gpu), fit);
    }
}
