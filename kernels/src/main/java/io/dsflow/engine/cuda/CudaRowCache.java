package io.dsflow.engine.cuda;

import io.dsflow.engine.kv.RowCache;
import jcuda.Pointer;
import jcuda.driver.CUdeviceptr;

import static jcuda.driver.JCudaDriver.cuMemcpyDtoD;
import static jcuda.driver.JCudaDriver.cuMemcpyHtoD;
import static jcuda.driver.JCudaDriver.cuMemsetD32;

/**
 * A sequence's device cache of selected rows for its host-placed layers (issue 26, KvConfig#rowCache): a decode step's
 * shared selection is served from it by {@link RowCacheKernels#serve}, and only the rows it misses cross the host link.
 * For each such layer:
 * <pre>
 *   keys[l], values[l]: [places][kvHeads * headDim] bf16, the rows held (a place a row of each kv head's ring)
 *   index[l]:           ints, RowCacheKernels' header (places allocated, places in the ring, F in 256ths, the placeOf
 *                       pointer, a hand a kv head), then owner [places][kvHeads]: the store slot at a place, -1: empty
 *   placeOf[l]:         [capacity][kvHeads] ints, the place of a store slot's row, -1: not held
 * </pre>
 * The kernel grows each ring to F times the rows a step selects within the places allocated; before each step the
 * planner has the allocation hold that many ({@link #ensurePlaces}), growing it by whole {@link #GRANULE}s (a copy:
 * places keep their indices, the new ones empty). Made empty; freed by {@link #run()} (its cache's cleaner). Its
 * copies and fills run on the legacy default stream between steps, ordered after the step before because the runtime's
 * streams are blocking ones (CudaRuntime), as the cache's own growth is.
 */
final class CudaRowCache implements Runnable {
    private static final org.slf4j.Logger LOG = org.slf4j.LoggerFactory.getLogger(CudaRowCache.class);
    /** Places are allocated in multiples of this, so a budget growing with the context reallocates seldom. */
    static final int GRANULE = 256;

    private final CudaRuntime gpu;
    private final int kvDim, kvHeads, factor256;
    private final double factor;
    private final CUdeviceptr[] keys, values, index, placeOf;
    private final int[] places;
    private int slots;   // store slots placeOf covers: the cache's capacity
    /** Once a process: every long conversation would say the same. */
    private static final java.util.concurrent.atomic.AtomicBoolean SAID_TOO_MANY =
            new java.util.concurrent.atomic.AtomicBoolean();

    /**
     * @param hostLayers the layers whose stores are in host memory (the others keep no row cache)
     * @param capacity   the store's capacity in slots
     */
    CudaRowCache(CudaRuntime gpu, boolean[] hostLayers, int kvHeads, int kvDim, double factor, int capacity) {
        this.gpu = gpu;
        this.kvHeads = kvHeads;
        this.kvDim = kvDim;
        this.factor = factor;
        this.factor256 = RowCache.factor256(factor);
        int layers = hostLayers.length;
        keys = new CUdeviceptr[layers];
        values = new CUdeviceptr[layers];
        index = new CUdeviceptr[layers];
        placeOf = new CUdeviceptr[layers];
        places = new int[layers];
        slots = capacity;
        try {
            for (int l = 0; l < layers; l++) {
                if (!hostLayers[l]) continue;
                placeOf[l] = gpu.alloc(placeOfBytes(capacity));
                cuMemsetD32(placeOf[l], -1, (long) capacity * kvHeads);
            }
        } catch (RuntimeException e) {   // (out of device memory) the tables made so far go back
            run();
            throw e;
        }
    }

    private long placeOfBytes(int capacity) {
        return 4L * capacity * kvHeads;
    }

    private long rowBytes(int n) {
        return (long) n * kvDim * 2;
    }

    private long indexBytes(int n) {
        return 4 * RowCacheKernels.indexInts(kvHeads, n);
    }

    /** Places allocated for a ring of {@code need} places: whole {@link #GRANULE}s, at most the kernel's. */
    static int allocation(int need) {
        return Math.min(RowCacheKernels.MAX_PLACES, (need + GRANULE - 1) / GRANULE * GRANULE);
    }

    /** Whether layer {@code layer} keeps a row cache (its store is in host memory). */
    boolean has(int layer) {
        return placeOf[layer] != null;
    }

