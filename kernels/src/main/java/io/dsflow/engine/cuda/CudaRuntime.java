package io.dsflow.engine.cuda;

import io.dsflow.engine.DsflowException;
import jcuda.Pointer;
import jcuda.driver.CUcontext;
import jcuda.driver.CUdevice;
import jcuda.driver.CUdeviceptr;
import jcuda.driver.CUevent;
import jcuda.driver.CUevent_flags;
import jcuda.driver.CUfunction;
import jcuda.driver.CUgraph;
import jcuda.driver.CUgraphExec;
import jcuda.driver.CUmodule;
import jcuda.driver.CUstream;
import jcuda.driver.CUstreamCaptureMode;
import jcuda.driver.JCudaDriver;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.Map;

import static jcuda.driver.JCudaDriver.cuCtxSetCurrent;
import static jcuda.driver.JCudaDriver.cuCtxSynchronize;
import static jcuda.driver.JCudaDriver.cuDeviceGet;
import static jcuda.driver.JCudaDriver.cuDeviceGetCount;
import static jcuda.driver.JCudaDriver.cuDeviceGetName;
import static jcuda.driver.JCudaDriver.cuDevicePrimaryCtxRetain;
import static jcuda.driver.JCudaDriver.cuDeviceTotalMem;
import static jcuda.driver.JCudaDriver.cuInit;
import static jcuda.driver.JCudaDriver.cuLaunchKernel;
import static jcuda.driver.JCudaDriver.cuMemAlloc;
import static jcuda.driver.JCudaDriver.cuMemFree;
import static jcuda.driver.JCudaDriver.cuModuleGetFunction;
import static jcuda.driver.JCudaDriver.cuModuleLoadData;

/**
 * One GPU through the JCuda driver API (only libcuda.so.1 is needed): the device's primary context, a main stream and
 * a side stream, the kernel modules built by nvcc at package time (cuda/*.fatbin on the classpath), a cuBLAS handle
 * where the host has the library ({@link #blas}: the products of many rows), launches, and
 * <ul>
 *   <li>a caching memory pool: freed blocks are kept by size class and handed out again (KV caches come and go with
 *       conversations; cuMemFree would synchronise the device each time); on an out-of-memory the cached blocks are
 *       returned to the driver and the allocation retried; {@link #peakAllocated} is the peak held from the driver;</li>
 *   <li>pinned host staging for the per-step copies: uploads are packed into one pinned buffer and copied
 *       asynchronously on the stream; downloads land in pinned memory and the host waits on an event recorded after
 *       them (not on the whole device).</li>
 * </ul>
 * Calls are made current on the calling thread first, so any one thread at a time may drive it; blocks may be freed
 * from any thread (caches are freed by a cleaner too).
 *
 * <p>{@link #close} gives the driver every block the runtime took, in use or cached, and unloads its modules: a Flink
 * task that fails over opens a new engine in the same process, and the old one's weights and caches must not stay on
 * the device. Frees after that (a cache outliving its engine) are ignored.
 */
public final class CudaRuntime implements AutoCloseable {
    private static volatile String unavailable;
    private static volatile Boolean present;
    private static volatile int devices;

