package io.dsflow.engine.cuda;

import jcuda.driver.CUdeviceptr;

/**
 * Launchers of attention.cu: the decode attention of the rows not in a prefill tile, split over the context
 * (flash-decoding) into partials, then merged. Which kernel, and how many splits, is {@link CudaOps#attention}'s
 * choice.
 * <ul>
 *   <li>q: rows of qStride floats whose first H * D are the heads (after RoPE)</li>
 *   <li>kTable, vTable: [segments] device pointers to each sequence's cache of this layer, [cap][KVH][D] bf16
 *       (token-major, the rows' own keys already in it); head h reads kv head h / (H / KVH)</li>
 *   <li>seg, rowLen: [rows] the batch row's segment and the slots [0, rowLen) it attends</li>
 *   <li>rowsOf: [P] the batch row of each decode row p</li>
 *   <li>partials: [P * H][splits][D + 2] f32 (o[D], max m, sum l)</li>
 *   <li>claims: [P * KVH][2] ints, zero before the first launch of attention_pipelined, each launch leaves them
 *       zero</li>
 *   <li>out: [rows][H * D] f32, or outBf16 the same in bf16 (attention_merge: out[rowsOf[p]][h * D + c] =
 *       sum_s o_s[c] e^(m_s - M) / sum_s l_s e^(m_s - M))</li>
 * </ul>
 * Variants: attention_rows_dD at D = 32, 64, 96, 128, 256; attention_gqa_dD_gG and attention_pipelined_dD_gG for the
 * common (D, G = H / KVH) pairs (ask {@link #hasAttentionGqa}, {@link #hasAttentionPipelined}).
 */
public final class AttentionKernels {
    /** Warps of a block of attention_gqa and of the grouped sparse attention (split_attention.cuh's GQA_WARPS). */
    static final int GQA_WARPS = 4;
    /** Rows of a stage of the pipelined attention and its stages (pipelined_attention.cuh's PIPE_ROWS, PIPE_STAGES). */
    static final int PIPE_ROWS = 32, PIPE_STAGES = 3;

    private AttentionKernels() {
    }

    /**
     * Dynamic shared memory of a pipelined attention block (attention_pipelined, sparse_attention_pipelined;
     * pipelined_shared_bytes): the stages' key and value rows, a scratch for Q's parts or S, P and the corrections.
     */
    static int pipelinedSharedBytes(int hd) {
        int scratch = Math.max(16 * hd * 2, 16 * PIPE_ROWS * 4 + 16 * (PIPE_ROWS + 8) * 2 + 16 * 4);
        return PIPE_STAGES * 2 * PIPE_ROWS * hd * 2 + scratch;
    }

    /** Threads of a pipelined attention block: a warp a head of the group, and the producer warp. */
    static int pipelinedThreads(int group) {
        return 32 * (group + 1);
    }

    private static String gqaName(int headDim, int group) {
        return "attention_gqa_d" + headDim + "_g" + group;
    }

    private static String pipelinedName(int headDim, int group) {
        return "attention_pipelined_d" + headDim + "_g" + group;
    }

    /**
     * attention_rows_dD: a warp per (decode row, head, split of {@code chunk} slots, a multiple of 32). Grid
     * (decodeRows * H, splits), block 32.
     */
    public static void attentionRows(CudaRuntime gpu, int headDim, int decodeRows, CUdeviceptr partials, CUdeviceptr q,
                                     CUdeviceptr kTable, CUdeviceptr vTable, CUdeviceptr seg, CUdeviceptr rowLen,
                                     CUdeviceptr rowsOf, int heads, int kvHeads, int splits, float scale, int qStride,
                                     int chunk) {
        gpu.launch("attention_rows_d" + headDim, decodeRows * heads, splits, 32, partials, q, kTable, vTable, seg,
                rowLen, rowsOf, heads, kvHeads, splits, scale, qStride, chunk);
    }

    /** Whether this build has attention_gqa for a head size and a group of {@code group} query heads a kv head. */
    public static boolean hasAttentionGqa(CudaRuntime gpu, int headDim, int group) {
        return gpu.has(gqaName(headDim, group));
    }

