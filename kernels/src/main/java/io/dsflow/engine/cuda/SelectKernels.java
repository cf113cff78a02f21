package io.dsflow.engine.cuda;

import jcuda.driver.CUdeviceptr;

/**
 * Launchers of select.cu: DoubleSparse's selection for the sparse decode rows of a layer, the approximate score of
 * every candidate from the label cache, then the top-k of the candidates (radix select; the larger score first, ties
 * to the lower candidate, as kv/TopK). ds: {@link #sparseScores} then {@link #sparseTopk}; dspp: one kernel scoring
 * into shared memory ({@link #sparseSelect}, or over a cluster of blocks on sm_90, {@link #sparseSelectCluster}).
 * Which, and the cluster size, is {@link CudaOps#select}'s choice.
 * <ul>
 *   <li>q: rows of qStride floats whose first H * D are the heads (after RoPE)</li>
 *   <li>labelTable, channelTable, scaleTable: [segments] pointers to this layer's labels [cap][H / lg * r] (fp16, or
 *       int8 times a per-token, per-row fp16 scale; 4-bit: [cap][H / lg][(r + 1) / 2] bytes of two int4 each times
 *       such a scale, sparse_rows.cuh), channels [H * r] ints and scales [H / lg][cap] fp16</li>
 *   <li>seg: [rows] the batch row's segment</li>
 *   <li>desc: [P][{@link SparseRowDescriptor#FIELDS}] ints ({@link SparseRowDescriptor}), a selecting row's candidates
 *       are slots [sinks, sinks + candidates)</li>
 *   <li>scores: [P * H][maxCand] f32 (ds)</li>
 *   <li>selected: [P * H][maxK] slots, ascending; a selection shared by a kv head's group is written for each of its
 *       heads</li>
 * </ul>
 */
public final class SelectKernels {
    /** Blocks of a cluster of sparse_select_cluster (sparse_select_cluster2: 2). */
    static final int CLUSTER_BLOCKS = 8;
    /** Label channels of q, over the heads of a selection, that the selection kernels hold (their qc array). */
    static final int MAX_QUERY_CHANNELS = 8 * 64;
    /** Query heads a fused selection holds (their quantisation scales and sums, select.cu's LabelQuery). */
    static final int MAX_QUERY_HEADS = 8;

    private SelectKernels() {
    }

    /**
     * sparse_scores: scores[p][h][c] = sum_i q[h][channels[h][i]] label[sinks + c][h][i], c &lt; candidates (a mean
     * selection over label rows a kv head: the group's first head gets the summed query's score, the others 0). Grid
     * (P * H, ceil(maxCand / 256)), block 256.
     */
    public static void sparseScores(CudaRuntime gpu, int rows, CUdeviceptr scores, CUdeviceptr q,
                                    CUdeviceptr labelTable, CUdeviceptr channelTable, CUdeviceptr scaleTable,
                                    CUdeviceptr seg, CUdeviceptr desc, int heads, int headDim, int qStride,
                                    int maxCand) {
        gpu.launch("sparse_scores", rows * heads, (maxCand + 255) / 256, 256, scores, q, labelTable, channelTable,
                scaleTable, seg, desc, heads, headDim, qStride, maxCand);
    }

    /**
     * sparse_topk: the k = min(budget, candidates) largest scores of a (row, head), or (modes 1, 2) of a kv head's
     * group by the max / sum of its heads' scores (combined into the first head's row of scores). Grid (P * H), block
     * 1024.
     */
    public static void sparseTopk(CudaRuntime gpu, int rows, CUdeviceptr selected, CUdeviceptr scores, CUdeviceptr desc,
                                  int heads, int kvHeads, int maxCand, int maxK) {
        gpu.launch("sparse_topk", rows * heads, 1, 1024, selected, scores, desc, heads, kvHeads, maxCand, maxK);
    }

