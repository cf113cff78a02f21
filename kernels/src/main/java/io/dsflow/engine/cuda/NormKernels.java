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
 * Grid (rows), block 1024: a decode step normalises one short row, latency bounds it, not bandwidth.
 */
public final class NormKernels {
    /** Threads of a norm block (norm.cu's design: rows up to 8 * 1024 wide kept in registers). */
    static final int THREADS = 1024;

    private NormKernels() {
    }

    /** add_rms_norm: x += y, out = rmsnorm(x) * w. */
    public static void addRmsNorm(CudaRuntime gpu, CUdeviceptr x, CUdeviceptr y, CUdeviceptr out, CUdeviceptr outBf16,
                                  CUdeviceptr w, int rows, int dim, float eps) {
        gpu.launch("add_rms_norm", rows, 1, THREADS, x, y, out, outBf16, w, rows, dim, eps);
    }

    /** add_layer_norm: x += y, out = (x - mean) / std * w + b. */
    public static void addLayerNorm(CudaRuntime gpu, CUdeviceptr x, CUdeviceptr y, CUdeviceptr out,
                                    CUdeviceptr outBf16, CUdeviceptr w, CUdeviceptr b, int rows, int dim, float eps) {
        gpu.launch("add_layer_norm", rows, 1, THREADS, x, y, out, outBf16, w, b, rows, dim, eps);
    }
}
