package io.dsflow.engine.cuda;

import io.dsflow.engine.DsflowException;
import io.dsflow.engine.kv.CalibrationStatistics;
import io.dsflow.engine.kv.KvBytes;
import io.dsflow.engine.kv.KvCache;
import io.dsflow.engine.kv.KvConfig;
import jcuda.driver.CUdeviceptr;

import java.lang.ref.Cleaner;

import static jcuda.driver.JCudaDriver.cuMemcpy;
import static jcuda.driver.JCudaDriver.cuMemcpyDtoD;

/**
 * A sequence's KV cache for the CUDA backend's forward pass:
 * <pre>
 *   keys[layer], values[layer]: [capacity][kvHeads * headDim] bf16, token-major
 *   labels[layer]:              [capacity][labelRows * r] fp16, or int8 with 8-bit labels, or [capacity][labelRows]
 *                               [(r + 1) / 2] bytes of two int4 each with 4-bit labels (sparse_rows.cuh; ds / dspp,
 *                               sparse layers only; null otherwise); labelRows = heads / labelGroup
 *                               (KvConfig#labelGroup: a row a query head, or a kv head where the group's heads share
 *                               their channels); a slot's labelRows * KvConfig#labelValueBytes(r) bytes
 *   scales[layer]:              [labelRows][capacity] fp16, 8- and 4-bit labels only: label = integer value * scale of
 *                               (row, token)
 *   (the sparse layers' labels are one device block, their scales another: blocks of a few MB a layer would each lose
 *   up to 2 MB to the memory pool's size classes)
 *   channels[layer]:            [heads * r] ints, the calibrated channels each head's labels keep
 *   ringKeys[layer], ringValues[layer]: [sinks + window][kvHeads * headDim] bf16, host placement's sparse layers only:
 *                               token p in slot p (p < sinks), else sinks + (p - sinks) mod window
 * </pre>
 * so that growing (capacity doubles) is one contiguous copy per layer. Device placement keeps everything in device
 * memory. Host placement keeps the sparse layers' keys and values in pinned host memory mapped into the device (the
 * kernels read and write it in place), and their sinks and window also in device rings, which the sparse attention
 * reads instead of the host copy; the labels and the dense layers stay on the device; with a row cache
 * (KvConfig#rowCache) also the rows its steps selected lately ({@link CudaRowCache}). A calibrating cache
 * ({@link #calibrating}) is dense and also holds calibration's device accumulators. Freed by {@link #release()}, or
 * when it becomes unreachable.
 */
public final class CudaKvCache implements KvCache, StepPlanner.PlannedCache {
    private static final Cleaner CLEANER = Cleaner.create();

    /** The device buffers, apart from the cache object so that the cleaner can free them. */
    private static final class Buffers implements Runnable {
        final CudaRuntime gpu;
        final CUdeviceptr[] keys, values, labels, scales, channels, ringKeys, ringValues;
        /** Layers whose keys and values are in pinned host memory. */
        final boolean[] onHost;
        /**
         * The blocks the device layers' keys and values (one allocation, so the pool rounds a cache once, not every
         * layer's store to its 2 MB size class), labels[] and scales[] lie in, layer after layer.
         */
        CUdeviceptr storeBlock, labelBlock, scaleBlock;
        /** A calibrating cache's accumulators (null otherwise): freed with the cache. */
        CudaCalibration calibration;
        /** Host placement with a row cache (KvConfig#rowCache): the device cache of selected rows, else null. */
        CudaRowCache rowCache;
        long bytesEach, scaleBytesEach, storeBlockBytes, labelBlockBytes, scaleBlockBytes, channelBytes, ringBytes;
        boolean freed;

        Buffers(CudaRuntime gpu, int layers) {
            this.gpu = gpu;
            keys = new CUdeviceptr[layers];
            values = new CUdeviceptr[layers];
            labels = new CUdeviceptr[layers];
            scales = new CUdeviceptr[layers];
            channels = new CUdeviceptr[layers];
            ringKeys = new CUdeviceptr[layers];
            ringValues = new CUdeviceptr[layers];
            onHost = new boolean[layers];
        }

