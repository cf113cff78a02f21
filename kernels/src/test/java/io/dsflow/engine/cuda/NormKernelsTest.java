package io.dsflow.engine.cuda;

import io.dsflow.engine.cpu.CpuOps;
import jcuda.driver.CUdeviceptr;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.util.Arrays;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertTrue;

/** norm.cu's norms fused with the residual add against the CPU backend, to f32 and to bf16 outputs. */
class NormKernelsTest extends KernelTestSupport {
    /** The CPU's rmsnorm(x + y) * w, row by row. */
    private static float[] ref(float[] x, float[] y, float[] w, int rows, int dim) {
        float[] out = new float[rows * dim], row = new float[dim], o = new float[dim];
        for (int m = 0; m < rows; m++) {
            for (int i = 0; i < dim; i++) row[i] = x[m * dim + i] + y[m * dim + i];
            CpuOps.rmsNorm(row, w, 1e-5f, o);
            System.arraycopy(o, 0, out, m * dim, dim);
        }
        return out;
    }

    /**
     * Odd widths take the one-float path, widths in whole float4 the 16-byte one (32: one warp; 4,096: a prefill's;
     * 20,000: wider than the values a block keeps in registers, either path).
     */
    @ParameterizedTest(name = "dim {0}")
    @CsvSource({"333", "9001", "4", "36", "32", "4096", "20000"})
    void normsMatchCpu(int dim) {
        Random r = new Random(5);
        int rows = 7;
        float[] x = random(r, rows * dim, 2), y = random(r, rows * dim, 1);
        float[] w = random(r, dim, 1), b = random(r, dim, 1);
        for (int i = 0; i < dim; i++) {
            w[i] = bf(w[i]);
            b[i] = bf(b[i]);
        }
        for (boolean layerNorm : new boolean[]{false, true}) {
            CUdeviceptr dx = upload(x), dy = upload(y), out = poisoned(rows * dim);
            CUdeviceptr outBf = uploadBf16(new float[rows * dim]), dx2 = upload(x), dx3 = upload(x);
            CUdeviceptr outNoAdd = poisoned(rows * dim);
            if (layerNorm) {
                NormKernels.addLayerNorm(gpu, dx, dy, out, null, uploadBf16(w), uploadBf16(b), rows, dim, 1e-5f);
                NormKernels.addLayerNorm(gpu, dx2, dy, null, outBf, uploadBf16(w), uploadBf16(b), rows, dim, 1e-5f);
            } else {
                NormKernels.addRmsNorm(gpu, dx, dy, out, null, uploadBf16(w), rows, dim, 1e-5f);
                NormKernels.addRmsNorm(gpu, dx2, dy, null, outBf, uploadBf16(w), rows, dim, 1e-5f);
                NormKernels.addRmsNorm(gpu, dx3, null, outNoAdd, null, uploadBf16(w), rows, dim, 1e-5f);
                float[] refNoAdd = new float[rows * dim], o = new float[dim];
                for (int m = 0; m < rows; m++) {
                    CpuOps.rmsNorm(Arrays.copyOfRange(x, m * dim, (m + 1) * dim), w, 1e-5f, o);
                    System.arraycopy(o, 0, refNoAdd, m * dim, dim);
                }
                assertTrue(relError(download(outNoAdd, rows * dim), refNoAdd) < 1e-5, "norm without the residual add");
                assertTrue(relError(download(dx3, rows * dim), x) == 0, "x untouched without a residual");
                // in place (out == x), as a post-norm model normalises its residual stream
                CUdeviceptr dx4 = upload(x);
                NormKernels.addRmsNorm(gpu, dx4, dy, dx4, null, uploadBf16(w), rows, dim, 1e-5f);
                assertTrue(relError(download(dx4, rows * dim), ref(x, y, w, rows, dim)) < 1e-5, "norm in place");
                // x 4 bytes past a 16-byte boundary: the one-float path, whatever the width
                float[] shifted = new float[rows * dim + 1];
                System.arraycopy(x, 0, shifted, 1, rows * dim);
                CUdeviceptr dx5 = upload(shifted).withByteOffset(4), out5 = poisoned(rows * dim);
                NormKernels.addRmsNorm(gpu, dx5, dy, out5, null, uploadBf16(w), rows, dim, 1e-5f);
                assertTrue(relError(download(out5, rows * dim), ref(x, y, w, rows, dim)) < 1e-5, "misaligned rows");
            }
            float[] ref = new float[rows * dim], sum = new float[rows * dim];
            for (int m = 0; m < rows; m++) {
                float[] row = new float[dim], o = new float[dim];
                for (int i = 0; i < dim; i++) row[i] = x[m * dim + i] + y[m * dim + i];
                if (layerNorm) CpuOps.layerNorm(row, w, b, 1e-5f, o);
                else CpuOps.rmsNorm(row, w, 1e-5f, o);
                System.arraycopy(o, 0, ref, m * dim, dim);
                System.arraycopy(row, 0, sum, m * dim, dim);
            }
            assertTrue(relError(download(out, rows * dim), ref) < 1e-5, "norm output");
            assertTrue(relError(downloadBf16(outBf, rows * dim), ref) < 5e-3, "norm output in bf16");
            assertTrue(relError(download(dx, rows * dim), sum) < 1e-6, "residual updated in place");
        }
    }
}
