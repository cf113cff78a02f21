package io.dsflow.engine.cuda;

import jcuda.driver.CUdeviceptr;

/**
 * Launchers of kvcache.cu: the step between the q/k/v projection and attention (kv_append.cuh), for every row of a
 * forward pass in one launch.
 * <ul>
 *   <li>qkv: [rows][rowStride] f32, each row [q: H x D | k: KVH x D | v: KVH x D | ...] (the fused projection's
 *       output); q and k heads rotated in place (RoPE, rotate-half, angle = positions[r] * invFreq[i])</li>
 *   <li>positions: [rows] ints; invFreq: [D / 2] f32 (llama3 scaling applied on the host), null for models without
 *       rotary positions</li>
 *   <li>kTable, vTable: [segments] device pointers to each cache of this layer, [cap][KVH * D] bf16: row r's rotated
 *       key and its value go to the cache of segment seg[r] at slot slot[r], rounded to bf16</li>
 *   <li>seg, slot: [rows] ints</li>
 * </ul>
 * dspp's append that also writes labels and ring slots is {@link LabelAppendKernels#kvLabelAppendRope}.
 */
public final class KvAppendKernels {
    private KvAppendKernels() {
    }

    /**
     * kv_append_rope. Grid (rows, Y), block the most whole groups of D / 2 threads within 256 (at least one group):
     * each group a head of the row at a time, a rotation pair (or two values of v) a thread; Y blocks share a row's
     * heads, as many as give about four blocks a multiprocessor (one for a prefill's thousands of rows).
     */
    public static void kvAppendRope(CudaRuntime gpu, int rows, CUdeviceptr qkv, CUdeviceptr positions,
                                    CUdeviceptr invFreq, CUdeviceptr kTable, CUdeviceptr vTable, CUdeviceptr seg,
                                    CUdeviceptr slot, int heads, int kvHeads, int headDim, int rowStride) {
        int half = headDim / 2, groups = Math.max(1, 256 / half), block = groups * half;
        int headBlocks = (heads + 2 * kvHeads + groups - 1) / groups;
        int rowBlocks = Math.max(1, Math.min(headBlocks, (4 * gpu.multiprocessors() + rows - 1) / rows));
        gpu.launch("kv_append_rope", rows, rowBlocks, block, qkv, positions, invFreq, kTable, vTable, seg, slot, heads,
                kvHeads, headDim, rowStride);
    }
}
