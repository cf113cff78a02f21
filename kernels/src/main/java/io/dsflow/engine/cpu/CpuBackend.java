package io.dsflow.engine.cpu;

import io.dsflow.engine.Backend;
import io.dsflow.engine.Batch;
import io.dsflow.engine.DsflowException;
import io.dsflow.engine.cpu.CpuOps.Linear;
import io.dsflow.engine.kv.CalibratingKvCache;
import io.dsflow.engine.kv.CalibrationStatistics;
import io.dsflow.engine.kv.ChannelConfig;
import io.dsflow.engine.kv.DenseKvCache;
import io.dsflow.engine.kv.CpuKvCache;
import io.dsflow.engine.kv.KvCache;
import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.kv.KvStore;
import io.dsflow.engine.kv.Rotary;
import io.dsflow.engine.kv.SparseKvCache;
import io.dsflow.engine.model.Architecture;
import io.dsflow.engine.model.ModelConfig;
import io.dsflow.engine.model.ModelWeights;
import io.dsflow.engine.model.SafeTensors;

import java.util.List;
import java.util.Locale;

/**
 * The CPU backend: the specification every other backend is held against. float32 weights and activations,
 * float32/double accumulation; Llama, Qwen2 and OPT in one forward pass that branches where they differ.
 * Weights are converted from the memory-mapped files into float32 arrays in the layout the loops want
 * (linear layers transposed), so a model must fit the heap at 4 bytes a parameter: this backend is for
 * small models, tests and laptops.
 * <p>
 * Made with a device memory ({@code cpu:device-memory=SIZE}, {@link io.dsflow.engine.BackendName}), it is the CPU
 * backend with a GPU's memory budget, for testing admission and capacity planning: the forward pass and the caches are
 * the same (every cache on the heap), but it counts them as the CUDA backend keeps them: {@link #deviceCacheBudget}
 * is that device memory, and under placement=host the sparse layers' keys and values are {@link #hostCacheBytes}
 * (pinned host memory on a GPU) while the rest (dense layers, labels, window) stays in {@link #cacheBytes}. The bytes
 * are the CPU's (float32, its rooms), split where a GPU splits them; their sum is the heap a cache holds.
 */
public final class CpuBackend implements Backend {

    /** One decoder layer in CPU layout (null where the architecture has no such tensor). */
    private record Layer(float[] attnNorm, float[] attnNormBias, Linear q, Linear k, Linear v, Linear o,
                         float[] mlpNorm, float[] mlpNormBias, Linear gate, Linear up, Linear down) {
    }

    private final ModelConfig c;
    private final float[] embed;       // [vocab][wordEmbedDim], row-major
    private final float[] positionTable; // OPT: [maxPositions + 2][hidden]
    private final Linear projectIn, projectOut, lmHead;
    private final float[] finalNorm, finalNormBias;
    private final Layer[] layers;
    private final float[] invFreq;     // RoPE: [headDim / 2]
    /** The modelled GPU's memory for caches, or -1: the caches count as the heap's (see the class comment). */
    private final long deviceMemory;

    public CpuBackend(ModelWeights w) {
        this(w, -1);
    }

