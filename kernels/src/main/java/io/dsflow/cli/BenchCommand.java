package io.dsflow.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.dsflow.engine.Batch;
import io.dsflow.engine.DsflowException;
import io.dsflow.engine.cuda.CudaBackend;
import io.dsflow.engine.cuda.CudaBenchCaches;
import io.dsflow.engine.cuda.CudaKvCache;
import io.dsflow.engine.cuda.CudaRuntime;
import io.dsflow.engine.cuda.GraphCache;
import io.dsflow.engine.cuda.StepProfiler;
import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.model.ModelConfig;
import io.dsflow.engine.model.ModelFolder;
import io.dsflow.engine.model.ModelWeights;
import io.dsflow.engine.model.SyntheticModels;
import jcuda.driver.CUdeviceptr;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Locale;
import java.util.Set;

import static jcuda.driver.JCudaDriver.cuMemcpyDtoD;

/**
 * {@code bench --backend cuda --model DIR|synthetic:NAME [--batch 1,16] [--context 1024,4096,16384]
 * [--prompt 4096|16x1024] [--kv-policy dense,ds,dspp:gqa=mean,dspp:placement=host] [--steps N]
 * [--embeddings placement|host] [--json FILE]}:
 * decode tokens/s and step latency per batch and context (greedy sampling on the device, each sequence's cache filled
 * to the context), prefill tokens/s (one prompt, or N prompts of M tokens in one forward: NxM; the JSON's "tokens" is
 * M, its "tokens_per_s" all N x M), peak device memory (and pinned host memory: host placement's stores), with
 * --profile a timeline of one more step (device time of each stage summed over the layers, from CUDA events, the step
 * run eagerly), achieved bandwidth (bytes a decode step must read: weights but the embedding table, plus every
 * cached key and value / step time) against a device-to-device copy measured in the same run, and under the decode
 * table each shape's ratios within the run (every policy's tokens/s over dense's and ds's where they ran). The token
 * embedding table is in host memory for the host placement rows (as an engine puts it) and in device memory for the
 * others; --embeddings host puts it in host memory for every row (to compare device memory with the table off the
 * device everywhere). --quality PROBE_DIR then runs the probe's eval (pass key and records, --quality-lengths,
 * default 4096, --quality-samples, default 20) on the GPU for the same policies and prints each policy's tokens/s
 * beside its accuracy ({@link SpeedAndQuality}). --profiler-range brackets each decode row's timed steps with
 * cuProfilerStart / cuProfilerStop, so that a profiler started with its range off (ncu --profile-from-start off) sees
 * those steps' kernels alone, not the weights' set-up, the warm-up or the graph captures.
 */
public final class BenchCommand {
    public static final String USAGE = "bench --backend cuda --model DIR|synthetic:NAME [--batch 1,16]"
            + " [--context 1024,4096,16384] [--prompt 4096|16x1024] [--kv-policy dense,ds,dspp:gqa=mean] [--steps N]"
            + " [--profile] [--profiler-range]"
            + " [--embeddings placement|host] [--quality PROBE_DIR [--quality-lengths 4096] [--quality-samples 20]]"
            + " [--json FILE]";

    private BenchCommand() {
    }