    private final int ordinal;
    private final CUcontext context = new CUcontext();
    private final Map<String, Integer> sharedAllowed = new HashMap<>(), occupancy = new HashMap<>();
    private final Map<String, Integer> staticShared = new HashMap<>();
    private final Map<String, CUfunction> functions = new HashMap<>();
    private final java.util.List<CUmodule> modules = new java.util.ArrayList<>();
    private volatile boolean closed;
    /** Every launch goes to this stream (a blocking one: it stays ordered with the copies on the legacy stream). */
    private final CUstream stream = new CUstream();
    /** The side stream ({@link #onSide}): work that overlaps the main stream's, joined back by events. */
    private final CUstream side = new CUstream();
    /** Where launches, copies and events go now: the main stream, or the side stream within {@link #onSide}. */
    private CUstream current = stream;
    private final CUevent forked = new CUevent();
    private final String name;
    private final long totalMemory;
    /** Device memory, and pinned host memory mapped into the device (its blocks' host pointers by device address). */
    private final BlockPool pool = new BlockPool(size -> {
        CUdeviceptr p = new CUdeviceptr();
        cuMemAlloc(p, size);
        return p;
    }, p -> cuMemFree(p));
    private final Map<Long, Pointer> hostBlocks = new java.util.concurrent.ConcurrentHashMap<>();
    private final BlockPool hostPool = new BlockPool(size -> {
        Pointer host = new Pointer();
        JCudaDriver.cuMemHostAlloc(host, size, JCudaDriver.CU_MEMHOSTALLOC_DEVICEMAP | JCudaDriver.CU_MEMHOSTALLOC_PORTABLE);
        CUdeviceptr p = new CUdeviceptr();
        JCudaDriver.cuMemHostGetDevicePointer(p, host, 0);
        hostBlocks.put(jcuda.DeviceAddress.of(p), host);
        return p;
    }, p -> JCudaDriver.cuMemFreeHost(hostBlocks.remove(jcuda.DeviceAddress.of(p))));
    private final CUevent uploaded = new CUevent(), downloaded = new CUevent();
    private Pointer pinned = new Pointer();
    private java.nio.ByteBuffer staging;
    private boolean uploadInFlight;

    private final int computeMajor, multiprocessors;
    private final int sharedPerBlockOptIn, sharedPerMultiprocessor, sharedReservedPerBlock;
    private final Cublas blas;

    /** Streaming multiprocessors of the device (132 on an H100 SXM). */
    public int multiprocessors() {
        return multiprocessors;
    }

    /** The device's compute capability, major number (9 on Hopper: thread-block clusters). */
    public int computeMajor() {
        return computeMajor;
    }

    private CudaRuntime(int ordinal) {
        this.ordinal = ordinal;
        CUdevice device = new CUdevice();
        cuDeviceGet(device, ordinal);
        cuDevicePrimaryCtxRetain(context, device);
        cuCtxSetCurrent(context);
        byte[] n = new byte[256];
        cuDeviceGetName(n, n.length, device);
        String s = new String(n, StandardCharsets.US_ASCII);
        name = s.substring(0, Math.max(0, s.indexOf('\0')));
        long[] mem = new long[1];
        cuDeviceTotalMem(mem, device);
        totalMemory = mem[0];
        int[] major = new int[1];
        JCudaDriver.cuDeviceGetAttribute(major, jcuda.driver.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                device);
        computeMajor = major[0];
        JCudaDriver.cuDeviceGetAttribute(major, jcuda.driver.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
                device);
        multiprocessors = major[0];
        JCudaDriver.cuDeviceGetAttribute(major,
                jcuda.driver.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, device);
        sharedPerBlockOptIn = major[0];
        JCudaDriver.cuDeviceGetAttribute(major,
                jcuda.driver.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR, device);
        sharedPerMultiprocessor = major[0];
        JCudaDriver.cuDeviceGetAttribute(major,
                jcuda.driver.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_RESERVED_SHARED_MEMORY_PER_BLOCK, device);
        sharedReservedPerBlock = major[0];
        JCudaDriver.cuStreamCreate(stream, 0);
        JCudaDriver.cuStreamCreate(side, 0);
        JCudaDriver.cuEventCreate(forked, CUevent_flags.CU_EVENT_DISABLE_TIMING);
        JCudaDriver.cuEventCreate(uploaded, CUevent_flags.CU_EVENT_DISABLE_TIMING);
        JCudaDriver.cuEventCreate(downloaded, CUevent_flags.CU_EVENT_DISABLE_TIMING);
        loadModules();
        blas = Cublas.open(this);
    }

    /** cuBLAS for the products of many rows, or null where the library is absent (the own GEMM runs then). */
    Cublas blas() {
        return blas;
    }

    /** The stream launches go to now (the main one, or the side one within {@link #onSide}). */
    CUstream currentStream() {
        return current;
    }

