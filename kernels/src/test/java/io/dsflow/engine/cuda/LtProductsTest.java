package io.dsflow.engine.cuda;

import io.dsflow.engine.DsflowException;
import jcuda.driver.CUdeviceptr;
import jcuda.driver.CUgraphExec;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.util.Arrays;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * cuBLASLt's tuned decode products ({@link LtProducts}, through {@link Cublas#gemm} as the forward pass calls it)
 * against a double-precision product of the same bf16 inputs: every algorithm the heuristic lists (so that whichever a
 * tuning picks computes the product), a chosen algorithm over the row counts of its bucket, the tuning's first product
 * (whose timing must leave an accumulating product's output as it was) and another row count after it, and a product
 * captured in a graph before its shape was tuned (left to cublasGemmEx, no tuning inside the capture). Skipped where
 * the runtime has no cuBLASLt.
 */
class LtProductsTest extends KernelTestSupport {
    /** bf16 inputs, f32 accumulation in another order than the reference's: only rounding differs. */
    private static final double TOLERANCE = 1e-4;

    /** A product's inputs (bf16 values as floats) and its starting output, with the reference result. */
    private record Case(int m, int n, int k, float[] x, float[] w, float[] c0, float[] ref, boolean accumulate) {
        static Case of(int m, int n, int k, boolean accumulate, long seed) {
            Random r = new Random(seed);
            float[] x = random(r, m * k, 1), w = random(r, n * k, 0.05f), c0 = random(r, m * n, 1);
            for (int i = 0; i < x.length; i++) x[i] = bf(x[i]);
            for (int i = 0; i < w.length; i++) w[i] = bf(w[i]);
            float[] ref = new float[m * n];
            for (int i = 0; i < m; i++) {
                for (int o = 0; o < n; o++) {
                    double s = accumulate ? c0[i * n + o] : 0;
                    for (int j = 0; j < k; j++) s += (double) x[i * k + j] * w[o * k + j];
                    ref[i * n + o] = (float) s;
                }
            }
            return new Case(m, n, k, x, w, c0, ref, accumulate);
        }

        /** The output buffer as the product finds it: c0 where it accumulates, NaN where it must overwrite. */
        CUdeviceptr output() {
            if (accumulate) return upload(c0);
            float[] poison = new float[m * n];
            Arrays.fill(poison, Float.NaN);
            return upload(poison);
        }

        void check(CUdeviceptr c, String what) {
            double err = relError(download(c, m * n), ref);
            assertTrue(err < TOLERANCE, what + ": relative error " + err);
        }
    }

    private static LtProducts tuner() {
        Cublas blas = gpu.blas();
        assumeTrue(blas != null && blas.tuned() != null, "no cuBLASLt tuning on this runtime");
        return blas.tuned();
    }

    @ParameterizedTest(name = "rows {0}, n {1}, k {2}")
    @CsvSource({"33,97,200", "64,130,136", "100,257,1032", "129,64,520", "256,300,2048"})
    void everyCandidateMatchesTheProduct(int m, int n, int k) {
        LtProducts lt = tuner();
        List<long[]> algos = lt.candidates(m, n, k);
        assertFalse(algos.isEmpty(), "the heuristic lists no algorithm for " + m + " x " + n + " x " + k);
        for (boolean accumulate : new boolean[]{false, true}) {
            Case p = Case.of(m, n, k, accumulate, m * 31L + n);
            CUdeviceptr x = uploadBf16(p.x()), w = uploadBf16(p.w());
            int ran = 0;
            for (int i = 0; i < algos.size(); i++) {
                CUdeviceptr c = p.output();
                try {
                    lt.gemmWith(algos.get(i), c, x, w, accumulate, m, n, k);
                } catch (DsflowException e) {   // listed, refused at the call: a tuning skips it as well
                    continue;
                }
                ran++;
                p.check(c, "algorithm " + i + " of " + algos.size() + (accumulate ? ", accumulating" : ""));
            }
            assertTrue(ran > 0, "no listed algorithm ran " + m + " x " + n + " x " + k);
        }
    }

    /**
     * An algorithm chosen for a bucket (here the heuristic's last, as a tuning may choose) computes the products of
     * every row count of the bucket on cuBLASLt: the path a tuned choice takes, whichever a tuning here would pick.
     */
    @Test
    void aChosenAlgorithmComputesEveryRowCountOfItsBucket() {
        LtProducts lt = tuner();
        int n = 904, k = 264;   // a shape no other test uses
        List<long[]> algos = lt.candidates(65, n, k);
        assertFalse(algos.isEmpty(), "the heuristic lists no algorithm for 65 x " + n + " x " + k);
        lt.choose(65, n, k, algos.get(algos.size() - 1));
        for (int m : new int[]{65, 80, 96}) {
            for (boolean accumulate : new boolean[]{false, true}) {
                Case p = Case.of(m, n, k, accumulate, m * 7L);
                CUdeviceptr c = p.output();
                boolean onLt = lt.gemm(c, uploadBf16(p.x()), uploadBf16(p.w()), accumulate, m, n, k,
                        (ci, wi) -> fail("a chosen bucket is not timed"));
                assertTrue(onLt, m + " rows: the chosen algorithm refused (cublasLtMatmulAlgoCheck)");
                p.check(c, m + " rows on the chosen algorithm" + (accumulate ? ", accumulating" : ""));
            }
        }
    }

    /**
     * The first product of a shape tunes it (over the weights registered for the shape, here three copies) and leaves
     * the product; a second row count of the bucket takes the choice without tuning again.
     */
    @Test
    void tuningLeavesTheProductAndHoldsForItsBucket() {
        LtProducts lt = tuner();
        int n = 1096, k = 328;   // a shape no other test uses
        Case first = Case.of(40, n, k, true, 5), second = Case.of(61, n, k, true, 6);
        CUdeviceptr w = uploadBf16(first.w());
        lt.rotateOver(n, k, List.of(w, uploadBf16(first.w()), uploadBf16(first.w())));
        int before = lt.tunings().size();

        CUdeviceptr c = first.output();
        gpu.blas().gemm(c, uploadBf16(first.x()), w, true, first.m(), n, k);
        first.check(c, "the tuning product (40 rows, accumulating)");
        List<LtProducts.Tuning> after = lt.tunings();
        assertEquals(before + 1, after.size(), "the first product of the shape tunes it");
        LtProducts.Tuning t = after.get(after.size() - 1);
        assertEquals(List.of(n, k, 33, 64), List.of(t.n(), t.k(), t.rowsFrom(), t.rowsTo()), t.describe());
        assertTrue(t.gemmExUs() > 0 && t.chosenUs() > 0 && t.chosenUs() <= t.gemmExUs(), t.describe());

        CUdeviceptr w2 = uploadBf16(second.w()), c2 = second.output();
        gpu.blas().gemm(c2, uploadBf16(second.x()), w2, true, second.m(), n, k);
        second.check(c2, "61 rows of the tuned bucket");
        assertEquals(after.size(), lt.tunings().size(), "a bucket is tuned once");
    }

    /**
     * A product first met while a graph is captured is left to the caller (Cublas runs cublasGemmEx then) and tunes
     * nothing inside the capture; its next eager product tunes. The caller's product here is the heuristic's first
     * algorithm, its kernel loaded before the capture as the forward pass's eager first step loads its kernels.
     */
    @Test
    void aProductCapturedBeforeItsTuningIsLeftToTheCallerAndTunedLater() {
        LtProducts lt = tuner();
        int n = 776, k = 232;   // a shape no other test uses
        Case p = Case.of(70, n, k, false, 7);
        CUdeviceptr x = uploadBf16(p.x()), w = uploadBf16(p.w()), c = p.output();
        List<long[]> algos = lt.candidates(p.m(), n, k);
        assertFalse(algos.isEmpty(), "the heuristic lists no algorithm for 70 x " + n + " x " + k);
        long[] first = algos.get(0);
        lt.gemmWith(first, p.output(), x, w, false, p.m(), n, k);
        int before = lt.tunings().size();
        int[] timed = {0};
        LtProducts.Product caller = (ci, wi) -> {
            timed[0]++;
            lt.gemmWith(first, ci, x, wi, false, p.m(), n, k);
        };
        boolean[] ran = new boolean[1];
        CUgraphExec graph = gpu.capture(() -> {
            ran[0] = lt.gemm(c, x, w, false, p.m(), n, k, caller);
            if (!ran[0]) lt.gemmWith(first, c, x, w, false, p.m(), n, k);
        });
        try {
            assertFalse(ran[0], "an untuned shape is not run by cuBLASLt inside a capture");
            assertEquals(0, timed[0], "nothing is timed inside a capture");
            assertEquals(before, lt.tunings().size(), "no tuning inside a capture");
            gpu.replay(graph);
            p.check(c, "the captured product");
        } finally {
            gpu.destroy(graph);
        }
        CUdeviceptr c2 = p.output();
        if (!lt.gemm(c2, x, w, false, p.m(), n, k, caller)) lt.gemmWith(first, c2, x, w, false, p.m(), n, k);
        p.check(c2, "the eager product after it");
        assertEquals(before + 1, lt.tunings().size(), "the eager product tunes the shape");
        assertTrue(timed[0] > 0, "the tuning timed the caller's product");
    }
}
