package io.dsflow.engine.cuda;

import jcuda.driver.CUdeviceptr;

/**
 * Launchers of attention_prefill.cu: causal attention for the rows of a prefill on tensor cores (flash-attention
 * style): a block takes a tile of up to {@link #TILE_ROWS} consecutive rows of one sequence and one query head and
 * walks its cache 64 keys at a time with an online softmax.
 * <ul>
 *   <li>out: [rows][H * D] f32, or outBf16 the same in bf16 where not null</li>
 *   <li>q: rows of qStride floats whose first H * D are the heads (after RoPE)</li>
 *   <li>kTable, vTable: [segments] device pointers to each sequence's cache of this layer, [cap][KVH][D] bf16 (the
 *       tile's own keys already appended); head h reads kv head h / (H / KVH)</li>
 *   <li>tiles: [T][3] ints (segment, first row, row count &lt;= {@value #TILE_ROWS}), rows of a tile at consecutive
 *       positions; listed with the most keys first (the longest blocks start first, so the grid's tail is short)</li>
 *   <li>rowLen: [rows] row r attends slots [0, rowLen[r])</li>
 * </ul>
 * Built for D = 32, 64 and 128 ({@link #hasAttentionPrefill}).
 */
public final class PrefillAttentionKernels {
    /** Rows of a prefill tile. */
    static final int TILE_ROWS = 128;

    private PrefillAttentionKernels() {
    }

    private static String name(int headDim) {
        return "attention_prefill_d" + headDim;
    }

    /** Whether this build has the tensor-core prefill attention for a head size. */
    public static boolean hasAttentionPrefill(CudaRuntime gpu, int headDim) {
        return gpu.has(name(headDim));
    }

    /**
     * attention_prefill_dD. Grid (H, tileCount): a tile's heads start together, block 128 (4 warps of 32 rows),
     * dynamic shared memory (128 + 4 * 64) * D * 2 bytes (Q, and two buffers of 64 keys and values: the next key tile
     * lands while this one computes).
     */
    public static void attentionPrefill(CudaRuntime gpu, int headDim, int tileCount, CUdeviceptr out,
                                        CUdeviceptr outBf16, CUdeviceptr q, CUdeviceptr kTable, CUdeviceptr vTable,
                                        CUdeviceptr tiles, CUdeviceptr rowLen, int heads, int kvHeads, float scale,
                                        int qStride) {
        gpu.launchWithSharedMemory(name(headDim), heads, tileCount, 128, (TILE_ROWS + 4 * 64) * headDim * 2, out,
                outBf16, q, kTable, vTable, tiles, rowLen, heads, kvHeads, scale, qStride);
    }
}