    /**
     * @param deviceMemory bytes of a modelled GPU's memory to count caches against (the class comment), or -1 for none
     */
    public CpuBackend(ModelWeights w, long deviceMemory) {
        if (deviceMemory == 0 || deviceMemory < -1) {
            throw new IllegalArgumentException("device memory must be positive, or -1 for none: " + deviceMemory);
        }
        this.deviceMemory = deviceMemory;
        this.c = w.config;
        long params = w.config.vocabSize() * (long) w.config.wordEmbedDim() * 2;
        for (ModelWeights.Layer l : w.layers) params += l.q().elements() + l.k().elements() + l.v().elements()
                + l.o().elements() + l.up().elements() + l.down().elements() + (l.gate() == null ? 0 : l.gate().elements());
        long needed = params * Float.BYTES;
        long max = Runtime.getRuntime().maxMemory();
        if (needed > max * 0.8) {
            throw new DsflowException(String.format("the CPU backend needs %.1f GB of heap for this model in float32 but"
                    + " the JVM has %.1f GB (raise -Xmx, or use --backend cuda)", needed / 1e9, max / 1e9));
        }
        embed = w.embed.toFloats();
        positionTable = w.positions == null ? null : w.positions.toFloats();
        projectIn = linear(w.projectIn, null);
        projectOut = linear(w.projectOut, null);
        finalNorm = floats(w.finalNorm);
        finalNormBias = floats(w.finalNormBias);
        lmHead = linear(w.lmHead, null);
        layers = new Layer[c.numLayers()];
        for (int i = 0; i < layers.length; i++) {
            ModelWeights.Layer l = w.layers[i];
            layers[i] = new Layer(floats(l.attnNorm()), floats(l.attnNormBias()),
                    linear(l.q(), l.qBias()), linear(l.k(), l.kBias()), linear(l.v(), l.vBias()), linear(l.o(), l.oBias()),
                    floats(l.mlpNorm()), floats(l.mlpNormBias()),
                    linear(l.gate(), l.gateBias()), linear(l.up(), l.upBias()), linear(l.down(), l.downBias()));
        }
        invFreq = c.architecture().usesRope() ? c.rope().inverseFrequencies(c.headDim()) : null;
    }

    @Override
    public ModelConfig config() {
        return c;
    }

    @Override
    public String description() {
        String threads = "cpu (" + CpuOps.THREADS + " threads, float32";
        if (deviceMemory < 0) return threads + ")";
        return threads + String.format(Locale.ROOT, "; a GPU's memory modelled: %.1f MiB for caches)",
                deviceMemory / 1048576.0);
    }

    /**
     * The heap a cache holds ({@link Backend#cacheBytes}); where a GPU's memory is modelled, the part a GPU keeps on
     * the device: all but {@link #hostCacheBytes}.
     */
    @Override
    public long cacheBytes(KvConfig kv, long tokens) {
        return Backend.super.cacheBytes(kv, tokens) - hostCacheBytes(kv, tokens);
    }

    /**
     * Where a GPU's memory is modelled and the placement is host: the sparse layers' keys and values (with their slots'
     * positions), the part the CUDA backend pins in host memory; else 0 (nothing is counted apart from the heap).
     */
    @Override
    public long hostCacheBytes(KvConfig kv, long tokens) {
        if (deviceMemory < 0 || !kv.sparse() || kv.placement() != KvConfig.Placement.HOST) return 0;
        return KvStore.heapBytes(kv.sparseLayers(c.numLayers()), c.kvDim(),
                KvStore.capacityFor(tokens, kv.capacity()));
    }

    /**
     * The modelled device memory (-1 where none is): all of it, at any time, as a GPU's free memory before its first
     * cache. Unlike a GPU's, it does not shrink as caches are made (they are on the heap); the decode operator reads it
     * once, before any cache exists, and counts what its caches hold itself.
     */
    @Override
    public long deviceCacheBudget() {
        return deviceMemory;
    }

    @Override
    public KvCache newCache(KvConfig config, ChannelConfig channels) {
        // a bounded cache of a rotary model keeps positions within it (KvStore): its conversation never runs out
        Rotary rotary = invFreq == null ? null : new Rotary(invFreq, c.headDim(), c.maxPositions());
        if (!config.sparse()) {
            return new DenseKvCache(c.numLayers(), c.numKvHeads(), c.headDim(), config.capacity(), config.sinks(),
                    rotary);
        }
        return new SparseKvCache(config, c.numLayers(), c.numHeads(), c.numKvHeads(), c.headDim(), channels, rotary);
    }

    /** The CPU cache sees each token's key in append and its query in attend, so the forward pass needs no hook. */
    @Override
    public KvCache newCalibrationCache(CalibrationStatistics stats) {
        if (!stats.hasShape(c.numLayers(), c.numHeads(), c.numKvHeads(), c.headDim())) {
            throw new IllegalArgumentException("calibration statistics of another shape than " + c);
        }
        return new CalibratingKvCache(c.numLayers(), c.numKvHeads(), c.headDim(), stats);
    }

