package io.dsflow.engine.cuda;

import jcuda.driver.CUdeviceptr;

/**
 * Launchers of sparse_attention.cu: DoubleSparse's exact attention of a sparse decode row p over its m = S + k + W
 * slots (sinks [0, S), its selection, the window [n - W, n), n its row length), split and merged like the dense decode
 * ({@link AttentionKernels#attentionMerge} with the sparse rows' batch rows as its rowsOf). Which kernel for which rows
 * is {@link CudaOps#sparseAttention}'s choice.
 * <ul>
 *   <li>q: rows of qStride floats whose first H * D are the heads (after RoPE)</li>
 *   <li>kTable, vTable: [segments] pointers to each store of this layer, [cap][KVH][D] bf16 (device memory, pinned
 *       host memory, or a look-ahead row's device stage)</li>
 *   <li>ringKTable, ringVTable: [segments] pointers to the device rings of sinks and window (host placement), [S +
 *       W][KVH][D] bf16; 0: none, the store holds them</li>
 *   <li>seg, rowLen: [rows] ints</li>
 *   <li>desc: [P][{@link SparseRowDescriptor#FIELDS}] ints ({@link SparseRowDescriptor})</li>
 *   <li>selected: [P * H][maxK] slots (a shared selection repeated for the heads of its group)</li>
 *   <li>partials: [P * H][splits][D + 2] f32 (o[D], max m, sum l)</li>
 *   <li>claims: [P * H / G][2] ints, zero before the first pipelined launch, each launch leaves them zero</li>
 * </ul>
 * Variants: sparse_attention_dD (D = 32, 64, 128), sparse_attention_dD_gG and its _host twin, and
 * sparse_attention_pipelined_dD_gG for the (D, G) the build has ({@link #hasSparseAttention},
 * {@link #hasSparseAttentionGrouped}, {@link #hasSparseAttentionPipelined}).
 */
public final class SparseAttentionKernels {
    private SparseAttentionKernels() {
    }

    private static String plainName(int headDim) {
        return "sparse_attention_d" + headDim;
    }

    static String groupedName(int headDim, int group, boolean hostStore) {
        return "sparse_attention_d" + headDim + "_g" + group + (hostStore ? "_host" : "");
    }

    private static String pipelinedName(int headDim, int group) {
        return "sparse_attention_pipelined_d" + headDim + "_g" + group;
    }

    /** Whether this build has the sparse attention (sparse_attention_dD) for a head size. */
    public static boolean hasSparseAttention(CudaRuntime gpu, int headDim) {
        return gpu.has(plainName(headDim));
    }

    /**
     * sparse_attention_dD: a warp per (row p, head, split of {@code chunk} of its slots). Grid (P * H, splits), block
     * 32.
     */
    public static void sparseAttention(CudaRuntime gpu, int headDim, int rows, CUdeviceptr partials, CUdeviceptr q,
                                       CUdeviceptr kTable, CUdeviceptr vTable, CUdeviceptr ringKTable,
                                       CUdeviceptr ringVTable, CUdeviceptr seg, CUdeviceptr rowLen, CUdeviceptr desc,
                                       CUdeviceptr selected, int heads, int kvHeads, int splits, float scale,
                                       int qStride, int chunk, int maxK) {
        gpu.launch(plainName(headDim), rows * heads, splits, 32, partials, q, kTable, vTable, ringKTable, ringVTable,
                seg, rowLen, desc, selected, heads, kvHeads, splits, scale, qStride, chunk, maxK);
    }

    /**
     * Whether this build has sparse_attention_dD_gG (device stores), or its _host twin ({@code hostStore}), for a head
     * size and group.
     */
    public static boolean hasSparseAttentionGrouped(CudaRuntime gpu, int headDim, int group, boolean hostStore) {
        return gpu.has(groupedName(headDim, group, hostStore));
    }