    /**
     * Whether a CUDA device and the kernels can be used here; probed once (on a host without the driver JCuda's first
     * call throws UnsatisfiedLinkError, and later calls NoClassDefFoundError).
     */
    public static synchronized boolean available() {
        if (present == null) {
            try {
                if (CudaRuntime.class.getResource("/cuda/modules.txt") == null) {
                    throw new IllegalStateException("this build has no CUDA kernels (nvcc was missing at package time)");
                }
                JCudaDriver.setExceptionsEnabled(true);
                cuInit(0);
                int[] count = new int[1];
                cuDeviceGetCount(count);
                if (count[0] == 0) throw new IllegalStateException("no CUDA device");
                devices = count[0];
                present = true;
            } catch (UnsatisfiedLinkError | NoClassDefFoundError e) {
                unavailable = "no NVIDIA driver here (libcuda.so.1 cannot be loaded)";
                present = false;
            } catch (Throwable t) {
                String m = String.valueOf(t.getMessage() == null ? t.toString() : t.getMessage());
                unavailable = m.lines().findFirst().orElse(m);
                present = false;
            }
        }
        return present;
    }

    /** Why CUDA cannot be used (null when it can). */
    public static String unavailableReason() {
        available();
        return unavailable;
    }

    /** CUDA devices this process sees (0 where CUDA is unavailable; counted once, by {@link #available}). */
    public static int deviceCount() {
        return available() ? devices : 0;
    }

    public static CudaRuntime open(int ordinal) {
        if (!available()) throw new DsflowException("CUDA is not available: " + unavailable);
        return new CudaRuntime(ordinal);
    }

    /**
     * Loads each module of the build (cuda/modules.txt) and looks up the kernels it lists (cuda/MODULE.kernels, written
     * by build.sh from the module's code): a kernel's name is written in its .cu and its launcher only.
     */
    private void loadModules() {
        Map<String, String> moduleOf = new HashMap<>();
        for (String module : resource("/cuda/modules.txt").split("\\s+")) {
            if (module.isBlank()) continue;
            CUmodule m = new CUmodule();
            cuModuleLoadData(m, bytes("/cuda/" + module + ".fatbin"));
            modules.add(m);
            for (String kernel : resource("/cuda/" + module + ".kernels").split("\\s+")) {
                if (kernel.isBlank()) continue;
                String other = moduleOf.put(kernel, module);
                if (other != null) {
                    throw new DsflowException("CUDA kernel " + kernel + " in modules " + other + " and " + module);
                }
                // a kernel missing from the module (an older build of it put first on the classpath) is one has()
                // reports absent
                CUfunction f = new CUfunction();
                try {
                    cuModuleGetFunction(f, m, kernel);
                    functions.put(kernel, f);
                } catch (jcuda.CudaException e) {
                    if (!e.getMessage().contains("CUDA_ERROR_NOT_FOUND")) throw e;
                }
            }
        }
    }

    private static String resource(String path) {
        return new String(bytes(path), StandardCharsets.UTF_8);
    }

    private static byte[] bytes(String path) {
        try (InputStream in = CudaRuntime.class.getResourceAsStream(path)) {
            if (in == null) throw new DsflowException("missing CUDA resource " + path);
            return in.readAllBytes();
        } catch (IOException e) {
            throw new DsflowException("cannot read CUDA resource " + path + ": " + e.getMessage(), e);
        }
    }

    public void makeCurrent() {
        cuCtxSetCurrent(context);
    }

    public String name() {
        return name;
    }

    public int ordinal() {
        return ordinal;
    }

    public long totalMemory() {
        return totalMemory;
    }

    /** Device memory the driver has free now, plus the blocks this pool caches (they are ours to hand out). */
    public long freeMemory() {
        long[] free = new long[1], total = new long[1];
        JCudaDriver.cuMemGetInfo(free, total);
        long cached = 0;
        for (Map.Entry<Long, java.util.ArrayDeque<CUdeviceptr>> e : pool.kept.entrySet()) cached += e.getKey() * e.getValue().size();
        return free[0] + cached;
    }

    /** The most device memory held from the driver (in use plus cached free blocks) since the last reset. */
    public long peakAllocated() {
        return pool.peak;
    }

    /** Bytes in use: what the blocks handed out and not freed were asked for (exact, not rounded to size classes). */
    public long allocated() {
        return pool.inUse;
    }

    public void resetPeak() {
        pool.peak = pool.held;
        hostPool.peak = hostPool.held;
    }

    /** Pinned host memory in use now: what the blocks of {@link #allocHost} handed out and not freed were asked for. */
    public long hostAllocated() {
        return hostPool.inUse;
    }

