package io.dsflow.engine.kv;

/**
 * One sequence's KV cache under a policy (dense, ds, dspp): what is stored for each token and which stored tokens a
 * query attends to. The forward pass appends each new token's K/V, then asks for attention of the new rows.
 * <ul>
 *   <li>{@link #append}: one token, one layer, key after RoPE;</li>
 *   <li>{@link #attend}: the last {@code rows} appended tokens' queries attend causally; a single row is a decode step,
 *       where a sparse policy attends to its selected subset; several rows are a prefill, always dense.</li>
 * </ul>
 * Not thread-safe: one sequence is advanced by one forward pass at a time.
 */
public interface KvCache {

    /** Tokens held (positions appended minus any evicted). */
    int length();

    /** Appends one token's key (post-RoPE) and value, each [kvHeads * headDim], to a layer. */
    void append(int layer, float[] key, float[] value);

    /**
     * Attention of the last {@code rows} appended tokens of a layer.
     *
     * @param q   [rows][numHeads * headDim] queries after RoPE, read from q[row0 .. row0 + rows)
     * @param out [rows][numHeads * headDim] written at the same rows
     */
    void attend(int layer, float[][] q, int row0, int rows, float[][] out, int numHeads, float scale);

    /**
     * Whether this layer's next decode selection ranks its candidates by a query predicted from the previous layer's
     * input (KvConfig lookahead): the forward pass then hands that query over with {@link #predictQuery} before the
     * layer attends.
     */
    default boolean selectsAhead(int layer) {
        return false;
    }

    /** The predicted query of the decode row for a layer that {@link #selectsAhead}: [numHeads * headDim] after RoPE. */
    default void predictQuery(int layer, float[] q) {
        throw new IllegalStateException("this cache does not select ahead");
    }

    /** A deep copy (eval prefills once and runs each policy on a copy). */
    KvCache copy();

    /** What this cache holds, by part, in the device format (16-bit keys and values). */
    KvBytes bytes();

    /** Frees what the cache holds outside the heap (device memory); the cache is not used afterwards. */
    default void release() {
    }
}
