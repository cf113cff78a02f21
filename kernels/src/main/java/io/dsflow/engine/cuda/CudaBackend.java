package io.dsflow.engine.cuda;

import io.dsflow.engine.Backend;
import io.dsflow.engine.Batch;
import io.dsflow.engine.DsflowException;
import io.dsflow.engine.RowCacheCounts;
import io.dsflow.engine.cuda.CudaWeights.Layer;
import io.dsflow.engine.cuda.CudaWeights.Weight;
import io.dsflow.engine.cuda.StepPlan.CacheTables;
import io.dsflow.engine.cuda.StepPlan.Lookahead;
import io.dsflow.engine.cuda.StepPlan.SparseStep;
import io.dsflow.engine.cuda.Workspace.Buffer;
import io.dsflow.engine.kv.CalibrationStatistics;
import io.dsflow.engine.kv.ChannelConfig;
import io.dsflow.engine.kv.KvCache;
import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.kv.RowCache;
import io.dsflow.engine.kv.SparseStepPolicy;
import io.dsflow.engine.model.Architecture;
import io.dsflow.engine.model.ModelConfig;
import io.dsflow.engine.model.ModelWeights;
import io.dsflow.engine.sample.SamplingParams;
import jcuda.driver.CUdeviceptr;
import jcuda.driver.CUevent;

import java.util.Arrays;
import java.util.List;
import java.util.Locale;

/**
 * The forward pass on one NVIDIA GPU, step for step the CPU backend's (which is its specification): weights in bf16
 * ({@link CudaWeights}), activations in f32, KV caches in bf16 ({@link CudaKvCache}), f32 accumulation. A step is
 * planned once ({@link StepPlanner} -> {@link StepPlan}: the rows, their caches, which rows select in each layer, the
 * work buffers of the {@link Workspace}) and then launched layer by layer by {@link #forwardPass}; a decode step runs
 * as a captured graph ({@link GraphCache}). Kernels: src/main/cuda, one family per file.
 * <ul>
 *   <li>{@link #load} uploads a model, {@link #synthetic} makes random weights of a model's shapes on the device;</li>
 *   <li>{@link #forward} runs on the calling thread (the device context is made current there), one at a time;</li>
 *   <li>{@link #close} frees the work buffers and graphs; caches free themselves ({@link KvCache#release}).</li>
 * </ul>
 */
public final class CudaBackend implements Backend {
    /** Decode steps run as captured graphs unless -Ddsflow.cuda.graphs=false. */
    private static final boolean GRAPHS = !"false".equals(System.getProperty("dsflow.cuda.graphs"));

    private final CudaRuntime gpu;
    private final ModelConfig c;
    private final CudaWeights weights;
    private final GraphCache graphs;
    private final Workspace workspace;
    private final StepPlanner planner;
    private final StepProfiler profiler;
    /** Side-stream work of a layer joined back into the main stream, by layer parity. */
    private final ByParity<CUevent> lookaheadDone;
    /**
     * Recorded on the side stream once its query prediction for a layer has read the residual stream, by that layer's
     * parity; the main stream waits for it before the previous layer's output product changes the residual stream.
     */
    private final ByParity<CUevent> lookaheadRead;
    /** Layers whose selecting rows' outputs their attention wrote itself, and layers merged after it (tests). */
    private long directSparseLayers, mergedSparseLayers;

    private CudaBackend(CudaRuntime gpu, ModelConfig c, CudaWeights weights) {
        this.gpu = gpu;
        this.c = c;
        this.weights = weights;
        this.graphs = new GraphCache(gpu);
        this.workspace = new Workspace(gpu, graphs::clear);
        this.planner = new StepPlanner(gpu, c, workspace);
        this.profiler = new StepProfiler(gpu);
        lookaheadDone = new ByParity<>(gpu.newEvent(), gpu.newEvent());
        lookaheadRead = new ByParity<>(gpu.newEvent(), gpu.newEvent());
        if (gpu.blas() != null) rotateProducts(gpu.blas());
    }

    /**
     * Gives cuBLAS's tuning each product shape's weights, every layer's: a tuning times its candidates over them, so
     * that each product reads its weights from memory as a step does, not from the L2.
     */
    private void rotateProducts(Cublas blas) {
        int hidden = c.hiddenSize(), inter = c.intermediateSize();
        int gateUpRows = c.architecture() == Architecture.OPT ? inter : 2 * inter;
        blas.rotateOver(c.qDim() + 2 * c.kvDim(), hidden, layerWeights(Layer::qkv));
        blas.rotateOver(hidden, c.qDim(), layerWeights(Layer::o));
        blas.rotateOver(gateUpRows, hidden, layerWeights(Layer::gateUp));
        blas.rotateOver(hidden, inter, layerWeights(Layer::down));
        blas.rotateOver(c.vocabSize(), c.wordEmbedDim(), List.of(weights.lmHead.ptr()));
    }

    private List<CUdeviceptr> layerWeights(java.util.function.Function<Layer, Weight> which) {
        return Arrays.stream(weights.layers).map(l -> which.apply(l).ptr()).toList();
    }

    /** Uploads a model's weights to a GPU. */
    public static CudaBackend load(ModelWeights w, int device) {
        CudaWeights.requireHeadDim(w.config.headDim());
        CudaRuntime gpu = CudaRuntime.open(device);
        return new CudaBackend(gpu, w.config, CudaWeights.load(gpu, w));
    }

    /** Random bf16 weights of a model's shapes, made on the device (norm weights 1, biases 0): for bench. */
    public static CudaBackend synthetic(ModelConfig config, int device, long seed) {
        CudaWeights.requireHeadDim(config.headDim());
        CudaRuntime gpu = CudaRuntime.open(device);
        return new CudaBackend(gpu, config, CudaWeights.synthetic(gpu, config, seed));
    }

    public CudaRuntime runtime() {
        return gpu;
    }

    @Override
    public ModelConfig config() {
        return c;
    }