    public static int run(String[] argv, PrintStream out) throws IOException {
        Args a = Args.parse("bench", argv, 1, Set.of("backend", "model", "batch", "context", "prompt", "kv-policy",
                "steps", "json", "embeddings", "quality", "quality-lengths", "quality-samples"),
                Set.of("profile", "profiler-range"));
        if (!a.get("backend", "cuda").equals("cuda")) {
            throw new UsageException("bench: runs on --backend cuda (on the cpu, generate --json gives the timings)");
        }
        // as eval takes them: "dspp" or "dspp:gqa=mean:window=16"
        List<io.dsflow.engine.probe.Eval.Policy> policies = new ArrayList<>();
        for (String spec : a.get("kv-policy", "dense").split(",")) {
            policies.add(EvalCommand.policy(spec.trim(), Map.of()));
        }
        if (a.has("quality")) {
            ModelFolder.open(Path.of(a.get("quality", null)));   // a bad folder fails now, not after the bench
            if (a.getInt("quality-samples", 20) < 1) throw new UsageException("bench: --quality-samples must be >= 1");
            ints(a, "quality-lengths", "4096");
        }
        if (!CudaRuntime.available()) {
            throw new DsflowException("bench: CUDA is not available: " + CudaRuntime.unavailableReason());
        }
        String model = a.require("model");
        int[] batches = ints(a, "batch", "1,16"), contexts = ints(a, "context", "1024,4096,16384");
        int[] promptShape = promptShape(a.get("prompt", "4096"));
        int prompts = promptShape[0], prompt = promptShape[1];
        int steps = a.getInt("steps", 32);
        boolean profile = a.has("profile"), profilerRange = a.has("profiler-range");
        String embeddings = a.get("embeddings", "placement");
        if (!embeddings.equals("placement") && !embeddings.equals("host")) {
            throw new UsageException("--embeddings must be placement or host, not " + embeddings);
        }
        long t0 = System.nanoTime();
        CudaBackend b;
        if (model.startsWith("synthetic:")) {
            b = CudaBackend.synthetic(SyntheticModels.get(model.substring("synthetic:".length())), 0, 1);
        } else {
            b = CudaBackend.load(new ModelWeights(ModelFolder.open(Path.of(model))), 0);
        }
        CudaRuntime gpu = b.runtime();
        ModelConfig c = b.config();
        out.printf(Locale.ROOT, "bench: %s (%s) on %s: %.2f GB of bf16 weights, loaded in %.1f s%n", model, c,
                gpu.name(), b.weightBytes() / 1e9, (System.nanoTime() - t0) / 1e9);
        double copy = copyBandwidth(gpu);
        out.printf(Locale.ROOT, "bench: device-to-device copy %.2f TB/s (bytes read + written)%n", copy / 1e12);
        ObjectMapper json = new ObjectMapper();
        ObjectNode root = json.createObjectNode();
        root.put("model", model);
        root.put("gpu", gpu.name());
        root.put("weight_bytes", b.weightBytes());
        root.put("copy_bytes_per_s", copy);
        ArrayNode decode = root.putArray("decode");
        warmUp(b, policies, java.util.Arrays.stream(batches).max().orElse(1),
                java.util.Arrays.stream(contexts).min().orElse(2048));
        // host us: a step's host time between device work, during which the device idles: its metadata + its graph's
        // launch / the longest step's (cN: N graph captures in the timed steps, their time not counted)
        out.printf(Locale.ROOT, "%-6s %-6s %-8s %12s %10s %12s %10s %12s %12s %12s %12s%n", "policy", "batch",
                "context", "tokens/s", "ms/step", "GB/step", "TB/s", "of copy", "peak GB", "host GB", "host us");
        for (io.dsflow.engine.probe.Eval.Policy policy : policies) {
            for (int ctx : contexts) {
                for (int batch : batches) {
                    if (ctx + steps + 8 > c.maxPositions()) continue;
                    decodeRow(b, policy, batch, ctx, new RowOptions(steps, profile, profilerRange,
                            embeddings.equals("host"), copy),
                            out, decode);
                }
            }
        }
        for (String line : ratioLines(decode)) out.println(line);
        if (prompt > c.maxPositions()) {
            out.printf(Locale.ROOT, "prefill skipped: %d tokens is past the model's %d positions%n", prompt,
                    c.maxPositions());
        } else if (prompt > 0) {
            prefillRows(b, prompts, prompt, policies, profile, out, root);
        }
        root.put("peak_device_bytes_max", gpu.peakAllocated());
        out.printf(Locale.ROOT, "peak device memory (dsflow's allocations): %.2f GB%n", gpu.peakAllocated() / 1e9);
        b.close();
        if (a.has("quality")) qualityRows(a, policies, decode, out, root);
        if (a.has("json")) Files.writeString(Path.of(a.get("json", null)), root.toPrettyString());
        return 0;
    }

