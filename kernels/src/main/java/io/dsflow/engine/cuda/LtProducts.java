package io.dsflow.engine.cuda;

import com.sun.jna.Native;
import com.sun.jna.NativeLibrary;
import io.dsflow.engine.DsflowException;
import jcuda.DeviceAddress;
import jcuda.driver.CUdeviceptr;
import jcuda.driver.CUevent;
import jcuda.driver.CUstreamCaptureStatus;
import jcuda.driver.JCudaDriver;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * The decode products of {@link #MIN_ROWS}-{@link #MAX_ROWS} rows through cuBLASLt, each with the algorithm that ran
 * fastest on this GPU: c[m][n] = (accumulate ? c : 0) + x[m][k] w[n][k]^T, bf16 x bf16 -> f32 with f32 accumulation,
 * the product {@link Cublas#gemm} computes with cublasGemmEx (whose choice is cuBLASLt's heuristic's first).
 *
 * <p>Why: at 64-256 rows these products read their weights once and are bound by the copy bandwidth, and the
 * heuristic's first algorithm is not always the one that reads fastest (the down product at 128 rows: 52.3 us by
 * cublasGemmEx, 45.2 by the fourth of cuBLASLt's list, dev/gpu/lt_algos.py). Which one is fastest depends on the GPU
 * and the library's version, so it is measured here, not tabled.
 *
 * <p>Tuning: the first product of a shape (n, k) whose row count falls in a bucket of {@link #ROWS_BUCKET} rows
 * times cublasGemmEx and up to {@link #CANDIDATES} of the heuristic's algorithms on that product's own input, each
 * over every weight of that shape that {@link #rotateOver} registered (a model's layers: each read cold from memory,
 * as a step reads them; the first weight once before, so that no candidate is timed loading its kernel). An algorithm
 * replaces cublasGemmEx only where it is at least {@link #MARGIN} faster, so that timing noise does not move a choice
 * (different algorithms may sum in another order: a product's last bits depend on the choice, as they depend on the
 * row count already). The other row counts of the bucket take the same algorithm where cuBLASLt accepts it for their
 * shape (cublasLtMatmulAlgoCheck), else cublasGemmEx. Tuning synchronises the stream and is not possible while a
 * graph is captured: there the product takes cublasGemmEx and the shape is tuned at its next eager product (GraphCache
 * runs a shape's first step eagerly, so a step's products are tuned before it is captured).
 *
 * <p>Owned by one {@link Cublas} (its handle's stream and workspace), closed with it; not thread-safe.
 */
final class LtProducts implements AutoCloseable {
    private static final org.slf4j.Logger LOG = org.slf4j.LoggerFactory.getLogger(LtProducts.class);
    /** Fewer rows than this run on the own GEMVs ({@link CudaOps#tensorCores}). */
    static final int MIN_ROWS = 33;
    /** More rows than this (prefill chunks) keep cublasGemmEx: compute-bound, where the heuristic is good. */
    static final int MAX_ROWS = 256;
    /** A tuned choice holds for the row counts of its bucket: (rows - 1) / ROWS_BUCKET. */
    static final int ROWS_BUCKET = 32;
    /** How many of the heuristic's algorithms are timed. */
    static final int CANDIDATES = 8;
    /** How much faster than cublasGemmEx an algorithm must be to replace it. */
    static final double MARGIN = 0.04;

    // cublasLt.h / library_types.h
    private static final int R_32F = 0, R_16BF = 14, COMPUTE_32F = 68, OP_N = 0, OP_T = 1;
    private static final int DESC_TRANSA = 3, DESC_TRANSB = 4, PREF_MAX_WORKSPACE_BYTES = 1;
    /** cublasLtMatmulAlgo_t: 8 words; cublasLtMatmulHeuristicResult_t: the algorithm, then workspaceSize (size_t),
     * state (int) and wavesCount (float) in one word, then 4 reserved ints: 12 words. */
    private static final int ALGO_WORDS = 8, RESULT_WORDS = 12;

    /** cuBLASLt's entry points (JNA direct mapping, registered once a process on the library Cublas loaded). */
    private static final class Api {
        static native int cublasLtCreate(long[] handle);

        static native int cublasLtDestroy(long handle);

        static native int cublasLtMatmulDescCreate(long[] desc, int computeType, int scaleType);

        static native int cublasLtMatmulDescDestroy(long desc);

        static native int cublasLtMatmulDescSetAttribute(long desc, int attribute, int[] value, long bytes);

        static native int cublasLtMatrixLayoutCreate(long[] layout, int type, long rows, long cols, long ld);

        static native int cublasLtMatrixLayoutDestroy(long layout);

        static native int cublasLtMatmulPreferenceCreate(long[] preference);

        static native int cublasLtMatmulPreferenceSetAttribute(long preference, int attribute, long[] value,
                                                               long bytes);

        static native int cublasLtMatmulPreferenceDestroy(long preference);

        static native int cublasLtMatmulAlgoGetHeuristic(long handle, long desc, long a, long b, long c, long d,
                                                         long preference, int requested, long[] results,
                                                         int[] returned);

        static native int cublasLtMatmulAlgoCheck(long handle, long desc, long a, long b, long c, long d, long[] algo,
                                                  long[] result);

        static native int cublasLtMatmul(long handle, long desc, float[] alpha, long a, long aLayout, long b,
                                         long bLayout, float[] beta, long c, long cLayout, long d, long dLayout,
                                         long[] algo, long workspace, long workspaceBytes, long stream);
    }

    private static boolean registered;

    /** A shape's tuning key: its row bucket and its weight's [n][k]. */
    private record Tuned(int bucket, int n, int k) {
        /** The key of products of {@code m} rows. */
        static Tuned of(int m, int n, int k) {
            return new Tuned((m - 1) / ROWS_BUCKET, n, k);
        }

        int rowsFrom() {
            return bucket * ROWS_BUCKET + 1;
        }

        int rowsTo() {
            return Math.min(MAX_ROWS, (bucket + 1) * ROWS_BUCKET);
        }
    }

    /** A product's exact shape. */
    private record Shape(int m, int n, int k) {
    }

    /**
     * A shape's layouts in cuBLASLt's column-major terms (c^T = w x^T: w a k x n matrix taken transposed, x^T k x m,
     * c^T n x m) and the algorithm it runs with (null: cublasGemmEx).
     */
    private record Plan(long a, long b, long c, long[] algo) {
    }

    /** The plan of a shape that cublasGemmEx runs. */
    private static final Plan GEMM_EX = new Plan(0, 0, 0, null);

    /** What tuning measured for a shape: microseconds a product, cublasGemmEx's and the chosen one's. */
    record Tuning(int rowsFrom, int rowsTo, int n, int k, int candidates, int chosen, double gemmExUs,
                  double chosenUs) {
        /** One log line: "products 4096 x 14336, rows 33-64: algorithm 3 of 8, 43.8 us against 46.7 ...". */
        String describe() {
            String what = chosen < 0 ? "cublasGemmEx kept" : "cuBLASLt algorithm " + chosen + " of " + candidates;
            return String.format(Locale.ROOT, "products %d x %d, rows %d-%d: %s, %.1f us a product against"
                    + " cublasGemmEx's %.1f", n, k, rowsFrom, rowsTo, what, chosenUs, gemmExUs);
        }
    }

    /** Runs one product of the shape being tuned into {@code c} with {@code w}: cublasGemmEx or an algorithm. */
    interface Product {
        void run(CUdeviceptr c, CUdeviceptr w);
    }

    private final CudaRuntime gpu;
    private final long handle, desc, preference;
    private final CUdeviceptr workspace;
    private final long workspaceBytes;
    private final float[] one = {1f}, zero = {0f};
    private final Map<Tuned, long[]> choices = new HashMap<>();
    private final Map<Shape, Plan> plans = new HashMap<>();
    private final Map<Long, List<CUdeviceptr>> weights = new HashMap<>();
    private final List<Tuning> tunings = new ArrayList<>();
    private boolean closed;

    private LtProducts(CudaRuntime gpu, long handle, long desc, long preference, CUdeviceptr workspace,
                       long workspaceBytes) {
        this.gpu = gpu;
        this.handle = handle;
        this.desc = desc;
        this.preference = preference;
        this.workspace = workspace;
        this.workspaceBytes = workspaceBytes;
    }

    /**
     * cuBLASLt from {@code library} (libcublasLt, loaded by Cublas), sharing its handle's {@code workspace}. A library
     * that is found but fails to start is an error.
     */
    static LtProducts open(CudaRuntime gpu, NativeLibrary library, CUdeviceptr workspace, long workspaceBytes) {
        synchronized (LtProducts.class) {
            if (!registered) {
                Native.register(Api.class, library);
                registered = true;
            }
        }
        long[] h = new long[1], d = new long[1], p = new long[1];
        check(Api.cublasLtCreate(h), "cublasLtCreate");
        try {
            check(Api.cublasLtMatmulDescCreate(d, COMPUTE_32F, R_32F), "cublasLtMatmulDescCreate");
            check(Api.cublasLtMatmulDescSetAttribute(d[0], DESC_TRANSA, new int[]{OP_T}, 4), "transa");
            check(Api.cublasLtMatmulDescSetAttribute(d[0], DESC_TRANSB, new int[]{OP_N}, 4), "transb");
            check(Api.cublasLtMatmulPreferenceCreate(p), "cublasLtMatmulPreferenceCreate");
            check(Api.cublasLtMatmulPreferenceSetAttribute(p[0], PREF_MAX_WORKSPACE_BYTES,
                    new long[]{workspaceBytes}, 8), "max workspace");
        } catch (RuntimeException e) {
            if (p[0] != 0) Api.cublasLtMatmulPreferenceDestroy(p[0]);
            if (d[0] != 0) Api.cublasLtMatmulDescDestroy(d[0]);
            Api.cublasLtDestroy(h[0]);
            throw e;
        }
        return new LtProducts(gpu, h[0], d[0], p[0], workspace, workspaceBytes);
    }

    /** Whether products of {@code m} rows are tuned here. */
    static boolean covers(int m) {
        return m >= MIN_ROWS && m <= MAX_ROWS;
    }

    /**
     * The weights [n][k] that a tuning of products of that shape times its candidates over (a model's layers; the
     * product's own weight where none are registered).
     */
    void rotateOver(int n, int k, List<CUdeviceptr> shapeWeights) {
        weights.computeIfAbsent(key(n, k), x -> new ArrayList<>()).addAll(shapeWeights);
    }

    /** What the tunings so far measured and chose, in their order. */
    List<Tuning> tunings() {
        return List.copyOf(tunings);
    }

    /**
     * c = (accumulate ? c : 0) + x w^T ({@link Cublas#gemm}'s product, {@link #covers} m) with this shape's tuned
     * algorithm, tuning the shape's bucket first where it has not been; false where the choice is cublasGemmEx's
     * ({@code gemmEx} runs the product then, and times it while tuning).
     */
    boolean gemm(CUdeviceptr c, CUdeviceptr x, CUdeviceptr w, boolean accumulate, int m, int n, int k,
                 Product gemmEx) {
        if (closed) throw new IllegalStateException("cuBLASLt handle closed");
        Shape shape = new Shape(m, n, k);
        Plan plan = plans.get(shape);
        if (plan == null) {
            Tuned t = Tuned.of(m, n, k);
            long[] algo = choices.get(t);
            if (algo == null && !choices.containsKey(t)) {
                if (capturing()) return false;   // tuned at the shape's next eager product
                Plan layouts = layouts(shape, null);
                try {
                    algo = tune(t, layouts, c, x, w, accumulate, m, gemmEx);
                } finally {
                    destroy(layouts);
                }
                choices.put(t, algo);
            }
            plan = algo != null && accepts(shape, algo) ? layouts(shape, algo) : GEMM_EX;
            plans.put(shape, plan);
        }
        if (plan.algo() == null) return false;
        try {
            run(plan, plan.algo(), c, x, w, accumulate);
            return true;
        } catch (DsflowException e) {   // refused before anything is queued: cublasGemmEx computes it instead
            LOG.warn("cuBLASLt refused its algorithm for products {} x {} of {} rows ({}); cublasGemmEx runs them",
                    n, k, m, e.getMessage());
            destroy(plan);
            plans.put(shape, GEMM_EX);
            return false;
        }
    }

    /** Tests: {@code algo} as the tuned choice of the bucket of {@code m} rows for products [n][k]. */
    void choose(int m, int n, int k, long[] algo) {
        choices.put(Tuned.of(m, n, k), algo);
    }

    /**
     * The heuristic's algorithms for a shape, best first (at most {@link #CANDIDATES}): what a tuning times, and
     * what the tests run one by one.
     */
    List<long[]> candidates(int m, int n, int k) {
        Plan p = layouts(new Shape(m, n, k), null);
        try {
            return candidates(p);
        } finally {
            destroy(p);
        }
    }

    /** c = (accumulate ? c : 0) + x w^T with one given algorithm (of {@link #candidates}), on the current stream. */
    void gemmWith(long[] algo, CUdeviceptr c, CUdeviceptr x, CUdeviceptr w, boolean accumulate, int m, int n, int k) {
        Plan p = layouts(new Shape(m, n, k), algo);
        try {
            run(p, algo, c, x, w, accumulate);
        } finally {
            destroy(p);
        }
    }

    private void run(Plan p, long[] algo, CUdeviceptr c, CUdeviceptr x, CUdeviceptr w, boolean accumulate) {
        long cp = DeviceAddress.of(c);
        check(Api.cublasLtMatmul(handle, desc, one, DeviceAddress.of(w), p.a(), DeviceAddress.of(x), p.b(),
                accumulate ? one : zero, cp, p.c(), cp, p.c(), algo, DeviceAddress.of(workspace), workspaceBytes,
                DeviceAddress.handle(gpu.currentStream())), "cublasLtMatmul");
    }

    /**
     * Times cublasGemmEx and the candidates over the shape's weights (into c where the product overwrites it, else
     * into scratch: an accumulating product's c must stay as it is) and returns the chosen algorithm, or null.
     */
    private long[] tune(Tuned t, Plan layouts, CUdeviceptr c, CUdeviceptr x, CUdeviceptr w, boolean accumulate,
                        int m, Product gemmEx) {
        List<long[]> algos = candidates(layouts);
        List<CUdeviceptr> over = weights.getOrDefault(key(t.n(), t.k()), List.of(w));
        long scratchBytes = accumulate ? (long) m * t.n() * 4 : 0;
        CUdeviceptr out = c;
        if (accumulate) {
            try {
                out = gpu.alloc(scratchBytes);
            } catch (DsflowException e) {   // a full device: the bucket keeps cuBLAS's choice rather than fail a step
                LOG.info("cuBLASLt: products {} x {} of {} rows not tuned ({}); cublasGemmEx runs them", t.n(), t.k(),
                        m, e.getMessage());
                return null;
            }
        }
        try {
            double base = timeOver(over, out, gemmEx);   // again after the candidates: clocks may ramp meanwhile
            double best = Double.MAX_VALUE;
            int chosen = -1;
            for (int i = 0; i < algos.size(); i++) {
                long[] algo = algos.get(i);
                double us;
                try {
                    us = timeOver(over, out, (ci, wi) -> run(layouts, algo, ci, x, wi, false));
                } catch (DsflowException e) {   // listed by the heuristic, refused at the call: not a candidate
                    LOG.debug("cuBLASLt: algorithm {} of {} for {} x {}: {}", i, algos.size(), t.n(), t.k(),
                            e.getMessage());
                    continue;
                }
                if (us < best) {
                    best = us;
                    chosen = i;
                }
            }
            base = Math.min(base, timeOver(over, out, gemmEx));
            boolean take = chosen >= 0 && best <= base * (1 - MARGIN);
            Tuning r = new Tuning(t.rowsFrom(), t.rowsTo(), t.n(), t.k(), algos.size(), take ? chosen : -1, base,
                    take ? best : base);
            tunings.add(r);
            if (take) LOG.info("cuBLASLt: {}", r.describe());
            else LOG.debug("cuBLASLt: {}", r.describe());
            return take ? algos.get(chosen) : null;
        } finally {
            if (accumulate) gpu.free(out, scratchBytes);
        }
    }

    /**
     * Microseconds a product: one with the first weight (loading the kernel; an algorithm cuBLASLt refuses fails
     * here, before any event), then one with each weight, timed.
     */
    private double timeOver(List<CUdeviceptr> over, CUdeviceptr out, Product product) {
        product.run(out, over.get(0));
        CUevent from = gpu.recordEvent(), to = null;
        try {
            for (CUdeviceptr wi : over) product.run(out, wi);
            to = gpu.recordEvent();
            return gpu.elapsedMs(from, to) * 1e3 / over.size();
        } finally {
            gpu.destroy(from);
            if (to != null) gpu.destroy(to);
        }
    }

    private List<long[]> candidates(Plan p) {
        long[] results = new long[CANDIDATES * RESULT_WORDS];
        int[] returned = new int[1];
        int status = Api.cublasLtMatmulAlgoGetHeuristic(handle, desc, p.a(), p.b(), p.c(), p.c(), preference,
                CANDIDATES, results, returned);
        List<long[]> out = new ArrayList<>();
        if (status != 0) return out;   // no algorithm for the shape: cublasGemmEx runs it
        for (int i = 0; i < returned[0]; i++) {
            int at = i * RESULT_WORDS;
            if ((int) results[at + ALGO_WORDS + 1] != 0) continue;   // state: not CUBLAS_STATUS_SUCCESS
            out.add(Arrays.copyOfRange(results, at, at + ALGO_WORDS));
        }
        return out;
    }

    /** Whether cuBLASLt runs {@code algo} for this exact shape within the workspace. */
    private boolean accepts(Shape s, long[] algo) {
        Plan p = layouts(s, null);
        try {
            long[] result = new long[RESULT_WORDS];
            return Api.cublasLtMatmulAlgoCheck(handle, desc, p.a(), p.b(), p.c(), p.c(), algo, result) == 0
                    && result[ALGO_WORDS] <= workspaceBytes;
        } finally {
            destroy(p);
        }
    }

    private Plan layouts(Shape s, long[] algo) {
        long a = layout(R_16BF, s.k(), s.n(), s.k());
        long b = layout(R_16BF, s.k(), s.m(), s.k());
        long c = layout(R_32F, s.n(), s.m(), s.n());
        return new Plan(a, b, c, algo);
    }

    private static long layout(int type, long rows, long cols, long ld) {
        long[] l = new long[1];
        check(Api.cublasLtMatrixLayoutCreate(l, type, rows, cols, ld), "cublasLtMatrixLayoutCreate");
        return l[0];
    }

    private static void destroy(Plan p) {
        Api.cublasLtMatrixLayoutDestroy(p.a());
        Api.cublasLtMatrixLayoutDestroy(p.b());
        Api.cublasLtMatrixLayoutDestroy(p.c());
    }

    private boolean capturing() {
        int[] status = new int[1];
        JCudaDriver.cuStreamIsCapturing(gpu.currentStream(), status);
        return status[0] != CUstreamCaptureStatus.CU_STREAM_CAPTURE_STATUS_NONE;
    }

    private static long key(int n, int k) {
        return (long) n << 32 | k;
    }

    @Override
    public void close() {
        if (closed) return;
        closed = true;
        for (Plan p : plans.values()) if (p != GEMM_EX) destroy(p);
        plans.clear();
        Api.cublasLtMatmulPreferenceDestroy(preference);
        Api.cublasLtMatmulDescDestroy(desc);
        check(Api.cublasLtDestroy(handle), "cublasLtDestroy");
    }

    private static void check(int status, String call) {
        if (status != 0) throw new DsflowException(call + " failed: cuBLASLt status " + status);
    }
}