    /** The most pinned host memory held for the device ({@link #allocHost}: in use and cached) since the last reset. */
    public long peakHostAllocated() {
        return hostPool.peak;
    }

    /**
     * Pinned host memory mapped into the device's address space (unified addressing: kernels read and write it at the
     * returned address, over the host link), from a pool by size class like device memory: pinning is slow (the driver
     * faults in and locks every page: on the H100 host a first 4096-token prefill of an 8B model took 0.44-0.56 s with
     * new pinned memory, 0.21 s from the pool, dense 0.20 s), and host-placed caches come and go with conversations.
     */
    public CUdeviceptr allocHost(long bytes) {
        return hostPool.take(bytes, () -> {
            synchronize();
            hostPool.release();
        }, "pinned host memory", name);
    }

    /** Returns a block of {@link #allocHost} to the pool ({@code bytes}: what was asked). */
    public void freeHost(CUdeviceptr p, long bytes) {
        if (closed) return;
        if (!hostBlocks.containsKey(jcuda.DeviceAddress.of(p))) {
            throw new IllegalArgumentException("not a pinned host block of this runtime");
        }
        hostPool.give(p, bytes);
    }

    /** Pool size classes: powers of two up to 2 MB, then multiples of 2 MB. */
    static long sizeClass(long bytes) {
        long b = Math.max(bytes, 512);
        if (b <= (2 << 20)) return Long.highestOneBit(b - 1) << 1;
        return (b + (2 << 20) - 1) & -(2L << 20);
    }

    public CUdeviceptr alloc(long bytes) {
        if (closed) throw new DsflowException("the CUDA runtime of " + name + " is closed");
        return pool.take(bytes, this::trim, "GPU memory", name);
    }

    /** Returns a block to the pool ({@code bytes}: what was asked of {@link #alloc}). */
    public void free(CUdeviceptr p, long bytes) {
        if (closed) return;
        pool.give(p, bytes);
    }

    /** Frees the cached device and pinned host blocks (after the device is done with them). */
    public void trim() {
        if (closed) return;
        synchronize();
        pool.release();
        hostPool.release();
    }

    /**
     * Blocks by size class ({@link #sizeClass}): a freed block is kept and handed out again, {@link #release} gives the
     * kept ones back to the driver (cuMemFree synchronises the device, and pinning host memory is slow). inUse: what the
     * blocks handed out and not given back were asked for; held: in use and kept, by size class; peak: the most held.
     * Synchronized: the cleaner frees caches on its own thread.
     */
    private static final class BlockPool {
        interface Driver {
            CUdeviceptr allocate(long size);
        }

        final Map<Long, java.util.ArrayDeque<CUdeviceptr>> kept = new HashMap<>();
        /** The blocks handed out and not given back, by address. */
        private final Map<Long, CUdeviceptr> out = new HashMap<>();
        private final Driver driver;
        private final java.util.function.Consumer<CUdeviceptr> free;
        long inUse, held, peak;

        BlockPool(Driver driver, java.util.function.Consumer<CUdeviceptr> free) {
            this.driver = driver;
            this.free = free;
        }

        /** A block of at least {@code bytes}; where the driver refuses one, makeRoom runs and the driver is asked again. */
        synchronized CUdeviceptr take(long bytes, Runnable makeRoom, String what, String device) {
            long size = sizeClass(bytes);
            java.util.ArrayDeque<CUdeviceptr> q = kept.get(size);
            CUdeviceptr p = q == null ? null : q.poll();
            if (p == null) {
                try {
                    p = driver.allocate(size);
                } catch (jcuda.CudaException e) {
                    makeRoom.run();   // give the kept blocks back and try once more
                    try {
                        p = driver.allocate(size);
                    } catch (jcuda.CudaException again) {
                        // held: the blocks the pool has from the driver, each rounded to its size class
                        throw new DsflowException(String.format("out of %s: %.1f MB more on %s (%.1f MB in use in"
                                + " %.1f MB of blocks)", what, bytes / 1e6, device, inUse / 1e6, held / 1e6), again);
                    }
                }
                held += size;
                peak = Math.max(peak, held);
            }
            inUse += bytes;
            out.put(jcuda.DeviceAddress.of(p), p);
            return p;
        }