    /** The probe's eval of the same policies on the GPU, and the table of speed beside quality. */
    private static void qualityRows(Args a, List<io.dsflow.engine.probe.Eval.Policy> policies, ArrayNode decode,
                                    PrintStream out, ObjectNode root) {
        List<Integer> lengths = new ArrayList<>();
        for (int l : ints(a, "quality-lengths", "4096")) lengths.add(l);
        int samples = a.getInt("quality-samples", 20);
        List<io.dsflow.engine.probe.Eval.Cell> cells;
        try (io.dsflow.engine.Engine probe = io.dsflow.engine.Engine.load(Path.of(a.get("quality", null)), "cuda")) {
            for (int len : lengths) {
                if (len < 64 || len > probe.config().maxPositions() - 64) {
                    throw new UsageException("bench: --quality-lengths " + len + " must be in [64, "
                            + (probe.config().maxPositions() - 64) + "] for " + a.get("quality", null));
                }
            }
            cells = io.dsflow.engine.probe.Eval.run(probe, List.of("passkey", "records"), lengths, policies, samples,
                    1, 0);
        }
        out.println("speed (this model) beside quality (" + a.get("quality", null) + ", " + samples + " samples, seed 1):");
        out.print(SpeedAndQuality.table(decode, cells,
                policies.stream().map(io.dsflow.engine.probe.Eval.Policy::name).toList()));
        root.set("quality", EvalCommand.jsonCells(cells));
    }

    /**
     * Prefill tokens/s of {@code prompts} prompts of {@code prompt} tokens in one forward: dense, and each policy whose
     * prefill reads its store elsewhere (host placement); adds the rows to json. With {@code profile}, one more dense
     * prefill with an event at each stage of each layer (as decode rows' --profile), to say where a prefill's time
     * goes.
     */
    private static void prefillRows(CudaBackend b, int prompts, int prompt,
                                    List<io.dsflow.engine.probe.Eval.Policy> policies, boolean profile,
                                    PrintStream out, ObjectNode root) {
        CudaRuntime gpu = b.runtime();
        ModelConfig c = b.config();
        // dense, and each policy whose prefill reads its store elsewhere (host placement)
        List<KvConfig> prefills = new ArrayList<>(List.of(KvConfig.DENSE));
        for (io.dsflow.engine.probe.Eval.Policy p : policies) {
            if (p.kv().placement() == KvConfig.Placement.HOST) prefills.add(p.kv());
        }
        int[][] ids = new int[prompts][prompt];
        for (int p = 0; p < prompts; p++) {
            for (int i = 0; i < prompt; i++) {
                ids[p][i] = 100 + (int) Math.floorMod(i * 7919L + p * 104729L, c.vocabSize() - 200L);
            }
        }
        String shape = prompts == 1 ? prompt + " tokens" : prompts + " x " + prompt + " tokens";
        // a first prefill of the same shape: cuBLAS chooses (and loads) its kernels for a shape at its first product
        List<CudaKvCache> warm = caches(b, prompts, KvConfig.DENSE);
        try {
            b.forwardGreedy(batchOf(warm, ids));
        } finally {
            warm.forEach(CudaKvCache::release);
        }
        ArrayNode prefillRows = root.putArray("prefill");
        for (KvConfig kv : prefills) {
            boolean host = kv.placement() == KvConfig.Placement.HOST;
            // host placement twice: a first cache pins new host memory, a second one reuses the pool's blocks
            for (int run = 0; run < (host ? 2 : 1); run++) {
                if (host && run == 0) gpu.trim();
                List<CudaKvCache> caches = caches(b, prompts, kv);
                try {
                    gpu.synchronize();
                    long start = System.nanoTime();
                    b.forwardGreedy(batchOf(caches, ids));
                    gpu.synchronize();
                    double sec = (System.nanoTime() - start) / 1e9;
                    double flops = prompts * (2.0 * b.weightBytesPerStep() / 2 * prompt
                            + 2.0 * c.numLayers() * c.numHeads() * c.headDim() * (double) prompt * prompt);
                    String name = !kv.sparse() ? "dense" : kv.policy().id() + (!host ? ""
                            : run == 0 ? " (host placement, new pinned memory)" : " (host placement, pooled memory)");
                    out.printf(Locale.ROOT, "prefill %s, %s: %.3f s, %.0f tokens/s, %.1f TFLOP/s (linear layers"
                            + " and causal attention)%n", shape, name, sec, (double) prompts * prompt / sec,
                            flops / sec / 1e12);
                    ObjectNode row = prefillRows.addObject();
                    row.put("kv", kv.toString());
                    row.put("pinned_memory_pooled", host && run == 1);
                    row.put("prompts", prompts);
                    row.put("tokens", prompt);
                    row.put("tokens_per_s", (double) prompts * prompt / sec);
                    row.put("tflops", flops / sec / 1e12);
                } finally {
                    caches.forEach(CudaKvCache::release);
                }
                if (profile && !kv.sparse()) {
                    List<CudaKvCache> again = caches(b, prompts, kv);
                    try {
                        StepProfiler.Profile pr = b.profileStep(batchOf(again, ids));
                        ObjectNode prof = root.putObject("prefill_profile_ms");
                        prof.put("step", pr.stepMs());
                        out.println(stageLine(String.format(Locale.ROOT, "  timeline prefill %s, dense: %.3f"
                                + " ms eager; main stream", shape, pr.stepMs()), pr.mainMs(), pr.stepMs(),
                                prof.putObject("main")));
                    } finally {
                        again.forEach(CudaKvCache::release);
                    }
                }
            }
        }
    }

