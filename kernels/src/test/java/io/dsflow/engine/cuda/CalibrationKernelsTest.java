package io.dsflow.engine.cuda;

import io.dsflow.engine.kv.CalibrationStatistics;
import io.dsflow.engine.kv.KvConfig;
import jcuda.Pointer;
import jcuda.driver.CUdeviceptr;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.util.Random;

import static jcuda.driver.JCudaDriver.cuMemcpyDtoH;
import static jcuda.driver.JCudaDriver.cuMemcpyHtoD;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * calibration.cu against the CPU's formula (CalibratingKvCache: the float product |q_c * k_c|, |q_c|, |k_c|, each
 * added in double) on random q and k of odd sizes, and the accumulators of a calibrating cache (CudaCalibration).
 * Skipped where there is no GPU.
 */
class CalibrationKernelsTest {
    /** Sums in another order than the CPU's, in double: far below this. */
    private static final double TOLERANCE = 1e-9;
    private static CudaRuntime gpu;

    @BeforeAll
    static void open() {
        assumeTrue(CudaRuntime.available(), "no CUDA: " + CudaRuntime.unavailableReason());
        gpu = CudaRuntime.open(0);
    }

    @AfterAll
    static void close() {
        if (gpu != null) gpu.close();
    }

    /**
     * A forward pass's qkv buffer: [rows][stride] f32, each row q [heads][dim], k [kvHeads][dim], v [kvHeads][dim] of
     * Gaussian values, then {@code stride - (heads + 2 kvHeads) dim} floats of padding (not read).
     */
    private static float[] randomQkv(Random rnd, int rows, int stride) {
        float[] x = new float[rows * stride];
        for (int i = 0; i < x.length; i++) x[i] = (float) (rnd.nextGaussian() * 2);
        return x;
    }

    /**
     * The CPU's sums (CalibratingKvCache: the float product's absolute value, added in double) of rows
     * [row0, row0 + rows), added to qk, q [heads][dim] and k [kvHeads][dim].
     */
    private static void addOnTheCpu(double[] qk, double[] q, double[] k, float[] qkv, int row0, int rows, int heads,
                                    int kvHeads, int dim, int stride) {
        int group = heads / kvHeads;
        for (int r = row0; r < row0 + rows; r++) {
            int keys = r * stride + heads * dim;
            for (int h = 0; h < heads; h++) {
                for (int c = 0; c < dim; c++) {
                    float qc = qkv[r * stride + h * dim + c], kc = qkv[keys + h / group * dim + c];
                    qk[h * dim + c] += Math.abs(qc * kc);
                    q[h * dim + c] += Math.abs(qc);
                }
            }
            for (int i = 0; i < kvHeads * dim; i++) k[i] += Math.abs(qkv[keys + i]);
        }
    }

    private static CUdeviceptr upload(float[] x) {
        CUdeviceptr p = gpu.alloc(x.length * 4L);
        cuMemcpyHtoD(p, Pointer.to(x), x.length * 4L);
        return p;
    }

    private static CUdeviceptr upload(double[] x) {
        CUdeviceptr p = gpu.alloc(x.length * 8L);
        cuMemcpyHtoD(p, Pointer.to(x), x.length * 8L);
        return p;
    }

    private static double[] download(CUdeviceptr p, int n) {
        gpu.synchronize();
        double[] x = new double[n];
        cuMemcpyDtoH(Pointer.to(x), p, n * 8L);
        return x;
    }

    private static double[] positive(Random rnd, int n) {
        double[] x = new double[n];
        for (int i = 0; i < n; i++) x[i] = 1 + rnd.nextDouble();
        return x;
    }

    private static void assertClose(double[] want, double[] got, String what) {
        assertEquals(want.length, got.length, what);
        for (int i = 0; i < want.length; i++) {
            double err = Math.abs(got[i] - want[i]) / Math.max(Math.abs(want[i]), 1e-300);
            assertTrue(err < TOLERANCE, what + "[" + i + "]: " + got[i] + " vs " + want[i] + " (relative " + err + ")");
        }
    }

