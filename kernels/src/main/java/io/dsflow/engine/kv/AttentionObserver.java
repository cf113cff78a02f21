package io.dsflow.engine.kv;

/**
 * Receives, for each query head of each sparse decode step, how the sparse attention compared with dense attention
 * over the same cache (eval's fidelity figures). Called on the thread that runs the step.
 */
public interface AttentionObserver {
    /**
     * @param massRecall  share of the dense softmax mass on the tokens attended (sinks + selected + window)
     * @param indexRecall share of the exact top-k of the candidates that the selection found
     * @param relError    ||o_sparse - o_dense|| / ||o_dense||
     */
    void sparseHead(int layer, int head, double massRecall, double indexRecall, double relError);

    /** The step policy's decision for a layer of a decode step, whether it selects or not (before the attention). */
    default void decided(int layer, SparseStepPolicy.LayerStep step) {
    }

    /**
     * A head's selection at a decode step against the same head's at the cache's previous decode step: the share of
     * its selected tokens that were selected then too (what a device cache holding the last selection would hit).
     */
    default void reselected(int layer, int head, double share) {
    }

    /** Sizes of the modelled device row caches, in rows a step of the budget reads (a kv head's k, or group x k). */
    java.util.List<Integer> ROW_CACHE_FACTORS = java.util.List.of(1, 2, 4);

    /**
     * A kv head's step against a device cache of its selected rows ({@link RowCache}) of {@code
     * ROW_CACHE_FACTORS.get(factor)} times a step's rows: {@code rows} asked, {@code hits} of them held (the rest
     * copied over the host link). Not called at a sequence's first selecting step, which only fills the cache.
     */
    default void rowCache(int layer, int kvHead, int factor, int rows, int hits) {
    }
}
