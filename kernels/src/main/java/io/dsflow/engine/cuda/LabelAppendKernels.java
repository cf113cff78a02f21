package io.dsflow.engine.cuda;

import jcuda.driver.CUdeviceptr;

/**
 * Launchers of label_append.cu: the sparse caches' appends, the label channels of every row's (rotated) key into its
 * segment's label cache at its slot, and with host placement its key and value into the segment's device ring of sinks
 * and window (slot p &lt; S to ring slot p, else S + (p - S) mod W, written only by a segment's last W rows of the
 * step).
 * <ul>
 *   <li>qkv: [rows][rowStride] f32, rows [q: H x D | k: KVH x D | v: KVH x D] after RoPE</li>
 *   <li>labelTable: [segments] pointers to this layer's labels, [cap][H / lg * r]: fp16 (16-bit) or int8 (8-bit), or
 *       [cap][H / lg][(r + 1) / 2] bytes of two int4 each (4-bit, sparse_rows.cuh), lg the query heads a label row
 *       serves; 0 for a dense segment</li>
 *   <li>channelTable: [segments] pointers to this layer's label channels, [H * r] ints</li>
 *   <li>scaleTable: [segments] pointers to the 8- and 4-bit labels' scales, [H / lg][cap] fp16</li>
 *   <li>ringKTable, ringVTable: [segments] pointers to the device rings, [S + W][KVH][D] bf16; 0: none</li>
 *   <li>seg, slot: [rows] ints; lastRows: [segments] each segment's last batch row</li>
 *   <li>segInfo: [segments][{@link SegmentDescriptor#FIELDS}] ints ({@link SegmentDescriptor})</li>
 * </ul>
 * For kvLabelAppendRope also kv_append_rope's positions, invFreq, kTable, vTable ({@link KvAppendKernels}).
 */
public final class LabelAppendKernels {
    private LabelAppendKernels() {
    }

    /**
     * label_append (ds: Double Sparsity's label gather, a launch of its own after kv_append_rope). Grid (rows, H),
     * block the widest segment's label channels rounded up to whole warps.
     */
    public static void labelAppend(CudaRuntime gpu, int rows, int maxLabelChannels, CUdeviceptr qkv,
                                   CUdeviceptr labelTable, CUdeviceptr channelTable, CUdeviceptr scaleTable,
                                   CUdeviceptr ringKTable, CUdeviceptr ringVTable, CUdeviceptr seg, CUdeviceptr slot,
                                   CUdeviceptr lastRows, CUdeviceptr segInfo, int heads, int kvHeads, int headDim,
                                   int rowStride) {
        gpu.launch("label_append", rows, heads, Math.max(32, (maxLabelChannels + 31) / 32 * 32), qkv, labelTable,
                channelTable, scaleTable, ringKTable, ringVTable, seg, slot, lastRows, segInfo, heads, kvHeads, headDim,
                rowStride);
    }

    /**
     * kv_label_append_rope (dspp: a token's appends in one launch): kv_append_rope, then for the rows of sparse
     * segments label_append's writes, bit for bit. Grid (rows, H + 2 KVH), block max(32, D / 2) threads (whole warps
     * for the 8- and 4-bit rows' maximum), D &lt;= 256.
     */
    public static void kvLabelAppendRope(CudaRuntime gpu, int rows, CUdeviceptr qkv, CUdeviceptr positions,
                                         CUdeviceptr invFreq, CUdeviceptr kTable, CUdeviceptr vTable,
                                         CUdeviceptr labelTable, CUdeviceptr channelTable, CUdeviceptr scaleTable,
                                         CUdeviceptr ringKTable, CUdeviceptr ringVTable, CUdeviceptr seg,
                                         CUdeviceptr slot, CUdeviceptr lastRows, CUdeviceptr segInfo, int heads,
                                         int kvHeads, int headDim, int rowStride) {
        gpu.launch("kv_label_append_rope", rows, heads + 2 * kvHeads, Math.max(32, headDim / 2), qkv, positions,
                invFreq, kTable, vTable, labelTable, channelTable, scaleTable, ringKTable, ringVTable, seg, slot,
                lastRows, segInfo, heads, kvHeads, headDim, rowStride);
    }
}
