package io.dsflow.engine.cuda;

import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.kv.KvPolicy;
import jcuda.Pointer;
import jcuda.driver.CUdeviceptr;
import org.junit.jupiter.api.BeforeAll;

import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Random;

import static jcuda.driver.JCudaDriver.cuMemcpyDtoH;
import static jcuda.driver.JCudaDriver.cuMemcpyHtoD;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * What the kernel tests share: the GPU (opened once for all of them; every test of a subclass is skipped where CUDA is
 * unavailable), random inputs, uploads and downloads, bf16 and fp16 conversions, the relative error that fails on
 * elements a kernel left unwritten (outputs are poisoned with NaN first), and the sparse kernels' descriptors built
 * from {@link SparseRowDescriptor} and {@link SegmentDescriptor}. Device memory is not freed: a test's buffers are a
 * few MB.
 */
abstract class KernelTestSupport {
    private static CudaRuntime shared;
    static CudaRuntime gpu;

    @BeforeAll
    static void openGpu() {
        assumeTrue(CudaRuntime.available(), "no CUDA: " + CudaRuntime.unavailableReason());
        synchronized (KernelTestSupport.class) {
            if (shared == null) shared = CudaRuntime.open(0);
        }
        gpu = shared;
    }

    static float[] random(Random r, int n, float scale) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float) r.nextGaussian() * scale;
        return x;
    }

    /** bf16 bits of f, rounded to nearest even (NaN stays NaN), as the weights' upload rounds. */
    static short toBf16(float f) {
        return CudaWeights.toBf16(f);
    }

    /** f rounded to bf16. */
    static float bf(float f) {
        return Float.intBitsToFloat(toBf16(f) << 16);
    }

    /** A float that fp16 holds exactly (normal or zero) as its fp16 bits. */
    static short fp16(float f) {
        if (f == 0) return 0;
        int bits = Float.floatToIntBits(f), exp = ((bits >>> 23) & 0xff) - 127 + 15;
        return (short) (((bits >>> 16) & 0x8000) | (exp << 10) | ((bits >>> 13) & 0x3ff));
    }

    static CUdeviceptr upload(float[] x) {
        CUdeviceptr p = gpu.alloc(x.length * 4L);
        cuMemcpyHtoD(p, Pointer.to(x), x.length * 4L);
        return p;
    }

    static CUdeviceptr upload(int[] x) {
        CUdeviceptr p = gpu.alloc(x.length * 4L);
        cuMemcpyHtoD(p, Pointer.to(x), x.length * 4L);
        return p;
    }

    static CUdeviceptr upload(long[] x) {
        CUdeviceptr p = gpu.alloc(x.length * 8L);
        cuMemcpyHtoD(p, Pointer.to(x), x.length * 8L);
        return p;
    }

    static CUdeviceptr upload(double[] x) {
        CUdeviceptr p = gpu.alloc(x.length * 8L);
        cuMemcpyHtoD(p, Pointer.to(x), x.length * 8L);
        return p;
    }

    static CUdeviceptr uploadBytes(byte[] x) {
        CUdeviceptr p = gpu.alloc(Math.max(1, x.length));
        if (x.length > 0) cuMemcpyHtoD(p, Pointer.to(x), x.length);
        return p;
    }

    static CUdeviceptr uploadBf16(float[] x) {
        short[] b = new short[x.length];
        for (int i = 0; i < x.length; i++) b[i] = toBf16(x[i]);
        CUdeviceptr p = gpu.alloc(x.length * 2L);
        cuMemcpyHtoD(p, Pointer.to(b), x.length * 2L);
        return p;
    }

    /** A device pointer table: the buffers' addresses ({@code null}: 0, none) as the kernels' [segments] tables. */
    static CUdeviceptr pointerTable(CUdeviceptr... buffers) {
        return upload(Arrays.stream(buffers).mapToLong(b -> b == null ? 0 : address(b)).toArray());
    }

    static long address(CUdeviceptr p) {
        return jcuda.DeviceAddress.of(p);
    }

    /** A copy of a device buffer in pinned host memory mapped into the device (host placement's store). */
    static CUdeviceptr onHost(CUdeviceptr device, long bytes) {
        CUdeviceptr h = gpu.allocHost(bytes);
        jcuda.driver.JCudaDriver.cuMemcpy(h, device, bytes);
        return h;
    }

    /** n floats of NaN on the device: an element a kernel does not write fails {@link #relError}. */
    static CUdeviceptr poisoned(int n) {
        float[] nan = new float[n];
        Arrays.fill(nan, Float.NaN);
        return upload(nan);
    }

    /** n bf16 NaNs on the device, as {@link #poisoned}. */
    static CUdeviceptr poisonedBf16(int n) {
        float[] nan = new float[n];
        Arrays.fill(nan, Float.NaN);
        return uploadBf16(nan);
    }

    static float[] download(CUdeviceptr p, int n) {
        gpu.synchronize();
        float[] x = new float[n];
        cuMemcpyDtoH(Pointer.to(x), p, n * 4L);
        return x;
    }

    static int[] downloadInts(CUdeviceptr p, int n) {
        gpu.synchronize();
        int[] x = new int[n];
        cuMemcpyDtoH(Pointer.to(x), p, n * 4L);
        return x;
    }

    static byte[] downloadBytes(CUdeviceptr p, long n) {
        gpu.synchronize();
        byte[] x = new byte[(int) n];
        cuMemcpyDtoH(Pointer.to(x), p, n);
        return x;
    }

    static short[] downloadShorts(CUdeviceptr p, int n) {
        gpu.synchronize();
        short[] x = new short[n];
        cuMemcpyDtoH(Pointer.to(x), p, n * 2L);
        return x;
    }

    static float[] downloadBf16(CUdeviceptr p, int n) {
        short[] b = downloadShorts(p, n);
        float[] x = new float[n];
        for (int i = 0; i < n; i++) x[i] = Float.intBitsToFloat(b[i] << 16);
        return x;
    }

    /** ||a - b|| / ||b||, NaN failing. */
    static double relError(float[] got, float[] ref) {
        double e = 0, n = 0;
        for (int i = 0; i < ref.length; i++) {
            assertTrue(Float.isFinite(got[i]), "element " + i + " not written or not finite: " + got[i]);
            e += (got[i] - ref[i]) * (double) (got[i] - ref[i]);
            n += ref[i] * (double) ref[i];
        }
        return Math.sqrt(e / Math.max(n, 1e-30));
    }

    /** Rows {@code rows} of a [*][width] array, one after another. */
    static float[] rowsOf(float[] x, int[] rows, int width) {
        float[] out = new float[rows.length * width];
        for (int i = 0; i < rows.length; i++) System.arraycopy(x, rows[i] * width, out, i * width, width);
        return out;
    }

    /** Bytes of a label row's r values at a label width (KvConfig#labelValueBytes: 4-bit rows of odd r padded). */
    static long labelValueBytes(int bits, int r) {
        return KvConfig.defaults(KvPolicy.DSPP).with(Map.of("label-bits", Integer.toString(bits))).labelValueBytes(r);
    }

    /** Label {@code which} (0: the low nibble, 1: the high one) of a byte of 4-bit labels, sign-extended. */
    static int nibble(byte b, int which) {
        return (b << (28 - 4 * which)) >> 28;
    }

    /** Random label channels [heads * r] of [0, hd), the same for the heads of each label row (labelGroup heads). */
    static int[] labelRowChannels(Random rnd, int heads, int r, int hd, int labelGroup) {
        int[] channels = new int[heads * r];
        for (int i = 0; i < channels.length; i++) {
            int h = i / r;
            channels[i] = h % labelGroup == 0 ? rnd.nextInt(hd) : channels[i - h % labelGroup * r];
        }
        return channels;
    }

    /** The sparse rows' descriptors on the device, [rows][SparseRowDescriptor.FIELDS] ints. */
    static CUdeviceptr uploadRows(List<SparseRowDescriptor> rows) {
        int[] sp = new int[rows.size() * SparseRowDescriptor.FIELDS];
        for (int p = 0; p < rows.size(); p++) rows.get(p).writeTo(sp, p * SparseRowDescriptor.FIELDS);
        return upload(sp);
    }

    /** The segments' sparse caches on the device, [segments][SegmentDescriptor.FIELDS] ints. */
    static CUdeviceptr uploadSegments(SegmentDescriptor... segments) {
        int[] info = new int[segments.length * SegmentDescriptor.FIELDS];
        for (int s = 0; s < segments.length; s++) segments[s].writeTo(info, s * SegmentDescriptor.FIELDS);
        return upload(info);
    }
}