    /**
     * sparse_select: sparse_scores and sparse_topk in one block per (row, head; a shared selection: the group's first
     * head), the candidates' order keys in dynamic shared memory (maxCand of them, within what a block may have), the
     * top-k from a guessed threshold's short list where one holds it (select_top_k_guessed; exact either way). Grid
     * (P * H), block {@code threads} (256, 512 or 1024: CudaOps.selectThreads), dynamic shared memory
     * {@link #sparseSelectSharedBytes}. {@code paths}: null, or [2] ints that count the selections served from a list
     * and those that fell back after a guess (tests).
     */
    public static void sparseSelect(CudaRuntime gpu, int rows, int threads, int maxCand, CUdeviceptr selected,
                                    CUdeviceptr q, CUdeviceptr labelTable, CUdeviceptr channelTable,
                                    CUdeviceptr scaleTable, CUdeviceptr seg, CUdeviceptr desc, int heads, int kvHeads,
                                    int headDim, int qStride, int maxK, CUdeviceptr paths) {
        int listCap = guessListCapacity(gpu, threads, maxCand, maxK);
        gpu.launchWithSharedMemory("sparse_select", rows * heads, 1, threads, sparseSelectSharedBytes(maxCand, listCap),
                selected, q, labelTable, channelTable, scaleTable, seg, desc, heads, kvHeads, headDim, qStride, maxK,
                maxCand, listCap, paths);
    }

    /**
     * Candidates a guessed threshold's list holds, in budgets: select.cu's guess aims at twice the budget (GUESS_TAIL),
     * which left between one and four budgets above it in 97.2-99.4% of the probes' selections.
     */
    static final int GUESS_LIST_BUDGETS = 4;

    /**
     * The guess's list for budgets up to {@code maxK} in blocks of {@code threads}: {@link #GUESS_LIST_BUDGETS}
     * budgets, at most the candidates, within the shared memory a block has beside its 4 maxCand bytes of keys while
     * as many blocks share a multiprocessor as without a list (the guess never costs occupancy); 0: no room, no guess.
     */
    static int guessListCapacity(CudaRuntime gpu, int threads, int maxCand, int maxK) {
        int blocks = sparseSelectBlocksPerMultiprocessor(gpu, threads, maxCand);
        int room = (gpu.dynamicSharedLimit("sparse_select", blocks) - 4 * maxCand) / 8;
        int cap = Math.max(0, Math.min(Math.min(GUESS_LIST_BUDGETS * maxK, maxCand), room));
        boolean keepsOccupancy = cap == 0 || gpu.blocksPerMultiprocessor("sparse_select", threads,
                sparseSelectSharedBytes(maxCand, cap)) >= blocks;
        return keepsOccupancy ? cap : 0;
    }

    /** Dynamic shared memory of a sparse_select block: the candidates' keys, then the list's candidates and keys. */
    static int sparseSelectSharedBytes(int maxCand, int listCap) {
        return 4 * maxCand + 8 * listCap;
    }

    /**
     * Blocks of sparse_select of {@code threads} threads a multiprocessor holds at once (the driver's occupancy) with
     * its candidates' keys; the guess's list fits beside them ({@link #guessListCapacity}).
     */
    static int sparseSelectBlocksPerMultiprocessor(CudaRuntime gpu, int threads, int maxCand) {
        return gpu.blocksPerMultiprocessor("sparse_select", threads, 4 * maxCand);
    }

    /** The candidates each block of a cluster of {@code cluster} scores: its share rounded up to 32. */
    static int clusterTile(int maxCand, int cluster) {
        return ((maxCand + cluster - 1) / cluster + 31) / 32 * 32;
    }

    /**
     * sparse_select_cluster ({@code cluster} = {@link #CLUSTER_BLOCKS}, blocks of 256 threads) and
     * sparse_select_cluster2 ({@code cluster} = 2, blocks of 1024 threads), sm_90 only: sparse_select spread over a
     * cluster of blocks a selection, block b scoring candidates [b tile, (b + 1) tile) ({@link #clusterTile}) and the
     * radix passes' histograms added in the first block's shared memory. Grid (P * H * cluster), dynamic shared memory
     * 4 tile bytes.
     */
    public static void sparseSelectCluster(CudaRuntime gpu, int cluster, int rows, CUdeviceptr selected, CUdeviceptr q,
                                           CUdeviceptr labelTable, CUdeviceptr channelTable, CUdeviceptr scaleTable,
                                           CUdeviceptr seg, CUdeviceptr desc, int heads, int kvHeads, int headDim,
                                           int qStride, int maxK, int tile) {
        String kernel = switch (cluster) {
            case CLUSTER_BLOCKS -> "sparse_select_cluster";
            case 2 -> "sparse_select_cluster2";
            default -> throw new IllegalArgumentException("select clusters are of 2 or " + CLUSTER_BLOCKS + " blocks");
        };
        gpu.launchWithSharedMemory(kernel, rows * heads * cluster, 1, cluster == 2 ? 1024 : 256, 4 * tile, selected, q,
                labelTable, channelTable, scaleTable, seg, desc, heads, kvHeads, headDim, qStride, maxK, tile);
    }
}
