package io.dsflow.engine.cuda;

import jcuda.driver.CUdeviceptr;

/**
 * Launchers of norm.cu: normalisation fused with the residual add, a block a row. For each row r of x:
 * x[r] += y[r] (where y is not null: the residual stream updated in place), then out[r] = rmsnorm(x[r]) * w
 * (add_rms_norm) or (x[r] - mean) / std * w + b (add_layer_norm); statistics in f32.
 * <ul>
 *   <li>x, y: [rows][dim] f32 (y null: no residual add)</li>
 *   <li>out: [rows][dim] f32 (may be x), used where outBf16 is null</li>
 *   <li>outBf16: [rows][dim] bf16 or null (the output only feeds a tensor-core product)</li>
 *   <li>w, b: [dim] bf16</li>
 * </ul>
 * Grid (rows); add_rms_norm's block {@link #rmsNormThreads}, add_layer_norm's 1024.
 */
public final class NormKernels {
    /** Threads of an add_layer_norm block. */
    static final int THREADS = 1024;

    /**
     * Threads of an add_rms_norm block for rows {@code dim} wide: a thread keeps 16 of a row's values in registers
     * (norm.cu's NORM_VECS float4), in whole warps, 32 to 1024. A block of 1,024 threads a 4,096-wide row held a
     * multiprocessor to two rows at a time, so a prefill's thousands of rows ran on the blocks' latency, not on the
     * copy bandwidth; a decode step's few rows take as long either way.
     */
    static int rmsNormThreads(int dim) {
        int warps = (dim + 16 * 32 - 1) / (16 * 32);
        return Math.min(1024, Math.max(1, warps) * 32);
    }

    private NormKernels() {
    }

    /** add_rms_norm: x += y, out = rmsnorm(x) * w. */
    public static void addRmsNorm(CudaRuntime gpu, CUdeviceptr x, CUdeviceptr y, CUdeviceptr out, CUdeviceptr outBf16,
                                  CUdeviceptr w, int rows, int dim, float eps) {
        gpu.launch("add_rms_norm", rows, 1, rmsNormThreads(dim), x, y, out, outBf16, w, rows, dim, eps);
    }

    /** add_layer_norm: x += y, out = (x - mean) / std * w + b. */
    public static void addLayerNorm(CudaRuntime gpu, CUdeviceptr x, CUdeviceptr y, CUdeviceptr out,
                                    CUdeviceptr outBf16, CUdeviceptr w, CUdeviceptr b, int rows, int dim, float eps) {
        gpu.launch("add_layer_norm", rows, 1, THREADS, x, y, out, outBf16, w, b, rows, dim, eps);
    }
}