    /** {@code count} empty caches; those made are released if one cannot be. */
    private static List<CudaKvCache> caches(CudaBackend b, int count, KvConfig kv) {
        List<CudaKvCache> caches = new ArrayList<>();
        try {
            for (int i = 0; i < count; i++) caches.add(CudaBenchCaches.ofLength(b, 0, kv));
        } catch (RuntimeException e) {
            caches.forEach(CudaKvCache::release);
            throw e;
        }
        return caches;
    }

    /** One forward's batch: prompt i into cache i, every one from position 0. */
    private static Batch batchOf(List<CudaKvCache> caches, int[][] ids) {
        Batch batch = new Batch();
        for (int i = 0; i < caches.size(); i++) batch.add(caches.get(i), ids[i], 0);
        return batch;
    }

    /**
     * The decode table's ratios within this run, a line a shape where a baseline ran beside other policies: each
     * policy's tokens/s over dense's, and over ds's where ds ran ("64 x 4096: ds 0.81x dense, dspp 1.63x dense, dspp
     * 2.02x ds"). Rows in {@code decode} as decodeRow writes them.
     */
    static List<String> ratioLines(ArrayNode decode) {
        Map<String, Map<String, Double>> shapes = new LinkedHashMap<>();   // "64 x 4096" -> policy -> tokens/s
        for (var row : decode) {
            String shape = row.get("batch").asInt() + " x " + row.get("context").asInt();
            shapes.computeIfAbsent(shape, k -> new LinkedHashMap<>()).put(row.get("policy").asText(),
                    row.get("tokens_per_s").asDouble());
        }
        List<String> lines = new ArrayList<>();
        for (var shape : shapes.entrySet()) {
            List<String> ratios = new ArrayList<>();
            for (String baseline : List.of("dense", "ds")) {
                Double base = shape.getValue().get(baseline);
                if (base == null || base <= 0) continue;
                for (var p : shape.getValue().entrySet()) {
                    if (p.getKey().equals(baseline) || (baseline.equals("ds") && p.getKey().equals("dense"))) continue;
                    ratios.add(String.format(Locale.ROOT, "%s %.2fx %s", p.getKey(), p.getValue() / base, baseline));
                }
            }
            if (!ratios.isEmpty()) lines.add("  " + shape.getKey() + ": " + String.join(", ", ratios));
        }
        return lines;
    }

    /**
     * Options every decode row shares: timed steps, --profile, --profiler-range, --embeddings host, the copy bandwidth
     * measured.
     */
    private record RowOptions(int steps, boolean profile, boolean profilerRange, boolean embeddingsOnHost,
                              double copy) {
    }

