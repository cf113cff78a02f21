package io.dsflow.engine.cuda;

import jcuda.driver.CUdeviceptr;

/**
 * Launchers of matmul.cu: linear layers y[m][n] = sum_k x[m][k] W[n][k] + bias[n]. Which kernel a product takes is
 * {@link CudaOps#linear}'s choice.
 * <ul>
 *   <li>x: [M][K] f32 (the GEMVs), xBf16: [M][K] bf16 (gemm_bf16)</li>
 *   <li>w: [N][K] bf16 (Hugging Face layout); with SwiGLU the fused gate/up matrix, rows interleaved (row 2i = gate_i,
 *       row 2i + 1 = up_i: {@link ActivationKernels#interleaveRows})</li>
 *   <li>bias: [N] bf16 or null; normWeight: [K] bf16 or null (the RMSNorm prologue: the product of
 *       rmsnorm(x[m]) * normWeight, at no launch of its own)</li>
 *   <li>y: [M][N] f32; with {@code accumulate} the product is added to it (the residual stream)</li>
 *   <li>act: the SwiGLU activations silu(y[m][2i]) * y[m][2i + 1], [M][N / 2]: f32 from the GEMVs, bf16 from
 *       gemm_bf16 (the next product's input as is); y is not written then</li>
 * </ul>
 */
public final class MatmulKernels {
    /** Output columns a block of gemv_tc computes (matmul.cu: GV_FG groups of 16). */
    static final int GEMV_TC_COLUMNS = 16;
    /** Rows and columns of gemm_bf16's block tile; K-steps of 64 bf16, 3 stages. */
    static final int GEMM_TILE = 128, GEMM_K_STEP = 64, GEMM_STAGES = 3;

    private MatmulKernels() {
    }

    /** Output columns each warp of gemv_mM computes (matmul.cu's GEMV(m, c); _swiglu: 2, a gate/up pair). */
    static int gemvColumns(int m) {
        return m == 1 || m == 16 ? 1 : 2;
    }

    /** The rows a gemv_mM variant takes: 1, 2, 4, 8 or 16 (the caller loops over groups of rows). */
    private static String gemvVariant(int m) {
        if (m != 1 && m != 2 && m != 4 && m != 8 && m != 16) {
            throw new IllegalArgumentException("gemv_mM is built for 1, 2, 4, 8 or 16 rows, not " + m);
        }
        return "gemv_m" + m;
    }

    /**
     * gemv_mM (decode, M = {@code m} rows of 1, 2, 4, 8, 16): bandwidth-bound, each warp a few output columns
     * ({@link #gemvColumns}), each W row read once. Grid (ceil(N / (8 columns))), block 256 (8 warps).
     */
    public static void gemv(CudaRuntime gpu, int m, CUdeviceptr y, CUdeviceptr x, CUdeviceptr w, CUdeviceptr bias,
                            CUdeviceptr normWeight, float eps, boolean accumulate, int n, int k) {
        int cols = 8 * gemvColumns(m);
        gpu.launch(gemvVariant(m), (n + cols - 1) / cols, 1, 256, y, x, w, bias, normWeight, eps, accumulate ? 1 : 0,
                n, k);
    }

    /**
     * gemv_mM_swiglu: {@link #gemv} with the SwiGLU epilogue, act [m][n / 2] f32; a warp a gate/up pair. Grid
     * (ceil(N / 16)), block 256.
     */
    public static void gemvSwiglu(CudaRuntime gpu, int m, CUdeviceptr act, CUdeviceptr x, CUdeviceptr w,
                                  CUdeviceptr bias, CUdeviceptr normWeight, float eps, int n, int k) {
        int cols = 8 * 2;
        gpu.launch(gemvVariant(m) + "_swiglu", (n + cols - 1) / cols, 1, 256, act, x, w, bias, normWeight, eps, n, k);
    }

    /**
     * gemv_tc (decode, 2-16 rows, K % 32 == 0): the GEMV on tensor cores, x split into three bf16 parts so the products
     * keep f32 precision; with {@code swiglu}, y receives act [m][n / 2] f32. Grid
     * (ceil(N / {@link #GEMV_TC_COLUMNS})), block 256.
     */
    public static void gemvTc(CudaRuntime gpu, CUdeviceptr y, CUdeviceptr x, CUdeviceptr w, CUdeviceptr bias,
                              CUdeviceptr normWeight, float eps, boolean accumulate, boolean swiglu, int m, int n,
                              int k) {
        gpu.launch("gemv_tc", (n + GEMV_TC_COLUMNS - 1) / GEMV_TC_COLUMNS, 1, 256, y, x, w, bias, normWeight, eps,
                accumulate ? 1 : 0, swiglu ? 1 : 0, m, n, k);
    }

    /**
     * gemm_bf16 (prefill, many rows): tensor cores, 128 x 128 tiles fed by cp.async 3 stages ahead; K % 8 == 0. y is
     * written where act is null, else act [m][n / 2] bf16. Grid (ceil(M / 128) ceil(N / 128)), block 256, dynamic
     * shared memory 3 stages of two 128 x 64 bf16 tiles (96 KB).
     */
    public static void gemmBf16(CudaRuntime gpu, CUdeviceptr y, CUdeviceptr act, CUdeviceptr xBf16, CUdeviceptr w,
                                CUdeviceptr bias, boolean accumulate, int m, int n, int k) {
        int blocks = ((m + GEMM_TILE - 1) / GEMM_TILE) * ((n + GEMM_TILE - 1) / GEMM_TILE);
        gpu.launchWithSharedMemory("gemm_bf16", blocks, 1, 256, GEMM_STAGES * 2 * GEMM_TILE * GEMM_K_STEP * 2, y, act,
                xBf16, w, bias, accumulate ? 1 : 0, m, n, k);
    }
}