    /**
     * attention_gqa_dD_gG (G = heads / kvHeads): attention_rows' result for a group's heads at once, each key and value
     * row read once a kv head; a block of {@link #GQA_WARPS} warps per (decode row, kv head, split), a warp a chunk.
     * Grid (decodeRows * KVH, splits), block 32 * GQA_WARPS; a split covers GQA_WARPS * chunk slots.
     */
    public static void attentionGqa(CudaRuntime gpu, int headDim, int decodeRows, CUdeviceptr partials, CUdeviceptr q,
                                    CUdeviceptr kTable, CUdeviceptr vTable, CUdeviceptr seg, CUdeviceptr rowLen,
                                    CUdeviceptr rowsOf, int heads, int kvHeads, int splits, float scale, int qStride,
                                    int chunk) {
        gpu.launch(gqaName(headDim, heads / kvHeads), decodeRows * kvHeads, splits, 32 * GQA_WARPS, partials, q, kTable,
                vTable, seg, rowLen, rowsOf, heads, kvHeads, splits, scale, qStride, chunk);
    }

    /** Whether this build has attention_pipelined for a head size and group (G = 2, 4 at D = 32, 64, 128). */
    public static boolean hasAttentionPipelined(CudaRuntime gpu, int headDim, int group) {
        return gpu.has(pipelinedName(headDim, group));
    }

    /** Blocks of attention_pipelined a multiprocessor holds at once (the driver's occupancy, asked once a shape). */
    static int attentionPipelinedBlocksPerMultiprocessor(CudaRuntime gpu, int headDim, int group) {
        return gpu.blocksPerMultiprocessor(pipelinedName(headDim, group), pipelinedThreads(group),
                pipelinedSharedBytes(headDim));
    }

    /**
     * attention_pipelined_dD_gG (G = heads / kvHeads, caches in device memory): attention_gqa's result, a block of G
     * consumer warps and a producer warp per (decode row, kv head, split) streaming the row's slots in chunks staged by
     * cp.async, which its splits share through {@code claims}. Grid (decodeRows * KVH, splits), block 32 (G + 1),
     * dynamic shared memory {@link #pipelinedSharedBytes}. With one split and {@code out} (f32) or {@code outBf16}
     * given, the outputs themselves go there, as attention_merge would write them (no partials, no merge); else both
     * null.
     */
    public static void attentionPipelined(CudaRuntime gpu, int headDim, int decodeRows, CUdeviceptr partials,
                                          CUdeviceptr q, CUdeviceptr kTable, CUdeviceptr vTable, CUdeviceptr seg,
                                          CUdeviceptr rowLen, CUdeviceptr rowsOf, int heads, int kvHeads, int splits,
                                          float scale, int qStride, CUdeviceptr claims, CUdeviceptr out,
                                          CUdeviceptr outBf16) {
        if (splits != 1 && (out != null || outBf16 != null)) {
            throw new IllegalArgumentException("attention_pipelined writes outputs with one split only, not " + splits);
        }
        int group = heads / kvHeads;
        gpu.launchWithSharedMemory(pipelinedName(headDim, group), decodeRows * kvHeads, splits,
                pipelinedThreads(group), pipelinedSharedBytes(headDim), partials, q, kTable, vTable, seg, rowLen,
                rowsOf, heads, kvHeads, splits, scale, qStride, claims, out, outBf16);
    }

    /** Warps of an attention_merge block, and the widest head it merges (attention.cu's MERGE_WARPS, MERGE_MAX_D). */
    static final int MERGE_WARPS = 4, MERGE_MAX_HEAD_DIM = 256;

    /**
     * attention_merge: the splits' partials of each (row p, head) into out[rowsOf[p]], f32, or bf16 into
     * {@code outBf16} where it is not null (the output product's operand on tensor cores). A pair's splits are
     * merged by one warp, or by the MERGE_WARPS warps of a block where the pairs are too few to fill the device and
     * the splits many (batch 1 at long contexts). Grid pairs / (MERGE_WARPS / warps a pair), block 32 MERGE_WARPS.
     */
    public static void attentionMerge(CudaRuntime gpu, int rows, CUdeviceptr out, CUdeviceptr outBf16,
                                      CUdeviceptr partials, CUdeviceptr rowsOf, int heads, int headDim, int splits) {
        if (headDim > MERGE_MAX_HEAD_DIM) {
            throw new IllegalArgumentException("attention_merge takes heads of up to " + MERGE_MAX_HEAD_DIM
                    + " channels, not " + headDim);
        }
        int pairs = rows * heads;
        int warpsAPair = splits >= MERGE_WARPS && pairs < MERGE_WARPS * gpu.multiprocessors() ? MERGE_WARPS : 1;
        int pairsABlock = MERGE_WARPS / warpsAPair;
        gpu.launch("attention_merge", (pairs + pairsABlock - 1) / pairsABlock, 1, 32 * MERGE_WARPS, out, outBf16,
                partials, rowsOf, pairs, heads, headDim, splits, warpsAPair);
    }
}
