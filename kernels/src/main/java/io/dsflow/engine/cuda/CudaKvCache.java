package io.dsflow.engine.cuda;

import io.dsflow.engine.kv.KvBytes;
import io.dsflow.engine.kv.KvCache;
import jcuda.driver.CUdeviceptr;

import java.lang.ref.Cleaner;

import static jcuda.driver.JCudaDriver.cuMemcpyDtoD;

/**
 * A sequence's dense KV cache in GPU memory, written and read by the CUDA backend's forward pass:
 * <pre>keys[layer], values[layer]: [capacity][kvHeads * headDim] bf16, token-major</pre>
 * so that growing (capacity doubles) is one contiguous copy per layer. Freed by {@link #release()}, or when it
 * becomes unreachable.
 */
public final class CudaKvCache implements KvCache {
    private static final Cleaner CLEANER = Cleaner.create();

    /** The device buffers, apart from the cache object so that the cleaner can free them. */
    private static final class Buffers implements Runnable {
        final CudaRuntime gpu;
        final CUdeviceptr[] keys, values;
        long bytesEach;
        boolean freed;

        Buffers(CudaRuntime gpu, int layers) {
            this.gpu = gpu;
            keys = new CUdeviceptr[layers];
            values = new CUdeviceptr[layers];
        }

        @Override
        public synchronized void run() {
            if (freed) return;
            freed = true;
            gpu.makeCurrent();
            for (int l = 0; l < keys.length; l++) {
                if (keys[l] != null) gpu.free(keys[l], bytesEach);
                if (values[l] != null) gpu.free(values[l], bytesEach);
            }
        }
    }

    private final CudaRuntime gpu;
    private final int layers, kvDim;
    private final int[] length;
    private final Buffers buffers;
    private final Cleaner.Cleanable cleanable;
    private int capacity;

    CudaKvCache(CudaRuntime gpu, int layers, int kvDim, int initialCapacity) {
        this.gpu = gpu;
        this.layers = layers;
        this.kvDim = kvDim;
        this.length = new int[layers];
        this.buffers = new Buffers(gpu, layers);
        this.cleanable = CLEANER.register(this, buffers);
        allocate(Math.max(16, initialCapacity));
    }

    private void allocate(int cap) {
        long bytes = (long) cap * kvDim * 2;
        for (int l = 0; l < layers; l++) {
            CUdeviceptr k = gpu.alloc(bytes), v = gpu.alloc(bytes);
            if (buffers.keys[l] != null) {
                long used = (long) length[l] * kvDim * 2;
                if (used > 0) {
                    cuMemcpyDtoD(k, buffers.keys[l], used);
                    cuMemcpyDtoD(v, buffers.values[l], used);
                }
                gpu.free(buffers.keys[l], buffers.bytesEach);
                gpu.free(buffers.values[l], buffers.bytesEach);
            }
            buffers.keys[l] = k;
            buffers.values[l] = v;
        }
        buffers.bytesEach = bytes;
        capacity = cap;
    }

    /** Makes room for {@code more} tokens past the current length of every layer. */
    void reserve(int more) {
        int need = 0;
        for (int l : length) need = Math.max(need, l + more);
        if (need > capacity) allocate(Math.max(need, capacity * 2));
    }

    CUdeviceptr keys(int layer) {
        return buffers.keys[layer];
    }

    CUdeviceptr values(int layer) {
        return buffers.values[layer];
    }

    int length(int layer) {
        return length[layer];
    }

    void appended(int layer, int n) {
        length[layer] += n;
    }

    int capacity() {
        return capacity;
    }

    /** Marks the first {@code tokens} slots of every layer as filled (bench: a cache of random context). */
    void fillTo(int tokens) {
        reserve(tokens - length[0]);
        java.util.Arrays.fill(length, tokens);
    }

    @Override
    public int length() {
        return length[layers - 1];
    }

    @Override
    public void append(int layer, float[] key, float[] value) {
        throw new UnsupportedOperationException("a GPU cache is filled by the CUDA backend's forward pass");
    }

    @Override
    public void attend(int layer, float[][] q, int row0, int rows, float[][] out, int numHeads, float scale) {
        throw new UnsupportedOperationException("a GPU cache is read by the CUDA backend's forward pass");
    }

    @Override
    public KvCache copy() {
        gpu.makeCurrent();
        CudaKvCache c = new CudaKvCache(gpu, layers, kvDim, capacity);
        for (int l = 0; l < layers; l++) {
            long used = (long) length[l] * kvDim * 2;
            if (used > 0) {
                cuMemcpyDtoD(c.buffers.keys[l], buffers.keys[l], used);
                cuMemcpyDtoD(c.buffers.values[l], buffers.values[l], used);
            }
            c.length[l] = length[l];
        }
        return c;
    }

    @Override
    public KvBytes bytes() {
        long b = 0;
        for (int l : length) b += 2L * l * kvDim * 2;
        return new KvBytes(b, 0, 0, 0);
    }

    @Override
    public void release() {
        cleanable.clean();
    }
}
