package io.dsflow.engine.kv;

import java.util.Arrays;

/**
 * The full key/value store of one sequence on the CPU, every layer. Keys are kept after RoPE and channel-major, so
 * scoring a query against all keys is an axpy per channel (what the JIT vectorises); values are token-major, so the
 * weighted sum is an axpy per token.
 * <pre>
 *   keys[layer][c][j]            c < kvHeads * headDim, j < capacity   (channel c of token j)
 *   values[layer][j * kvDim + c]
 * </pre>
 * Appending is O(1) amortised (capacity doubles); every layer holds the same number of tokens once a forward pass is
 * over.
 */
public final class KvStore {
    final int layers;
    final int kvHeads;
    final int headDim;
    final int kvDim;
    final float[][][] keys;
    final float[][] values;
    final int[] length;
    private int capacity;

    public KvStore(int layers, int kvHeads, int headDim, int initialCapacity) {
        this.layers = layers;
        this.kvHeads = kvHeads;
        this.headDim = headDim;
        this.kvDim = kvHeads * headDim;
        this.capacity = Math.max(16, initialCapacity);
        this.keys = new float[layers][kvDim][capacity];
        this.values = new float[layers][capacity * kvDim];
        this.length = new int[layers];
    }

    private KvStore(KvStore o) {
        layers = o.layers;
        kvHeads = o.kvHeads;
        headDim = o.headDim;
        kvDim = o.kvDim;
        capacity = Math.max(16, o.length());
        keys = new float[layers][kvDim][];
        values = new float[layers][];
        length = o.length.clone();
        for (int l = 0; l < layers; l++) {
            for (int c = 0; c < kvDim; c++) keys[l][c] = Arrays.copyOf(o.keys[l][c], capacity);
            values[l] = Arrays.copyOf(o.values[l], capacity * kvDim);
        }
    }

    /** Tokens held (after a complete forward pass, the same in every layer). */
    public int length() {
        return length[layers - 1];
    }

    public int length(int layer) {
        return length[layer];
    }

    public int headDim() {
        return headDim;
    }

    public int kvHeads() {
        return kvHeads;
    }

    /** Appends one token's key (post-RoPE) and value, each [kvHeads * headDim]. */
    public void append(int layer, float[] k, float[] v) {
        int j = length[layer];
        if (j == capacity) grow();
        float[][] kl = keys[layer];
        for (int c = 0; c < kvDim; c++) kl[c][j] = k[c];
        System.arraycopy(v, 0, values[layer], j * kvDim, kvDim);
        length[layer] = j + 1;
    }

    /** Channel c (of kvHeads * headDim) of every key of a layer: keys[j] for j < length(layer). */
    public float[] keyChannel(int layer, int c) {
        return keys[layer][c];
    }

    /** All values of a layer, token-major: value j of kv head g starts at j * kvDim + g * headDim. */
    public float[] values(int layer) {
        return values[layer];
    }

    public int kvDim() {
        return kvDim;
    }

    private void grow() {
        int next = capacity * 2;
        for (int l = 0; l < layers; l++) {
            for (int c = 0; c < kvDim; c++) keys[l][c] = Arrays.copyOf(keys[l][c], next);
            values[l] = Arrays.copyOf(values[l], next * kvDim);
        }
        capacity = next;
    }

    public KvStore copy() {
        return new KvStore(this);
    }

    /** Bytes the stored tokens take (float32 keys and values), not counting spare capacity. */
    public long bytes() {
        long b = 0;
        for (int l = 0; l < layers; l++) b += 2L * length[l] * kvDim * Float.BYTES;
        return b;
    }
}
