package io.dsflow.engine.cuda;

import jcuda.driver.CUdeviceptr;

/**
 * Launchers of lookahead.cu: DoubleSparse++'s look-ahead on the side stream, predicting layer l + 1's label queries
 * from layer l's input and, for stores in host memory, gathering the selected rows to a device stage.
 * <ul>
 *   <li>x: [rows][hidden] f32, the residual stream, read at each look-ahead row's own row</li>
 *   <li>desc: [P][{@link SparseRowDescriptor#FIELDS}] ints ({@link SparseRowDescriptor}), the gather's rows first</li>
 *   <li>wq: layer l + 1's [q: H x D | k | v][hidden] bf16 product matrix (only q rows read); qBias: [H * D] bf16 or
 *       null</li>
 *   <li>normW, normB: layer l + 1's attention norm [hidden] bf16 (normW null: post-norm; normB: LayerNorm)</li>
 *   <li>positions: [rows] ints; invFreq: [D / 2] f32 or null</li>
 *   <li>channelTable: [segments] pointers to layer l + 1's label channels [H * r] ints; seg: [rows] ints</li>
 *   <li>qPred: [rows][H * D] f32, written at the label channels only</li>
 *   <li>selected: [P * H][maxK] store slots (a shared selection at the group's first head)</li>
 *   <li>kTable, vTable: [segments] pointers to the stores [cap][KVH][D] bf16; stageKTable, stageVTable: [segments]
 *       pointers to [maxK][KVH][D] bf16 device stages</li>
 * </ul>
 */
public final class LookaheadKernels {
    /** Label channels of a head that a block of predict_label_queries computes. */
    static final int PREDICT_LABELS = 4;

    private LookaheadKernels() {
    }

    /**
     * predict_label_queries: qPred[row][h * D + c] for each label channel c of head h, the channel of
     * RoPE(W_q norm(x) + b) at the row's position, in f32. Grid (P, H * ceil(r / {@link #PREDICT_LABELS})) for the
     * widest segment's r, block 256, dynamic shared memory hidden floats (the normalised row).
     */
    public static void predictLabelQueries(CudaRuntime gpu, int rows, int maxLabelChannels, CUdeviceptr qPred,
                                           CUdeviceptr x, CUdeviceptr normW, CUdeviceptr normB, float eps,
                                           CUdeviceptr wq, CUdeviceptr qBias, CUdeviceptr positions,
                                           CUdeviceptr invFreq, CUdeviceptr channelTable, CUdeviceptr seg,
                                           CUdeviceptr desc, int heads, int headDim, int hidden) {
        int parts = (maxLabelChannels + PREDICT_LABELS - 1) / PREDICT_LABELS;   // blocks a head
        gpu.launchWithSharedMemory("predict_label_queries", rows, heads * parts, 256, 4 * hidden, qPred, x, normW,
                normB, eps, wq, qBias, positions, invFreq, channelTable, seg, desc, heads, headDim, hidden);
    }

    /**
     * gather_selected_rows: for the first {@code rows} look-ahead rows (shared selections, stores in host memory), the
     * selected rows' keys and values of each kv head into the row's device stage, then selected[j] = j. The blocks
     * stride over the work: the caller sizes the grid for the host link ({@code blocks}). Block 256.
     */
    public static void gatherSelectedRows(CudaRuntime gpu, int blocks, CUdeviceptr selected, CUdeviceptr kTable,
                                          CUdeviceptr vTable, CUdeviceptr stageKTable, CUdeviceptr stageVTable,
                                          CUdeviceptr seg, CUdeviceptr desc, int rows, int heads, int kvHeads,
                                          int headDim, int maxK) {
        gpu.launch("gather_selected_rows", blocks, 1, 256, selected, kTable, vTable, stageKTable, stageVTable, seg,
                desc, rows, heads, kvHeads, headDim, maxK);
    }
}