    @Override
    public String description() {
        return String.format(Locale.ROOT, "cuda:%d %s (%.1f GB, bf16 weights; products of many rows: %s)",
                gpu.ordinal(), gpu.name(), gpu.totalMemory() / 1e9,
                gpu.blas() != null ? gpu.blas().description() : "gemm_bf16, cuBLAS " + Cublas.absentReason());
    }

    /** Tests: a layer whose candidates all fit its budget selects them all instead of attending densely. */
    void denseFallback(boolean enabled) {
        planner.denseFallback(enabled);
    }

    @Override
    public KvCache newCache(KvConfig config, ChannelConfig channels) {
        if (config.capacity() > 0) throw new DsflowException("a bounded cache (capacity) is not available on cuda yet");
        gpu.makeCurrent();
        if (!config.sparse()) return new CudaKvCache(gpu, c.numLayers(), c.kvDim(), CudaKvCache.INITIAL_CAPACITY);
        // ds / dspp: 16-, 8- or 4-bit labels on the device; the store on the device or (placement=host) in host memory
        if (!SparseAttentionKernels.hasSparseAttention(gpu, c.headDim())) {
            throw new DsflowException("kv policy " + config.policy().id() + " is not built for head_dim " + c.headDim()
                    + " on cuda");
        }
        if (config.lookaheadRerank() > 1) {
            throw new DsflowException("lookahead-rerank is measured on the cpu backend and not built on cuda yet");
        }
        if (config.gqaSelection() == KvConfig.GqaSelection.UNION) {
            throw new DsflowException("gqa=union is measured on the cpu backend and not built on cuda yet (per_head,"
                    + " max or mean run on cuda)");
        }
        if (channels == null) {
            throw new DsflowException("kv policy " + config.policy().id() + " needs calibrated channels");
        }
        int group = c.numHeads() / c.numKvHeads();
        if (config.rowCache() > 0 && !(CudaOps.hasSparseGroupAttention(gpu, c.headDim(), 1)
                && CudaOps.hasSparseGroupAttention(gpu, c.headDim(), group))) {
            // row_cache_serve gives the group's first head the places, which the group kernels read for the group
            throw new DsflowException("row-cache is not built on cuda for head_dim " + c.headDim() + " with " + group
                    + " query heads a kv head (its grouped sparse attention is not in this build)");
        }
        prepare(config);
        int r = config.labelChannels(c.headDim()), labelGroup = config.labelGroup(c.numHeads(), c.numKvHeads());
        if (r > 64) throw new DsflowException("at most 64 label channels on cuda, not " + r);
        if (labelGroup > 1 && labelGroup * r > SelectKernels.MAX_QUERY_CHANNELS) {   // a summed query's channels
            throw new DsflowException("at most " + SelectKernels.MAX_QUERY_CHANNELS + " label channels over a label"
                    + " row's heads on cuda, not " + labelGroup + " x " + r);
        }
        channels.requireLabelRows(config, c.numHeads(), c.numKvHeads(), c.headDim());
        int[][][] ch = new int[c.numLayers()][][];
        for (int l = Math.min(config.denseLayers(), c.numLayers()); l < c.numLayers(); l++) {
            ch[l] = new int[c.numHeads()][];
            for (int h = 0; h < c.numHeads(); h++) ch[l][h] = channels.top(l, h, r);
        }
        return new CudaKvCache(gpu, c.numLayers(), c.kvDim(), CudaKvCache.INITIAL_CAPACITY, config, c.numHeads(),
                c.numKvHeads(), ch, labelGroup);
    }

    /** A dense cache whose prefills add their rows' channel statistics to {@code stats} on the device. */
    @Override
    public KvCache newCalibrationCache(CalibrationStatistics stats) {
        gpu.makeCurrent();
        return CudaKvCache.calibrating(gpu, c.numLayers(), c.numHeads(), c.numKvHeads(), c.headDim(), stats);
    }

    /**
     * Device bytes a cache of {@code tokens} tokens holds: keys and values per layer in bf16 (and the sparse layers'
     * labels) at the capacity a cache reserved for them takes (CudaKvCache#reserveTotal, as the scheduler reserves each
     * turn at admission: rounded up to 64 slots, at least 256), each block rounded to the memory pool's size class.
     * Host placement: the sparse layers' keys and values are in host memory ({@link #hostCacheBytes}) and their rings
     * of sinks and window on the device instead.
     */
    @Override
    public long cacheBytes(KvConfig kv, long tokens) {
        long cap = CudaKvCache.capacityFor(tokens);
        int sparseLayers = kv.sparseLayers(c.numLayers());
        boolean host = kv.placement() == KvConfig.Placement.HOST;
        // the device layers' keys and values: one block a cache (CudaKvCache's storeBlock)
        long bytes = CudaRuntime.sizeClass(2L * (host ? c.numLayers() - sparseLayers : c.numLayers())
                * cap * c.kvDim() * 2);
        if (kv.sparse()) {   // labels of the sparse layers (fp16, or int8 / int4 and fp16 scales), channel tables
            int rows = c.numHeads() / kv.labelGroup(c.numHeads(), c.numKvHeads()), r = kv.labelChannels(c.headDim());
            // one block of every sparse layer's labels (and one of their scales)
            bytes += CudaRuntime.sizeClass(sparseLayers * cap * rows * kv.labelValueBytes(r));
            if (kv.labelBits() < 16) bytes += CudaRuntime.sizeClass(sparseLayers * cap * rows * 2L);
            bytes += sparseLayers * CudaRuntime.sizeClass((long) c.numHeads() * r * 4);   // a head's r channels
            long ring = (long) (kv.sinks() + kv.window()) * c.kvDim() * 2;
            if (host && ring > 0) bytes += 2L * sparseLayers * CudaRuntime.sizeClass(ring);
            if (host && kv.rowCache() > 0) bytes += rowCacheBytes(kv, tokens, cap);
        }
        return bytes;
    }