    /**
     * sparse_attention_dD_gG, or with {@code hostStore} sparse_attention_dD_gG_host (its key rows staged by whole rows
     * over the host link): blocks of {@link AttentionKernels#GQA_WARPS} warps, a split of GQA_WARPS * chunk slots.
     * {@code shared} false: the rows selecting per query head, G = 1, a block per (row, head, split); true: the rows
     * whose kv head's group shares a selection, G = H / KVH, a block per (row, kv head, split). Rows of the other kind
     * or placement return at once. Grid (P * H / G, splits), block 32 * GQA_WARPS.
     */
    public static void sparseAttentionGrouped(CudaRuntime gpu, int headDim, int group, boolean hostStore, int rows,
                                              CUdeviceptr partials, CUdeviceptr q, CUdeviceptr kTable,
                                              CUdeviceptr vTable, CUdeviceptr ringKTable, CUdeviceptr ringVTable,
                                              CUdeviceptr seg, CUdeviceptr rowLen, CUdeviceptr desc,
                                              CUdeviceptr selected, int heads, int kvHeads, int splits, float scale,
                                              int qStride, int chunk, int maxK, boolean shared) {
        int threads = 32 * AttentionKernels.GQA_WARPS;
        gpu.launch(groupedName(headDim, group, hostStore), rows * heads / group, splits, threads, partials, q, kTable,
                vTable, ringKTable, ringVTable, seg, rowLen, desc, selected, heads, kvHeads, splits, scale, qStride,
                chunk, maxK, shared ? 1 : 0);
    }

    /** Whether this build has sparse_attention_pipelined for a head size and group (G = 2, 4; 4 only at D = 32). */
    public static boolean hasSparseAttentionPipelined(CudaRuntime gpu, int headDim, int group) {
        return gpu.has(pipelinedName(headDim, group));
    }

    /** Blocks of sparse_attention_pipelined a multiprocessor holds at once (the driver's occupancy, asked once). */
    static int sparseAttentionPipelinedBlocksPerMultiprocessor(CudaRuntime gpu, int headDim, int group) {
        return gpu.blocksPerMultiprocessor(pipelinedName(headDim, group), AttentionKernels.pipelinedThreads(group),
                AttentionKernels.pipelinedSharedBytes(headDim));
    }

    /**
     * sparse_attention_pipelined_dD_gG (selected rows in device memory): the rows staged in shared memory by a
     * producer warp's asynchronous copies, the products on tensor cores; a row's chunks go to whichever of its splits'
     * blocks claims them first ({@code claims}). {@code shared}: as {@link #sparseAttentionGrouped}'s (built for shared
     * selections). Grid (P * H / G, splits), block 32 (G + 1), dynamic shared memory
     * {@link AttentionKernels#pipelinedSharedBytes}. With one split and {@code out} (f32) or {@code outBf16} given,
     * the rows' outputs themselves go there at their batch rows, as attention_merge would write them (for a layer
     * whose selecting rows are all of this kernel's kind: nothing is left to merge); else both null.
     */
    public static void sparseAttentionPipelined(CudaRuntime gpu, int headDim, int group, int rows,
                                                CUdeviceptr partials, CUdeviceptr q, CUdeviceptr kTable,
                                                CUdeviceptr vTable, CUdeviceptr ringKTable, CUdeviceptr ringVTable,
                                                CUdeviceptr seg, CUdeviceptr rowLen, CUdeviceptr desc,
                                                CUdeviceptr selected, int heads, int kvHeads, int splits, float scale,
                                                int qStride, int maxK, boolean shared, CUdeviceptr claims,
                                                CUdeviceptr out, CUdeviceptr outBf16) {
        if (splits != 1 && (out != null || outBf16 != null)) {
            throw new IllegalArgumentException("sparse_attention_pipelined writes outputs with one split only, not "
                    + splits);
        }
        gpu.launchWithSharedMemory(pipelinedName(headDim, group), rows * heads / group, splits,
                AttentionKernels.pipelinedThreads(group), AttentionKernels.pipelinedSharedBytes(headDim), partials, q,
                kTable, vTable, ringKTable, ringVTable, seg, rowLen, desc, selected, heads, kvHeads, splits, scale,
                qStride, maxK, shared ? 1 : 0, claims, out, outBf16);
    }
}
