package io.dsflow.engine;

import io.dsflow.engine.kv.CpuKvCache;
import io.dsflow.engine.kv.KvCache;
import io.dsflow.engine.kv.KvStore;

import java.util.Arrays;

/**
 * One conversation's state in the engine: the tokens its cache holds (prompts and completions) and the cache.
 * The next token goes to position {@link #position()}; a new prompt continues the same cache (no re-prefill). An
 * unbounded cache holds every token seen; a bounded one ({@link KvCache#tokenLimit}) its first sinks and the last
 * tokens up to the limit, and so does {@link #tokens()}: what a rebuild of the cache prefills.
 */
public final class Sequence {
    private final KvCache cache;
    private final int limit, sinks;
    private int[] tokens = new int[64];
    private int held;
    private int position;

    public Sequence(KvCache cache) {
        this.cache = cache;
        this.limit = cache.tokenLimit();
        this.sinks = Math.min(cache.sinkTokens(), limit);
    }

    public KvCache cache() {
        return cache;
    }

    /** Position of the next token (tokens seen so far). */
    public int position() {
        return position;
    }

    /** The tokens the cache holds, in text order (every token seen, unless the cache is bounded). */
    public int[] tokens() {
        if (limit == 0 || held <= limit) return Arrays.copyOf(tokens, held);
        int[] kept = Arrays.copyOf(tokens, limit);
        System.arraycopy(tokens, held - (limit - sinks), kept, sinks, limit - sinks);
        return kept;
    }

    /** Records tokens the model has been fed (their K/V are in the cache). */
    void advance(int[] newTokens) {
        if (held + newTokens.length > tokens.length) {
            if (limit > 0 && held > limit) forgetEvicted();
            if (held + newTokens.length > tokens.length) {
                tokens = Arrays.copyOf(tokens, Math.max(tokens.length * 2, held + newTokens.length));
            }
        }
        System.arraycopy(newTokens, 0, tokens, held, newTokens.length);
        held += newTokens.length;
        position = Math.addExact(position, newTokens.length);
        if (limit > 0 && held > 2 * limit) forgetEvicted();   // a long step: the record stays within twice the limit
    }

    /** Drops what the cache evicted from the record: all but the sinks and the last tokens up to the limit. */
    private void forgetEvicted() {
        int keep = limit - sinks;
        System.arraycopy(tokens, held - keep, tokens, sinks, keep);
        held = limit;
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