    /**
     * Device bytes of a host-placed cache's row cache (CudaRowCache) at {@code tokens} tokens: each sparse layer's
     * places for F times the most rows a step selects, at that length or at the dense-until edge (the ring keeps the
     * places it grew to while the floor T0^2 / T fell), and its slots' places.
     */
    private long rowCacheBytes(KvConfig kv, long tokens, long cap) {
        SparseStepPolicy policy = new SparseStepPolicy(kv, c.numLayers());
        int[] rows = new int[c.numLayers()];
        // the rows a step selects at this length, and at the dense-until edge, where the floor T0^2 / T peaks
        for (long t : new long[]{tokens, Math.min(tokens, kv.denseUntil() + 1L)}) {
            SparseStepPolicy.LayerStep[] steps = policy.step(1, t);
            for (int l = 0; l < rows.length; l++) if (steps[l].selects()) rows[l] = Math.max(rows[l], steps[l].kept());
        }
        long bytes = 0;
        for (int l = 0; l < c.numLayers(); l++) {
            if (rows[l] == 0) continue;
            int places = CudaRowCache.allocation(RowCache.places(kv.rowCache(), rows[l]));
            bytes += 2 * CudaRuntime.sizeClass((long) places * c.kvDim() * 2)
                    + CudaRuntime.sizeClass(4 * RowCacheKernels.indexInts(c.numKvHeads(), places));
        }
        return bytes + (long) kv.sparseLayers(c.numLayers()) * CudaRuntime.sizeClass(4 * cap * c.numKvHeads());
    }

    /** Pinned host bytes a cache of {@code tokens} tokens holds: host placement's sparse-layer keys and values. */
    @Override
    public long hostCacheBytes(KvConfig kv, long tokens) {
        if (kv.placement() != KvConfig.Placement.HOST) return 0;
        return 2L * kv.sparseLayers(c.numLayers()) * CudaKvCache.capacityFor(tokens) * c.kvDim() * 2;
    }

    /**
     * The device's free memory less a reserve for the working buffers of a step (10% of the device, at least 1 GB):
     * the budget for KV caches, which the decode operator admits conversations against.
     */
    @Override
    public long deviceCacheBudget() {
        gpu.makeCurrent();
        long free = gpu.freeMemory();
        return Math.max(0, free - Math.max(1L << 30, gpu.totalMemory() / 10));
    }

    @Override
    public boolean gpu() {
        return true;
    }

    @Override
    public float[][] forward(Batch batch) {
        float[][] logits = new float[batch.segments().size()][c.vocabSize()];
        CUdeviceptr d = forwardToDevice(batch);
        int vocab = c.vocabSize();
        float[] flat = new float[logits.length * vocab];
        gpu.download(flat, d, flat.length);
        for (int s = 0; s < logits.length; s++) System.arraycopy(flat, s * vocab, logits[s], 0, vocab);
        return logits;
    }

    /**
     * The next token of each segment, sampled on the device (argmax for greedy rows, sample_rows for the others with
     * the host's uniform draw for (seed, step)); only the ids cross to the host.
     */
    @Override
    public int[] forwardSampled(Batch batch, SamplingParams[] params, int[] steps) {
        int n = batch.segments().size(), vocab = c.vocabSize();
        boolean sampling = Arrays.stream(params).anyMatch(p -> p != null && !p.greedy());
        // the draw's buffers (only when a row samples) come first: growing a buffer drops the captured graphs, which
        // must not happen mid-step
        CUdeviceptr drawn = null, drawParams = null, scratch = null;
        if (sampling) {
            drawn = workspace.ensure(Buffer.SAMPLED, n);
            drawParams = workspace.ensure(Buffer.DRAW_PARAMS, 8L * n);
            scratch = workspace.ensure(Buffer.SAMPLE_SCRATCH, 2L * n * vocab);
        }
        CUdeviceptr ids = workspace.ensure(Buffer.ARGMAX, n);
        CUdeviceptr argmaxPartials = workspace.ensure(Buffer.ARGMAX_PARTIALS,
                2L * n * SampleKernels.argmaxSplits(gpu, n, vocab));
        CUdeviceptr argmaxDone = workspace.ensureZeroed(Buffer.ARGMAX_DONE, n);
        CUdeviceptr logits = forwardToDevice(batch);
        SampleKernels.argmax(gpu, n, ids, logits, vocab, argmaxPartials, argmaxDone);
        int[] out = new int[n];
        if (!sampling) {
            gpu.download(out, ids, n);
            return mask(out, params);
        }
        double[] draw = CudaOps.drawParams(params, steps);
        java.nio.ByteBuffer st = gpu.staging(draw.length * 8);
        for (double v : draw) st.putDouble(v);
        gpu.uploadStaging(drawParams, draw.length * 8);
        SampleKernels.sampleRows(gpu, n, drawn, logits, drawParams, scratch, vocab);
        int[] greedy = new int[n];
        gpu.download(greedy, ids, n);   // waits for both kernels
        gpu.download(out, drawn, n);
        for (int i = 0; i < n; i++) if (params[i] != null && params[i].greedy()) out[i] = greedy[i];
        return mask(out, params);
    }

    private static int[] mask(int[] ids, SamplingParams[] params) {
        for (int i = 0; i < ids.length; i++) if (params[i] == null) ids[i] = -1;
        return ids;
    }

    /** Greedy next tokens of each segment, sampled on the device (only the ids cross to the host). */
    public int[] forwardGreedy(Batch batch) {
        int n = batch.segments().size();
        SamplingParams[] greedy = new SamplingParams[n];
        Arrays.fill(greedy, SamplingParams.greedy(1));
        return forwardSampled(batch, greedy, new int[n]);
    }

    /**
     * One eager forward pass (no graph) with a CUDA event at the start of each stage of every layer on each stream
     * (bench --profile).
     */
    public StepProfiler.Profile profileStep(Batch batch) {
        gpu.makeCurrent();
        return profiler.profile(() -> forwardToDevice(batch), c.numLayers());
    }

    /** Host time of the decode steps run as graphs since the last {@link #resetHostTime} (bench). */
    public GraphCache.HostTime hostTime() {
        return graphs.hostTime();
    }