        synchronized void give(CUdeviceptr p, long bytes) {
            if (out.remove(jcuda.DeviceAddress.of(p)) == null) {
                throw new IllegalArgumentException("not a block this pool handed out, or freed twice");
            }
            kept.computeIfAbsent(sizeClass(bytes), k -> new java.util.ArrayDeque<>()).add(p);
            inUse -= bytes;
        }

        /** Frees the kept blocks (the caller has waited for the device). */
        synchronized void release() {
            for (Map.Entry<Long, java.util.ArrayDeque<CUdeviceptr>> e : kept.entrySet()) {
                for (CUdeviceptr p : e.getValue()) {
                    free.accept(p);
                    held -= e.getKey();
                }
            }
            kept.clear();
        }

        /** Frees every block, kept or handed out (the caller has waited for the device). */
        synchronized void releaseAll() {
            release();
            for (CUdeviceptr p : out.values()) free.accept(p);
            out.clear();
            inUse = 0;
            held = 0;
        }
    }

    /**
     * The pinned staging buffer for one upload, little-endian, position 0, at least {@code bytes} long. The previous
     * upload from it has finished copying before it is handed out again.
     */
    public java.nio.ByteBuffer staging(int bytes) {
        if (uploadInFlight) {
            JCudaDriver.cuEventSynchronize(uploaded);
            uploadInFlight = false;
        }
        if (staging == null || staging.capacity() < bytes) {
            if (staging != null) JCudaDriver.cuMemFreeHost(pinned);
            int size = Math.max(bytes, 1 << 16);
            pinned = new Pointer();
            JCudaDriver.cuMemAllocHost(pinned, size);
            staging = pinned.getByteBuffer(0, size).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        }
        staging.clear();
        return staging;
    }

    /**
     * A timing event recorded now on the current stream (bench --profile); read with {@link #elapsedMs}, then destroy
     * it.
     */
    public CUevent recordEvent() {
        CUevent e = new CUevent();
        JCudaDriver.cuEventCreate(e, CUevent_flags.CU_EVENT_DEFAULT);
        JCudaDriver.cuEventRecord(e, current);
        return e;
    }

    /**
     * Runs {@code body}'s launches, copies and events on the side stream, after the main stream's work so far; the main
     * stream does not wait for them until it {@link #await}s an event the body {@link #record}ed. A graph capture
     * takes the side stream's work in as a branch, which must join the main stream again before the capture ends.
     */
    public void onSide(Runnable body) {
        if (current == side) throw new IllegalStateException("already on the side stream");
        JCudaDriver.cuEventRecord(forked, stream);
        JCudaDriver.cuStreamWaitEvent(side, forked, 0);
        current = side;
        try {
            body.run();
        } finally {
            current = stream;
        }
    }

    /** Whether launches go to the side stream now (within {@link #onSide}). */
    public boolean onSideStream() {
        return current == side;
    }

    /** An event for {@link #record} and {@link #await} (no timing); destroy it with {@link #destroy(CUevent)}. */
    public CUevent newEvent() {
        CUevent e = new CUevent();
        JCudaDriver.cuEventCreate(e, CUevent_flags.CU_EVENT_DISABLE_TIMING);
        return e;
    }

    /** Records {@code e} on the current stream: it completes when the stream's work so far has. */
    public void record(CUevent e) {
        JCudaDriver.cuEventRecord(e, current);
    }

    /** The current stream's later work waits for {@code e}'s latest recording (on the device: the host goes on). */
    public void await(CUevent e) {
        JCudaDriver.cuStreamWaitEvent(current, e, 0);
    }

    /** Milliseconds between two recorded events (waits for the later one). */
    public float elapsedMs(CUevent from, CUevent to) {
        JCudaDriver.cuEventSynchronize(to);
        float[] ms = new float[1];
        JCudaDriver.cuEventElapsedTime(ms, from, to);
        return ms[0];
    }

    public void destroy(CUevent e) {
        JCudaDriver.cuEventDestroy(e);
    }

