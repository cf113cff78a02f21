package io.dsflow.engine.cuda;

import jcuda.driver.CUdeviceptr;

/**
 * Launcher of row_cache.cu: a decode step's shared selections of host-placed stores served from each sequence's
 * device cache of selected rows (issue 26; the policy is kv.RowCache's), only the misses copied over the host link.
 * <ul>
 *   <li>selected: [P * H][maxK] store slots (a shared selection at the group's first head), rewritten to places</li>
 *   <li>storeKTable, storeVTable: [segments] pointers to the layer's host stores [cap][KVH][D] bf16</li>
 *   <li>cacheKTable, cacheVTable: [segments] pointers to the layer's row caches [A][KVH][D] bf16</li>
 *   <li>indexTable: [segments] pointers to the layer's row-cache index ({@link #HEADER_INTS}; 0: no row cache, the
 *       segment's rows skipped)</li>
 *   <li>seg: [rows] ints; desc: [P][{@link SparseRowDescriptor#FIELDS}] ints, at most one row a segment</li>
 *   <li>stats: [2] u64, rows asked and rows missed, added to</li>
 * </ul>
 */
public final class RowCacheKernels {
    /** Threads a block (ROW_CACHE_THREADS). */
    static final int THREADS = 256;
    /** The most places a ring may have (ROW_CACHE_MAX_PLACES: a flag each in shared memory). */
    public static final int MAX_PLACES = 16384;
    /** The most rows a step may select (ROW_CACHE_MAX_K). */
    public static final int MAX_ROWS = 4096;
    /** Index fields (ints): places allocated, places in the ring, F in 256ths, the place_of pointer (u64), hands. */
    static final int ALLOCATED = 0, PLACES = 1, FACTOR = 2, PLACE_OF = 4, HAND = 8;

    private RowCacheKernels() {
    }

    /** Ints of an index before its owners (row_cache_header_ints): the fields and a hand a kv head, to 4s. */
    static int headerInts(int kvHeads) {
        return (HAND + kvHeads + 3) / 4 * 4;
    }

    /** Ints of a layer's index of {@code places} places: the header and the owners [places][kvHeads]. */
    static long indexInts(int kvHeads, int places) {
        return headerInts(kvHeads) + (long) places * kvHeads;
    }

    /** row_cache_serve: grid (rows * kvHeads), block {@link #THREADS}. */
    public static void serve(CudaRuntime gpu, int rows, CUdeviceptr selected, CUdeviceptr storeKTable,
                             CUdeviceptr storeVTable, CUdeviceptr cacheKTable, CUdeviceptr cacheVTable,
                             CUdeviceptr indexTable, CUdeviceptr seg, CUdeviceptr desc, int heads, int kvHeads,
                             int headDim, int maxK, CUdeviceptr stats) {
        gpu.launch("row_cache_serve", rows * kvHeads, 1, THREADS, selected, storeKTable, storeVTable, cacheKTable,
                cacheVTable, indexTable, seg, desc, heads, kvHeads, headDim, maxK, stats);
    }
}