    public void resetHostTime() {
        graphs.resetHostTime();
    }

    /** The forward pass, planned, then launched (a decode step: as its captured graph); returns the logits' buffer. */
    private CUdeviceptr forwardToDevice(Batch batch) {
        gpu.makeCurrent();
        long plannedAt = System.nanoTime();
        StepPlan plan = planner.plan(batch, GRAPHS && batch.rows() == batch.segments().size() && !profiler.active());
        // a graph would keep a calibrating cache's accumulators, which the host reads after the step
        boolean graph = plan.graph() && plan.calibrating().isEmpty();
        if (graph) {
            graphs.launch(plan.graphKey(), () -> forwardPass(plan), plannedAt);
        } else {
            forwardPass(plan);
        }
        for (Batch.Segment s : batch.segments()) {
            CudaKvCache cache = CudaKvCache.of(s.cache());
            for (int l = 0; l < c.numLayers(); l++) cache.appended(l, s.tokens().length);
        }
        for (StepPlan.Calibrating cal : plan.calibrating()) cal.cache().calibration().collect(cal.rows());
        return plan.logits();
    }

    /**
     * The forward pass's launches and nothing else (no allocation; the only copies are a host-placed prefill's stage
     * copies, and prefills are never captured): what a graph captures. Numbered as CpuBackend.forward.
     */
    private void forwardPass(StepPlan p) {
        int rows = p.rows(), hidden = c.hiddenSize(), qDim = c.qDim(), inter = c.intermediateSize();
        boolean pre = c.layerNormBefore();
        CUdeviceptr x = workspace.get(Buffer.RESIDUAL), qkv = workspace.get(Buffer.QKV);
        CUdeviceptr att = workspace.get(Buffer.ATTENTION);
        CudaOps.GemmBuffers gemmInput = gemmInput();
        // many rows: the products of the hidden state (q/k/v, gate/up) on tensor cores, whose bf16 inputs the pre-norms
        // and SwiGLU write directly (CudaOps.linear makes the same choice from the same test); the attention writes
        // the output product's bf16 input likewise
        boolean tc = CudaOps.tensorCores(rows, hidden);
        CUdeviceptr attBf16 = CudaOps.tensorCores(rows, qDim) ? gemmInput.inputBf16() : null;

        // 1. token embedding (OPT: plus the learned position, after the projection when there is one)
        profiler.mark("embedding");
        embed(p);
        for (int layer = 0; layer < c.numLayers(); layer++) {
            Layer w = weights.layers[layer];
            profiler.layer(layer);
            // 1b. lookahead: the next layer's selection (and its host-placed rows) on the side stream meanwhile
            if (aheadNext(p, layer)) lookAhead(p, layer + 1);
            // 2. q, k, v from the attention sublayer's input: RMSNorm in the product's prologue (LayerNorm: a norm
            //    kernel first; post-norm: the residual stream itself)
            profiler.mark("q/k/v product");
            SublayerInput attnIn = sublayerInput(w.attnNorm(), w.attnNormBias(), rows, tc);
            CudaOps.linear(gpu, qkv, attnIn.x(), gemmInput, attnIn.bf16(), rows, w.qkv().ptr(), ptr(w.qkvBias()),
                    qDim + 2 * c.kvDim(), hidden, false, attnIn.norm(), false);
            // 3. rotary positions on q and k; every row's key and value to its sequence's cache (dspp: with its labels
            //    and ring slots, in the same launch); a host-placed prefill's to its device stage
            for (StepPlan.HostPrefill hp : p.hostPrefills()) if (hp.cache().onHost(layer)) hp.stageHistory(gpu, layer);
            appendKeysValues(p, layer);
            //    calibration's prefills: the rows' post-RoPE q and k channel statistics (CudaCalibration)
            for (StepPlan.Calibrating cal : p.calibrating()) {
                cal.cache().calibration().add(layer, qkv, cal.firstRow(), cal.rows(), qDim + 2 * c.kvDim());
            }
            // 4. each row attends over its cache: prefill tiles and dense decode rows, then the selecting rows
            attention(p, layer, attBf16);
            for (StepPlan.HostPrefill hp : p.hostPrefills()) if (hp.cache().onHost(layer)) hp.writeBack(gpu, layer);
            // 5. output projection, added into the residual stream by its epilogue (post-norm: then the norm), once the
            //    side stream's prediction for the next layer has read the residual stream
            profiler.mark("output product");
            if (aheadNext(p, layer)) gpu.await(lookaheadRead.of(layer + 1));
            CudaOps.linear(gpu, x, att, gemmInput, attBf16 != null, rows, w.o().ptr(), ptr(w.oBias()), hidden, qDim,
                    false, null, true);
            if (!pre) norm(x, x, null, w.attnNorm(), w.attnNormBias(), rows);
            // 6. MLP: SwiGLU (in the gate/up product's epilogue) or OPT's ReLU; the down projection adds into x
            profiler.mark("mlp");
            mlp(w, rows, tc);
            if (!pre) norm(x, x, null, w.mlpNorm(), w.mlpNormBias(), rows);
        }
        // 7. last row of each segment, final norm (RMSNorm: in lm_head's prologue), lm_head
        profiler.layer(-1);
        profiler.mark("lm head");
        lmHead(p);
    }

    /** Step 1: the rows' token embeddings (OPT: plus learned positions) into the residual stream. */
    private void embed(StepPlan p) {
        int rows = p.rows(), hidden = c.hiddenSize();
        CUdeviceptr x = workspace.get(Buffer.RESIDUAL), tokens = p.inputs().tokens();
        CUdeviceptr positions = p.inputs().positions();
        if (weights.projectIn == null) {
            EmbeddingKernels.embed(gpu, x, weights.embed().ptr(), tokens, rows, c.wordEmbedDim(),
                    ptr(weights.positionTable), positions, ModelConfig.OPT_POSITION_OFFSET);
            return;
        }
        CUdeviceptr emb = workspace.get(Buffer.EMBEDDED), pos = workspace.get(Buffer.POSITIONS);
        EmbeddingKernels.embed(gpu, emb, weights.embed().ptr(), tokens, rows, c.wordEmbedDim(), null, positions, 0);
        linear(x, emb, rows, weights.projectIn, hidden, c.wordEmbedDim());
        EmbeddingKernels.embed(gpu, pos, weights.positionTable.ptr(), positions, rows, hidden, null, positions, 0);
        ActivationKernels.residualAdd(gpu, x, pos, (long) rows * hidden);
    }