    /** Copies device or mapped host memory (unified addressing), asynchronously on the current stream. */
    public void copyAsync(CUdeviceptr dst, CUdeviceptr src, long bytes) {
        if (bytes > 0) JCudaDriver.cuMemcpyAsync(dst, src, bytes, current);
    }

    /** Copies the first {@code bytes} of the staging buffer to {@code dst}, asynchronously on the stream. */
    public void uploadStaging(CUdeviceptr dst, int bytes) {
        JCudaDriver.cuMemcpyHtoDAsync(dst, pinned, bytes, stream);
        JCudaDriver.cuEventRecord(uploaded, stream);
        uploadInFlight = true;
    }

    /** Waits for the stream's work so far, then copies {@code n} ints from the device through pinned memory. */
    public void download(int[] dst, CUdeviceptr src, int n) {
        java.nio.ByteBuffer b = downloadBytes(src, n * 4L);
        b.asIntBuffer().get(dst, 0, n);
    }

    /** Waits for the stream's work so far, then copies {@code n} floats from the device through pinned memory. */
    public void download(float[] dst, CUdeviceptr src, int n) {
        java.nio.ByteBuffer b = downloadBytes(src, n * 4L);
        b.asFloatBuffer().get(dst, 0, n);
    }

    private Pointer pinnedDown = new Pointer();
    private long pinnedDownBytes;

    private java.nio.ByteBuffer downloadBytes(CUdeviceptr src, long bytes) {
        if (pinnedDownBytes < bytes) {
            if (pinnedDownBytes > 0) JCudaDriver.cuMemFreeHost(pinnedDown);
            pinnedDownBytes = Math.max(bytes, 1 << 16);
            pinnedDown = new Pointer();
            JCudaDriver.cuMemAllocHost(pinnedDown, pinnedDownBytes);
        }
        JCudaDriver.cuMemcpyDtoHAsync(pinnedDown, src, bytes, stream);
        JCudaDriver.cuEventRecord(downloaded, stream);
        JCudaDriver.cuEventSynchronize(downloaded);
        return pinnedDown.getByteBuffer(0, bytes).order(java.nio.ByteOrder.LITTLE_ENDIAN);
    }

    /**
     * Whether this build has a kernel of that name (launcher classes ask, through their has...() predicates: the
     * names are theirs).
     */
    public boolean has(String kernel) {
        return functions.containsKey(kernel);
    }

    /**
     * Launches a kernel on the current stream; args are device pointers (CUdeviceptr, null for none), int, long, float.
     * The untyped primitive under the typed launchers (EmbeddingKernels ... LookaheadKernels), which alone call it.
     */
    public void launch(String kernel, int gridX, int gridY, int block, Object... args) {
        launchWithSharedMemory(kernel, gridX, gridY, block, 0, args);
    }

    /**
     * A launch with {@code sharedBytes} of dynamic shared memory; past 48 KB the kernel is allowed that much first
     * (once per kernel).
     */
    public void launchWithSharedMemory(String kernel, int gridX, int gridY, int block, int sharedBytes, Object... args) {
        CUfunction f = allowShared(kernel, sharedBytes);
        Pointer[] ptrs = new Pointer[args.length];
        for (int i = 0; i < args.length; i++) {
            Object a = args[i];
            if (a == null) ptrs[i] = Pointer.to(new CUdeviceptr());
            else if (a instanceof CUdeviceptr p) ptrs[i] = Pointer.to(p);
            else if (a instanceof Integer v) ptrs[i] = Pointer.to(new int[]{v});
            else if (a instanceof Long v) ptrs[i] = Pointer.to(new long[]{v});
            else if (a instanceof Float v) ptrs[i] = Pointer.to(new float[]{v});
            else throw new IllegalArgumentException("kernel argument of type " + a.getClass());
        }
        cuLaunchKernel(f, gridX, gridY, 1, block, 1, 1, sharedBytes, current, Pointer.to(ptrs), null);
    }

    /** The kernel, allowed {@code sharedBytes} of dynamic shared memory first where that is past the default 48 KB. */
    private CUfunction allowShared(String kernel, int sharedBytes) {
        CUfunction f = function(kernel);
        if (sharedBytes > 48 * 1024 && sharedAllowed.getOrDefault(kernel, 0) < sharedBytes) {
            JCudaDriver.cuFuncSetAttribute(f, jcuda.driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    sharedBytes);
            sharedAllowed.put(kernel, sharedBytes);
        }
        return f;
    }