    /**
     * Makes layer {@code layer}'s allocation hold a ring of F times {@code rows} rows; false where the kernel cannot
     * serve such a step (more than {@link RowCacheKernels#MAX_ROWS} rows, or places past {@link
     * RowCacheKernels#MAX_PLACES}): the step then reads the layer's selected rows from host memory.
     */
    boolean ensurePlaces(int layer, int rows) {
        int need = RowCache.places(factor, rows);
        if (rows > RowCacheKernels.MAX_ROWS || need > RowCacheKernels.MAX_PLACES) {
            if (SAID_TOO_MANY.compareAndSet(false, true)) {
                LOG.warn("row cache: a step selects {} rows at layer {} (places for F = {}: {}), past the kernel's {}"
                        + " rows and {} places; such steps read their rows from host memory", rows, layer, factor, need,
                        RowCacheKernels.MAX_ROWS, RowCacheKernels.MAX_PLACES);
            }
            return false;
        }
        if (need <= places[layer]) return true;
        int n = allocation(need), old = places[layer];
        CUdeviceptr k = null, v = null, ix;
        try {
            k = gpu.alloc(rowBytes(n));
            v = gpu.alloc(rowBytes(n));
            ix = gpu.alloc(indexBytes(n));
        } catch (RuntimeException e) {   // (out of device memory) the blocks so far go back; the cache is as it was
            if (k != null) gpu.free(k, rowBytes(n));
            if (v != null) gpu.free(v, rowBytes(n));
            throw e;
        }
        int header = RowCacheKernels.headerInts(kvHeads);
        if (old == 0) {
            int[] h = new int[header];
            h[RowCacheKernels.PLACES] = 0;
            h[RowCacheKernels.FACTOR] = factor256;
            long at = StepPlanner.address(placeOf[layer]);
            h[RowCacheKernels.PLACE_OF] = (int) at;   // little-endian u64
            h[RowCacheKernels.PLACE_OF + 1] = (int) (at >>> 32);
            cuMemcpyHtoD(ix, Pointer.to(h), 4L * header);
        } else {
            cuMemcpyDtoD(k, keys[layer], rowBytes(old));
            cuMemcpyDtoD(v, values[layer], rowBytes(old));
            cuMemcpyDtoD(ix, index[layer], indexBytes(old));
            free(layer);
        }
        cuMemsetD32(ix.withByteOffset(indexBytes(old)), -1, (long) (n - old) * kvHeads);   // the new places empty
        cuMemcpyHtoD(ix.withByteOffset(4L * RowCacheKernels.ALLOCATED), Pointer.to(new int[]{n}), 4);
        keys[layer] = k;
        values[layer] = v;
        index[layer] = ix;
        places[layer] = n;
        return true;
    }

    /** The store grew to {@code capacity} slots (its rows kept at their slots): placeOf grows with it. */
    void storeGrew(int capacity) {
        if (capacity <= slots) return;
        for (int l = 0; l < placeOf.length; l++) {
            if (placeOf[l] == null) continue;
            CUdeviceptr p = gpu.alloc(placeOfBytes(capacity));
            cuMemcpyDtoD(p, placeOf[l], placeOfBytes(slots));
            cuMemsetD32(p.withByteOffset(placeOfBytes(slots)), -1, (long) (capacity - slots) * kvHeads);
            gpu.free(placeOf[l], placeOfBytes(slots));
            placeOf[l] = p;
            if (index[l] != null) {
                long at = StepPlanner.address(p);
                cuMemcpyHtoD(index[l].withByteOffset(4L * RowCacheKernels.PLACE_OF),
                        Pointer.to(new int[]{(int) at, (int) (at >>> 32)}), 8);
            }
        }
        slots = capacity;
    }

    /** Layer {@code layer}'s rows held (null before its first served step). */
    CUdeviceptr keys(int layer) {
        return keys[layer];
    }

    CUdeviceptr values(int layer) {
        return values[layer];
    }

    /** Layer {@code layer}'s index (null before its first served step). */
    CUdeviceptr index(int layer) {
        return index[layer];
    }

    /** Places allocated at layer {@code layer}. */
    int places(int layer) {
        return places[layer];
    }

    private void free(int layer) {
        int n = places[layer];
        gpu.free(keys[layer], rowBytes(n));
        gpu.free(values[layer], rowBytes(n));
        gpu.free(index[layer], indexBytes(n));
    }

    @Override
    public void run() {
        for (int l = 0; l < placeOf.length; l++) {
            if (placeOf[l] == null) continue;
            if (places[l] > 0) free(l);
            gpu.free(placeOf[l], placeOfBytes(slots));
            placeOf[l] = null;
            places[l] = 0;
        }
    }
}