    /**
     * Step 3: RoPE on q and k, each row's key and value into its cache; dspp: with its labels and ring slots in one
     * launch; ds: Double Sparsity's label gather after it, as a launch of its own.
     */
    private void appendKeysValues(StepPlan p, int layer) {
        SparseStep sp = p.sparse();
        CacheTables t = p.caches();
        int heads = c.numHeads(), kvHeads = c.numKvHeads(), hd = c.headDim(), qkvDim = c.qDim() + 2 * c.kvDim();
        long at = CacheTables.layerOffset(layer, p.segments());
        CUdeviceptr qkv = workspace.get(Buffer.QKV);
        CUdeviceptr kt = t.keys().withByteOffset(at), vt = t.values().withByteOffset(at);
        StepPlan.Inputs in = p.inputs();
        if (sp != null && sp.fusedAppend()) {
            profiler.mark("rope + kv + label append");
            LabelAppendKernels.kvLabelAppendRope(gpu, p.rows(), qkv, in.positions(), weights.invFreq, kt, vt,
                    t.labels().withByteOffset(at),
                    t.channels().withByteOffset(at), t.scales().withByteOffset(at), t.ringKeys().withByteOffset(at),
                    t.ringValues().withByteOffset(at), in.segmentOf(), in.slot(), in.lastRows(), t.segmentInfo(),
                    heads, kvHeads, hd, qkvDim);
            return;
        }
        profiler.mark("rope + kv append");
        KvAppendKernels.kvAppendRope(gpu, p.rows(), qkv, in.positions(), weights.invFreq, kt, vt, in.segmentOf(),
                in.slot(), heads, kvHeads, hd, qkvDim);
        if (sp != null) {
            profiler.mark("label append");
            LabelAppendKernels.labelAppend(gpu, p.rows(), sp.maxR(), qkv,
                    t.labels().withByteOffset(at), t.channels().withByteOffset(at), t.scales().withByteOffset(at),
                    t.ringKeys().withByteOffset(at), t.ringValues().withByteOffset(at), in.segmentOf(), in.slot(),
                    in.lastRows(), t.segmentInfo(), heads, kvHeads, hd, qkvDim);
        }
    }

    /**
     * Step 4: prefill tiles on tensor cores and the dense decode rows split and merged; with sparse caches this layer's
     * selecting rows: the look-ahead rows first (selected on the side stream, staged ones from their device stage),
     * then the rows selecting here (labels, top-k), each run's attention over sinks, selection and window, one merge.
     * Into the ATTENTION buffer (f32), or into {@code outBf16} where that is not null.
     */
    private void attention(StepPlan p, int layer, CUdeviceptr outBf16) {
        SparseStep sp = p.sparse();
        StepPlan.DenseAttention d = p.dense();
        long at = CacheTables.layerOffset(layer, p.segments());
        CUdeviceptr att = workspace.get(Buffer.ATTENTION), q = workspace.get(Buffer.QKV);
        CUdeviceptr kt = p.caches().keys().withByteOffset(at), vt = p.caches().values().withByteOffset(at);
        int heads = c.numHeads(), kvHeads = c.numKvHeads(), hd = c.headDim(), qkvDim = c.qDim() + 2 * c.kvDim();
        profiler.mark("attention (dense)");
        CudaOps.attention(gpu, att, outBf16, q, qkvDim, kt, vt, p.inputs().segmentOf(), p.inputs().attendedLength(),
                d.tileCount(), d.tiles(), sp == null ? d.decodeRows() : sp.denseCount()[layer],
                sp == null ? d.rowsOf() : sp.denseRows(layer), d.partials(), d.splits(), d.chunk(), d.claims(),
                heads, kvHeads, hd);
        int n = sp == null ? 0 : sp.selectCount()[layer];
        if (n == 0) return;
        Lookahead la = sp.ahead();
        int ahead = sp.aheadCount(layer), staged = la == null ? 0 : la.stagedCount()[layer];
        // every run written by the attention itself (one split, shared selections on the device): nothing to merge
        int splits = sp.splits();
        boolean direct = (staged == 0 || writesOutputs(la.stagedKinds(), splits))
                && (ahead <= staged || writesOutputs(la.aheadKinds(), splits))
                && (n <= ahead || writesOutputs(sp.mainKinds(), splits));
        Output o = direct ? new Output(outBf16 == null ? att : null, outBf16) : new Output(null, null);
        if (ahead > 0) {
            profiler.mark("wait for the side stream");
            gpu.await(lookaheadDone.of(layer));
            profiler.mark("attention (look-ahead rows)");
            CUdeviceptr sel = la.selected().of(layer);
            if (staged > 0) {
                attendSelected(p, layer, 0, staged, la.stageKeys().of(layer), la.stageValues().of(layer), sel,
                        la.stagedKinds(), o);
            }
            if (ahead > staged) {
                attendSelected(p, layer, staged, ahead - staged, selectedKeys(p, layer), selectedValues(p, layer),
                        sel.withByteOffset(4L * staged * heads * sp.maxK()), la.aheadKinds(), o);
            }
        }
        if (n > ahead) {
            profiler.mark(sp.fusedSelect() ? "selection (fused)" : "selection (scores, top-k)");
            select(p, layer, ahead, n - ahead, q, qkvDim, sp.sharedOnly(), sp.selected(), sp.scores());
            if (sp.servedMain()[layer] > 0) {
                profiler.mark("row cache (misses over the link)");
                serveRows(p, layer, ahead, n - ahead, sp.selected());
            }
            profiler.mark("attention (selected rows)");
            attendSelected(p, layer, ahead, n - ahead, selectedKeys(p, layer), selectedValues(p, layer),
                    sp.selected(), sp.mainKinds(), o);
        }
        if (direct) {
            directSparseLayers++;
            return;
        }
        mergedSparseLayers++;
        AttentionKernels.attentionMerge(gpu, n, att, outBf16, sp.partials(), sp.selectRows(layer), heads, hd,
                sp.splits());
    }

