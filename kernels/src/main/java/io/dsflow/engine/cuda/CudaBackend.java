package io.dsflow.engine.cuda;

import io.dsflow.engine.Backend;
import io.dsflow.engine.Batch;
import io.dsflow.engine.DsflowException;
import io.dsflow.engine.kv.ChannelConfig;
import io.dsflow.engine.kv.KvCache;
import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.kv.KvPolicy;
import io.dsflow.engine.model.Architecture;
import io.dsflow.engine.model.DType;
import io.dsflow.engine.model.ModelConfig;
import io.dsflow.engine.model.ModelWeights;
import io.dsflow.engine.model.SafeTensors;
import io.dsflow.engine.sample.SamplingParams;
import jcuda.Pointer;
import jcuda.driver.CUdeviceptr;

import java.nio.ByteBuffer;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import static jcuda.driver.JCudaDriver.cuMemcpyHtoD;

/**
 * The forward pass on one NVIDIA GPU, step for step the CPU backend's (which is its specification): weights in bf16
 * (uploaded straight from the memory-mapped files; fp16/fp32 files are rounded to bf16), activations in f32, KV caches
 * in bf16, f32 accumulation. Kernels: src/main/cuda, one family per file.
 * <ul>
 *   <li>{@link #load} uploads a model, {@link #synthetic} makes random weights of a model's shapes on the device;</li>
 *   <li>{@link #forward} runs on the calling thread (the device context is made current there);</li>
 *   <li>{@link #close} frees the weights and work buffers; caches free themselves ({@link KvCache#release}).</li>
 * </ul>
 */
public final class CudaBackend implements Backend {
    private static final org.slf4j.Logger LOG = org.slf4j.LoggerFactory.getLogger(CudaBackend.class);
    /** A weight: bf16 values of a [out][in] (or [n]) tensor in device memory (the embedding table: maybe host memory). */
    private record Weight(CUdeviceptr ptr, long elements) {
    }

    /**
     * One decoder layer on the device. q, k and v are one [qDim + 2 kvDim][hidden] matrix (one GEMV reads them, and its
     * output rows are [q | k | v]); gate and up are one [2 inter][hidden] matrix with their rows interleaved (gate_i,
     * up_i), so the product's epilogue applies SwiGLU (OPT: up alone is fc1).
     */
    private record Layer(Weight attnNorm, Weight attnNormBias, Weight qkv, Weight qkvBias, Weight o, Weight oBias,
                         Weight mlpNorm, Weight mlpNormBias, Weight gateUp, Weight gateUpBias, Weight down,
                         Weight downBias) {
    }

    private final CudaRuntime gpu;
    private final ModelConfig c;
    private final Weight positionTable, projectIn, projectOut, finalNorm, finalNormBias, lmHead;
    /** [vocab][wordEmbedDim] bf16, in device memory or, after {@link #placeEmbeddings}(true), in pinned host memory. */
    private Weight embed;
    private boolean embeddingsOnHost;
    private final Layer[] layers;
    private final CUdeviceptr invFreq;
    /** Decode steps run as captured graphs (one per batch size and split count) unless -Ddsflow.cuda.graphs=false. */
    private static final boolean GRAPHS = !"false".equals(System.getProperty("dsflow.cuda.graphs"));
    /**
     * Whether a sparse layer whose candidates all fit the budget attends densely (the default, as SparseKvCache does)
     * instead of selecting every candidate through the sparse kernels; the two agree, which the tests check.
     */
    private boolean denseFallback = true;

    void denseFallback(boolean enabled) {
        this.denseFallback = enabled;
    }

    /** Graphs kept, least recently used dropped: batch sizes and growing contexts would otherwise add up without end. */
    private static final int MAX_GRAPHS = 64;
    private final Map<String, jcuda.driver.CUgraphExec> graphs = new java.util.LinkedHashMap<>(16, 0.75f, true) {
        @Override
        protected boolean removeEldestEntry(Map.Entry<String, jcuda.driver.CUgraphExec> eldest) {
            if (size() <= MAX_GRAPHS) return false;
            gpu.destroy(eldest.getValue());   // its last replay finished: every step waits for its result
            return true;
        }
    };
    private final Map<String, CUdeviceptr> scratch = new HashMap<>();
    private final Map<String, Long> scratchBytes = new HashMap<>();
    private final List<Weight> owned = new java.util.ArrayList<>();
    private final long weightBytes;
    private final long embedBytes;

    /** Where weights come from: the parts of one device tensor (laid end to end), or random values when null. */
    private interface Source {
        Weight get(SafeTensors.Entry e, long elements, float scale);

        Weight concat(SafeTensors.Entry[] parts, long elements, float scale);

        /** gate and up ([rows][cols] each) with their rows interleaved: the layout of the SwiGLU epilogues. */
        Weight interleave(SafeTensors.Entry gate, SafeTensors.Entry up, long elements, float scale);
    }

    private CudaBackend(CudaRuntime gpu, ModelConfig c, ModelWeights w, Source src) {
        this.gpu = gpu;
        this.c = c;
        int h = c.hiddenSize();
        long vocabRows = (long) c.vocabSize() * c.wordEmbedDim();
        float ws = 0.02f;
        embed = src.get(w == null ? null : w.embed, vocabRows, ws);
        positionTable = c.architecture() == Architecture.OPT
                ? src.get(w == null ? null : w.positions, (long) (c.maxPositions() + ModelConfig.OPT_POSITION_OFFSET) * h, ws) : null;
        projectIn = w != null && w.projectIn != null ? src.get(w.projectIn, 0, ws) : null;
        projectOut = w != null && w.projectOut != null ? src.get(w.projectOut, 0, ws) : null;
        boolean ln = c.architecture() == Architecture.OPT;
        finalNorm = w == null || w.finalNorm != null ? src.get(w == null ? null : w.finalNorm, h, -1) : null;
        finalNormBias = ln && (w == null || w.finalNormBias != null) ? src.get(w == null ? null : w.finalNormBias, h, 0) : null;
        lmHead = w != null && w.lmHead == w.embed ? embed : c.tieWordEmbeddings() ? embed
                : src.get(w == null ? null : w.lmHead, vocabRows, ws);
        layers = new Layer[c.numLayers()];
        int inter = c.intermediateSize();
        long qkvRows = c.qDim() + 2L * c.kvDim();
        for (int i = 0; i < layers.length; i++) {
            ModelWeights.Layer l = w == null ? null : w.layers[i];
            boolean qkvBias = l == null ? c.attentionBias() : l.qBias() != null;
            boolean gateUpBias = l == null ? c.mlpBias() : l.upBias() != null;
            layers[i] = new Layer(
                    src.get(l == null ? null : l.attnNorm(), h, -1), ln ? src.get(l == null ? null : l.attnNormBias(), h, 0) : null,
                    src.concat(l == null ? null : new SafeTensors.Entry[]{l.q(), l.k(), l.v()}, qkvRows * h, ws),
                    qkvBias ? src.concat(l == null ? null : new SafeTensors.Entry[]{l.qBias(), l.kBias(), l.vBias()}, qkvRows, 0) : null,
                    src.get(l == null ? null : l.o(), (long) h * c.qDim(), ws), opt(src, l == null ? null : l.oBias(), h),
                    src.get(l == null ? null : l.mlpNorm(), h, -1), ln ? src.get(l == null ? null : l.mlpNormBias(), h, 0) : null,
                    ln ? src.get(l == null ? null : l.up(), (long) inter * h, ws)
                            : src.interleave(l == null ? null : l.gate(), l == null ? null : l.up(), 2L * inter * h, ws),
                    !gateUpBias ? null : ln ? src.get(l == null ? null : l.upBias(), inter, 0)
                            : src.interleave(l == null ? null : l.gateBias(), l == null ? null : l.upBias(), 2L * inter, 0),
                    src.get(l == null ? null : l.down(), (long) h * inter, ws), opt(src, l == null ? null : l.downBias(), h));
        }
        if (c.architecture().usesRope()) {
            float[] inv = c.rope().inverseFrequencies(c.headDim());
            invFreq = gpu.alloc(inv.length * 4L);
            cuMemcpyHtoD(invFreq, Pointer.to(inv), inv.length * 4L);
        } else {
            invFreq = null;
        }
        lookaheadDone = new jcuda.driver.CUevent[]{gpu.newEvent(), gpu.newEvent()};
        lookaheadRead = new jcuda.driver.CUevent[]{gpu.newEvent(), gpu.newEvent()};
        gpu.trim();   // the staging blocks of the interleaved uploads go back to the driver
        weightBytes = gpu.allocated();
        embedBytes = c.tieWordEmbeddings() ? 0 : (long) c.vocabSize() * c.wordEmbedDim() * 2;
        int d = c.headDim();
        if (d % 32 != 0 || d > 256 || d == 160 || d == 192 || d == 224) {
            throw new DsflowException("the CUDA backend supports head_dim 32, 64, 96, 128 and 256, not " + d);
        }
    }

    private static Weight opt(Source src, SafeTensors.Entry e, long n) {
        return e == null ? null : src.get(e, n, 0);
    }