    @Override
    public float[][] forward(Batch batch) {
        int rows = batch.rows();
        int[] tokens = batch.tokens();
        int[] positions = batch.positions();
        List<Batch.Segment> segments = batch.segments();
        int[] starts = batch.segmentStarts();
        int hidden = c.hiddenSize();
        CpuKvCache[] caches = new CpuKvCache[segments.size()];
        int[] rotaryPositions = positions.clone();   // text positions less each cache's base (KvStore)
        for (int s = 0; s < caches.length; s++) {
            caches[s] = cpuCache(segments.get(s).cache());
            int n = segments.get(s).tokens().length, r0 = starts[s];
            caches[s].beforeStep(positions[r0], n);
            long base = caches[s].positionBase();
            for (int r = r0; r < r0 + n; r++) rotaryPositions[r] = Math.toIntExact(positions[r] - base);
        }
        boolean opt = c.architecture() == Architecture.OPT;
        float scale = (float) (1.0 / Math.sqrt(c.headDim()));

        float[][] x = new float[rows][hidden];          // residual stream
        float[][] xn = new float[rows][hidden];         // normalised input of a sublayer
        float[][] q = new float[rows][c.qDim()];
        float[][] k = new float[rows][c.kvDim()];
        float[][] v = new float[rows][c.kvDim()];
        float[][] att = new float[rows][c.qDim()];
        float[][] up = new float[rows][c.intermediateSize()];
        float[][] gate = opt ? null : new float[rows][c.intermediateSize()];

        // 1. token embedding (OPT: projected to hidden if narrower, plus the learned position at offset 2)
        float[][] emb = projectIn == null ? x : new float[rows][c.wordEmbedDim()];
        for (int r = 0; r < rows; r++) {
            System.arraycopy(embed, tokens[r] * c.wordEmbedDim(), emb[r], 0, c.wordEmbedDim());
        }
        if (projectIn != null) CpuOps.matmul(emb, rows, projectIn, x);
        if (opt) {
            for (int r = 0; r < rows; r++) {
                CpuOps.axpy(x[r], 0, 1f, positionTable, (positions[r] + ModelConfig.OPT_POSITION_OFFSET) * hidden, hidden);
            }
        }

        for (int l = 0; l < layers.length; l++) {
            Layer w = layers[l];
            // 1b. lookahead: the next layer's query predicted from this layer's input, for its selection
            if (l + 1 < layers.length) predictNextQueries(l + 1, x, batch, rotaryPositions, caches);
            // 2. attention sublayer: pre-norm (post-norm for OPT-350m style), q/k/v projections
            for (int r = 0; r < rows; r++) sublayerInput(x[r], w.attnNorm, w.attnNormBias, xn[r]);
            CpuOps.matmul(xn, rows, w.q, q);
            CpuOps.matmul(xn, rows, w.k, k);
            CpuOps.matmul(xn, rows, w.v, v);
            // 3. rotary positions on q and k
            if (invFreq != null) {
                for (int r = 0; r < rows; r++) {
                    CpuOps.rope(q[r], c.numHeads(), c.headDim(), rotaryPositions[r], invFreq);
                    CpuOps.rope(k[r], c.numKvHeads(), c.headDim(), rotaryPositions[r], invFreq);
                }
            }
            // 4. each sequence appends its new keys/values, then its rows attend through its cache's policy
            final int layer = l;
            CpuOps.forEach(segments.size(), segments.size() > 1, s -> {
                CpuKvCache cache = caches[s];
                int n = segments.get(s).tokens().length;
                for (int r = starts[s]; r < starts[s] + n; r++) cache.append(layer, k[r], v[r]);
                cache.attend(layer, q, starts[s], n, att, c.numHeads(), scale);
            });
            // 5. output projection and residual add
            CpuOps.matmul(att, rows, w.o, xn);
            for (int r = 0; r < rows; r++) {
                CpuOps.add(x[r], xn[r]);
                if (!c.layerNormBefore()) norm(x[r], w.attnNorm, w.attnNormBias, x[r]);
            }
            // 6. MLP sublayer: SwiGLU (down(silu(gate x) * up x)) or OPT's ReLU (fc2(relu(fc1 x))), residual add
            for (int r = 0; r < rows; r++) sublayerInput(x[r], w.mlpNorm, w.mlpNormBias, xn[r]);
            CpuOps.matmul(xn, rows, w.up, up);
            if (opt) {
                for (int r = 0; r < rows; r++) CpuOps.relu(up[r]);
                CpuOps.matmul(up, rows, w.down, xn);
            } else {
                CpuOps.matmul(xn, rows, w.gate, gate);
                for (int r = 0; r < rows; r++) CpuOps.swiglu(gate[r], up[r]);
                CpuOps.matmul(gate, rows, w.down, xn);
            }
            for (int r = 0; r < rows; r++) {
                CpuOps.add(x[r], xn[r]);
                if (!c.layerNormBefore()) norm(x[r], w.mlpNorm, w.mlpNormBias, x[r]);
            }
        }

        // 7. final norm and lm_head, only for the last row of each segment
        float[][] last = new float[segments.size()][];
        for (int s = 0; s < last.length; s++) {
            float[] h = x[starts[s] + segments.get(s).tokens().length - 1];
            if (finalNorm != null) norm(h, finalNorm, finalNormBias, h);
            last[s] = h;
        }
        if (projectOut != null) {
            float[][] projected = new float[last.length][c.wordEmbedDim()];
            CpuOps.matmul(last, last.length, projectOut, projected);
            last = projected;
        }
        float[][] logits = new float[last.length][c.vocabSize()];
        CpuOps.matmul(last, last.length, lmHead, logits);
        return logits;
    }

