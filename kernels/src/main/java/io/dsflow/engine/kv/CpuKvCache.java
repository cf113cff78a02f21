package io.dsflow.engine.kv;

/**
 * A KV cache of the CPU backend, which drives it layer by layer: it appends each new token's key and value, then asks
 * for the attention of the new rows.
 * <ul>
 *   <li>{@link #append}: one token, one layer, key after RoPE;</li>
 *   <li>{@link #attend}: the last {@code rows} appended tokens' queries attend causally; a single row is a decode step,
 *       where a sparse policy attends to its selected subset ({@link SparseStepPolicy} decides); several rows are a
 *       prefill, always dense.</li>
 * </ul>
 */
public interface CpuKvCache extends KvCache {

    /**
     * Before a forward pass feeds tokens at text positions first .. first + rows - 1: a cache whose positions follow it
     * ({@link #positionsWithinCache}) turns its keys back first where the step would reach the model's positions
     * ({@link KvStore#rebaseFor}); the pass then rotates the rows to their text position less {@link #positionBase}.
     */
    default void beforeStep(long first, int rows) {
    }

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
     * Whether this layer's decode selections rank their candidates by a query predicted from the previous layer's
     * input (KvConfig lookahead): the forward pass then hands that query over with {@link #predictQuery} before the
     * layer attends.
     */
    default boolean selectsAhead(int layer) {
        return false;
    }

    /** The predicted query of the decode row of a layer that {@link #selectsAhead}: [numHeads * headDim], roped. */
    default void predictQuery(int layer, float[] q) {
        throw new IllegalStateException("this cache does not select ahead");
    }

    /**
     * Bytes of the JVM heap this cache's arrays hold (float32 keys, values and labels, the ring, slot positions): what
     * {@code Backend#cacheBytes} budgets for it, so the decode operator's managed-memory reservation is what it
     * allocates.
     */
    long heapBytes();

    @Override
    CpuKvCache copy();
}