    /** Uploads a model's weights to a GPU. */
    public static CudaBackend load(ModelWeights w, int device) {
        CudaRuntime gpu = CudaRuntime.open(device);
        Map<SafeTensors.Entry, Weight> uploaded = new HashMap<>();
        return new CudaBackend(gpu, w.config, w, new Source() {
            @Override
            public Weight get(SafeTensors.Entry e, long elements, float scale) {
                return uploaded.computeIfAbsent(e, x -> upload(gpu, new SafeTensors.Entry[]{x}));
            }

            @Override
            public Weight concat(SafeTensors.Entry[] parts, long elements, float scale) {
                return upload(gpu, parts);
            }

            @Override
            public Weight interleave(SafeTensors.Entry gate, SafeTensors.Entry up, long elements, float scale) {
                Weight stacked = upload(gpu, new SafeTensors.Entry[]{gate, up});
                long[] shape = gate.shape();
                int rows = (int) shape[0];
                long cols = shape.length > 1 ? shape[1] : 1;
                CUdeviceptr p = gpu.alloc(stacked.elements() * 2);
                gpu.launch("interleave_rows", 2 * rows, 1, 256, p, stacked.ptr(), rows, cols);
                gpu.synchronize();
                gpu.free(stacked.ptr(), stacked.elements() * 2);
                return new Weight(p, stacked.elements());
            }
        });
    }

    /** Random bf16 weights of a model's shapes, made on the device (norm weights 1, biases 0): for bench. */
    public static CudaBackend synthetic(ModelConfig config, int device, long seed) {
        CudaRuntime gpu = CudaRuntime.open(device);
        long[] counter = {seed};
        return new CudaBackend(gpu, config, null, new Source() {
            @Override
            public Weight get(SafeTensors.Entry e, long n, float scale) {
                return random(gpu, n, counter[0]++, scale);
            }

            @Override
            public Weight concat(SafeTensors.Entry[] parts, long n, float scale) {
                return random(gpu, n, counter[0]++, scale);
            }

            @Override
            public Weight interleave(SafeTensors.Entry gate, SafeTensors.Entry up, long n, float scale) {
                return random(gpu, n, counter[0]++, scale);
            }
        });
    }

    /** Uploads tensors end to end into one device buffer of bf16 (row-major [out][in] parts stack their rows). */
    private static Weight upload(CudaRuntime gpu, SafeTensors.Entry[] parts) {
        long total = 0;
        for (SafeTensors.Entry e : parts) total += e.elements();
        CUdeviceptr p = gpu.alloc(total * 2);
        long at = 0;
        for (SafeTensors.Entry e : parts) {
            long n = e.elements();
            ByteBuffer buf = e.map();
            if (e.dtype() == DType.BF16) {
                cuMemcpyHtoD(p.withByteOffset(at * 2), Pointer.to(buf), n * 2);  // straight from the mapping
            } else {
                int chunk = 1 << 20;
                short[] bits = new short[chunk];
                for (long i0 = 0; i0 < n; i0 += chunk) {
                    int m = (int) Math.min(chunk, n - i0);
                    for (int i = 0; i < m; i++) bits[i] = toBf16(e.dtype().read(buf, i0 + i));
                    cuMemcpyHtoD(p.withByteOffset((at + i0) * 2), Pointer.to(bits), m * 2L);
                }
            }
            at += n;
        }
        return new Weight(p, total);
    }

    /** scale > 0: uniform in [-scale, scale); scale 0: zeros; scale -1: ones (norm weights). */
    private static Weight random(CudaRuntime gpu, long n, long seed, float scale) {
        CUdeviceptr p = gpu.alloc(n * 2);
        if (scale > 0) {
            fillRandom(gpu, p, n, seed, scale);
        } else {
            short v = scale == 0 ? 0 : toBf16(1f);
            short[] chunk = new short[(int) Math.min(n, 1 << 20)];
            java.util.Arrays.fill(chunk, v);
            for (long i0 = 0; i0 < n; i0 += chunk.length) {
                cuMemcpyHtoD(p.withByteOffset(i0 * 2), Pointer.to(chunk), Math.min(chunk.length, n - i0) * 2);
            }
        }
        return new Weight(p, n);
    }

    /** n bf16 values at p, uniform in [-scale, scale) from a seed (fill_random_bf16). */
    private static void fillRandom(CudaRuntime gpu, CUdeviceptr p, long n, long seed, float scale) {
        gpu.launch("fill_random_bf16", (int) Math.min(65535, (n + 255) / 256), 1, 256, p, n, seed, scale);
    }

