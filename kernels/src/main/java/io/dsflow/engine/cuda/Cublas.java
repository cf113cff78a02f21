package io.dsflow.engine.cuda;

import com.sun.jna.Native;
import com.sun.jna.NativeLibrary;
import io.dsflow.engine.DsflowException;
import jcuda.DeviceAddress;
import jcuda.driver.CUdeviceptr;
import jcuda.driver.CUstream;

import java.io.IOException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;

/**
 * cuBLAS for the products of many rows (CudaOps.linear's tensor-core route: prefill chunks and decode batches past
 * {@link CudaOps#tensorCores}'s threshold), found at run time and called through JNA's direct mapping: nothing is
 * compiled at package time, a host without the library (or with {@code DSFLOW_CUBLAS=off}) keeps the own kernel
 * (gemm_bf16), and {@link CudaBackend#description} says which one runs.
 *
 * <p>Where: {@code DSFLOW_CUBLAS} (environment) or {@code -Ddsflow.cublas} naming the library file or its folder,
 * else LD_LIBRARY_PATH, the CUDA toolkit's lib64, the system's library folders, and pip's nvidia-cublas wheels
 * (nvidia/cublas/lib, nvidia/cu13/lib) under the Python site-packages folders; libcublas.so.13 first where the driver
 * runs CUDA 13, then .so.12.
 * libcublasLt from the same folder is loaded first (libcublas needs it and a wheel's folder is on no search path).
 *
 * <p>One handle per {@link CudaRuntime}, with a 32 MiB workspace of its own (so cuBLAS allocates nothing while a step
 * is captured as a graph), bound to the runtime's current stream before each product. The products of decode batches
 * ({@link LtProducts#covers}) go through cuBLASLt with the algorithm tuned for their shape on this GPU ({@link
 * LtProducts}; {@code DSFLOW_CUBLAS_TUNE=off} or {@code -Ddsflow.cublasTune=off} keeps cublasGemmEx for all).
 * Closed by the runtime's close. Not thread-safe: the runtime's one forward pass at a time uses it.
 */
final class Cublas implements AutoCloseable {
    private static final org.slf4j.Logger LOG = org.slf4j.LoggerFactory.getLogger(Cublas.class);
    /** cuBLAS's recommended workspace on Hopper. */
    static final long WORKSPACE_BYTES = 32L << 20;

    // cublas_api.h / library_types.h
    private static final int OP_N = 0, OP_T = 1;
    private static final int R_32F = 0, R_16BF = 14;
    private static final int COMPUTE_32F = 68;
    private static final int GEMM_DEFAULT = -1;

    /** The library's entry points (JNA direct mapping: registered once, on the library {@link #find} found). */
    private static final class Api {
        static native int cublasCreate_v2(long[] handle);

        static native int cublasDestroy_v2(long handle);

        static native int cublasGetVersion_v2(long handle, int[] version);

        static native int cublasSetStream_v2(long handle, long stream);

        static native int cublasSetWorkspace_v2(long handle, long workspace, long bytes);

        static native int cublasGemmEx(long handle, int transa, int transb, int m, int n, int k, float[] alpha, long a,
                                       int aType, int lda, long b, int bType, int ldb, float[] beta, long c, int cType,
                                       int ldc, int computeType, int algo);
    }

    /** The library as found (once a process): its file and cuBLASLt's (null where not beside it), or why none. */
    private record Found(Path file, NativeLibrary lt, String absent) {
    }

    private static Found found;

    private final CudaRuntime gpu;
    private final long handle;
    private final CUdeviceptr workspace;
    private final LtProducts lt;
    private final String description;
    private final float[] one = {1f}, zero = {0f};
    private long boundStream;
    private boolean closed;

    private Cublas(CudaRuntime gpu, long handle, CUdeviceptr workspace, LtProducts lt, String description) {
        this.gpu = gpu;
        this.handle = handle;
        this.workspace = workspace;
        this.lt = lt;
        this.description = description;
    }

    /**
     * A cuBLAS handle for {@code gpu}, or null where the library is not found or turned off (the reason logged once a
     * process). A library that is found but fails to start is an error, not a fallback.
     */
    static Cublas open(CudaRuntime gpu) {
        Found f = find();
        if (f.file() == null) return null;
        long[] h = new long[1];
        check(Api.cublasCreate_v2(h), "cublasCreate");
        CUdeviceptr ws = null;
        try {
            int[] version = new int[1];
            check(Api.cublasGetVersion_v2(h[0], version), "cublasGetVersion");
            ws = gpu.alloc(WORKSPACE_BYTES);
            String tune = System.getProperty("dsflow.cublasTune", System.getenv("DSFLOW_CUBLAS_TUNE"));
            boolean off = tune != null && tune.equalsIgnoreCase("off");
            LtProducts lt = off || f.lt() == null ? null : openLt(gpu, f.lt(), ws);
            int v = version[0];
            String d = String.format(Locale.ROOT, "cuBLAS %d.%d.%d (%s), products of %d-%d rows %s",
                    v / 10000, v / 100 % 100, v % 100, f.file(), LtProducts.MIN_ROWS, LtProducts.MAX_ROWS,
                    lt != null ? "on cuBLASLt's algorithms tuned here" : off ? "on cublasGemmEx (DSFLOW_CUBLAS_TUNE"
                            + "=off)" : "on cublasGemmEx (no libcublasLt beside it)");
            return new Cublas(gpu, h[0], ws, lt, d);
        } catch (RuntimeException e) {
            if (ws != null) gpu.free(ws, WORKSPACE_BYTES);
            Api.cublasDestroy_v2(h[0]);
            throw e;
        }
    }

