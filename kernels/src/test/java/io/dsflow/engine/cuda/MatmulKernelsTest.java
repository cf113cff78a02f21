package io.dsflow.engine.cuda;

import io.dsflow.engine.cpu.CpuOps;
import jcuda.driver.CUdeviceptr;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.util.Arrays;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * matmul.cu's products against the CPU backend, launched as the forward pass launches them ({@link CudaOps#linear}:
 * the GEMVs up to 32 rows, tensor cores beyond), with activation.cu's interleave_rows and f32_to_bf16 and norm.cu's
 * bf16 output on the way. Products on tensor cores run twice where the runtime found cuBLAS: on cuBLAS (with
 * activation.cu's add_bias_rows and swiglu_rows after it) and on gemm_bf16.
 */
class MatmulKernelsTest extends KernelTestSupport {
    /**
     * A linear layer as the forward pass launches it (GEMV up to 32 rows, tensor cores beyond), plain and with the
     * SwiGLU epilogue: then W is a gate/up pair ({@code out} rows each) interleaved on the device by interleave_rows,
     * as the backend uploads it, and the output is silu(gate) * up (bf16 from the tensor cores).
     */
    @ParameterizedTest(name = "rows {0}, out {1}, in {2}")
    @CsvSource({"1,97,200", "2,64,130", "3,129,256", "5,77,96", "8,200,1000", "9,61,160", "11,33,40", "13,300,2048",
            "16,45,88", "27,99,1024",
            "33,97,200", "97,129,136", "200,70,333", "300,260,520", "513,384,1032",
            "40,2100,64"})   // swiglu_rows: three blocks a row
    void linearMatchesCpu(int rows, int out, int in) {
        for (boolean fused : new boolean[]{false, true}) {
            for (boolean swiglu : new boolean[]{false, true}) {
                linearCase(rows, out, in, swiglu, fused, fused && !swiglu, true);
            }
        }
        linearCase(rows, out, in, true, true, false, false);   // Llama's MLP: no bias (swiglu_rows' 16-byte path)
    }

    /**
     * One product against the CPU: plain, or with the RMSNorm prologue ({@code norm}) and the residual epilogue; with a
     * bias or ({@code biased} false) none.
     */
    private void linearCase(int rows, int out, int in, boolean swiglu, boolean norm, boolean accumulate,
                            boolean biased) {
        int n = swiglu ? 2 * out : out;   // rows of W: [gate; up] stacked for SwiGLU
        Random r = new Random(rows * 31L + out + (norm ? 7 : 0));
        float[] x = random(r, rows * in, 1), w = random(r, n * in, 0.05f), b = random(r, n, 0.1f);
        float[] g = random(r, in, 1), y0 = random(r, rows * out, 1);
        for (int i = 0; i < w.length; i++) w[i] = bf(w[i]);
        for (int i = 0; i < b.length; i++) b[i] = biased ? bf(b[i]) : 0f;
        for (int i = 0; i < g.length; i++) g[i] = bf(g[i]);
        float[] wt = new float[w.length];
        for (int o = 0; o < n; o++) for (int i = 0; i < in; i++) wt[i * n + o] = w[o * in + i];
        float[][] xr = new float[rows][in], yr = new float[rows][n];
        for (int m = 0; m < rows; m++) {
            System.arraycopy(x, m * in, xr[m], 0, in);
            if (norm) CpuOps.rmsNorm(xr[m].clone(), g, 1e-5f, xr[m]);
        }
        CpuOps.matmul(xr, rows, new CpuOps.Linear(wt, in, n, b), yr);
        float[] ref = new float[rows * out];
        for (int m = 0; m < rows; m++) {
            float[] gate = Arrays.copyOf(yr[m], out);
            if (swiglu) CpuOps.swiglu(gate, Arrays.copyOfRange(yr[m], out, n));
            for (int o = 0; o < out; o++) ref[m * out + o] = accumulate ? y0[m * out + o] + gate[o] : gate[o];
        }
        CUdeviceptr dw = uploadBf16(w), db = uploadBf16(b);
        if (swiglu) {
            CUdeviceptr iw = gpu.alloc((long) n * in * 2), ib = gpu.alloc(n * 2L);
            ActivationKernels.interleaveRows(gpu, iw, dw, out, in);
            ActivationKernels.interleaveRows(gpu, ib, db, out, 1);
            dw = iw;
            db = ib;
        }
        if (!biased) db = null;
        boolean tc = CudaOps.tensorCores(rows, in);
        List<Cublas> routes = tc && gpu.blas() != null ? Arrays.asList(gpu.blas(), null) : Arrays.asList((Cublas) null);
        for (Cublas blas : routes) {
            float[] start = accumulate ? y0 : new float[rows * out];
            if (!accumulate) Arrays.fill(start, Float.NaN);
            CUdeviceptr dy = swiglu && tc ? uploadBf16(start) : upload(start);
            CudaOps.RmsNorm rms = norm ? new CudaOps.RmsNorm(uploadBf16(g), 1e-5f) : null;
            CudaOps.GemmBuffers buffers = new CudaOps.GemmBuffers(gpu.alloc((long) rows * in * 2),
                    blas != null && swiglu ? gpu.alloc((long) rows * n * 4) : null);
            CudaOps.linear(gpu, blas, dy, upload(x), buffers, false, rows, dw, db, n, in, swiglu, rms, accumulate);
            float[] got = swiglu && tc ? downloadBf16(dy, rows * out) : download(dy, rows * out);
            double err = relError(got, ref);
            // the tensor-core path rounds x (and a SwiGLU output) to bf16 (about 3e-3); the GEMV reads x in f32
            String what = (tc ? blas != null ? "cuBLAS, " : "gemm_bf16, " : "") + (norm ? "rmsnorm prologue, " : "")
                    + (accumulate ? "residual epilogue, " : "") + (swiglu ? "swiglu, " : "")
                    + (biased ? "" : "no bias, ");
            assertTrue(err < (tc ? 1e-2 : 1e-5), what + "relative error " + err);
        }
    }
}
