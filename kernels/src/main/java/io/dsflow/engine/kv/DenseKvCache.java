package io.dsflow.engine.kv;

/** The dense policy: every query attends to every stored token. */
public final class DenseKvCache implements StoredKvCache {
    private final KvStore store;

    public DenseKvCache(int layers, int kvHeads, int headDim) {
        this(new KvStore(layers, kvHeads, headDim, KvStore.INITIAL_CAPACITY));
    }

    /**
     * A dense cache that keeps at most {@code capacity} tokens, the first {@code sinks} of them pinned; with a capacity
     * and {@code rotary} (null for a model without rotary positions), positions follow the cache ({@link KvStore}).
     */
    public DenseKvCache(int layers, int kvHeads, int headDim, int capacity, int sinks, Rotary rotary) {
        this(new KvStore(layers, kvHeads, headDim, KvStore.INITIAL_CAPACITY, capacity, sinks, rotary));
    }

    DenseKvCache(KvStore store) {
        this.store = store;
    }

    @Override
    public KvStore store() {
        return store;
    }

    @Override
    public int length() {
        return store.length();
    }

    @Override
    public void append(int layer, float[] key, float[] value) {
        store.append(layer, key, value);
    }

    @Override
    public void attend(int layer, float[][] q, int row0, int rows, float[][] out, int numHeads, float scale) {
        CpuAttention.causal(store, layer, q, row0, rows, out, numHeads, scale);
    }

    @Override
    public CpuKvCache copy() {
        return new DenseKvCache(store.copy());
    }

    @Override
    public long heapBytes() {
        return store.heapBytes();
    }

    @Override
    public KvBytes bytes() {
        return new KvBytes(store.bytes(KvBytes.VALUE_BYTES), 0, 0, 0);
    }
}