        /** Frees a host-placed layer's store (the device layers' stores go with their block). */
        void freeHostStore(CUdeviceptr p, int layer) {
            if (onHost[layer]) gpu.freeHost(p, bytesEach);
        }

        @Override
        public synchronized void run() {
            if (freed) return;
            freed = true;
            gpu.makeCurrent();
            for (int l = 0; l < keys.length; l++) {
                if (keys[l] != null) freeHostStore(keys[l], l);
                if (values[l] != null) freeHostStore(values[l], l);
                if (channels[l] != null) gpu.free(channels[l], channelBytes);
                if (ringKeys[l] != null) gpu.free(ringKeys[l], ringBytes);
                if (ringValues[l] != null) gpu.free(ringValues[l], ringBytes);
            }
            if (storeBlock != null) gpu.free(storeBlock, storeBlockBytes);
            if (labelBlock != null) gpu.free(labelBlock, labelBlockBytes);
            if (scaleBlock != null) gpu.free(scaleBlock, scaleBlockBytes);
            if (calibration != null) calibration.release();
            if (rowCache != null) rowCache.run();
        }
    }

    /**
     * Slots a new cache starts with; it doubles as it fills, unless reserved for its tokens ({@link #reserveTotal}, as
     * the scheduler does at admission: what CudaBackend.cacheBytes budgets).
     */
    static final int INITIAL_CAPACITY = 256;
    /** A cache reserved for a number of tokens holds that many rounded up to this ({@link #reserveTotal}). */
    static final int GRANULE = 64;

    /** The capacity of a cache reserved for {@code tokens} tokens ({@link #reserveTotal}). */
    static long capacityFor(long tokens) {
        return Math.max(INITIAL_CAPACITY, (tokens + GRANULE - 1) / GRANULE * GRANULE);
    }

    private final CudaRuntime gpu;
    private final int layers, kvDim;
    /**
     * The sparse policy (null: dense), r, the label bytes of a slot (labelRows() rows of KvConfig#labelValueBytes), and
     * whether the labels have scales (8- and 4-bit).
     */
    private final KvConfig sparse;
    private final int labelR, heads, kvHeads, labelGroup;
    private final long labelSlotBytes;
    private final boolean scaled;
    private final int[][][] channelsHost;
    private final int[] length;
    private final Buffers buffers;
    private final Cleaner.Cleanable cleanable;
    private int capacity;

    CudaKvCache(CudaRuntime gpu, int layers, int kvDim, int initialCapacity) {
        this(gpu, layers, kvDim, initialCapacity, null, 0, 0, null, 1);
    }

    /**
     * A dense cache that calibrates: the forward pass adds the channel statistics of each row it appends to the
     * cache's {@link #calibration()}, which collects them into {@code stats} (a model of {@code heads} query heads,
     * {@code kvHeads} kv heads of {@code headDim}).
     */
    static CudaKvCache calibrating(CudaRuntime gpu, int layers, int heads, int kvHeads, int headDim,
                                   CalibrationStatistics stats) {
        CudaCalibration calibration = new CudaCalibration(gpu, layers, heads, kvHeads, headDim, stats);
        try {
            CudaKvCache cache = new CudaKvCache(gpu, layers, kvHeads * headDim, INITIAL_CAPACITY);
            cache.buffers.calibration = calibration;
            return cache;
        } catch (RuntimeException e) {
            calibration.release();
            throw e;
        }
    }