    /**
     * For each decode row whose cache selects ahead in {@code layer}: that layer's query computed from x (the previous
     * layer's input) through its norm, q projection and RoPE, handed to the cache for its selection.
     */
    private void predictNextQueries(int layer, float[][] x, Batch batch, int[] rotaryPositions, CpuKvCache[] caches) {
        Layer w = layers[layer];
        int[] starts = batch.segmentStarts();
        for (int s = 0; s < starts.length; s++) {
            Batch.Segment seg = batch.segments().get(s);
            if (seg.tokens().length != 1 || !caches[s].selectsAhead(layer)) continue;
            int r = starts[s];
            float[][] xn = new float[1][c.hiddenSize()], q = new float[1][c.qDim()];
            sublayerInput(x[r], w.attnNorm, w.attnNormBias, xn[0]);
            CpuOps.matmul(xn, 1, w.q, q);
            if (invFreq != null) CpuOps.rope(q[0], c.numHeads(), c.headDim(), rotaryPositions[r], invFreq);
            caches[s].predictQuery(layer, q[0]);
        }
    }

    /** A segment's cache as the CPU forward pass drives it; a cache made by another backend is refused. */
    private static CpuKvCache cpuCache(KvCache cache) {
        if (cache instanceof CpuKvCache cpu) return cpu;
        throw new DsflowException("the cpu backend cannot run a " + cache.getClass().getSimpleName()
                + ": a cache made by another backend");
    }

    private void norm(float[] x, float[] w, float[] b, float[] out) {
        if (b == null) CpuOps.rmsNorm(x, w, c.normEps(), out);
        else CpuOps.layerNorm(x, w, b, c.normEps(), out);
    }

    /** A sublayer reads the normalised residual (pre-norm) or the residual itself (OPT's post-norm variant). */
    private void sublayerInput(float[] x, float[] w, float[] b, float[] out) {
        if (c.layerNormBefore()) norm(x, w, b, out);
        else System.arraycopy(x, 0, out, 0, x.length);
    }

    private static float[] floats(SafeTensors.Entry e) {
        return e == null ? null : e.toFloats();
    }

    /** [out][in] from the file to [in][out] for the axpy loops. */
    private static Linear linear(SafeTensors.Entry w, SafeTensors.Entry bias) {
        if (w == null) return null;
        int out = (int) w.shape()[0], in = (int) w.shape()[1];
        float[] src = w.toFloats();
        float[] wt = new float[src.length];
        for (int o = 0; o < out; o++) {
            for (int i = 0; i < in; i++) wt[i * out + o] = src[o * in + i];
        }
        return new Linear(wt, in, out, floats(bias));
    }

    @Override
    public void close() {
        // heap arrays only: nothing to free
    }
}
