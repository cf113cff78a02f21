package io.dsflow.engine.kv;

/**
 * The recent-token window of DoubleSparse++: W slots per layer, token t written at slot t mod W, so an append is
 * O(1) (no shift, no concatenation) and after any number of wraps the ring holds exactly positions T-W .. T-1.
 * Keys are post-RoPE, so slot order never matters to attention.
 * <pre>
 *   keys[layer][slot * kvDim + c], values[layer][slot * kvDim + c], position[layer][slot]  (-1: empty)
 * </pre>
 */
public final class RingWindow {
    final int size;
    final int kvDim;
    final float[][] keys;
    final float[][] values;
    final int[][] position;

    public RingWindow(int layers, int size, int kvDim) {
        this.size = size;
        this.kvDim = kvDim;
        this.keys = new float[layers][size * kvDim];
        this.values = new float[layers][size * kvDim];
        this.position = new int[layers][size];
        for (int[] p : position) java.util.Arrays.fill(p, -1);
    }

    private RingWindow(RingWindow o) {
        size = o.size;
        kvDim = o.kvDim;
        keys = deep(o.keys);
        values = deep(o.values);
        position = new int[o.position.length][];
        for (int l = 0; l < position.length; l++) position[l] = o.position[l].clone();
    }

    /** Writes token {@code pos} into slot pos mod W; returns the slot. */
    public int append(int layer, int pos, float[] k, float[] v) {
        if (size == 0) return -1;
        int slot = pos % size;
        System.arraycopy(k, 0, keys[layer], slot * kvDim, kvDim);
        System.arraycopy(v, 0, values[layer], slot * kvDim, kvDim);
        position[layer][slot] = pos;
        return slot;
    }

    /** Turns every held key by {@code delta} positions (KvStore#rebaseFor turns the store's back). */
    void turn(Rotary rotary, int headDim, long delta) {
        Rotary.Turn turn = rotary.by(delta);
        for (int l = 0; l < keys.length; l++) {
            for (int slot = 0; slot < size; slot++) {
                if (position[l][slot] < 0) continue;
                for (int at = slot * kvDim; at < (slot + 1) * kvDim; at += headDim) turn.apply(keys[l], at);
            }
        }
    }

    public int size() {
        return size;
    }

    /** Position held by a slot, -1 if it was never written. */
    public int position(int layer, int slot) {
        return position[layer][slot];
    }

    /** Bytes of the JVM heap its arrays hold. */
    public long heapBytes() {
        return heapBytes(keys.length, size, kvDim);
    }

    /** Bytes of heap a ring of {@code size} slots over {@code layers} layers holds: a store's slots' (KvStore). */
    public static long heapBytes(int layers, int size, int kvDim) {
        return KvStore.heapBytes(layers, kvDim, size);
    }

    public RingWindow copy() {
        return new RingWindow(this);
    }

    private static float[][] deep(float[][] a) {
        float[][] r = new float[a.length][];
        for (int i = 0; i < a.length; i++) r[i] = a[i].clone();
        return r;
    }
}
