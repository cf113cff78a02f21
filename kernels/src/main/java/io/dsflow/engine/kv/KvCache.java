package io.dsflow.engine.kv;

/**
 * One sequence's KV cache under a policy (dense, ds, dspp), as every backend keeps it: a backend makes its own caches
 * ({@code Backend#newCache}) and its forward pass fills and reads them; it refuses a cache of another backend with a
 * clear error. The CPU's caches are also {@link CpuKvCache}s, which the CPU forward pass drives token by token.
 * Not thread-safe: one sequence is advanced by one forward pass at a time.
 */
public interface KvCache {

    /** Tokens held (positions appended minus any evicted). */
    int length();

    /**
     * The most tokens the cache holds ({@code kv.capacity}; 0: unbounded). Past it, each new token evicts the oldest
     * one after the first {@link #sinkTokens}, which are kept for good.
     */
    default int tokenLimit() {
        return 0;
    }

    /** The first tokens a bounded cache never evicts (sinks). */
    default int sinkTokens() {
        return 0;
    }

    /**
     * Whether rotary positions follow the cache rather than the text (a bounded cache of a rotary model, as
     * StreamingLLM assigns them): the conversation never runs out of positions, however long its text grows.
     */
    default boolean positionsWithinCache() {
        return false;
    }

    /** What a token's text position less is its rotary position (0 unless {@link #positionsWithinCache}). */
    default long positionBase() {
        return 0;
    }

    /** A deep copy on the same backend (eval prefills once and runs each policy on a copy). */
    KvCache copy();

    /** What this cache holds, by part, in the device format (16-bit keys and values). */
    KvBytes bytes();

    /**
     * Makes room for {@code tokens} tokens in all, known when a request is admitted (its history, prompt and longest
     * completion): the cache then holds what its owner budgeted ({@code Backend#cacheBytes} of those tokens) and does
     * not grow while the request runs, where growing on demand would take up to twice the room. Never shrinks.
     */
    default void reserveTotal(long tokens) {
    }

    /** Frees what the cache holds outside the heap (device memory); the cache is not used afterwards. */
    default void release() {
    }
}
