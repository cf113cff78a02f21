package io.dsflow.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.dsflow.engine.Engine;
import io.dsflow.engine.kv.AttentionObserver;
import io.dsflow.engine.kv.KvBytes;
import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.kv.KvPolicy;
import io.dsflow.engine.probe.Eval;

import java.io.PrintStream;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

/**
 * {@code eval --model DIR [--tasks passkey,records] [--lengths 1024,4096,8192] [--policies dense,ds,dspp]
 * [--samples N] [--seed S] [kv options] [--json]}: the quality probe. A policy may carry its own overrides:
 * {@code dspp:lambda=0.5:window=16}.
 */
public final class EvalCommand {
    public static final String USAGE = "eval --model DIR [--tasks passkey,records] [--lengths 1024,4096,8192]"
            + " [--policies dense,ds,dspp,dspp:lambda=0.5:window=16] [--samples N] [--seed S] [--recent-tokens N]"
            + " [--json] " + KvOptions.USAGE;

    private EvalCommand() {
    }

    public static int run(String[] argv, PrintStream out) {
        Args a = Args.parse("eval", argv, 1, Args.union(Set.of("model", "tasks", "lengths", "policies",
                "samples", "seed", "backend", "recent-tokens"), KvOptions.NAMES), Set.of("json"));
        Path model = Path.of(a.require("model"));
        List<String> tasks = Arrays.asList(a.get("tasks", "passkey,records").split(","));
        for (String t : tasks) {
            if (!t.equals("passkey") && !t.equals("records")) throw new UsageException("eval: unknown task '" + t + "' (passkey, records)");
        }
        List<Integer> lengths = new ArrayList<>();
        for (String l : a.get("lengths", "1024,4096,8192").split(",")) {
            try {
                lengths.add(Integer.parseInt(l.trim()));
            } catch (NumberFormatException e) {
                throw new UsageException("eval: --lengths must be comma-separated integers, got '" + l + "'");
            }
        }
        int samples = a.getInt("samples", 20);
        if (samples < 1) throw new UsageException("eval: --samples must be >= 1");
        Map<String, String> base = KvOptions.overrides(a);
        List<Eval.Policy> policies = new ArrayList<>();
        for (String spec : a.get("policies", "dense,ds,dspp").split(",")) policies.add(policy(spec.trim(), base));
        try (Engine engine = Engine.load(model, a.get("backend", "cpu"))) {
            KvOptions.applyChannelFile(a, engine);
            for (int len : lengths) {
                if (len < 64 || len > engine.config().maxPositions() - 64) {
                    throw new UsageException("eval: length " + len + " must be in [64, " + (engine.config().maxPositions() - 64) + "]");
                }
            }
            // with --json, stdout carries only the JSON document
            if (!a.has("json")) for (Eval.Policy p : policies) out.println("policy " + p.name() + ": " + p.kv());
            List<Eval.Cell> cells = Eval.run(engine, tasks, lengths, policies, samples, a.getLong("seed", 0),
                    a.getInt("recent-tokens", 0));
            if (a.has("json")) out.println(json(cells));
            else out.print(table(cells));
        }
        return 0;
    }

    /** "dspp" or "dspp:lambda=0.5:window=16": a policy with the command line's options, then its own. */
    static Eval.Policy policy(String spec, Map<String, String> base) {
        KvOptions.PolicySpec parsed = KvOptions.PolicySpec.parse(spec);
        KvPolicy policy = KvPolicy.parse(parsed.policy());
        Map<String, String> own = new LinkedHashMap<>(policy == KvPolicy.DENSE ? Map.of() : base);
        if (policy == KvPolicy.DENSE && base.containsKey("capacity")) own.put("capacity", base.get("capacity"));
        own.putAll(parsed.options());
        KvConfig kv = KvOptions.config(policy, own);
        return new Eval.Policy(spec, kv);
    }

    /**
     * One row a cell; the last two columns are per sparse layer (the layers that attended sparsely in that cell, in
     * order), where a loss shows which layer it comes from.
     */
    static String table(List<Eval.Cell> cells) {
        StringBuilder b = new StringBuilder();
        b.append(String.format(Locale.ROOT, "%-8s %6s %-28s %9s %7s %7s %8s %7s %14s %10s %9s %9s %11s  %s  |  %s  |"
                        + "  %s%n", "task", "length", "policy", "accuracy", "mass", "idx@k", "rel.err", "reused",
                "hits 1x/2x/4x", "kv_labels", "kv_window", "kv_sinks", "kv_store", "mass by layer", "idx@k by layer",
                "reused by layer"));
        for (Eval.Cell c : cells) {
            KvBytes k = c.meanBytes();
            b.append(String.format(Locale.ROOT, "%-8s %6d %-28s %4d/%-4d %7.3f %7.3f %8.4f %7.3f %14s %10s %9s %9s %11s"
                            + "  %s  |  %s  |  %s%n", c.task, c.length, c.policy, c.correct, c.samples, c.massRecall(),
                    c.indexRecall(), c.relError(), c.reselected(), rowCacheHits(c), mb(k.labels()), mb(k.window()),
                    mb(k.sinks()), mb(k.store()), byLayer(c, c::massRecall), byLayer(c, c::indexRecall), byLayer(c, c::reselected)));
        }
        return b.toString();
    }