    /**
     * One row of the decode table: {@code batch} caches of {@code ctx} tokens under a policy, untimed steps, then the
     * timed ones; prints the row and adds it to {@code decode} (json).
     */
    private static void decodeRow(CudaBackend b, io.dsflow.engine.probe.Eval.Policy policy, int batch, int ctx,
                                  RowOptions o, PrintStream out, ArrayNode decode) {
        KvConfig kv = policy.kv();
        CudaRuntime gpu = b.runtime();
        ModelConfig c = b.config();
        int steps = o.steps();
        double copy = o.copy();
        // the token embedding table where the row's placement puts it (host placement: in host memory)
        b.placeEmbeddings(o.embeddingsOnHost() || kv.placement() == KvConfig.Placement.HOST);
        gpu.trim();        // the previous row's cached blocks do not count against this one
        gpu.resetPeak();
        List<CudaKvCache> caches = new ArrayList<>();
        try {
            for (int i = 0; i < batch; i++) caches.add(CudaBenchCaches.ofLength(b, ctx, kv));
            int[] tokens = new int[batch];
            for (int i = 0; i < batch; i++) tokens[i] = 1000 + i;
            // untimed steps first: the row's graph captured, its host path compiled by the JIT (a long-running
            // job's steady state), within the slots the caches hold beyond the context (8 to spare)
            int untimed = Math.max(3, Math.min(UNTIMED_STEPS, CudaBenchCaches.SPARE_SLOTS - 8 - steps));
            for (int s = 0; s < untimed; s++) tokens = b.forwardGreedy(step(caches, tokens, ctx + s));
            gpu.synchronize();
            b.takeRowCacheCounts();   // the timed steps' own
            b.resetHostTime();
            if (o.profilerRange()) gpu.profilerStart();
            long start = System.nanoTime();
            for (int s = 0; s < steps; s++) tokens = b.forwardGreedy(step(caches, tokens, ctx + untimed + s));
            gpu.synchronize();
            long end = System.nanoTime();
            if (o.profilerRange()) gpu.profilerStop();
            io.dsflow.engine.RowCacheCounts rows = b.takeRowCacheCounts();
            // a step that meets a new shape (its budgets' or candidates' bucket: every few hundred tokens, for
            // ds at every power of two) runs uncaptured and the next captures its graph; the steady state does
            // neither, so the capture's host time, during which the device idles, is left out (and said in the
            // host column; the uncaptured step's time is counted, its host time is not)
            GraphCache.HostTime host = b.hostTime();
            double sec = (end - start - host.captureNanos()) / 1e9 / steps;
            double bytes = b.weightBytesPerStep() + batch * cacheBytesPerStep(c, kv, ctx + untimed + steps / 2);
            String hostUs = host.steps() == 0 ? "-" : String.format(Locale.ROOT, "%.0f+%.0f/%.0f%s",
                    host.prepareNanos() / 1e3 / host.steps(), host.launchNanos() / 1e3 / host.steps(),
                    host.maxNanos() / 1e3, host.captures() == 0 ? "" : " c" + host.captures());
            out.printf(Locale.ROOT, "%-6s %-6d %-8d %12.1f %10.3f %12.2f %10.2f %11.0f%% %12.2f %12.2f %12s%n",
                    policy.name(), batch, ctx, batch / sec, sec * 1e3, bytes / 1e9, bytes / sec / 1e12,
                    100 * bytes / sec / copy, gpu.peakAllocated() / 1e9, gpu.peakHostAllocated() / 1e9, hostUs);
            ObjectNode row = decode.addObject();
            if (rows.asked() > 0) {   // a row a kv head: its key and value in bf16 over the link for each miss
                double linkBytes = (double) rows.missed() * 4 * c.headDim() / steps;
                out.printf(Locale.ROOT, "  row cache: %.1f%% of %d rows a step held (natural selections of this"
                        + " model), %.1f MB a step over the host link%n", 100 * rows.hitRate(), rows.asked() / steps,
                        linkBytes / 1e6);
                row.put("row_cache_hit_rate", rows.hitRate());
                row.put("row_cache_rows_per_step", (double) rows.asked() / steps);
                row.put("row_cache_link_bytes_per_step", linkBytes);
            }
            row.put("policy", policy.name());
            row.put("batch", batch);
            row.put("context", ctx);
            row.put("tokens_per_s", batch / sec);
            row.put("ms_per_step", sec * 1e3);
            row.put("bytes_per_step", bytes);
            row.put("bandwidth_fraction_of_copy", bytes / sec / copy);
            row.put("peak_device_bytes", gpu.peakAllocated());
            row.put("peak_pinned_host_bytes", gpu.peakHostAllocated());
            if (host.steps() > 0) {
                row.put("host_prepare_us_per_step", host.prepareNanos() / 1e3 / host.steps());
                row.put("host_launch_us_per_step", host.launchNanos() / 1e3 / host.steps());
                row.put("graph_captures", host.captures());
                row.put("graph_capture_ms_excluded", host.captureNanos() / 1e6);
            }
            if (o.profile()) {   // one more step, eager, with an event at each stage of each layer on each stream
                StepProfiler.Profile pr = b.profileStep(step(caches, tokens, ctx + untimed + steps));
                ObjectNode prof = row.putObject("profile_ms");
                prof.put("step", pr.stepMs());
                out.println(stageLine(String.format(Locale.ROOT, "  timeline %s, batch %d, context %d: %.3f ms eager;"
                        + " main stream", policy.name(), batch, ctx, pr.stepMs()), pr.mainMs(), pr.stepMs(),
                        prof.putObject("main")));
                if (!pr.sideMs().isEmpty()) {
                    out.println(stageLine("    side stream", pr.sideMs(), pr.stepMs(), prof.putObject("side")));
                }
                StringBuilder layer = new StringBuilder(String.format(Locale.ROOT, "    layer %d (us from its start):",
                        pr.layer()));
                for (StepProfiler.Span sp : pr.layerTimeline()) {
                    layer.append(String.format(Locale.ROOT, " %s %s %.0f-%.0f;", sp.stream(), sp.stage(),
                            1e3 * sp.startMs(), 1e3 * sp.endMs()));
                }
                out.println(layer);
            }
        } catch (DsflowException e) {
            out.printf(Locale.ROOT, "%-6s %-6d %-8d skipped: %s%n", policy.name(), batch, ctx, e.getMessage());
        } finally {
            for (CudaKvCache k : caches) k.release();
        }
    }