    /**
     * A cache for a sparse policy: {@code channels[layer][head]} the r channels of each head's labels, null for the
     * dense layers (which keep no labels); a label row for each {@code labelGroup} query heads (whose channels must be
     * the same: CudaBackend#newCache checks), of {@code kvHeads} kv heads.
     */
    CudaKvCache(CudaRuntime gpu, int layers, int kvDim, int initialCapacity, KvConfig sparse, int heads, int kvHeads,
                int[][][] channels, int labelGroup) {
        this.gpu = gpu;
        this.layers = layers;
        this.kvDim = kvDim;
        this.sparse = sparse;
        this.heads = heads;
        this.kvHeads = kvHeads;
        this.labelGroup = Math.max(1, labelGroup);
        this.channelsHost = channels;
        this.length = new int[layers];
        this.buffers = new Buffers(gpu, layers);
        this.cleanable = CLEANER.register(this, buffers);
        int rr = 0;
        if (sparse != null) {
            for (int l = 0; l < layers; l++) {
                if (channels[l] == null) continue;
                int r = channels[l][0].length;
                rr = r;
                int[] flat = new int[heads * r];
                for (int h = 0; h < heads; h++) System.arraycopy(channels[l][h], 0, flat, h * r, r);
                buffers.channelBytes = flat.length * 4L;
                buffers.channels[l] = gpu.alloc(buffers.channelBytes);
                jcuda.driver.JCudaDriver.cuMemcpyHtoD(buffers.channels[l], jcuda.Pointer.to(flat), buffers.channelBytes);
                if (sparse.placement() == KvConfig.Placement.HOST) {
                    buffers.onHost[l] = true;
                    buffers.ringBytes = (long) (sparse.sinks() + sparse.window()) * kvDim * 2;
                    if (buffers.ringBytes > 0) {
                        buffers.ringKeys[l] = gpu.alloc(buffers.ringBytes);
                        buffers.ringValues[l] = gpu.alloc(buffers.ringBytes);
                    }
                }
            }
        }
        this.labelR = rr;
        this.labelSlotBytes = sparse == null ? 0 : labelRows() * sparse.labelValueBytes(rr);
        this.scaled = sparse != null && sparse.labelBits() < 16;
        allocate(Math.max(16, initialCapacity));
        if (sparse != null && sparse.rowCache() > 0 && anyOnHost()) {
            buffers.rowCache = new CudaRowCache(gpu, buffers.onHost, kvHeads, kvDim, sparse.rowCache(), capacity);
        }
    }

    private void allocate(int cap) {
        long bytes = (long) cap * kvDim * 2, labelLayer = cap * labelSlotBytes;
        long scaleLayer = scaled ? (long) labelRows() * cap * 2 : 0;
        int sparseLayers = 0, deviceLayers = 0;
        for (CUdeviceptr ch : buffers.channels) if (ch != null) sparseLayers++;
        for (boolean host : buffers.onHost) if (!host) deviceLayers++;
        long storeBlockBytes = 2L * deviceLayers * bytes;
        CUdeviceptr storeBlock = deviceLayers == 0 ? null : gpu.alloc(storeBlockBytes);
        CUdeviceptr labelBlock = sparseLayers == 0 ? null : gpu.alloc(sparseLayers * labelLayer);
        CUdeviceptr scaleBlock = sparseLayers == 0 || scaleLayer == 0 ? null : gpu.alloc(sparseLayers * scaleLayer);
        for (int l = 0, i = 0, d = 0; l < layers; l++) {
            if (buffers.channels[l] != null) {
                CUdeviceptr lab = labelBlock.withByteOffset(i * labelLayer);
                long used = length[l] * labelSlotBytes;
                if (buffers.labels[l] != null && used > 0) cuMemcpyDtoD(lab, buffers.labels[l], used);
                buffers.labels[l] = lab;
                if (scaleBlock != null) {   // row-major: each label row's scales move to their place at the new capacity
                    CUdeviceptr sc = scaleBlock.withByteOffset(i * scaleLayer);
                    if (buffers.scales[l] != null) {
                        for (int h = 0; h < labelRows() && length[l] > 0; h++) {
                            cuMemcpyDtoD(sc.withByteOffset((long) h * cap * 2), buffers.scales[l].withByteOffset((long) h * capacity * 2),
                                    (long) length[l] * 2);
                        }
                    }
                    buffers.scales[l] = sc;
                }
                i++;
            }
            boolean host = buffers.onHost[l];
            CUdeviceptr k = host ? gpu.allocHost(bytes) : storeBlock.withByteOffset(2L * d * bytes);
            CUdeviceptr v = host ? gpu.allocHost(bytes) : storeBlock.withByteOffset((2L * d + 1) * bytes);
            if (!host) d++;
            if (buffers.keys[l] != null) {
                long used = (long) length[l] * kvDim * 2;
                if (used > 0) {   // unified addressing: one copy call for device and host stores
                    cuMemcpy(k, buffers.keys[l], used);
                    cuMemcpy(v, buffers.values[l], used);
                }
                buffers.freeHostStore(buffers.keys[l], l);
                buffers.freeHostStore(buffers.values[l], l);
            }
            buffers.keys[l] = k;
            buffers.values[l] = v;
        }
        if (buffers.storeBlock != null) gpu.free(buffers.storeBlock, buffers.storeBlockBytes);
        if (buffers.labelBlock != null) gpu.free(buffers.labelBlock, buffers.labelBlockBytes);
        if (buffers.scaleBlock != null) gpu.free(buffers.scaleBlock, buffers.scaleBlockBytes);
        buffers.storeBlock = storeBlock;
        buffers.storeBlockBytes = storeBlockBytes;
        buffers.labelBlock = labelBlock;
        buffers.scaleBlock = scaleBlock;
        buffers.labelBlockBytes = sparseLayers * labelLayer;
        buffers.scaleBlockBytes = sparseLayers * scaleLayer;
        buffers.bytesEach = bytes;
        buffers.scaleBytesEach = scaleLayer;
        capacity = cap;
        if (buffers.rowCache != null) buffers.rowCache.storeGrew(cap);
    }