    /** How many layers' selecting rows had their outputs written by their attention, and how many by a merge. */
    record SparseOutputCounts(long direct, long merged) {
    }

    /**
     * Tests: the layers whose selecting rows attended since the last call, by how their outputs were written (directly
     * by the attention, or by attention_merge after it), as launched: a decode step's graph counts when its launches
     * run and when they are captured, not when it is replayed. The counts start again at zero.
     */
    SparseOutputCounts takeSparseOutputCounts() {
        SparseOutputCounts counts = new SparseOutputCounts(directSparseLayers, mergedSparseLayers);
        directSparseLayers = 0;
        mergedSparseLayers = 0;
        return counts;
    }

    /** Where a run's attention writes its outputs itself (f32 or bf16), or neither (partials, then the merge). */
    private record Output(CUdeviceptr f32, CUdeviceptr bf16) {
    }

    /** Whether a run of selecting rows of these kinds has its outputs written by its attention (no merge). */
    private boolean writesOutputs(StepPlan.RowKinds kinds, int splits) {
        int group = c.numHeads() / c.numKvHeads();
        return kinds != null && CudaOps.writesSparseOutputs(gpu, c.headDim(), group, splits, kinds.kernelBits());
    }

    /** Step 6: the MLP sublayer, its down projection added into the residual stream. */
    private void mlp(Layer w, int rows, boolean tc) {
        int hidden = c.hiddenSize(), inter = c.intermediateSize();
        CUdeviceptr x = workspace.get(Buffer.RESIDUAL);
        CUdeviceptr up = workspace.get(Buffer.MLP), actBf16 = workspace.get(Buffer.MLP_BF16);
        CudaOps.GemmBuffers gemmInput = new CudaOps.GemmBuffers(workspace.get(Buffer.GEMM_INPUT),
                CudaOps.swigluOnCublas(gpu, rows, hidden) ? workspace.get(Buffer.GATE_UP) : null);
        SublayerInput in = sublayerInput(w.mlpNorm(), w.mlpNormBias(), rows, tc);
        if (c.architecture() == Architecture.OPT) {
            CudaOps.linear(gpu, up, in.x(), gemmInput, in.bf16(), rows, w.gateUp().ptr(), ptr(w.gateUpBias()), inter,
                    hidden, false, in.norm(), false);
            ActivationKernels.relu(gpu, up, (long) rows * inter);
            CudaOps.linear(gpu, x, up, gemmInput, false, rows, w.down().ptr(), ptr(w.downBias()), hidden, inter, false,
                    null, true);
            return;
        }
        CUdeviceptr act = tc ? actBf16 : up;   // [rows][inter]: bf16 for the GEMM, f32 for the GEMV
        CudaOps.linear(gpu, act, in.x(), gemmInput, in.bf16(), rows, w.gateUp().ptr(), ptr(w.gateUpBias()), 2 * inter,
                hidden, true, in.norm(), false);
        // the down product reads act as the gate/up product wrote it (bf16 on tensor cores); a model whose
        // intermediate width the tensor-core products cannot take where its hidden width can (not a multiple of 8)
        // is refused there ("the GEMV reads f32 inputs") rather than read wrongly
        CudaOps.linear(gpu, x, up, new CudaOps.GemmBuffers(actBf16, null), tc, rows, w.down().ptr(),
                ptr(w.downBias()), hidden, inter, false, null, true);
    }

    /** Step 7: each segment's last row through the final norm (and OPT's projection) and lm_head into the logits. */
    private void lmHead(StepPlan p) {
        int nseg = p.segments(), hidden = c.hiddenSize();
        CUdeviceptr last = workspace.get(Buffer.LAST_ROWS);
        SampleKernels.gatherRows(gpu, last, workspace.get(Buffer.RESIDUAL), p.inputs().lastRows(), nseg, hidden);
        CudaOps.RmsNorm headNorm = null;
        if (c.layerNormBefore() && weights.finalNorm != null) {
            headNorm = weights.projectOut == null ? fusedNorm(weights.finalNorm, weights.finalNormBias) : null;
            if (headNorm == null) norm(last, last, null, weights.finalNorm, weights.finalNormBias, nseg);
        }
        if (weights.projectOut != null) {
            CUdeviceptr projected = workspace.get(Buffer.PROJECTED);
            linear(projected, last, nseg, weights.projectOut, c.wordEmbedDim(), hidden);
            last = projected;
        }
        CudaOps.linear(gpu, p.logits(), last, gemmInput(), false, nseg, weights.lmHead.ptr(), null, c.vocabSize(),
                c.wordEmbedDim(), false, headNorm, false);
    }

    /** Whether layer + 1 has look-ahead rows, whose side-stream work starts with layer {@code layer}. */
    private boolean aheadNext(StepPlan p, int layer) {
        return p.sparse() != null && layer + 1 < c.numLayers() && p.sparse().aheadCount(layer + 1) > 0;
    }