    /** "L2 0.477 L3 0.368 ..." over the layers that have the figure, "-" where none does. */
    private static String byLayer(Eval.Cell c, java.util.function.IntFunction<Double> figure) {
        StringBuilder b = new StringBuilder();
        for (int l = 0; l < c.headSteps.length; l++) {
            Double v = figure.apply(l);
            if (v != null) b.append(b.isEmpty() ? "" : " ").append(String.format(Locale.ROOT, "L%d %.3f", l, v));
        }
        return b.isEmpty() ? "-" : b.toString();
    }

    /**
     * "0.41/0.58/0.72": the modelled device row cache's hit rate at each size, "-" where nothing selected twice; "gpu
     * 0.52": a GPU's own row cache (the policy's row-cache F), measured.
     */
    private static String rowCacheHits(Eval.Cell c) {
        if (c.deviceRowCache.asked() > 0) {
            return String.format(Locale.ROOT, "gpu %.2f", c.deviceRowCache.hitRate());
        }
        StringBuilder b = new StringBuilder();
        for (int f = 0; f < c.rowCacheAsked.length; f++) {
            double v = c.rowCacheHitRate(f);
            if (Double.isNaN(v)) return "-";
            b.append(f == 0 ? "" : "/").append(String.format(Locale.ROOT, "%.2f", v));
        }
        return b.toString();
    }

    private static String mb(long bytes) {
        return String.format(Locale.ROOT, "%.2fMB", bytes / 1e6);
    }

    static String json(List<Eval.Cell> cells) {
        return jsonCells(cells).toString();
    }

    /** The cells as a JSON array (one object a cell), for eval --json and bench --quality's JSON. */
    static ArrayNode jsonCells(List<Eval.Cell> cells) {
        ArrayNode arr = new ObjectMapper().createArrayNode();
        for (Eval.Cell c : cells) {
            ObjectNode o = arr.addObject();
            o.put("task", c.task);
            o.put("length", c.length);
            o.put("policy", c.policy);
            o.put("samples", c.samples);
            o.put("correct", c.correct);
            o.put("accuracy", c.accuracy());
            o.put("mean_context_tokens", c.contextTokens / Math.max(1, c.samples));
            putMetric(o, "mass_recall", c.massRecall());
            putMetric(o, "index_recall", c.indexRecall());
            putMetric(o, "relative_error", c.relError());
            putMetric(o, "reselected", c.reselected());
            ObjectNode hits = o.putObject("row_cache_hit_rate");   // by cache size, in rows of a step's budget
            for (int f = 0; f < c.rowCacheAsked.length; f++) {
                putMetric(hits, AttentionObserver.ROW_CACHE_FACTORS.get(f) + "x", c.rowCacheHitRate(f));
            }
            putMetric(o, "device_row_cache_hit_rate", c.deviceRowCache.hitRate());
            ArrayNode perLayer = o.putArray("mass_recall_per_layer"), indexPerLayer = o.putArray("index_recall_per_layer");
            ArrayNode reselectedPerLayer = o.putArray("reselected_per_layer");
            for (int l = 0; l < c.headSteps.length; l++) {
                Double v = c.massRecall(l), x = c.indexRecall(l), r = c.reselected(l);
                if (v == null) perLayer.addNull();
                else perLayer.add(v);
                if (x == null) indexPerLayer.addNull();
                else indexPerLayer.add(x);
                if (r == null) reselectedPerLayer.addNull();
                else reselectedPerLayer.add(r);
            }
            KvBytes k = c.meanBytes();
            ObjectNode bytes = o.putObject("kv_bytes");
            bytes.put("labels", k.labels());
            bytes.put("window", k.window());
            bytes.put("sinks", k.sinks());
            bytes.put("store", k.store());
            bytes.put("total", k.total());
        }
        return arr;
    }

    /** A fidelity metric, null where it was not measured (sparse policies on the GPU). */
    private static void putMetric(ObjectNode o, String name, double v) {
        if (Double.isNaN(v)) o.putNull(name);
        else o.put(name, v);
    }
}