    /** Untimed decode steps before each row's timed ones (fewer where the row's steps leave no room). */
    private static final int UNTIMED_STEPS = 24;

    /** "prefix stage ms (share of the step), ..." for one stream's stage totals, also put into json. */
    private static String stageLine(String prefix, Map<String, Double> stages, double stepMs, ObjectNode json) {
        StringBuilder line = new StringBuilder(prefix);
        for (Map.Entry<String, Double> e : stages.entrySet()) {
            line.append(String.format(Locale.ROOT, " %s %.3f (%.0f%%)", e.getKey(), e.getValue(),
                    100 * e.getValue() / stepMs));
            json.put(e.getKey(), e.getValue());
        }
        return line.toString();
    }

    /**
     * Untimed decode steps before the first row: half a second at batch 1 (1K context, dense), then for each policy a
     * second and a half at the largest batch, up to 480 steps (2K context or the shortest asked for, whichever is less:
     * the largest batch must fit at it; fresh caches every CACHE_STEPS so none grows). Without the
     * first, the first row ran on a cold GPU clock and JIT and measured 2-4% below the same configuration later in the
     * run; without the second, each policy's host path (the step's metadata) ran partly interpreted in its first rows
     * (up to a millisecond a step, against 50-360 us once compiled); a third of a second left dspp's host path at 64
     * rows 1.9-2.2 ms a step in its first row against 0.6-0.7 in the rows after (H100, session 21: about a hundred
     * steps of 64 rows compile it).
     */
    private static void warmUp(CudaBackend b, List<io.dsflow.engine.probe.Eval.Policy> policies, int batch,
                               int shortestContext) {
        int ctx = Math.min(1024, b.config().maxPositions() / 2);
        untimedSteps(b, KvConfig.DENSE, 1, ctx, 256, 500_000_000L);
        ctx = Math.min(Math.min(2048, shortestContext), b.config().maxPositions() / 2);
        for (io.dsflow.engine.probe.Eval.Policy policy : policies) {
            untimedSteps(b, policy.kv(), batch, ctx, 480, 1_500_000_000L);
        }
    }

    /** Steps a warm-up cache takes before fresh ones replace it, within its spare slots. */
    private static final int CACHE_STEPS = CudaBenchCaches.SPARE_SLOTS - 16;

    /** Up to {@code maxSteps} untimed decode steps for up to {@code nanos}, fresh caches every CACHE_STEPS steps. */
    private static void untimedSteps(CudaBackend b, KvConfig kv, int batch, int ctx, int maxSteps, long nanos) {
        long end = System.nanoTime() + nanos;
        for (int done = 0; done < maxSteps && System.nanoTime() < end; ) {
            List<CudaKvCache> caches = new ArrayList<>();
            try {
                for (int i = 0; i < batch; i++) caches.add(CudaBenchCaches.ofLength(b, ctx, kv));
                int[] tokens = new int[batch];
                java.util.Arrays.fill(tokens, 1000);
                for (int s = 0; s < CACHE_STEPS && done < maxSteps && System.nanoTime() < end; s++, done++) {
                    tokens = b.forwardGreedy(step(caches, tokens, ctx + s));
                }
                b.runtime().synchronize();
            } finally {
                for (CudaKvCache c : caches) c.release();
            }
        }
    }