    @Override
    public void reserveTotal(long tokens) {
        long cap = capacityFor(tokens);
        if (cap > Integer.MAX_VALUE) throw new DsflowException("a cache of " + tokens + " tokens is too large");
        if (cap > capacity) allocate((int) cap);
    }

    /** Makes room for {@code more} tokens past the current length of every layer (doubling the capacity). */
    void reserve(int more) {
        int need = 0;
        for (int l : length) need = Math.max(need, l + more);
        if (need > capacity) allocate(Math.max(need, capacity * 2));
    }

    CUdeviceptr keys(int layer) {
        return buffers.keys[layer];
    }

    CUdeviceptr values(int layer) {
        return buffers.values[layer];
    }

    /** This layer's ring of sinks and window on the device (host placement's sparse layers), else null. */
    CUdeviceptr ringKeys(int layer) {
        return buffers.ringKeys[layer];
    }

    CUdeviceptr ringValues(int layer) {
        return buffers.ringValues[layer];
    }

    /** Whether any layer's keys and values are in host memory (host placement). */
    boolean anyOnHost() {
        for (boolean h : buffers.onHost) if (h) return true;
        return false;
    }

    /** Whether this layer's keys and values are in host memory. */
    @Override
    public boolean onHost(int layer) {
        return buffers.onHost[layer];
    }

    /**
     * Whether layer {@code layer}'s selection of {@code rows} rows this step is served from the device cache of selected
     * rows (host placement with a row cache; its places made to hold the step), else read from host memory.
     */
    @Override
    public boolean servesRows(int layer, int rows) {
        CudaRowCache rc = buffers.rowCache;
        return rc != null && rc.has(layer) && rc.ensurePlaces(layer, rows);
    }

    @Override
    public boolean keepsRowCache() {
        return buffers.rowCache != null;
    }

    /** The device cache of selected rows (host placement with a row cache), else null. */
    CudaRowCache rowCache() {
        return buffers.rowCache;
    }

    /** The accumulators of a calibrating cache ({@link #calibrating}), else null. */
    CudaCalibration calibration() {
        return buffers.calibration;
    }

    /** The sparse policy, or null for a dense cache. */
    @Override
    public KvConfig sparse() {
        return sparse;
    }

