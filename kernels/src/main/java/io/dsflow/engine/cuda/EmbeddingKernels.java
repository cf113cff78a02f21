package io.dsflow.engine.cuda;

import jcuda.driver.CUdeviceptr;

/**
 * Launchers of embedding.cu: the token embedding of a step's rows.
 * <ul>
 *   <li>out: [rows][dim] f32</li>
 *   <li>table: [vocab][dim] bf16, in device memory or pinned host memory (host placement: a row read in 16-byte
 *       pieces, all of a thread's pieces before its stores, about one round trip over the host link a row)</li>
 *   <li>tokens, positions: [rows] ints</li>
 *   <li>posTable: [maxPositions + posOffset][dim] bf16 (OPT's learned positions) or null</li>
 * </ul>
 */
public final class EmbeddingKernels {
    private EmbeddingKernels() {
    }

    /**
     * embed: out[r][i] = table[tokens[r]][i] (+ posTable[positions[r] + posOffset][i]). Grid (rows), block 256 threads
     * striding over dim.
     */
    public static void embed(CudaRuntime gpu, CUdeviceptr out, CUdeviceptr table, CUdeviceptr tokens, int rows,
                             int dim, CUdeviceptr posTable, CUdeviceptr positions, int posOffset) {
        gpu.launch("embed", rows, 1, 256, out, table, tokens, rows, dim, posTable, positions, posOffset);
    }
}