    private static Batch step(List<CudaKvCache> caches, int[] tokens, int position) {
        Batch batch = new Batch();
        for (int i = 0; i < caches.size(); i++) batch.add(caches.get(i), new int[]{tokens[i]}, position);
        return batch;
    }

    /** Bytes read plus bytes written per second by a 1 GiB device-to-device copy (median of 10). */
    static double copyBandwidth(CudaRuntime gpu) {
        long n = 1L << 30;
        CUdeviceptr src = gpu.alloc(n), dst = gpu.alloc(n);
        try {
            for (int i = 0; i < 3; i++) cuMemcpyDtoD(dst, src, n);
            double[] t = new double[10];
            for (int i = 0; i < t.length; i++) {
                gpu.synchronize();
                long s = System.nanoTime();
                cuMemcpyDtoD(dst, src, n);
                gpu.synchronize();
                t[i] = (System.nanoTime() - s) / 1e9;
            }
            java.util.Arrays.sort(t);
            return 2.0 * n / t[t.length / 2];
        } finally {
            gpu.free(src, n);
            gpu.free(dst, n);
        }
    }

    /**
     * --prompt's {prompts, tokens}: "4096" is one prompt (0: no prefill row), "16x1024" sixteen prompts of 1,024 tokens
     * in one forward (both positive).
     */
    static int[] promptShape(String value) {
        String[] parts = value.trim().toLowerCase(Locale.ROOT).split("x", -1);
        try {
            if (parts.length == 1 && Integer.parseInt(parts[0]) >= 0) return new int[]{1, Integer.parseInt(parts[0])};
            if (parts.length == 2) {
                int prompts = Integer.parseInt(parts[0]), tokens = Integer.parseInt(parts[1]);
                if (prompts > 0 && tokens > 0) return new int[]{prompts, tokens};
            }
        } catch (NumberFormatException e) {
            // the message below says what was expected
        }
        throw new UsageException("bench: --prompt takes TOKENS or PROMPTSxTOKENS (e.g. 4096 or 16x1024), not '" + value
                + "'");
    }

    private static int[] ints(Args a, String name, String fallback) {
        int[] v = a.getIntList(name);
        return v != null ? v : java.util.Arrays.stream(fallback.split(",")).mapToInt(Integer::parseInt).toArray();
    }

    /**
     * Cache bytes one sequence's decode step must read at a context: every key and value of the dense layers (and of
     * sparse layers whose candidates fit the budget); in a selecting layer, the candidates' labels at their width (8-bit
     * ones with their fp16 scale per token and label row; a row a query head, or a kv head where the group shares its
     * channels) plus the keys and values of the sinks, selection and window, per
     * query head, or per kv head where a group shares its selection (the attention reads a shared row once for the
     * group).
     */
    static double cacheBytesPerStep(ModelConfig c, KvConfig kv, int context) {
        double full = 2.0 * context * c.kvDim() * 2;
        if (!kv.sparse()) return c.numLayers() * full;
        int cand = kv.candidates(context), r = kv.labelChannels(c.headDim());
        int[] k = kv.layerBudgets(c.numLayers(), context);
        double labelBytes = kv.labelRowBytes(r);
        int readers = kv.gqaSelection() == KvConfig.GqaSelection.PER_HEAD ? c.numHeads() : c.numKvHeads();
        double bytes = 0;
        for (int l = 0; l < c.numLayers(); l++) {
            if (l < kv.denseLayers() || cand <= k[l]) {
                bytes += full;
            } else {
                bytes += (double) cand * c.numHeads() / kv.labelGroup(c.numHeads(), c.numKvHeads()) * labelBytes
                        + (double) readers * (kv.sinks() + k[l] + kv.window()) * c.headDim() * 2 * 2;
            }
        }
        return bytes;
    }
}