    /** This layer's label cache (null: a dense cache or layer). */
    CUdeviceptr labels(int layer) {
        return buffers.labels[layer];
    }

    /** This layer's label scales (8- and 4-bit labels), else null. */
    CUdeviceptr scales(int layer) {
        return buffers.scales[layer];
    }

    /** 16, 8 or 4 (0 for a dense cache). */
    @Override
    public int labelBits() {
        return sparse == null ? 0 : sparse.labelBits();
    }

    CUdeviceptr channels(int layer) {
        return buffers.channels[layer];
    }

    /** Label channels per head (0 for a dense cache). */
    @Override
    public int labelChannels() {
        return labelR;
    }

    /** Query heads a label row serves (1, or the GQA group where its heads share their channels). */
    @Override
    public int labelGroup() {
        return labelGroup;
    }

    /** Label rows a token (query heads / labelGroup). */
    int labelRows() {
        return heads / labelGroup;
    }

    int length(int layer) {
        return length[layer];
    }

    void appended(int layer, int n) {
        length[layer] += n;
    }

    @Override
    public int capacity() {
        return capacity;
    }

    /** Marks the first {@code tokens} slots of every layer as filled (bench: a cache of random context). */
    void fillTo(int tokens) {
        reserve(tokens - length[0]);
        java.util.Arrays.fill(length, tokens);
    }

    @Override
    public int length() {
        return length[layers - 1];
    }

    /** A segment's cache as the CUDA forward pass uses it; a cache made by another backend is refused. */
    static CudaKvCache of(KvCache cache) {
        if (cache instanceof CudaKvCache cuda) return cuda;
        throw new io.dsflow.engine.DsflowException("the cuda backend cannot run a " + cache.getClass().getSimpleName()
                + ": a cache made by another backend");
    }

    /** A deep copy of what the cache holds; the copy of a calibrating cache does not calibrate. */
    @Override
    public KvCache copy() {
        gpu.makeCurrent();
        // (the copy's row cache starts empty: it changes where rows are read from, never what a step attends)
        CudaKvCache c = new CudaKvCache(gpu, layers, kvDim, capacity, sparse, heads, kvHeads, channelsHost,
                labelGroup);
        for (int l = 0; l < layers; l++) {
            long used = (long) length[l] * kvDim * 2;
            if (used > 0) {
                cuMemcpy(c.buffers.keys[l], buffers.keys[l], used);
                cuMemcpy(c.buffers.values[l], buffers.values[l], used);
                if (buffers.labels[l] != null) {
                    cuMemcpyDtoD(c.buffers.labels[l], buffers.labels[l], length[l] * labelSlotBytes);
                }
                if (buffers.scales[l] != null) cuMemcpyDtoD(c.buffers.scales[l], buffers.scales[l], buffers.scaleBytesEach);
                if (buffers.ringKeys[l] != null) {
                    cuMemcpyDtoD(c.buffers.ringKeys[l], buffers.ringKeys[l], buffers.ringBytes);
                    cuMemcpyDtoD(c.buffers.ringValues[l], buffers.ringValues[l], buffers.ringBytes);
                }
            }
            c.length[l] = length[l];
        }
        return c;
    }

    @Override
    public KvBytes bytes() {
        long b = 0, labels = 0, rings = 0;
        for (int l = 0; l < layers; l++) {
            b += 2L * length[l] * kvDim * 2;
            if (buffers.labels[l] != null) labels += length[l] * (labelSlotBytes + (scaled ? labelRows() * 2L : 0));
            if (buffers.ringKeys[l] != null) rings += 2 * buffers.ringBytes;
        }
        int window = sparse == null ? 0 : sparse.window(), sinkSlots = sparse == null ? 0 : sparse.sinks();
        long windowBytes = window + sinkSlots == 0 ? 0 : rings * window / (window + sinkSlots);
        return new KvBytes(b, labels, windowBytes, rings - windowBytes);
    }

    @Override
    public void release() {
        cleanable.clean();
    }
}
