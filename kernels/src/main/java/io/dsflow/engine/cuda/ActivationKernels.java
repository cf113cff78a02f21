package io.dsflow.engine.cuda;

import jcuda.driver.CUdeviceptr;

/**
 * Launchers of activation.cu: element-wise kernels over n values (block 256; SwiGLU is fused into the products,
 * {@link MatmulKernels}) and the weight layouts made on the device.
 * <ul>
 *   <li>relu, residualAdd: x, y [n] f32</li>
 *   <li>interleaveRows: src [2 rows][cols] bf16 (gate stacked on up, as uploaded), dst [2 rows][cols] bf16 (row 2i =
 *       gate_i, row 2i + 1 = up_i: the fused gate/up layout the SwiGLU epilogues read)</li>
 *   <li>fillRandomBf16: out [n] bf16 (synthetic weights)</li>
 *   <li>f32ToBf16: x [n] f32, out [n] bf16 (the tensor-core GEMM's operand)</li>
 *   <li>addBiasRows, swigluRows: the epilogues of a product cuBLAS computed, y [m][n] f32, bias [n] bf16; swigluRows
 *       reads the row-interleaved gate/up product and writes act [m][n / 2] bf16</li>
 * </ul>
 */
public final class ActivationKernels {
    private ActivationKernels() {
    }

    /** Blocks of 256 threads over n values, {@code perThread} values a thread. */
    private static int blocks(long n, int perThread) {
        long perBlock = 256L * perThread;
        return (int) ((n + perBlock - 1) / perBlock);
    }

    /** interleave_rows: dst row 2i = src row i, dst row 2i + 1 = src row rows + i. Grid (2 rows). */
    public static void interleaveRows(CudaRuntime gpu, CUdeviceptr dst, CUdeviceptr src, int rows, long cols) {
        gpu.launch("interleave_rows", 2 * rows, 1, 256, dst, src, rows, cols);
    }

    /** relu: x = max(x, 0) (OPT's MLP). */
    public static void relu(CudaRuntime gpu, CUdeviceptr x, long n) {
        gpu.launch("relu", blocks(n, 1), 1, 256, x, n);
    }

    /** residual_add: x += y (the residual add where no norm follows). */
    public static void residualAdd(CudaRuntime gpu, CUdeviceptr x, CUdeviceptr y, long n) {
        gpu.launch("residual_add", blocks(n, 1), 1, 256, x, y, n);
    }

    /**
     * fill_random_bf16: values uniform in [-scale, scale) from a hash of (seed, index). The blocks stride over n: at
     * most 65535 of them.
     */
    public static void fillRandomBf16(CudaRuntime gpu, CUdeviceptr out, long n, long seed, float scale) {
        gpu.launch("fill_random_bf16", (int) Math.min(65535, (n + 255) / 256), 1, 256, out, n, seed, scale);
    }

    /** f32_to_bf16: out = bf16(x), rounding to nearest even, 4 values a thread. */
    public static void f32ToBf16(CudaRuntime gpu, CUdeviceptr out, CUdeviceptr x, long n) {
        gpu.launch("f32_to_bf16", blocks(n, 4), 1, 256, out, x, n);
    }

    /** add_bias_rows: y[i][j] += bias[j], y [m][n] f32, bias [n] bf16. */
    public static void addBiasRows(CudaRuntime gpu, CUdeviceptr y, CUdeviceptr bias, int m, int n) {
        gpu.launch("add_bias_rows", blocks((long) m * n, 1), 1, 256, y, bias, m, n);
    }

    /** Pairs a thread of swiglu_rows computes (activation.cu's SWIGLU_PAIRS). */
    private static final int SWIGLU_PAIRS = 4;

    /**
     * swiglu_rows: act[i][j] = silu(y[i][2j] + bias[2j]) * (y[i][2j + 1] + bias[2j + 1]), y [m][n] f32 (gate/up rows
     * interleaved), bias [n] bf16 or null, act [m][n / 2] bf16.
     */
    public static void swigluRows(CudaRuntime gpu, CUdeviceptr act, CUdeviceptr y, CUdeviceptr bias, int m, int n) {
        int blocksPerRow = (n / 2 + 256 * SWIGLU_PAIRS - 1) / (256 * SWIGLU_PAIRS);
        gpu.launch("swiglu_rows", Math.multiplyExact(m, blocksPerRow), 1, 256, act, y, bias, m, n, blocksPerRow);
    }
}
