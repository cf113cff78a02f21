package io.dsflow.engine.cuda;

import jcuda.driver.CUdeviceptr;

/** The launchers of calibration.cu's kernels: the kernel's name, grid, block and arguments in the .cu's order. */
public final class CalibrationKernels {
    /** Threads of a calibration_add block at most: its lanes split the rows so that more loads are in flight. */
    static final int MAX_THREADS = 512;

    private CalibrationKernels() {
    }

    /**
     * Adds one layer's channel statistics over rows [row0, row0 + rows) of a forward pass to that layer's
     * accumulators (calibration.cu): sums of |q * k| (the float product) and |q| per query head, |k| per kv head.
     *
     * @param qk        [heads][headDim] double, added to
     * @param q         [heads][headDim] double, added to
     * @param k         [kvHeads][headDim] double, added to
     * @param qkv       [.][qkvStride] f32, each row [q: heads x headDim | k: kvHeads x headDim | ...], post-RoPE q and
     *                  k (after the layer's append kernel)
     * @param qkvStride floats a row of qkv
     * @throws IllegalArgumentException where headDim exceeds a block or the heads do not form groups
     */
    public static void calibrationAdd(CudaRuntime gpu, CUdeviceptr qk, CUdeviceptr q, CUdeviceptr k, CUdeviceptr qkv,
                                      int row0, int rows, int heads, int kvHeads, int headDim, int qkvStride) {
        if (headDim < 1 || headDim > MAX_THREADS) {
            throw new IllegalArgumentException("calibration_add takes a head_dim of 1.." + MAX_THREADS + ", not "
                    + headDim);
        }
        if (kvHeads < 1 || heads % kvHeads != 0) {
            throw new IllegalArgumentException(heads + " query heads do not form groups of " + kvHeads + " kv heads");
        }
        if (rows <= 0) return;
        int lanes = lanes(headDim, rows), threads = lanes * headDim;
        gpu.launchWithSharedMemory("calibration_add", heads + kvHeads, 1, threads, 2 * threads * Double.BYTES,
                qk, q, k, qkv, row0, rows, heads, kvHeads, headDim, qkvStride);
    }

    /** Row lanes of a block: as many as fit MAX_THREADS with headDim threads each, no more than there are rows. */
    static int lanes(int headDim, int rows) {
        return Math.max(1, Math.min(rows, MAX_THREADS / headDim));
    }
}