    /**
     * Two launches into the same accumulators (rows 5..41, then 0..12 of a 50-row pass; the accumulators start at
     * random values, so a kernel that overwrites fails), and a one-row launch (one lane).
     */
    @ParameterizedTest(name = "heads {0}, kv heads {1}, head_dim {2}")
    @CsvSource({"6,2,32", "6,3,32", "6,2,64", "6,3,64", "8,1,128", "4,4,256"})
    void calibrationAddSumsWhatTheCpuSums(int heads, int kvHeads, int dim) {
        Random rnd = new Random(heads * 1000L + kvHeads * 100L + dim);
        int rows = 50, stride = (heads + 2 * kvHeads) * dim + 3;
        float[] qkv = randomQkv(rnd, rows, stride);
        double[] qk = positive(rnd, heads * dim), q = positive(rnd, heads * dim), k = positive(rnd, kvHeads * dim);
        CUdeviceptr dQkv = upload(qkv), dQk = upload(qk), dQ = upload(q), dK = upload(k);
        int[][] launches = {{5, 37}, {0, 13}, {49, 1}, {7, 0}};   // {row0, rows}
        for (int[] l : launches) {
            CalibrationKernels.calibrationAdd(gpu, dQk, dQ, dK, dQkv, l[0], l[1], heads, kvHeads, dim, stride);
            addOnTheCpu(qk, q, k, qkv, l[0], l[1], heads, kvHeads, dim, stride);
        }
        assertClose(qk, download(dQk, qk.length), "qk");
        assertClose(q, download(dQ, q.length), "q");
        assertClose(k, download(dK, k.length), "k");
        gpu.free(dQkv, qkv.length * 4L);
        gpu.free(dQk, qk.length * 8L);
        gpu.free(dQ, q.length * 8L);
        gpu.free(dK, k.length * 8L);
    }

    /**
     * A calibrating cache's accumulators: each layer's rows added, collected into the statistics with the step's
     * token count, zero again after a collect, and returned to the pool with the cache.
     */
    @Test
    void calibratingCacheCollectsEachLayerIntoItsStatistics() {
        int layers = 3, heads = 6, kvHeads = 2, dim = 32, rows = 37, stride = (heads + 2 * kvHeads) * dim;
        Random rnd = new Random(7);
        CalibrationStatistics stats = new CalibrationStatistics(layers, heads, kvHeads, dim);
        long before = gpu.allocated();
        CudaKvCache cache = CudaKvCache.calibrating(gpu, layers, heads, kvHeads, dim, stats);
        CudaCalibration calibration = cache.calibration();
        assertNotNull(calibration);
        double[][] qk = new double[layers][heads * dim], q = new double[layers][heads * dim];
        double[][] k = new double[layers][kvHeads * dim];
        for (int step = 0; step < 2; step++) {   // two prefill steps of one block
            for (int l = 0; l < layers; l++) {   // the pass reuses one qkv buffer for every layer
                float[] qkv = randomQkv(rnd, rows, stride);
                CUdeviceptr dQkv = upload(qkv);
                calibration.add(l, dQkv, 0, rows, stride);
                addOnTheCpu(qk[l], q[l], k[l], qkv, 0, rows, heads, kvHeads, dim, stride);
                gpu.free(dQkv, qkv.length * 4L);
            }
            calibration.collect(rows);
        }
        calibration.collect(0);   // zeroed by the last collect: adds nothing
        assertEquals(2L * rows, stats.tokens());
        for (int l = 0; l < layers; l++) {
            for (int h = 0; h < heads; h++) {
                assertClose(java.util.Arrays.copyOfRange(qk[l], h * dim, (h + 1) * dim),
                        stats.sums(KvConfig.ChannelSource.QK, l, h), "qk layer " + l + " head " + h);
                assertClose(java.util.Arrays.copyOfRange(q[l], h * dim, (h + 1) * dim),
                        stats.sums(KvConfig.ChannelSource.Q, l, h), "q layer " + l + " head " + h);
            }
            for (int g = 0; g < kvHeads; g++) {
                assertClose(java.util.Arrays.copyOfRange(k[l], g * dim, (g + 1) * dim),
                        stats.sums(KvConfig.ChannelSource.K, l, g), "k layer " + l + " kv head " + g);
            }
        }
        cache.release();
        cache.release();
        assertEquals(before, gpu.allocated(), "the cache and its accumulators are back in the pool");
    }
}