    /**
     * Step 1b, side-stream work for layer {@code layer}'s look-ahead rows, made while layer - 1 runs on the main
     * stream: the query predicted from their residual stream (read in place: the main stream's output product of
     * layer - 1 waits for {@link #lookaheadRead}; a copy made first on the main stream cost a launch a layer, 4.5 us,
     * on its critical path) through this layer's norm and q projection (label channels only; each block normalises the
     * row itself, which measured faster than a norm kernel first), the selection, and the staged rows' keys and values
     * gathered from host memory; the main stream waits for {@link #lookaheadDone} at this layer's attention.
     */
    private void lookAhead(StepPlan p, int layer) {
        SparseStep sp = p.sparse();
        Lookahead la = sp.ahead();
        int n = la.aheadCount()[layer], staged = la.stagedCount()[layer];
        int hidden = c.hiddenSize(), heads = c.numHeads();
        Layer w = weights.layers[layer];
        CUdeviceptr x = workspace.get(Buffer.RESIDUAL), desc = sp.descriptors(layer, 0);
        long at = CacheTables.layerOffset(layer, p.segments());
        gpu.onSide(() -> {
            profiler.mark("look-ahead query");
            boolean pre = c.layerNormBefore();
            LookaheadKernels.predictLabelQueries(gpu, n, sp.maxR(), la.queries(), x,
                    pre ? w.attnNorm().ptr() : null, pre ? ptr(w.attnNormBias()) : null, c.normEps(), w.qkv().ptr(),
                    ptr(w.qkvBias()), p.inputs().positions(), weights.invFreq,
                    p.caches().channels().withByteOffset(at), p.inputs().segmentOf(), desc, heads, c.headDim(),
                    hidden);
            gpu.record(lookaheadRead.of(layer));
            profiler.mark("look-ahead selection");
            select(p, layer, 0, n, la.queries(), c.qDim(), la.sharedOnly(), la.selected().of(layer), la.scores());
            if (sp.servedAhead()[layer] > 0) {
                profiler.mark("look-ahead row cache (misses over the link)");
                serveRows(p, layer, staged, n - staged,
                        la.selected().of(layer).withByteOffset(4L * staged * heads * sp.maxK()));
            }
            if (staged > 0) {
                profiler.mark("look-ahead gather (host rows)");
                // about 64 blocks (a few MB in flight): the link is the limit. Fewer blocks, or blocks holding whole
                // multiprocessors, left the products beside them faster but the gather slower, the step no faster;
                // 132 blocks were slower (H100, batch 1 / 8 at 32K: dev/cuda/README.md)
                int units = staged * c.numKvHeads();
                int blocks = units * Math.max(1, Math.min((sp.maxK() + 63) / 64, 64 / units));
                LookaheadKernels.gatherSelectedRows(gpu, blocks,
                        la.selected().of(layer), p.caches().keys().withByteOffset(at),
                        p.caches().values().withByteOffset(at), la.stageKeys().of(layer), la.stageValues().of(layer),
                        p.inputs().segmentOf(), desc, staged, heads, c.numKvHeads(), c.headDim(), sp.maxK());
            }
            profiler.mark(StepProfiler.SIDE_IDLE);
            gpu.record(lookaheadDone.of(layer));
        });
    }

    /**
     * The selection of {@code n} of a layer's selecting rows from row {@code from} on, ranked by q ([rows][qStride]):
     * into selected ([n * H][maxK]): fused (dspp), or scores then top-k through {@code scores} ([n * H][maxCand]).
     * {@code sharedOnly}: each of these rows shares its group's selection.
     */
    private void select(StepPlan p, int layer, int from, int n, CUdeviceptr q, int qStride, boolean sharedOnly,
                        CUdeviceptr selected, CUdeviceptr scores) {
        SparseStep sp = p.sparse();
        CacheTables t = p.caches();
        int heads = c.numHeads(), kvHeads = c.numKvHeads(), hd = c.headDim();
        long at = CacheTables.layerOffset(layer, p.segments());
        CUdeviceptr lt = t.labels().withByteOffset(at), ct = t.channels().withByteOffset(at);
        CUdeviceptr sct = t.scales().withByteOffset(at), desc = sp.descriptors(layer, from);
        if (sp.fusedSelect()) {
            CudaOps.select(gpu, selected, q, lt, ct, sct, p.inputs().segmentOf(), desc, n, heads, kvHeads, sharedOnly,
                    hd, qStride, sp.maxCand(), sp.maxK());
        } else {
            SelectKernels.sparseScores(gpu, n, scores, q, lt, ct, sct,
                    p.inputs().segmentOf(), desc, heads, hd, qStride, sp.maxCand());
            SelectKernels.sparseTopk(gpu, n, selected, scores, desc, heads, kvHeads, sp.maxCand(), sp.maxK());
        }
    }

    /**
     * The shared selections of {@code n} of a layer's selecting rows from row {@code from} on ({@code selected}: [n * H]
     * [maxK] store slots) served from their sequences' device row caches: rewritten to places, the misses copied in
     * from host memory; rows of sequences without one are left as they are.
     */
    private void serveRows(StepPlan p, int layer, int from, int n, CUdeviceptr selected) {
        SparseStep sp = p.sparse();
        CacheTables t = p.caches();
        long at = CacheTables.layerOffset(layer, p.segments());
        RowCacheKernels.serve(gpu, n, selected, t.keys().withByteOffset(at), t.values().withByteOffset(at),
                t.selectedKeys().withByteOffset(at), t.selectedValues().withByteOffset(at),
                t.rowIndex().withByteOffset(at), p.inputs().segmentOf(), sp.descriptors(layer, from), c.numHeads(),
                c.numKvHeads(), c.headDim(), sp.maxK(), sp.rowCacheStats());
    }

    /** This layer's table of where the selected keys are read (StepPlan.CacheTables#selectedKeys). */
    private static CUdeviceptr selectedKeys(StepPlan p, int layer) {
        return p.caches().selectedKeys().withByteOffset(CacheTables.layerOffset(layer, p.segments()));
    }

    private static CUdeviceptr selectedValues(StepPlan p, int layer) {
        return p.caches().selectedValues().withByteOffset(CacheTables.layerOffset(layer, p.segments()));
    }