    /**
     * Dynamic shared memory a block of {@code kernel} may have while {@code blocks} of its blocks share a
     * multiprocessor: the multiprocessor's shared memory a block less what the driver reserves a block, within the
     * opt-in limit a block (227 KB on an H100, 163 KB on an A100), less the kernel's static shared memory.
     */
    public int dynamicSharedLimit(String kernel, int blocks) {
        int perBlock = Math.min(sharedPerBlockOptIn,
                sharedPerMultiprocessor / Math.max(1, blocks) - sharedReservedPerBlock);
        return perBlock - staticShared.computeIfAbsent(kernel, key -> {
            int[] bytes = new int[1];
            JCudaDriver.cuFuncGetAttribute(bytes, jcuda.driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES,
                    function(kernel));
            return bytes[0];
        });
    }

    /** The kernel of that name in this build's modules. */
    private CUfunction function(String kernel) {
        CUfunction f = functions.get(kernel);
        if (f == null) throw new DsflowException("no CUDA kernel " + kernel + " in this build");
        return f;
    }

    /**
     * Blocks of {@code block} threads and {@code sharedBytes} of dynamic shared memory a multiprocessor runs at once
     * (asked of the driver once per shape: each decode step's plan asks).
     */
    public int blocksPerMultiprocessor(String kernel, int block, int sharedBytes) {
        return occupancy.computeIfAbsent(kernel + "/" + block + "/" + sharedBytes, key -> {
            int[] blocks = new int[1];
            JCudaDriver.cuOccupancyMaxActiveBlocksPerMultiprocessor(blocks, allowShared(kernel, sharedBytes), block,
                    sharedBytes);
            return Math.max(1, blocks[0]);
        });
    }

    /** Records the launches {@code body} makes (nothing runs) into an executable graph. */
    public CUgraphExec capture(Runnable body) {
        JCudaDriver.cuStreamBeginCapture(stream, CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL);
        CUgraph graph = new CUgraph();
        try {
            body.run();
        } finally {
            JCudaDriver.cuStreamEndCapture(stream, graph);
        }
        CUgraphExec exec = new CUgraphExec();
        JCudaDriver.cuGraphInstantiate(exec, graph, 0);
        JCudaDriver.cuGraphDestroy(graph);
        return exec;
    }

    public void replay(CUgraphExec graph) {
        JCudaDriver.cuGraphLaunch(graph, stream);
    }

    public void destroy(CUgraphExec graph) {
        JCudaDriver.cuGraphExecDestroy(graph);
    }

    public void synchronize() {
        cuCtxSynchronize();
    }

    /** Starts an external profiler's range (a profiler started with its range off records from here). */
    public void profilerStart() {
        JCudaDriver.cuProfilerStart();
    }

    /** Ends the range {@link #profilerStart()} began. */
    public void profilerStop() {
        JCudaDriver.cuProfilerStop();
    }

    /**
     * Waits for the device, then frees every device and pinned host block this runtime took (whoever still holds one),
     * its staging buffers, streams, events and modules. The primary context stays retained by the process (other
     * runtimes may share it; creating it again costs a second).
     */
    @Override
    public synchronized void close() {
        if (closed) return;
        cuCtxSetCurrent(context);
        cuCtxSynchronize();
        try {
            if (blas != null) blas.close();   // its workspace goes back to the pool while it still takes frees
        } finally {
            closed = true;
            pool.releaseAll();
            hostPool.releaseAll();
            if (staging != null) JCudaDriver.cuMemFreeHost(pinned);
            if (pinnedDownBytes > 0) JCudaDriver.cuMemFreeHost(pinnedDown);
            staging = null;
            pinnedDownBytes = 0;
            for (CUevent e : java.util.List.of(forked, uploaded, downloaded)) JCudaDriver.cuEventDestroy(e);
            JCudaDriver.cuStreamDestroy(stream);
            JCudaDriver.cuStreamDestroy(side);
            for (CUmodule m : modules) JCudaDriver.cuModuleUnload(m);
            modules.clear();
            functions.clear();
        }
    }
}
