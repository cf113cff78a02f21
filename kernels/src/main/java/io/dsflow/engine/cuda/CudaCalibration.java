package io.dsflow.engine.cuda;

import io.dsflow.engine.kv.CalibrationStatistics;
import jcuda.Pointer;
import jcuda.driver.CUdeviceptr;

import static jcuda.driver.JCudaDriver.cuMemcpyDtoH;
import static jcuda.driver.JCudaDriver.cuMemsetD32;

/**
 * The device side of calibration (CalibratingKvCache's counterpart on the GPU): the forward pass adds each layer's
 * rows to accumulators on the device ({@link #add}, calibration.cu), and after a step {@link #collect} brings the sums
 * to the host, into the {@link CalibrationStatistics} this was made for, and starts again from zero.
 * <pre>
 *   qk, q: [layers][heads][headDim] double   sums of |q_c k_c| and |q_c| per query head
 *   k:     [layers][kvHeads][headDim] double  sums of |k_c| per kv head
 * </pre>
 * Doubles, as the CPU sums: a 2048-token block of a large model adds terms far below the sums' last float bit.
 */
public final class CudaCalibration {
    private final CudaRuntime gpu;
    private final int layers, heads, kvHeads, headDim;
    private final CalibrationStatistics target;
    private final CUdeviceptr qk, q, k;
    private final long queryBytes, keyBytes;
    private boolean released;

    /** Zeroed accumulators on {@code gpu} for a model of this shape, collected into {@code target}. */
    public CudaCalibration(CudaRuntime gpu, int layers, int heads, int kvHeads, int headDim,
                           CalibrationStatistics target) {
        if (!target.hasShape(layers, heads, kvHeads, headDim)) {
            throw new IllegalArgumentException("calibration statistics of another shape than " + layers + " layers, "
                    + heads + " heads, " + kvHeads + " kv heads, head_dim " + headDim);
        }
        this.gpu = gpu;
        this.layers = layers;
        this.heads = heads;
        this.kvHeads = kvHeads;
        this.headDim = headDim;
        this.target = target;
        this.queryBytes = (long) layers * heads * headDim * Double.BYTES;
        this.keyBytes = (long) layers * kvHeads * headDim * Double.BYTES;
        gpu.makeCurrent();
        qk = gpu.alloc(queryBytes);
        q = gpu.alloc(queryBytes);
        k = gpu.alloc(keyBytes);
        zero();
    }

    /** The statistics {@link #collect} adds to. */
    public CalibrationStatistics target() {
        return target;
    }

    /**
     * Adds the statistics of rows [row0, row0 + rows) of {@code qkv} to this layer's accumulators, on the current
     * stream: call it after the layer's append kernel has rotated q and k in place, before anything overwrites them.
     *
     * @param qkv       [.][qkvStride] f32, each row [q: heads x headDim | k: kvHeads x headDim | v ...]
     * @param qkvStride floats a row of qkv
     */
    public void add(int layer, CUdeviceptr qkv, int row0, int rows, int qkvStride) {
        if (released) throw new IllegalStateException("calibration accumulators used after release");
        if (layer < 0 || layer >= layers) throw new IndexOutOfBoundsException("layer " + layer + " of " + layers);
        long queryLayer = (long) layer * heads * headDim * Double.BYTES;
        long keyLayer = (long) layer * kvHeads * headDim * Double.BYTES;
        CalibrationKernels.calibrationAdd(gpu, qk.withByteOffset(queryLayer), q.withByteOffset(queryLayer),
                k.withByteOffset(keyLayer), qkv, row0, rows, heads, kvHeads, headDim, qkvStride);
    }

    /**
     * Waits for the device, adds the sums so far to the target statistics, counting {@code tokens} more tokens (the
     * rows each layer added since the last collect), and zeroes the accumulators.
     */
    public void collect(long tokens) {
        if (released) throw new IllegalStateException("calibration accumulators used after release");
        gpu.makeCurrent();
        gpu.synchronize();
        double[] qkSums = download(qk, queryBytes), qSums = download(q, queryBytes), kSums = download(k, keyBytes);
        target.addSums(qkSums, qSums, kSums, tokens);
        zero();
    }

    private static double[] download(CUdeviceptr src, long bytes) {
        double[] host = new double[(int) (bytes / Double.BYTES)];
        cuMemcpyDtoH(Pointer.to(host), src, bytes);
        return host;
    }

    /** Zero (all bits clear) in every accumulator; the runtime's blocking stream stays ordered after it. */
    private void zero() {
        cuMemsetD32(qk, 0, queryBytes / Integer.BYTES);
        cuMemsetD32(q, 0, queryBytes / Integer.BYTES);
        cuMemsetD32(k, 0, keyBytes / Integer.BYTES);
    }

    /** Returns the accumulators to the runtime's pool; sums not collected are dropped. Safe to call twice. */
    public synchronized void release() {
        if (released) return;
        released = true;
        gpu.makeCurrent();
        gpu.free(qk, queryBytes);
        gpu.free(q, queryBytes);
        gpu.free(k, keyBytes);
    }
}
