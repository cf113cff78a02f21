package io.dsflow.engine.kv;

/**
 * A CPU cache over one {@link KvStore}, whose bound (capacity and sinks) and positions within the cache are the
 * store's.
 */
interface StoredKvCache extends CpuKvCache {

    KvStore store();

    @Override
    default int tokenLimit() {
        return store().limit();
    }

    @Override
    default int sinkTokens() {
        return store().limit() > 0 ? store().sinks() : 0;
    }

    @Override
    default boolean positionsWithinCache() {
        return store().positionsWithinCache();
    }

    @Override
    default long positionBase() {
        return store().rotaryBase();
    }

    @Override
    default void beforeStep(long first, int rows) {
        store().rebaseFor(first, rows);
    }
}