    /** cuBLASLt beside cuBLAS: found but unusable is an error, as cuBLAS's is, and says how to run without it. */
    private static LtProducts openLt(CudaRuntime gpu, NativeLibrary library, CUdeviceptr workspace) {
        try {
            return LtProducts.open(gpu, library, workspace, WORKSPACE_BYTES);
        } catch (RuntimeException | LinkageError e) {
            throw new DsflowException("cuBLASLt at " + library.getFile() + " cannot be used: " + e.getMessage()
                    + " (DSFLOW_CUBLAS_TUNE=off runs the products on cublasGemmEx without it)");
        }
    }

    /** Why there is no cuBLAS here (null when there is one). */
    static String absentReason() {
        return find().absent();
    }

    /** "cuBLAS 13.0.2 (/path/libcublas.so.13)". */
    String description() {
        return description;
    }

    /**
     * c[m][n] = (accumulate ? c : 0) + x[m][k] w[n][k]^T: x and w bf16 (row-major, w in Hugging Face layout), c f32
     * row-major, f32 accumulation, on the runtime's current stream. In cuBLAS's column-major terms that is c^T = w x^T:
     * w is a k x n column-major matrix taken transposed, x^T a k x m one.
     */
    void gemm(CUdeviceptr c, CUdeviceptr xBf16, CUdeviceptr w, boolean accumulate, int m, int n, int k) {
        if (closed) throw new IllegalStateException("cuBLAS handle closed");
        bind(gpu.currentStream());
        if (lt != null && LtProducts.covers(m) && lt.gemm(c, xBf16, w, accumulate, m, n, k,
                (out, wi) -> gemmEx(out, xBf16, wi, false, m, n, k))) {
            return;
        }
        gemmEx(c, xBf16, w, accumulate, m, n, k);
    }

    /**
     * Registers the weights [n][k] of one product shape (a model's layers), over which a tuning of that shape's
     * products times its candidates (see {@link LtProducts}).
     */
    void rotateOver(int n, int k, List<CUdeviceptr> weights) {
        if (lt != null) lt.rotateOver(n, k, weights);
    }

    /** cuBLASLt's tuning (null where the products run on cublasGemmEx only): tests and bench read its choices. */
    LtProducts tuned() {
        return lt;
    }

    /** {@link #gemm}'s product by cublasGemmEx (cuBLAS's own choice of algorithm). */
    private void gemmEx(CUdeviceptr c, CUdeviceptr xBf16, CUdeviceptr w, boolean accumulate, int m, int n, int k) {
        check(Api.cublasGemmEx(handle, OP_T, OP_N, n, m, k, one, DeviceAddress.of(w), R_16BF, k,
                DeviceAddress.of(xBf16), R_16BF, k, accumulate ? one : zero, DeviceAddress.of(c), R_32F, n,
                COMPUTE_32F, GEMM_DEFAULT), "cublasGemmEx");
    }

    /** Binds the handle to a stream; setting the stream resets cuBLAS's workspace, so ours is set again after it. */
    private void bind(CUstream stream) {
        long s = DeviceAddress.handle(stream);
        if (s == boundStream) return;
        check(Api.cublasSetStream_v2(handle, s), "cublasSetStream");
        check(Api.cublasSetWorkspace_v2(handle, DeviceAddress.of(workspace), WORKSPACE_BYTES), "cublasSetWorkspace");
        boundStream = s;
    }

    @Override
    public void close() {
        if (closed) return;
        closed = true;
        try {
            if (lt != null) lt.close();
        } finally {
            try {
                check(Api.cublasDestroy_v2(handle), "cublasDestroy");
            } finally {
                gpu.free(workspace, WORKSPACE_BYTES);
            }
        }
    }

    private static void check(int status, String call) {
        if (status != 0) throw new DsflowException(call + " failed: cuBLAS status " + status + statusName(status));
    }

    private static String statusName(int status) {
        return switch (status) {
            case 1 -> " (not initialized)";
            case 3 -> " (allocation failed)";
            case 7 -> " (invalid value)";
            case 8 -> " (architecture mismatch)";
            case 13 -> " (execution failed)";
            case 14 -> " (internal error)";
            case 15 -> " (not supported)";
            default -> "";
        };
    }