    /**
     * Attention of {@code n} of a layer's selecting rows from row {@code from} on over sinks, window and their
     * selection ({@code selected}: [n * H][maxK] slots of the stores in kTable / vTable), into the layer's partials at
     * those rows; {@code kinds} choose the kernels (null: one warp a split).
     */
    private void attendSelected(StepPlan p, int layer, int from, int n, CUdeviceptr kTable, CUdeviceptr vTable,
                                CUdeviceptr selected, StepPlan.RowKinds kinds, Output out) {
        SparseStep sp = p.sparse();
        int heads = c.numHeads(), hd = c.headDim();
        long at = CacheTables.layerOffset(layer, p.segments());
        CudaOps.sparseAttention(gpu, sp.partials().withByteOffset(4L * from * heads * sp.splits() * (hd + 2)),
                workspace.get(Buffer.QKV), kTable, vTable, p.caches().ringKeys().withByteOffset(at),
                p.caches().ringValues().withByteOffset(at), p.inputs().segmentOf(), p.inputs().attendedLength(),
                sp.descriptors(layer, from), selected, workspace.get(Buffer.CLAIMS), n, heads, c.numKvHeads(), hd,
                sp.splits(), c.qDim() + 2 * c.kvDim(), sp.maxK(), kinds == null ? 0 : kinds.kernelBits(), out.f32(),
                out.bf16());
    }

    /** y[rows][out] = x[rows][in] W^T (CudaOps.linear: tensor cores for many rows, the GEMV for a decode batch). */
    private void linear(CUdeviceptr y, CUdeviceptr x, int rows, Weight w, int out, int in) {
        CudaOps.linear(gpu, y, x, gemmInput(), false, rows, w.ptr(), null, out, in, false, null, false);
    }

    /** out = norm(x): RMSNorm, or LayerNorm when there is a bias; into outBf16 (bf16) instead if given. */
    private void norm(CUdeviceptr x, CUdeviceptr out, CUdeviceptr outBf16, Weight w, Weight b, int rows) {
        if (b == null) {
            NormKernels.addRmsNorm(gpu, x, null, out, outBf16, w.ptr(), rows, c.hiddenSize(), c.normEps());
        } else {
            NormKernels.addLayerNorm(gpu, x, null, out, outBf16, w.ptr(), b.ptr(), rows, c.hiddenSize(),
                    c.normEps());
        }
    }

    /**
     * A sublayer's input to its first product: the residual stream x with the product applying the RMSNorm itself, or
     * (LayerNorm, or a GEMM's bf16 input) xn written by a norm kernel first; post-norm models read x as it is.
     */
    private record SublayerInput(CUdeviceptr x, boolean bf16, CudaOps.RmsNorm norm) {
    }

    private SublayerInput sublayerInput(Weight normWeight, Weight normBias, int rows, boolean tensorCores) {
        CUdeviceptr x = workspace.get(Buffer.RESIDUAL), xn = workspace.get(Buffer.NORMED);
        CudaOps.RmsNorm fused = fusedNorm(normWeight, normBias);
        if (!c.layerNormBefore() || fused != null) return new SublayerInput(x, false, fused);
        norm(x, xn, tensorCores ? workspace.get(Buffer.GEMM_INPUT) : null, normWeight, normBias, rows);
        return new SublayerInput(xn, tensorCores, null);
    }

    /** The RMSNorm a product applies to its input itself, or null where the norm is a kernel of its own. */
    private CudaOps.RmsNorm fusedNorm(Weight w, Weight bias) {
        return bias == null && c.layerNormBefore() ? new CudaOps.RmsNorm(w.ptr(), c.normEps()) : null;
    }

    /** The bf16 input buffer of a product on tensor cores that is no SwiGLU product. */
    private CudaOps.GemmBuffers gemmInput() {
        return new CudaOps.GemmBuffers(workspace.get(Buffer.GEMM_INPUT), null);
    }

    private static CUdeviceptr ptr(Weight w) {
        return w == null ? null : w.ptr();
    }

    /** Bytes of the model's weights (in device memory, but for the embedding table after placeEmbeddings(true)). */
    public long weightBytes() {
        return weights.bytes();
    }

    /**
     * Rows asked of the sequences' device row caches (KvConfig#rowCache) since the last call, and rows they missed
     * (copied over the host link): a kv head's row each, a step too large for the kernel's rows all missed (read from
     * host memory); the counters start again at zero. Waits for the device.
     */
    @Override
    public RowCacheCounts takeRowCacheCounts() {
        gpu.makeCurrent();
        long unserved = planner.takeUnservedRows();
        CUdeviceptr stats = workspace.getIfSized(Buffer.ROW_CACHE_STATS);
        long[] v = new long[2];
        if (stats != null) {
            gpu.synchronize();
            jcuda.driver.JCudaDriver.cuMemcpyDtoH(jcuda.Pointer.to(v), stats, 16);
            jcuda.driver.JCudaDriver.cuMemsetD32(stats, 0, 4);
        }
        return new RowCacheCounts(v[0] + unserved, v[1] + unserved);
    }

    /** Bytes of weights a decode step reads: all of them but the embedding table, of which it gathers a few rows. */
    public long weightBytesPerStep() {
        return weights.bytesPerStep();
    }

    /**
     * Keeps the token embedding table in pinned host memory ({@code host}) or in device memory (CudaWeights); host
     * placement moves it to host memory ({@link #prepare}, and the first such cache).
     *
     * @return whether the table is in host memory now
     */
    public boolean placeEmbeddings(boolean host) {
        if (weights.placeEmbeddings(host)) graphs.clear();   // they hold the old table's address
        return weights.embeddingsOnHost();
    }

    /** Whether the token embedding table is in pinned host memory ({@link #placeEmbeddings}). */
    public boolean embeddingsOnHost() {
        return weights.embeddingsOnHost();
    }

    /** Host placement: the token embedding table to host memory (keep the device for what it must hold). */
    @Override
    public void prepare(KvConfig kv) {
        if (kv.placement() == KvConfig.Placement.HOST) placeEmbeddings(true);
    }

    @Override
    public void close() {
        gpu.makeCurrent();
        graphs.close();
        workspace.close();
        for (ByParity<CUevent> events : List.of(lookaheadDone, lookaheadRead)) {
            gpu.destroy(events.even());
            gpu.destroy(events.odd());
        }
        gpu.close();   // the weights, and the caches still held by conversations
    }
}
