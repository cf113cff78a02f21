package io.dsflow.engine;

import io.dsflow.engine.kv.CpuKvCache;
import io.dsflow.engine.kv.KvCache;
import io.dsflow.engine.kv.KvStore;

import java.util.Arrays;

/**
 * One conversation's state in the engine: every token it has seen (prompts and completions) and its KV cache.
 * The next token goes to position {@link #position()}; a new prompt continues the same cache (no re-prefill).
 */
public final class Sequence {
    private final KvCache cache;
    private int[] tokens = new int[64];
    private int length;

    public Sequence(KvCache cache) {
        this.cache = cache;
    }

    public KvCache cache() {
        return cache;
    }

    /** Position of the next token (tokens seen so far). */
    public int position() {
        return length;
    }

    public int[] tokens() {
        return Arrays.copyOf(tokens, length);
    }

    /** Records tokens the model has been fed (their K/V are in the cache). */
    void advance(int[] newTokens) {
        if (length + newTokens.length > tokens.length) {
            tokens = Arrays.copyOf(tokens, Math.max(tokens.length * 2, length + newTokens.length));
        }
        System.arraycopy(newTokens, 0, tokens, length, newTokens.length);
        length += newTokens.length;
    }

    /**
     * A sequence that continues {@code source}'s tokens under another cache, filled by replaying every key and value
     * of source's dense store (no forward pass): eval prefills once and runs each policy on such a copy.
     */
    public static Sequence replay(Sequence source, KvStore store, CpuKvCache target) {
        int kvDim = store.kvDim();
        float[] k = new float[kvDim], v = new float[kvDim];
        for (int layer = 0; layer < store.layers(); layer++) {
            for (int slot = 0; slot < store.length(layer); slot++) {
                for (int c = 0; c < kvDim; c++) k[c] = store.keyChannel(layer, c)[slot];
                System.arraycopy(store.values(layer), slot * kvDim, v, 0, kvDim);
                target.append(layer, k, v);
            }
        }
        Sequence s = new Sequence(target);
        s.advance(source.tokens());
        return s;
    }

}