    /** float32 to bf16, rounding to nearest even. */
    static short toBf16(float f) {
        int bits = Float.floatToRawIntBits(f);
        if ((bits & 0x7fffffff) > 0x7f800000) return (short) ((bits >>> 16) | 0x40);
        return (short) ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16);
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
        return String.format("cuda:%d %s (%.1f GB, bf16 weights)", gpu.ordinal(), gpu.name(), gpu.totalMemory() / 1e9);
    }

    @Override
    public KvCache newCache(KvConfig config, ChannelConfig channels) {
        if (config.capacity() > 0) throw new DsflowException("a bounded cache (capacity) is not available on cuda yet");
        gpu.makeCurrent();
        if (!config.sparse()) return new CudaKvCache(gpu, c.numLayers(), c.kvDim(), CudaKvCache.INITIAL_CAPACITY);
        // ds / dspp: labels of 16 or 8 bits on the device; the store on the device or (placement=host) in host memory
        if (!gpu.has("sparse_attention_d" + c.headDim())) {
            throw new DsflowException("kv policy " + config.policy().id() + " is not built for head_dim " + c.headDim() + " on cuda");
        }
        if (channels == null) throw new DsflowException("kv policy " + config.policy().id() + " needs calibrated channels");
        prepare(config);
        int r = config.labelChannels(c.headDim()), labelGroup = config.labelGroup(c.numHeads(), c.numKvHeads());
        if (r > 64) throw new DsflowException("at most 64 label channels on cuda, not " + r);
        channels.requireLabelRows(config, c.numHeads(), c.numKvHeads(), c.headDim());
        int[][][] ch = new int[c.numLayers()][][];
        for (int l = Math.min(config.denseLayers(), c.numLayers()); l < c.numLayers(); l++) {
            ch[l] = new int[c.numHeads()][];
            for (int h = 0; h < c.numHeads(); h++) ch[l][h] = channels.top(l, h, r);
        }
        return new CudaKvCache(gpu, c.numLayers(), c.kvDim(), CudaKvCache.INITIAL_CAPACITY, config, c.numHeads(), ch,
                labelGroup);
    }

    /**
     * Device bytes a cache of {@code tokens} tokens holds: keys and values per layer in bf16 (and the sparse layers'
     * labels) at a capacity that doubles from CudaKvCache.INITIAL_CAPACITY slots, each block rounded to the memory
     * pool's size class. Host placement: the sparse layers' keys and values are in host memory ({@link #hostCacheBytes})
     * and their rings of sinks and window on the device instead.
     */
    @Override
    public long cacheBytes(KvConfig kv, long tokens) {
        long cap = capacityFor(tokens);
        int sparseLayers = sparseLayers(kv);
        boolean host = kv.placement() == KvConfig.Placement.HOST;
        long bytes = 2L * (host ? c.numLayers() - sparseLayers : c.numLayers()) * CudaRuntime.sizeClass(cap * c.kvDim() * 2);
        if (kv.sparse()) {   // labels of the sparse layers (fp16, or int8 and fp16 scales) and their channel tables
            int rows = c.numHeads() / kv.labelGroup(c.numHeads(), c.numKvHeads()), width = rows * kv.labelChannels(c.headDim());
            bytes += kv.labelBits() == 8   // one block of every sparse layer's labels (and one of their scales)
                    ? CudaRuntime.sizeClass(sparseLayers * cap * width) + CudaRuntime.sizeClass(sparseLayers * cap * rows * 2L)
                    : CudaRuntime.sizeClass(sparseLayers * cap * width * 2L);
            bytes += sparseLayers * CudaRuntime.sizeClass(width * 4L);
            long ring = (long) (kv.sinks() + kv.window()) * c.kvDim() * 2;
            if (host && ring > 0) bytes += 2L * sparseLayers * CudaRuntime.sizeClass(ring);
        }
        return bytes;
    }

    /** Pinned host bytes a cache of {@code tokens} tokens holds: host placement's sparse-layer keys and values. */
    @Override
    public long hostCacheBytes(KvConfig kv, long tokens) {
        if (kv.placement() != KvConfig.Placement.HOST) return 0;
        return 2L * sparseLayers(kv) * capacityFor(tokens) * c.kvDim() * 2;
    }

    /** Layers with labels under a policy (none for dense). */
    private int sparseLayers(KvConfig kv) {
        return kv.sparse() ? c.numLayers() - Math.min(kv.denseLayers(), c.numLayers()) : 0;
    }

    private static long capacityFor(long tokens) {
        long cap = CudaKvCache.INITIAL_CAPACITY;
        while (cap < tokens) cap *= 2;
        return cap;
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

    /** Slots a {@link #cacheOfLength} cache holds beyond its context before it grows (bench's steps fit in them). */
    public static final int SPARE_SLOTS = 64;

    /** A cache whose first {@code tokens} slots hold arbitrary (uninitialised) values: bench's prefilled context. */
    public CudaKvCache cacheOfLength(int tokens) {
        return cacheOfLength(tokens, KvConfig.DENSE);
    }

    /**
     * {@link #cacheOfLength(int)} under a policy; a sparse one labels random channels (a fixed permutation per layer
     * and head) with random values, which exercises the same kernels and memory as calibrated ones.
     */
    public CudaKvCache cacheOfLength(int tokens, KvConfig kv) {
        gpu.makeCurrent();
        CudaKvCache cache;
        if (kv.sparse()) {
            int[][][] order = new int[c.numLayers()][c.numHeads()][];
            java.util.Random rnd = new java.util.Random(17);
            for (int[][] layer : order) {
                for (int h = 0; h < layer.length; h++) {
                    java.util.List<Integer> ch = new java.util.ArrayList<>();
                    for (int i = 0; i < c.headDim(); i++) ch.add(i);
                    java.util.Collections.shuffle(ch, rnd);
                    layer[h] = ch.stream().mapToInt(Integer::intValue).toArray();
                }
            }
            ChannelConfig channels = new ChannelConfig(order);
            if (kv.labelGroup(c.numHeads(), c.numKvHeads()) > 1) channels = channels.grouped(c.numKvHeads());
            cache = (CudaKvCache) newCache(kv, channels);
            cache.reserve(tokens + SPARE_SLOTS);
        } else {
            cache = new CudaKvCache(gpu, c.numLayers(), c.kvDim(), tokens + SPARE_SLOTS);
        }
        cache.fillTo(tokens);
        long cap = cache.capacity();
        for (int l = 0; l < c.numLayers(); l++) {
            long n = cap * c.kvDim();
            fillRandom(gpu, cache.keys(l), n, 7L * l, 1f);
            fillRandom(gpu, cache.values(l), n, 7L * l + 3, 1f);
            if (cache.labels(l) != null) {   // random bf16 bit patterns read as fp16 (or int8 pairs): finite values
                fillRandom(gpu, cache.labels(l), cap * cache.labelRows() * cache.labelChannels() * cache.labelBits() / 16,
                        7L * l + 5, 1f);
            }
            if (cache.scales(l) != null) fillRandom(gpu, cache.scales(l), cap * cache.labelRows(), 7L * l + 6, 1f);
            if (cache.ringKeys(l) != null) {
                long m = (long) (kv.sinks() + kv.window()) * c.kvDim();
                fillRandom(gpu, cache.ringKeys(l), m, 7L * l + 1, 1f);
                fillRandom(gpu, cache.ringValues(l), m, 7L * l + 2, 1f);
            }
        }
        return cache;
    }

    /** Destroys every captured decode graph (the next steps capture theirs again). */
    private void dropGraphs() {
        for (jcuda.driver.CUgraphExec g : graphs.values()) gpu.destroy(g);
        graphs.clear();
    }

    private CUdeviceptr buf(String name, long floats) {
        long bytes = Math.max(16, floats * 4);
        Long have = scratchBytes.get(name);
        if (have == null || have < bytes) {
            dropGraphs();   // a captured graph holds the old addresses
            if (have != null) gpu.free(scratch.get(name), have);
            long size = Math.max(bytes, have == null ? 0 : have * 2);
            scratch.put(name, gpu.alloc(size));
            scratchBytes.put(name, size);
        }
        return scratch.get(name);
    }

    /**
     * Copies a step's metadata to the device in one asynchronous copy from pinned memory: the tables first (8-byte
     * aligned), then the int arrays, end to end in one device buffer; returns where each landed, in argument order.
     * The layout depends only on the arrays' lengths, so a graph captured for a shape finds its inputs where it left
     * them.
     */
    private CUdeviceptr[] upload(long[][] tables, int[][] arrays) {
        int bytes = 0;
        for (long[] t : tables) bytes += 8 * t.length;
        for (int[] a : arrays) bytes += 4 * a.length;
        CUdeviceptr meta = buf("meta", bytes / 4 + 4);
        java.nio.ByteBuffer b = gpu.staging(bytes);
        CUdeviceptr[] at = new CUdeviceptr[tables.length + arrays.length];
        int k = 0;
        // bulk copies through views (the buffer's byte order): element puts cost a step hundreds of microseconds
        // until the JIT compiles them (bench rows are short)
        for (long[] t : tables) {
            at[k++] = meta.withByteOffset(b.position());
            b.asLongBuffer().put(t);
            b.position(b.position() + 8 * t.length);
        }
        for (int[] a : arrays) {
            at[k++] = meta.withByteOffset(b.position());
            b.asIntBuffer().put(a);
            b.position(b.position() + 4 * a.length);
        }
        gpu.uploadStaging(meta, bytes);
        return at;
    }

    /** The raw device address of a pointer (for the kernels' pointer tables). */
    private static long address(CUdeviceptr p) {
        return jcuda.DeviceAddress.of(p);
    }

    private static CUdeviceptr at(CUdeviceptr p, long floats) {
        return p.withByteOffset(floats * 4);
    }

    private static CUdeviceptr ptr(Weight w) {
        return w == null ? null : w.ptr();
    }

    /** y[rows][out] = x[rows][in] W^T + b (CudaOps.linear: tensor cores for many rows, the GEMV for a decode batch). */
    private void linear(CUdeviceptr y, CUdeviceptr x, int rows, Weight w, Weight bias, int out, int in) {
        CudaOps.linear(gpu, y, x, scratch.get("xbf"), false, rows, w.ptr(), ptr(bias), out, in, false, null, false);
    }

    /** out = norm(x): RMSNorm, or LayerNorm when there is a bias; into outBf16 (bf16) instead if given. */
    private void norm(CUdeviceptr x, CUdeviceptr out, CUdeviceptr outBf16, Weight w, Weight b, int rows) {
        if (b == null) {
            gpu.launch("add_rms_norm", rows, 1, 1024, x, null, out, outBf16, w.ptr(), rows, c.hiddenSize(), c.normEps());
        } else {
            gpu.launch("add_layer_norm", rows, 1, 1024, x, null, out, outBf16, w.ptr(), b.ptr(), rows, c.hiddenSize(),
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
        CUdeviceptr x = scratch.get("x");
        CudaOps.RmsNorm fused = fusedNorm(normWeight, normBias);
        if (!c.layerNormBefore() || fused != null) return new SublayerInput(x, false, fused);
        norm(x, scratch.get("xn"), tensorCores ? scratch.get("xbf") : null, normWeight, normBias, rows);
        return new SublayerInput(scratch.get("xn"), tensorCores, null);
    }

    /** The RMSNorm a product applies to its input itself (CudaOps.linear), or null where the norm is a kernel of its own. */
    private CudaOps.RmsNorm fusedNorm(Weight w, Weight bias) {
        return bias == null && c.layerNormBefore() ? new CudaOps.RmsNorm(w.ptr(), c.normEps()) : null;
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
        CUdeviceptr drawn = null, prm = null, probs = null;
        if (sampling) {
            drawn = buf("drawn", n);
            prm = buf("drawParams", 8L * n);
            probs = buf("probs", 2L * n * vocab);
        }
        CUdeviceptr logits = forwardToDevice(batch);
        CUdeviceptr ids = buf("argmax", n);
        gpu.launch("argmax", n, 1, 1024, ids, logits, vocab);
        int[] out = new int[n];
        if (!sampling) {
            gpu.download(out, ids, n);
            return mask(out, params);
        }
        double[] draw = CudaOps.drawParams(params, steps);
        java.nio.ByteBuffer st = gpu.staging(draw.length * 8);
        for (double v : draw) st.putDouble(v);
        gpu.uploadStaging(prm, draw.length * 8);
        gpu.launch("sample_rows", n, 1, 1024, drawn, logits, prm, probs, vocab);
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

    /** Device buffers and sizes of one forward pass: everything the launches read, prepared before them. */
    private record Step(int rows, int nseg, int splits, int chunk, CUdeviceptr tokens, CUdeviceptr positions, CUdeviceptr seg,
                        CUdeviceptr slot, CUdeviceptr rowLen, CUdeviceptr kTable, CUdeviceptr vTable,
                        int tileCount, CUdeviceptr tiles, int decodeRows, CUdeviceptr rowsOf,
                        CUdeviceptr partials, CUdeviceptr denseClaims, CUdeviceptr lastRows, CUdeviceptr logits,
                        SparsePlan sparse, List<HostPrefill> hostPrefills) {
    }

    /**
     * A prefill of a host-placed cache: for each of its host layers, the layer's keys and values so far are copied to a
     * device stage before the layer (the step's key/value tables point there), the prefill appends and attends on the
     * device, and its new rows are copied back to host memory after the layer's attention. The prefill's attention
     * reads every earlier row once per tile and head, which from host memory would be many passes over the link.
     * keys, values: [start + rows][kvDim] bf16 on the device, reused by every layer.
     */
    private record HostPrefill(CudaKvCache cache, int start, int rows, CUdeviceptr keys, CUdeviceptr values, long rowBytes) {
        void stageHistory(CudaRuntime gpu, int layer) {
            gpu.copyAsync(keys, cache.keys(layer), start * rowBytes);
            gpu.copyAsync(values, cache.values(layer), start * rowBytes);
        }

        void writeBack(CudaRuntime gpu, int layer) {
            gpu.copyAsync(cache.keys(layer).withByteOffset(start * rowBytes), keys.withByteOffset(start * rowBytes), rows * rowBytes);
            gpu.copyAsync(cache.values(layer).withByteOffset(start * rowBytes), values.withByteOffset(start * rowBytes),
                    rows * rowBytes);
        }
    }

    /**
     * Which decode rows take the sparse path in each layer (ds / dspp caches, sparse layers, more candidates than the
     * budget), as CPU SparseKvCache decides it; the others stay dense.
     * <pre>
     *   denseRows: [layers][decodeRows] batch rows (denseCount[l] used), sp: [layers][maxSparse][SPARSE_FIELDS]
     *   descriptors (sparse.cu), sparseRows: [layers][maxSparse] batch rows, lTable / chTable / sTable:
     *   [layers][segments] label, channel and label-scale pointers (0: none), ringKTable / ringVTable:
     *   [layers][segments] device rings of sinks and window (host placement; 0: none), segInfo:
     *   [segments][SEGMENT_FIELDS] label channels, label bits, sinks, window, capacity, query heads a label row serves
     * </pre>
     * {@code fused}: every selecting row is dspp and its candidates fit sparse_select's shared memory, so the
     * selection is one kernel; otherwise (ds, the published baseline, in the step) scores and top-k are two, with the
     * scores in {@code scores}. Both select the same slots. {@code fusedAppend}: every sparse cache of the step is
     * dspp, so a token's key, value, labels and ring slots are written by one kernel (kv_label_append_rope); otherwise
     * ds's label gather is a launch of its own after kv_append_rope (label_append), as Double Sparsity has it.
     * {@code sharedOnly}: every row selecting on the main stream shares its group's selection (a launch has rows x kv
     * heads selections). {@code groupKinds}: 0 when the selected rows' attention runs one warp a split
     * (sparse_attention_dD), else the kinds of the rows selecting on the main stream for the block kernels
     * (CudaOps.sparseAttention): 1 per-head selections, 2 selections shared by a kv head's group, 4 rows read from
     * device memory, 8 from host memory ({@link Lookahead} has the look-ahead rows' kinds).
     * {@code maxSlots}: the most slots a selecting row attends (sinks + window + maxK); {@code splits}: the splits of
     * each selecting row's attention (CudaOps.sparseAttention). {@code ahead}: the look-ahead rows, or null when the step
     * has none.
     */
    private record SparsePlan(int[] denseCount, CUdeviceptr denseRows, int denseStride, int[] sparseCount, CUdeviceptr sp,
                              CUdeviceptr sparseRows, int sparseStride, CUdeviceptr lTable, CUdeviceptr chTable,
                              CUdeviceptr sTable, CUdeviceptr ringKTable, CUdeviceptr ringVTable, CUdeviceptr segInfo,
                              int maxR, int maxCand, int maxK, int maxSlots, int splits, boolean fused,
                              boolean fusedAppend, boolean sharedOnly, int groupKinds,
                              CUdeviceptr scores, CUdeviceptr selected, CUdeviceptr partials, Lookahead ahead) {
    }

    /**
     * The look-ahead rows of a step (KvConfig lookahead): in each layer the first {@code aheadCount[l]} selecting rows
     * (of which the first {@code stagedCount[l]} are staged: shared selections of host-placed stores) select on the side
     * stream during layer l - 1, from a query predicted from that layer's input; the main stream waits for them at
     * layer l's attention. Buffers by layer parity (the side stream fills layer l + 1's while the main stream reads
     * layer l's):
     * <pre>
     *   selected[2]: [maxAhead * H][maxK] slots (a staged row's: indices into its stage), x[2]: [maxAhead][hidden]
     *   the look-ahead rows' residual stream, q: [rows][H * D] predicted queries (label channels only), scores:
     *   [maxAhead * H][maxCand] (unfused selection only), stageK / stageV[2]: [segments] pointers to [maxK][kvDim] bf16
     * </pre>
     * {@code stagedKinds}, {@code aheadKinds}: the attention kinds (groupKinds) of the staged and the other look-ahead
     * rows; {@code sharedOnly}: every look-ahead row shares its group's selection.
     */
    private record Lookahead(int[] aheadCount, int[] stagedCount, int stagedKinds, int aheadKinds, boolean sharedOnly,
                             CUdeviceptr[] selected, CUdeviceptr q, CUdeviceptr scores,
                             CUdeviceptr[] stageK, CUdeviceptr[] stageV) {
    }

    /** Ints of a sparse row's descriptor (sparse_rows.cuh's SP_FIELDS), of a segment's sparse cache (SEG_FIELDS). */
    static final int SPARSE_FIELDS = 11, SEGMENT_FIELDS = 6;

    /** An event recorded at the start of a stage of a profiled forward pass, on the main or the side stream. */
    private record Mark(String stage, boolean side, int layer, jcuda.driver.CUevent event) {
    }

    /** Marks of a profiled forward pass (null: not profiling), and the layer its launches are for now (-1: none). */
    private List<Mark> marks;
    private int markLayer = -1;
    /** The side stream's mark at the end of a burst of work: the time until its next mark is idle, not a stage. */
    private static final String SIDE_IDLE = "(side stream idle)";

    /**
     * Starts stage {@code name} of a profiled forward pass on the current stream: the time until that stream's next
     * mark is counted as the stage's.
     */
    private void mark(String name) {
        if (marks != null) marks.add(new Mark(name, gpu.onSideStream(), markLayer, gpu.recordEvent()));
    }

    /** A stage of a profiled step on one stream, in milliseconds from the step's start (or its layer's, in a timeline). */
    public record Span(String stream, String stage, double startMs, double endMs) {
    }

    /**
     * A profiled step: its device time, each stage's time summed over the layers per stream (the main stream's stages in
     * the order they first ran; the side stream's, when there is look-ahead work), and the timeline of the middle layer,
     * its times from that layer's first stage (the side stream's work launched during the layer, for the next one,
     * included).
     */
    public record Profile(double stepMs, Map<String, Double> mainMs, Map<String, Double> sideMs, int layer,
                          List<Span> layerTimeline) {
    }

    /**
     * One eager forward pass (no graph) with a CUDA event at the start of each stage of every layer on each stream
     * (bench --profile). The events serialise nothing: each stream runs in order anyway.
     */
    public Profile profileStep(Batch batch) {
        gpu.makeCurrent();
        marks = new java.util.ArrayList<>();
        try {
            forwardToDevice(batch);
            markLayer = -1;
            mark("end");
            jcuda.driver.CUevent origin = marks.get(0).event();
            int middle = layers.length / 2;
            Map<String, Double> main = new java.util.LinkedHashMap<>(), side = new java.util.LinkedHashMap<>();
            List<Span> timeline = new java.util.ArrayList<>();
            double layerStart = Double.NaN;
            for (boolean onSide : new boolean[]{false, true}) {
                Mark prev = null;
                for (Mark m : marks) {
                    if (m.side() != onSide) continue;
                    if (prev != null && !prev.stage().equals(SIDE_IDLE)) {
                        double from = gpu.elapsedMs(origin, prev.event()), to = gpu.elapsedMs(origin, m.event());
                        (onSide ? side : main).merge(prev.stage(), to - from, Double::sum);
                        if (prev.layer() == middle) {
                            if (Double.isNaN(layerStart)) layerStart = from;   // main first: the layer's first stage
                            timeline.add(new Span(onSide ? "side" : "main", prev.stage(), from - layerStart, to - layerStart));
                        }
                    }
                    prev = m;
                }
            }
            return new Profile(gpu.elapsedMs(origin, marks.get(marks.size() - 1).event()), main, side, middle, timeline);
        } finally {
            for (Mark m : marks) gpu.destroy(m.event());
            marks = null;
        }
    }

    /**
     * Host time of the decode steps run as graphs since the last {@link #resetHostTime}: building each step's metadata
     * ({@code prepareNanos}), finding and launching its graph ({@code launchNanos}), and capturing the graphs of new
     * shapes ({@code captures}, in {@code captureNanos}: once per shape, whose buckets change every few hundred
     * tokens). The device idles through all three (the next step needs the last one's tokens). {@code maxNanos}: the
     * longest step's metadata and launch.
     */
    public record HostTime(long steps, long prepareNanos, long launchNanos, int captures, long captureNanos,
                           long maxNanos) {
    }

    private long hostSteps, prepareNanos, launchNanos, captureNanos, maxHostNanos;
    private int captures;

    public HostTime hostTime() {
        return new HostTime(hostSteps, prepareNanos, launchNanos, captures, captureNanos, maxHostNanos);
    }

    public void resetHostTime() {
        hostSteps = prepareNanos = launchNanos = captureNanos = maxHostNanos = captures = 0;
    }

    /** The forward pass; returns the device buffer of logits [segments][vocab]. */
    private CUdeviceptr forwardToDevice(Batch batch) {
        gpu.makeCurrent();
        boolean decodeOnly = batch.rows() == batch.segments().size();
        boolean graph = GRAPHS && decodeOnly && marks == null;
        long t0 = System.nanoTime();
        Step step = prepare(batch, graph);
        if (graph) {
            long t1 = System.nanoTime();
            // one graph per shape: batch size and splits, and with sparse caches which rows select in each layer and
            // the bucketed sizes of their buffers (candidates, budgets, splits), which change every few hundred tokens
            SparsePlan p = step.sparse();
            String key = step.rows() + "," + step.chunk() + "," + step.splits()
                    + (step.denseClaims() != null ? ",pipelined" : "") + (p == null ? "" : "|"
                    + Arrays.toString(p.sparseCount()) + "," + p.maxCand() + "," + p.maxK() + "," + p.maxSlots() + "," + p.splits()
                    + "," + p.maxR()
                    + (p.fused() ? ",fused" : "") + (p.fusedAppend() ? ",append" : "")
                    + (p.sharedOnly() ? ",shared" : "") + ",g" + p.groupKinds()
                    + (p.ahead() == null ? "" : "|ahead" + Arrays.toString(p.ahead().aheadCount())
                    + Arrays.toString(p.ahead().stagedCount()) + ",g" + p.ahead().stagedKinds() + ","
                    + p.ahead().aheadKinds() + (p.ahead().sharedOnly() ? ",shared" : "")));
            jcuda.driver.CUgraphExec exec = graphs.get(key);
            long captured = 0;
            if (exec == null) {
                exec = gpu.capture(() -> launchAll(step));
                graphs.put(key, exec);
                captured = System.nanoTime() - t1;
                captures++;
                captureNanos += captured;
            }
            gpu.replay(exec);
            hostSteps++;
            long launched = System.nanoTime() - t1 - captured;
            prepareNanos += t1 - t0;
            launchNanos += launched;
            maxHostNanos = Math.max(maxHostNanos, t1 - t0 + launched);
        } else {
            launchAll(step);
        }
        for (Batch.Segment s : batch.segments()) {
            for (int l = 0; l < layers.length; l++) ((CudaKvCache) s.cache()).appended(l, s.tokens().length);
        }
        return step.logits();
    }

    /**
     * Per-step metadata, built once and read by every layer: the inputs, each row's segment, cache slot and attended
     * length, each layer's table of the segments' cache pointers, and every work buffer at its size (so that the
     * launches allocate nothing and can be captured). With {@code graph}, the attention covers the caches' capacity
     * (empty splits exit at once), so one captured graph serves every step until a cache grows.
     */
    private Step prepare(Batch batch, boolean graph) {
        int rows = batch.rows(), hidden = c.hiddenSize(), heads = c.numHeads(), hd = c.headDim();
        List<Batch.Segment> segments = batch.segments();
        int[] starts = batch.segmentStarts();
        for (Batch.Segment s : segments) ((CudaKvCache) s.cache()).reserve(s.tokens().length);
        int nseg = segments.size();
        int[] seg = new int[rows], slot = new int[rows], rowLen = new int[rows], lastRows = new int[nseg];
        long[] kTable = new long[layers.length * nseg], vTable = new long[layers.length * nseg];
        // segments of many rows (prefills) attend in tiles on tensor cores; the other rows by the split kernels
        boolean tensorCorePrefill = CudaOps.hasPrefillAttention(gpu, hd);
        java.util.List<Integer> tiles = new java.util.ArrayList<>();
        int[] rowsOf = new int[rows];
        int decodeRows = 0, span = 0;
        for (int s = 0; s < nseg; s++) {
            CudaKvCache cache = (CudaKvCache) segments.get(s).cache();
            int n = segments.get(s).tokens().length, start = cache.length(0);
            for (int i = 0; i < n; i++) {
                seg[starts[s] + i] = s;
                slot[starts[s] + i] = start + i;
                rowLen[starts[s] + i] = start + i + 1;
            }
            if (tensorCorePrefill && n >= CudaOps.PREFILL_TILE_MIN_ROWS) {
                for (int i = 0; i < n; i += CudaOps.PREFILL_TILE_ROWS) {
                    tiles.addAll(List.of(s, starts[s] + i, Math.min(CudaOps.PREFILL_TILE_ROWS, n - i)));
                }
            } else {
                for (int i = 0; i < n; i++) rowsOf[decodeRows++] = starts[s] + i;
                span = Math.max(span, graph ? cache.capacity() : start + n);
            }
            lastRows[s] = starts[s] + n - 1;
            for (int l = 0; l < layers.length; l++) {
                kTable[l * nseg + s] = address(cache.keys(l));
                vTable[l * nseg + s] = address(cache.values(l));
            }
        }
        // slots per attention split: small batches take short splits so enough warps run (the merge then has more),
        // up to 128 splits: past that the merge costs more than the warps gain (H100, batch 1: 32-slot chunks are best
        // at 4K, 64 at 16K, 128 at 32K)
        boolean small = decodeRows * c.numKvHeads() < 32;
        int chunk = decodeRows * c.numKvHeads() >= 256 ? 128 : small ? 32 : 64;
        int slots = CudaOps.splitSlots(gpu, heads, c.numKvHeads(), hd, chunk);
        while (small && chunk < 128 && (span + slots - 1) / slots > 128) {
            chunk *= 2;
            slots *= 2;
        }
        while ((span + slots - 1) / slots > 2048) {
            chunk *= 2;
            slots *= 2;
        }
        int splits = Math.max(1, (span + slots - 1) / slots);
        // caches all in device memory: decode rows take attention_pipelined, a wave of blocks sharing each row's chunks
        // (H100, batch 8 at 4K: the split kernels read the caches at about half the copy bandwidth)
        boolean densePipelined = decodeRows > 0 && CudaOps.densePipelined(gpu, heads, c.numKvHeads(), hd)
                && segments.stream().noneMatch(sg -> ((CudaKvCache) sg.cache()).anyOnHost());
        if (densePipelined) splits = CudaOps.densePipelinedSplits(gpu, heads, c.numKvHeads(), hd, decodeRows, span);
        // prefills of host-placed caches attend over a device stage of each host layer (HostPrefill)
        List<HostPrefill> hostPrefills = new java.util.ArrayList<>();
        long rowBytes = (long) c.kvDim() * 2, stageRows = 0;
        for (Batch.Segment sg : segments) {
            CudaKvCache cache = (CudaKvCache) sg.cache();
            if (sg.tokens().length > 1 && cache.anyOnHost()) stageRows += cache.length(0) + sg.tokens().length;
        }
        if (stageRows > 0) {
            CUdeviceptr stageK = buf("hostStageK", stageRows * rowBytes / 4), stageV = buf("hostStageV", stageRows * rowBytes / 4);
            long at = 0;
            for (int s = 0; s < nseg; s++) {
                CudaKvCache cache = (CudaKvCache) segments.get(s).cache();
                int n = segments.get(s).tokens().length, start = cache.length(0);
                if (n <= 1 || !cache.anyOnHost()) continue;
                HostPrefill hp = new HostPrefill(cache, start, n, stageK.withByteOffset(at), stageV.withByteOffset(at), rowBytes);
                hostPrefills.add(hp);
                for (int l = 0; l < layers.length; l++) {
                    if (!cache.onHost(l)) continue;
                    kTable[l * nseg + s] = address(hp.keys());
                    vTable[l * nseg + s] = address(hp.values());
                }
                at += (start + n) * rowBytes;
            }
        }
        // size every work buffer first: a later growth would invalidate graphs captured in between
        buf("x", (long) rows * hidden);
        buf("xn", (long) rows * hidden);
        buf("qkv", (long) rows * (c.qDim() + 2L * c.kvDim()));
        buf("att", (long) rows * c.qDim());
        buf("tmp", (long) rows * hidden);   // OPT's learned positions
        buf("up", (long) rows * c.intermediateSize());     // OPT's fc1 output; SwiGLU activations (f32 from the GEMV)
        buf("actbf", (long) rows * c.intermediateSize() / 2 + 4);   // SwiGLU activations in bf16 from the GEMM
        buf("emb", (long) rows * c.wordEmbedDim());
        buf("last", (long) nseg * hidden);
        buf("projected", (long) nseg * c.wordEmbedDim());
        buf("argmax", nseg);
        int widestInput = Math.max(Math.max(hidden, c.qDim()), Math.max(c.intermediateSize(), c.wordEmbedDim()));
        buf("xbf", (long) rows * widestInput / 2 + 4);   // bf16 copy of a GEMM's input
        CUdeviceptr partials = buf("partials", (long) Math.max(1, decodeRows) * heads * splits * (hd + 2));
        // the pipelined attention's chunk counters (attention_pipelined, sparse_attention_pipelined), a pair a (row, kv
        // head): zero when made, and each launch leaves them zero
        long claimInts = 2L * Math.max(1, decodeRows) * c.numKvHeads();
        Long claimsHad = scratchBytes.get("claims");
        CUdeviceptr claims = buf("claims", claimInts);
        if (!scratchBytes.get("claims").equals(claimsHad)) {
            jcuda.driver.JCudaDriver.cuMemsetD32(claims, 0, scratchBytes.get("claims") / 4);
        }
        CUdeviceptr logits = buf("logits", (long) nseg * c.vocabSize());
        // the sparse path: per layer, which decode rows select (and their descriptors), which stay dense
        int L = layers.length;
        boolean anySparse = segments.stream().anyMatch(sg -> ((CudaKvCache) sg.cache()).sparse() != null);
        int[] denseCount = new int[L], sparseCount = new int[L], segR = new int[nseg];
        int[] denseRows = new int[0], sp = new int[0], sparseRows = new int[0];
        long[] lTable = new long[0], chTable = new long[0], sTable = new long[0], ringKTable = new long[0], ringVTable = new long[0];
        int[] segInfo = new int[0];
        int maxR = 0, maxCand = 1, maxK = 1, maxSinksWindow = 0;
        boolean allDspp = true;
        int[] runKinds = new int[3], stagedCount = new int[L], aheadCount = new int[L];
        if (anySparse) {
            denseRows = new int[L * Math.max(1, decodeRows)];
            sp = new int[L * Math.max(1, decodeRows) * SPARSE_FIELDS];
            sparseRows = new int[L * Math.max(1, decodeRows)];
            lTable = new long[L * nseg];
            chTable = new long[L * nseg];
            sTable = new long[L * nseg];
            ringKTable = new long[L * nseg];
            ringVTable = new long[L * nseg];
            segInfo = new int[SEGMENT_FIELDS * nseg];
            int[][] budgetsOf = new int[nseg][];
            int[] cand = new int[nseg];
            for (int s = 0; s < nseg; s++) {
                CudaKvCache cache = (CudaKvCache) segments.get(s).cache();
                KvConfig kv = cache.sparse();
                if (kv == null) continue;
                segR[s] = cache.labelChannels();
                maxR = Math.max(maxR, segR[s]);
                int[] info = {segR[s], cache.labelBits(), kv.sinks(), kv.window(), cache.capacity(), cache.labelGroup()};
                System.arraycopy(info, 0, segInfo, SEGMENT_FIELDS * s, SEGMENT_FIELDS);
                for (int l = 0; l < L; l++) {
                    lTable[l * nseg + s] = cache.labels(l) == null ? 0 : address(cache.labels(l));
                    chTable[l * nseg + s] = cache.channels(l) == null ? 0 : address(cache.channels(l));
                    sTable[l * nseg + s] = cache.scales(l) == null ? 0 : address(cache.scales(l));
                    ringKTable[l * nseg + s] = cache.ringKeys(l) == null ? 0 : address(cache.ringKeys(l));
                    ringVTable[l * nseg + s] = cache.ringValues(l) == null ? 0 : address(cache.ringValues(l));
                }
                int context = cache.length(0) + 1;   // the decode row's token included
                cand[s] = kv.candidates(context);
                // the previous segment's budgets where it has this policy and context (a batch started together)
                CudaKvCache before = s == 0 ? null : (CudaKvCache) segments.get(s - 1).cache();
                budgetsOf[s] = before != null && kv.equals(before.sparse()) && before.length(0) + 1 == context
                        ? budgetsOf[s - 1] : kv.layerBudgets(L, context);
            }
            for (int l = 0; l < L; l++) {
                // a layer's selecting rows in three runs: look-ahead rows staged from host memory, other look-ahead
                // rows, rows selecting on the main stream
                List<List<int[]>> runs = List.of(new java.util.ArrayList<>(), new java.util.ArrayList<>(),
                        new java.util.ArrayList<>());
                for (int i = 0; i < decodeRows; i++) {
                    int row = rowsOf[i], s = seg[row];
                    CudaKvCache cache = (CudaKvCache) segments.get(s).cache();
                    KvConfig kv = cache.sparse();
                    boolean single = segments.get(s).tokens().length == 1;
                    if (kv == null || !single || cache.labels(l) == null || cand[s] == 0
                            || denseFallback && cand[s] <= budgetsOf[s][l]) {
                        denseRows[l * decodeRows + denseCount[l]++] = row;   // dense layer, prefill, or fits the budget
                        continue;
                    }
                    boolean host = cache.onHost(l), shared = kv.gqaSelection() != KvConfig.GqaSelection.PER_HEAD;
                    int run = !kv.selectsAhead(l, L) ? 2 : host && shared ? 0 : 1;
                    boolean readsHost = host && run != 0;   // a staged row's selected rows are read from the device
                    runs.get(run).add(new int[]{row, cand[s], budgetsOf[s][l], kv.sinks(), kv.window(),
                            kv.gqaSelection().ordinal(), segR[s], cache.labelBits(), cache.capacity(), readsHost ? 1 : 0,
                            cache.labelGroup()});
                    runKinds[run] |= (shared ? 2 : 1) | (readsHost ? 8 : 4);
                    maxCand = Math.max(maxCand, cand[s]);
                    maxK = Math.max(maxK, budgetsOf[s][l]);
                    allDspp &= kv.policy() == KvPolicy.DSPP;
                    maxSinksWindow = Math.max(maxSinksWindow, kv.sinks() + kv.window());
                }
                stagedCount[l] = runs.get(0).size();
                aheadCount[l] = stagedCount[l] + runs.get(1).size();
                for (List<int[]> run : runs) {
                    for (int[] desc : run) {
                        int p = sparseCount[l]++;
                        sparseRows[l * decodeRows + p] = desc[0];
                        System.arraycopy(desc, 0, sp, (l * decodeRows + p) * SPARSE_FIELDS, SPARSE_FIELDS);
                    }
                }
            }
        }
        boolean anyShared = ((runKinds[0] | runKinds[1] | runKinds[2]) & 2) != 0;
        int maxSparse = anySparse ? Arrays.stream(sparseCount).max().orElse(0) : 0;
        // bucketed, so that a captured graph serves many steps: candidates to 1024s, budgets to powers of two
        maxCand = (maxCand + 1023) / 1024 * 1024;
        maxK = Math.max(64, Integer.highestOneBit(maxK - 1) << 1);
        // the selected rows' attention in blocks of GQA_WARPS warps where this build has the kernels for the step
        boolean groupAttention = gpu.has(CudaOps.sparseGroupKernel(hd, 1))
                && (!anyShared || gpu.has(CudaOps.sparseGroupKernel(hd, heads / c.numKvHeads())));
        int splitSlots = (groupAttention ? CudaOps.GQA_WARPS : 1) * 32, maxSlots = maxSinksWindow + maxK;
        int sparseSplits = (maxSlots + splitSlots - 1) / splitSlots;
        int allKinds = runKinds[0] | runKinds[1] | runKinds[2], group = heads / c.numKvHeads();
        if (groupAttention && allKinds == (2 | 4) && CudaOps.pipelined(gpu, hd, group)) {
            // every selecting row shares its group's selection on device memory: sparse_attention_pipelined's splits
            sparseSplits = CudaOps.pipelinedSplits(gpu, hd, group, maxSparse * c.numKvHeads(), maxSlots);
        }
        boolean fusedAppend = segments.stream().allMatch(sg -> ((CudaKvCache) sg.cache()).sparse() == null
                || ((CudaKvCache) sg.cache()).sparse().policy() == KvPolicy.DSPP);
        // sparse_select keeps the selection's heads x label channels of q in shared memory: at most 8 x 64
        boolean fused = allDspp && CudaOps.canSelect(gpu, maxCand)
                && (anyShared ? heads / c.numKvHeads() : 1) * maxR <= CudaOps.SELECT_MAX_QUERY_CHANNELS;
        CUdeviceptr scores = null, selected = null, spartials = null;
        if (maxSparse > 0) {
            if (!fused) scores = buf("scores", (long) maxSparse * heads * maxCand);
            selected = buf("selected", (long) maxSparse * heads * maxK);
            spartials = buf("spartials", (long) maxSparse * heads * sparseSplits * (hd + 2));
        }
        // lookahead's buffers: two of each that one layer's side work writes while the main stream reads the previous
        // layer's (by layer parity); the stages [2][segments][maxK][kvDim] bf16
        int maxAhead = Arrays.stream(aheadCount).max().orElse(0);
        boolean anyStaged = Arrays.stream(stagedCount).anyMatch(n -> n > 0);
        long[] stageKTable = new long[anyStaged ? 2 * nseg : 0], stageVTable = new long[stageKTable.length];
        CUdeviceptr aheadSel = null, aheadQ = null, aheadScores = null;
        long selectedInts = (long) maxAhead * heads * maxK;
        if (maxAhead > 0) {
            long stageBytes = (long) maxK * c.kvDim() * 2;
            if (anyStaged) {
                CUdeviceptr sk = buf("stageK", 2 * nseg * stageBytes / 4), sv = buf("stageV", 2 * nseg * stageBytes / 4);
                for (int i = 0; i < 2 * nseg; i++) {
                    stageKTable[i] = address(sk) + i * stageBytes;
                    stageVTable[i] = address(sv) + i * stageBytes;
                }
            }
            aheadSel = buf("aheadSelected", 2 * selectedInts);
            aheadQ = buf("aheadQ", (long) rows * c.qDim());
            if (!fused) aheadScores = buf("aheadScores", (long) maxAhead * heads * maxCand);
        }
        CUdeviceptr[] d = upload(new long[][]{kTable, vTable, lTable, chTable, sTable, ringKTable, ringVTable, stageKTable,
                        stageVTable},
                new int[][]{batch.tokens(), batch.positions(), seg, slot, rowLen,
                        tiles.stream().mapToInt(Integer::intValue).toArray(), rowsOf, lastRows, denseRows, sp, sparseRows,
                        segInfo});
        Lookahead ahead = maxAhead == 0 ? null : new Lookahead(aheadCount, stagedCount,
                groupAttention ? runKinds[0] : 0, groupAttention ? runKinds[1] : 0,
                ((runKinds[0] | runKinds[1]) & 1) == 0,
                new CUdeviceptr[]{aheadSel, at(aheadSel, selectedInts)},
                aheadQ, aheadScores,
                anyStaged ? new CUdeviceptr[]{d[7], d[7].withByteOffset(8L * nseg)} : null,
                anyStaged ? new CUdeviceptr[]{d[8], d[8].withByteOffset(8L * nseg)} : null);
        SparsePlan plan = anySparse ? new SparsePlan(denseCount, d[17], decodeRows, sparseCount, d[18], d[19],
                decodeRows, d[2], d[3], d[4], d[5], d[6], d[20], maxR, maxCand, maxK, maxSlots, sparseSplits, fused,
                fusedAppend, (runKinds[2] & 1) == 0, groupAttention ? runKinds[2] : 0, scores, selected, spartials,
                ahead) : null;
        return new Step(rows, nseg, splits, chunk, d[9], d[10], d[11], d[12], d[13], d[0], d[1], tiles.size() / 3, d[14],
                decodeRows, d[15], partials, densePipelined ? claims : null, d[16], logits, plan, hostPrefills);
    }

    /**
     * The forward pass's launches and nothing else (no allocation; the only copies are a host-placed prefill's stage
     * copies, and prefills are never captured): what a graph captures.
     */
    private void launchAll(Step st) {
        int rows = st.rows(), nseg = st.nseg(), hidden = c.hiddenSize(), qDim = c.qDim(), kvDim = c.kvDim();
        int inter = c.intermediateSize(), heads = c.numHeads(), kvHeads = c.numKvHeads(), hd = c.headDim();
        boolean opt = c.architecture() == Architecture.OPT, pre = c.layerNormBefore();
        CUdeviceptr tokens = st.tokens(), positions = st.positions();
        int qkvDim = qDim + 2 * kvDim;
        CUdeviceptr x = scratch.get("x"), qkv = scratch.get("qkv");
        CUdeviceptr q = qkv;   // [q | k | v] in rows of qkvDim
        CUdeviceptr att = scratch.get("att"), tmp = scratch.get("tmp"), up = scratch.get("up");
        CUdeviceptr xbf = scratch.get("xbf"), actBf = scratch.get("actbf");
        // many rows (a prefill): products on tensor cores, whose bf16 inputs the pre-norms and SwiGLU write directly
        boolean tc = CudaOps.tensorCores(rows, hidden) && CudaOps.tensorCores(rows, qDim)
                && CudaOps.tensorCores(rows, inter);

        // 1. token embedding (OPT: plus the learned position, after the projection when there is one)
        mark("embedding");
        if (projectIn == null) {
            gpu.launch("embed", rows, 1, 256, x, embed.ptr(), tokens, rows, c.wordEmbedDim(), ptr(positionTable),
                    positions, ModelConfig.OPT_POSITION_OFFSET);
        } else {
            CUdeviceptr emb = scratch.get("emb");
            gpu.launch("embed", rows, 1, 256, emb, embed.ptr(), tokens, rows, c.wordEmbedDim(), null, positions, 0);
            linear(x, emb, rows, projectIn, null, hidden, c.wordEmbedDim());
            gpu.launch("embed", rows, 1, 256, tmp, positionTable.ptr(), positions, rows, hidden, null, positions, 0);
            gpu.launch("residual_add", (int) (((long) rows * hidden + 255) / 256), 1, 256, x, tmp, (long) rows * hidden);
        }
        for (int layer = 0; layer < layers.length; layer++) {
            Layer w = layers[layer];
            markLayer = layer;
            // 2. lookahead: the next layer's selection (and its host-placed rows) on the side stream meanwhile
            if (aheadNext(st, layer)) lookAhead(st, layer + 1);
            // 3. q, k, v from the attention sublayer's input: RMSNorm in the product's prologue (LayerNorm: a norm
            //    kernel first; post-norm: the residual stream itself)
            mark("q/k/v product");
            SublayerInput attnIn = sublayerInput(w.attnNorm, w.attnNormBias, rows, tc);
            CudaOps.linear(gpu, qkv, attnIn.x(), xbf, attnIn.bf16(), rows, w.qkv.ptr(), ptr(w.qkvBias), qkvDim, hidden,
                    false, attnIn.norm(), false);
            // 4. rotary positions on q and k; every row's key and value to its sequence's cache (one launch; a host-placed
            //    prefill's to its device stage, which holds the layer's earlier rows)
            //    (dspp: with their labels and ring slots, in the same launch)
            SparsePlan sp = st.sparse();
            long at = 8L * layer * nseg;
            boolean fusedAppend = sp != null && sp.fusedAppend();
            mark(fusedAppend ? "rope + kv + label append" : "rope + kv append");
            for (HostPrefill hp : st.hostPrefills()) if (hp.cache().onHost(layer)) hp.stageHistory(gpu, layer);
            CUdeviceptr kt = st.kTable().withByteOffset(at), vt = st.vTable().withByteOffset(at);
            if (fusedAppend) {
                gpu.launch("kv_label_append_rope", rows, heads + 2 * kvHeads, Math.max(32, hd / 2), qkv, positions,
                        invFreq, kt, vt, sp.lTable().withByteOffset(at), sp.chTable().withByteOffset(at),
                        sp.sTable().withByteOffset(at), sp.ringKTable().withByteOffset(at),
                        sp.ringVTable().withByteOffset(at), st.seg(), st.slot(), st.lastRows(), sp.segInfo(), heads,
                        kvHeads, hd, qkvDim);
            } else {
                gpu.launch("kv_append_rope", rows, heads + 2 * kvHeads, hd / 2, qkv, positions, invFreq, kt, vt,
                        st.seg(), st.slot(), heads, kvHeads, hd, qkvDim);
            }
            // 5. every row attends over its cache: prefill tiles on tensor cores, decode rows split and merged; with
            //    sparse caches, this layer's selecting rows go through labels, top-k and attention over the selection
            if (sp == null) {
                mark("attention (dense)");
                CudaOps.attention(gpu, att, q, qkvDim, kt, vt, st.seg(), st.rowLen(), st.tileCount(), st.tiles(),
                        st.decodeRows(), st.rowsOf(), st.partials(), st.splits(), st.chunk(), st.denseClaims(), heads,
                        kvHeads, hd);
            } else {
                if (!fusedAppend) {
                    mark("label append");
                    gpu.launch("label_append", rows, heads, Math.max(32, (sp.maxR() + 31) / 32 * 32), qkv,
                            sp.lTable().withByteOffset(at), sp.chTable().withByteOffset(at), sp.sTable().withByteOffset(at),
                            sp.ringKTable().withByteOffset(at), sp.ringVTable().withByteOffset(at), st.seg(), st.slot(),
                            st.lastRows(), sp.segInfo(), heads, kvHeads, hd, qkvDim);
                }
                mark("attention (dense)");
                CudaOps.attention(gpu, att, q, qkvDim, kt, vt, st.seg(), st.rowLen(), st.tileCount(), st.tiles(),
                        sp.denseCount()[layer], sp.denseRows().withByteOffset(4L * layer * sp.denseStride()),
                        st.partials(), st.splits(), st.chunk(), st.denseClaims(), heads, kvHeads, hd);
                int n = sp.sparseCount()[layer];
                if (n > 0) {
                    // the layer's selecting rows: look-ahead rows first (selected on the side stream, staged ones from
                    // their device stage), then the rows selecting here
                    Lookahead la = sp.ahead();
                    int ahead = la == null ? 0 : la.aheadCount()[layer], staged = la == null ? 0 : la.stagedCount()[layer];
                    if (ahead > 0) {
                        mark("wait for the side stream");
                        gpu.await(lookaheadDone[layer & 1]);
                        mark("attention (look-ahead rows)");
                        CUdeviceptr sel = la.selected()[layer & 1];
                        if (staged > 0) {
                            attendSelected(st, layer, 0, staged, la.stageK()[layer & 1], la.stageV()[layer & 1], sel,
                                    la.stagedKinds());
                        }
                        if (ahead > staged) {
                            attendSelected(st, layer, staged, ahead - staged, kt, vt,
                                    at(sel, (long) staged * heads * sp.maxK()), la.aheadKinds());
                        }
                    }
                    if (n > ahead) {
                        mark(sp.fused() ? "selection (fused)" : "selection (scores, top-k)");
                        select(st, layer, ahead, n - ahead, q, qkvDim, sp.sharedOnly(), sp.selected(), sp.scores());
                        mark("attention (selected rows)");
                        attendSelected(st, layer, ahead, n - ahead, kt, vt, sp.selected(), sp.groupKinds());
                    }
                    gpu.launch("attention_merge", n * heads, 1, Math.min(1024, 4 * hd), att, sp.partials(),
                            sp.sparseRows().withByteOffset(4L * layer * sp.sparseStride()), heads, hd, sp.splits());
                }
            }
            for (HostPrefill hp : st.hostPrefills()) if (hp.cache().onHost(layer)) hp.writeBack(gpu, layer);
            // 6. output projection, added into the residual stream by its epilogue (post-norm: then the norm), once the
            //    side stream's prediction for the next layer has read the residual stream
            mark("output product");
            if (aheadNext(st, layer)) gpu.await(lookaheadRead[(layer + 1) & 1]);
            CudaOps.linear(gpu, x, att, xbf, false, rows, w.o.ptr(), ptr(w.oBias), hidden, qDim, false, null, true);
            if (!pre) norm(x, x, null, w.attnNorm, w.attnNormBias, rows);
            mark("mlp");
            SublayerInput mlpIn = sublayerInput(w.mlpNorm, w.mlpNormBias, rows, tc);
            // 7. MLP: SwiGLU (in the gate/up product's epilogue) or OPT's ReLU; the down projection adds into x
            if (opt) {
                CudaOps.linear(gpu, up, mlpIn.x(), xbf, mlpIn.bf16(), rows, w.gateUp.ptr(), ptr(w.gateUpBias), inter,
                        hidden, false, mlpIn.norm(), false);
                gpu.launch("relu", (int) (((long) rows * inter + 255) / 256), 1, 256, up, (long) rows * inter);
                CudaOps.linear(gpu, x, up, xbf, false, rows, w.down.ptr(), ptr(w.downBias), hidden, inter, false, null,
                        true);
            } else {
                CUdeviceptr act = tc ? actBf : up;   // [rows][inter]: bf16 for the GEMM, f32 for the GEMV
                CudaOps.linear(gpu, act, mlpIn.x(), xbf, mlpIn.bf16(), rows, w.gateUp.ptr(), ptr(w.gateUpBias),
                        2 * inter, hidden, true, mlpIn.norm(), false);
                CudaOps.linear(gpu, x, up, actBf, tc, rows, w.down.ptr(), ptr(w.downBias), hidden, inter, false, null,
                        true);
            }
            if (!pre) norm(x, x, null, w.mlpNorm, w.mlpNormBias, rows);
        }
        // 8. last row of each segment, final norm (RMSNorm: in lm_head's prologue), lm_head
        markLayer = -1;
        mark("lm head");
        CUdeviceptr last = scratch.get("last");
        gpu.launch("gather_rows", nseg, 1, 256, last, x, st.lastRows(), nseg, hidden);
        CudaOps.RmsNorm headNorm = null;
        if (pre && finalNorm != null) {
            headNorm = projectOut == null ? fusedNorm(finalNorm, finalNormBias) : null;
            if (headNorm == null) norm(last, last, null, finalNorm, finalNormBias, nseg);
        }
        if (projectOut != null) {
            CUdeviceptr projected = scratch.get("projected");
            linear(projected, last, nseg, projectOut, null, c.wordEmbedDim(), hidden);
            last = projected;
        }
        CudaOps.linear(gpu, st.logits(), last, scratch.get("xbf"), false, nseg, lmHead.ptr(), null, c.vocabSize(),
                c.wordEmbedDim(), false, headNorm, false);
    }

    /** Whether layer + 1 has look-ahead rows, whose side-stream work starts with layer {@code layer}. */
    private boolean aheadNext(Step st, int layer) {
        return st.sparse() != null && st.sparse().ahead() != null && layer + 1 < layers.length
                && st.sparse().ahead().aheadCount()[layer + 1] > 0;
    }

    /** Joins the side stream's work for a layer back into the main stream, by layer parity. */
    private final jcuda.driver.CUevent[] lookaheadDone;
    /**
     * Recorded on the side stream once its query prediction for a layer has read the residual stream, by that layer's
     * parity; the main stream waits for it before the previous layer's output product changes the residual stream.
     */
    private final jcuda.driver.CUevent[] lookaheadRead;

    /**
     * Side-stream work for layer {@code layer}'s look-ahead rows, made while layer - 1 runs on the main stream: on the
     * side stream the query predicted from their residual stream (read in place: the main stream's output product of
     * layer - 1 waits for {@link #lookaheadRead}; a copy made first on the main stream cost a launch a layer, 4.5 us, on
     * its critical path) through this layer's norm and q projection (label channels only; each block normalises the row
     * itself: a norm kernel first, one launch more on the side stream, measured 477 / 574 tokens/s at batch 8 and 32K,
     * 16- / 8-bit, against 518 / 590, a call each on the H100), the selection, and the
     * staged rows' keys and values gathered from host memory; the main stream waits for {@link #lookaheadDone} at
     * this layer's attention.
     */
    private void lookAhead(Step st, int layer) {
        SparsePlan sp = st.sparse();
        Lookahead la = sp.ahead();
        int n = la.aheadCount()[layer], staged = la.stagedCount()[layer], parity = layer & 1;
        int hidden = c.hiddenSize(), heads = c.numHeads();
        Layer w = layers[layer];
        CUdeviceptr x = scratch.get("x"), desc = sparseDescriptors(sp, layer, 0);
        gpu.onSide(() -> {
            mark("look-ahead query");
            boolean pre = c.layerNormBefore();
            int parts = (sp.maxR() + CudaOps.PREDICT_LABELS - 1) / CudaOps.PREDICT_LABELS;   // blocks a head
            gpu.launchWithSharedMemory("predict_label_queries", n, heads * parts, 256, 4 * hidden, la.q(), x,
                    pre ? w.attnNorm.ptr() : null, pre ? ptr(w.attnNormBias) : null, c.normEps(), w.qkv.ptr(),
                    ptr(w.qkvBias), st.positions(), invFreq, sp.chTable().withByteOffset(8L * layer * st.nseg()), st.seg(),
                    desc, heads, c.headDim(), hidden);
            gpu.record(lookaheadRead[parity]);
            mark("look-ahead selection");
            select(st, layer, 0, n, la.q(), c.qDim(), la.sharedOnly(), la.selected()[parity], la.scores());
            if (staged > 0) {
                mark("look-ahead gather (host rows)");
                long at = 8L * layer * st.nseg();
                // about 64 blocks (a few MB in flight): the link is the limit. Fewer blocks, or blocks holding whole
                // multiprocessors, left the products beside them faster but the gather slower, the step no faster;
                // 132 blocks were slower (H100, batch 1 / 8 at 32K: dev/cuda/README.md)
                int units = staged * c.numKvHeads();
                gpu.launch("gather_selected_rows", units * Math.max(1, Math.min((sp.maxK() + 63) / 64, 64 / units)), 1, 256,
                        la.selected()[parity], st.kTable().withByteOffset(at), st.vTable().withByteOffset(at),
                        la.stageK()[parity], la.stageV()[parity], st.seg(), desc, staged, heads, c.numKvHeads(), c.headDim(),
                        sp.maxK());
            }
            mark(SIDE_IDLE);
            gpu.record(lookaheadDone[parity]);
        });
    }

    /** The descriptors of a layer's selecting rows from row {@code from} on. */
    private static CUdeviceptr sparseDescriptors(SparsePlan sp, int layer, int from) {
        return sp.sp().withByteOffset(4L * SPARSE_FIELDS * (layer * sp.sparseStride() + from));
    }

    /**
     * The selection of {@code n} of a layer's selecting rows from row {@code from} on, ranked by q ([rows][qStride]):
     * into selected ([n * H][maxK]): fused (dspp), or scores then top-k through {@code scores} ([n * H][maxCand]).
     * {@code sharedOnly}: each of these rows shares its group's selection.
     */
    private void select(Step st, int layer, int from, int n, CUdeviceptr q, int qStride, boolean sharedOnly,
                        CUdeviceptr selected, CUdeviceptr scores) {
        SparsePlan sp = st.sparse();
        int heads = c.numHeads(), kvHeads = c.numKvHeads(), hd = c.headDim();
        long at = 8L * layer * st.nseg();
        CUdeviceptr lt = sp.lTable().withByteOffset(at), ct = sp.chTable().withByteOffset(at);
        CUdeviceptr sct = sp.sTable().withByteOffset(at), desc = sparseDescriptors(sp, layer, from);
        if (sp.fused()) {
            CudaOps.select(gpu, selected, q, lt, ct, sct, st.seg(), desc, n, heads, kvHeads, sharedOnly, hd, qStride,
                    sp.maxCand(), sp.maxK());
        } else {
            gpu.launch("sparse_scores", n * heads, (sp.maxCand() + 255) / 256, 256, scores, q, lt, ct, sct, st.seg(),
                    desc, heads, hd, qStride, sp.maxCand());
            gpu.launch("sparse_topk", n * heads, 1, 1024, selected, scores, desc, heads, kvHeads, sp.maxCand(), sp.maxK());
        }
    }

    /**
     * Attention of {@code n} of a layer's selecting rows from row {@code from} on over sinks, window and their
     * selection ({@code selected}: [n * H][maxK] slots of the stores in kTable / vTable), into the layer's partials at
     * those rows.
     */
    private void attendSelected(Step st, int layer, int from, int n, CUdeviceptr kTable, CUdeviceptr vTable,
                                CUdeviceptr selected, int kinds) {
        SparsePlan sp = st.sparse();
        int heads = c.numHeads(), hd = c.headDim();
        long at = 8L * layer * st.nseg();
        CudaOps.sparseAttention(gpu, at(sp.partials(), (long) from * heads * sp.splits() * (hd + 2)), scratch.get("qkv"),
                kTable, vTable, sp.ringKTable().withByteOffset(at), sp.ringVTable().withByteOffset(at), st.seg(),
                st.rowLen(), sparseDescriptors(sp, layer, from), selected, scratch.get("claims"), n, heads,
                c.numKvHeads(), hd, sp.splits(), c.qDim() + 2 * c.kvDim(), sp.maxK(), kinds);
    }

    /** Bytes of the model's weights (in device memory, but for the embedding table after placeEmbeddings(true)). */
    public long weightBytes() {
        return weightBytes;
    }

    /**
     * Keeps the token embedding table in pinned host memory mapped into the device ({@code host}) or in device memory.
     * A step gathers one row a token from it (8 KB for Llama-3.1-8B, over the host link), so the host costs a step a
     * few microseconds and frees the whole table on the device (1.05 GB for Llama-3.1-8B); host placement moves it
     * there ({@link #prepare}, and the first such cache). A model whose output projection is the embedding table
     * (tied) reads it whole every step: it stays on the device, and this returns false.
     *
     * @return whether the table is in host memory now
     */
    public boolean placeEmbeddings(boolean host) {
        if (host == embeddingsOnHost || lmHead == embed) return embeddingsOnHost;
        gpu.makeCurrent();
        gpu.synchronize();   // no step reads the old table any more
        long bytes = embed.elements() * 2;
        CUdeviceptr moved = host ? gpu.allocHost(bytes) : gpu.alloc(bytes);
        jcuda.driver.JCudaDriver.cuMemcpy(moved, embed.ptr(), bytes);
        if (host) gpu.free(embed.ptr(), bytes); else gpu.freeHost(embed.ptr(), bytes);
        embed = new Weight(moved, embed.elements());
        embeddingsOnHost = host;
        gpu.trim();   // the device block goes back to the driver, not to the pool's cache
        dropGraphs();   // they hold the old table's address
        LOG.info(String.format(java.util.Locale.ROOT, "token embedding table (%.2f GB) moved to %s", bytes / 1e9,
                host ? "pinned host memory" : "device memory"));
        return host;
    }

    /** Host placement: the token embedding table to host memory (keep the device for what it must hold). */
    @Override
    public void prepare(KvConfig kv) {
        if (kv.placement() == KvConfig.Placement.HOST) placeEmbeddings(true);
    }

    /** Whether the token embedding table is in pinned host memory ({@link #placeEmbeddings}). */
    public boolean embeddingsOnHost() {
        return embeddingsOnHost;
    }

    /** Bytes of weights a decode step reads: all of them but the embedding table, of which it gathers a few rows. */
    public long weightBytesPerStep() {
        return weightBytes - embedBytes;
    }

    @Override
    public void close() {
        gpu.makeCurrent();
        dropGraphs();
        for (Map.Entry<String, CUdeviceptr> e : scratch.entrySet()) gpu.free(e.getValue(), scratchBytes.get(e.getKey()));
        scratch.clear();
        scratchBytes.clear();
        for (jcuda.driver.CUevent e : lookaheadDone) gpu.destroy(e);
        for (jcuda.driver.CUevent e : lookaheadRead) gpu.destroy(e);
    }
}