    private static synchronized Found find() {
        if (found != null) return found;
        String asked = System.getProperty("dsflow.cublas", System.getenv("DSFLOW_CUBLAS"));
        int[] driver = new int[1];
        jcuda.driver.JCudaDriver.cuDriverGetVersion(driver);
        Path file = locate(asked, searchFolders(), driver[0]);
        found = file != null ? load(file)
                : new Found(null, null, asked != null && asked.equalsIgnoreCase("off")
                        ? "turned off (DSFLOW_CUBLAS=off)"
                        : "no libcublas.so.13 or .so.12 found (LD_LIBRARY_PATH, the CUDA toolkit's, pip's"
                        + " nvidia-cublas; DSFLOW_CUBLAS names one)");
        if (found.file() == null) LOG.info("cuBLAS: {}; products of many rows on the own kernel", found.absent());
        return found;
    }

    /**
     * The library file: {@code asked} (DSFLOW_CUBLAS: a file, a folder to look in, or "off" for none; null: not
     * set) or else the first of {@code folders} holding libcublas.so.13 (where the driver runs CUDA 13: {@code
     * driverVersion} as cuDriverGetVersion gives it, 13000 and up), else .so.12; null where there is none.
     */
    static Path locate(String asked, List<Path> folders, int driverVersion) {
        if (asked != null && asked.equalsIgnoreCase("off")) return null;
        List<Path> where = folders;
        if (asked != null && !asked.isBlank()) {
            Path p = Path.of(asked);
            if (Files.isRegularFile(p)) return p;
            if (!Files.isDirectory(p)) throw new DsflowException("DSFLOW_CUBLAS: no such file or folder: " + asked);
            where = List.of(p);
        }
        List<String> names = driverVersion >= 13000 ? List.of("libcublas.so.13", "libcublas.so.12")
                : List.of("libcublas.so.12");
        for (String name : names) {
            for (Path d : where) if (Files.isRegularFile(d.resolve(name))) return d.resolve(name);
        }
        return null;
    }

    /** Loads libcublasLt from the same folder first (a wheel's folder is on no search path), then registers Api. */
    private static Found load(Path file) {
        String name = file.getFileName().toString();
        Path lt = file.resolveSibling(name.replace("libcublas.", "libcublasLt."));
        try {
            NativeLibrary ltLibrary = Files.isRegularFile(lt) ? NativeLibrary.getInstance(lt.toAbsolutePath()
                    .toString()) : null;
            Native.register(Api.class, NativeLibrary.getInstance(file.toAbsolutePath().toString()));
            return new Found(file.toAbsolutePath(), ltLibrary, null);
        } catch (UnsatisfiedLinkError e) {
            throw new DsflowException("cuBLAS at " + file + " cannot be loaded: " + e.getMessage()
                    + " (DSFLOW_CUBLAS=off runs without it)");
        }
    }

    /** Where cuBLAS may be, in order: LD_LIBRARY_PATH, the CUDA toolkit, the system, pip's wheels. */
    static List<Path> searchFolders() {
        return searchFolders(System.getenv("LD_LIBRARY_PATH"), System.getProperty("user.home"));
    }

    static List<Path> searchFolders(String ldLibraryPath, String home) {
        Set<Path> dirs = new LinkedHashSet<>();
        if (ldLibraryPath != null) for (String d : ldLibraryPath.split(":")) if (!d.isBlank()) dirs.add(Path.of(d));
        for (String cuda : new String[]{System.getenv("CUDA_HOME"), System.getenv("CUDA_PATH"), "/usr/local/cuda"}) {
            if (cuda == null) continue;
            dirs.add(Path.of(cuda, "lib64"));
            dirs.add(Path.of(cuda, "targets", "x86_64-linux", "lib"));
        }
        dirs.addAll(matching(Path.of("/usr/local"), "cuda-*", "lib64"));
        dirs.add(Path.of("/usr/lib/x86_64-linux-gnu"));
        dirs.add(Path.of("/usr/lib64"));
        List<Path> sitePackages = new ArrayList<>();
        for (String env : new String[]{"VIRTUAL_ENV", "CONDA_PREFIX"}) {
            String v = System.getenv(env);
            if (v != null) sitePackages.addAll(matching(Path.of(v, "lib"), "python3*", "site-packages"));
        }
        for (Path lib : List.of(Path.of("/usr/local/lib"), Path.of("/usr/lib"), Path.of("/opt/conda/lib"),
                Path.of(home, ".local", "lib"))) {
            sitePackages.addAll(matching(lib, "python3*", "site-packages"));
            sitePackages.addAll(matching(lib, "python3*", "dist-packages"));
        }
        for (Path sp : sitePackages) {
            dirs.add(sp.resolve("nvidia/cu13/lib"));
            dirs.add(sp.resolve("nvidia/cublas/lib"));
        }
        List<Path> existing = new ArrayList<>();
        for (Path d : dirs) if (Files.isDirectory(d)) existing.add(d);
        return existing;
    }

    /** parent/GLOB/child for every match of GLOB, newest name last. */
    private static List<Path> matching(Path parent, String glob, String child) {
        List<Path> out = new ArrayList<>();
        if (!Files.isDirectory(parent)) return out;
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(parent, glob)) {
            for (Path p : ds) out.add(p.resolve(child));
        } catch (IOException e) {
            return out;
        }
        out.sort(null);
        return out;
    }
}
