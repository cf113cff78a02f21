package io.dsflow.engine.kv;

/**
 * Bytes a cache holds, by part, counted in the format a GPU keeps them: 16-bit keys and values, labels at their
 * bit width. (The CPU backend computes in float32; these figures compare policies, not the JVM heap.)
 *
 * @param store  the full key/value store
 * @param labels the label cache
 * @param window the ring window's keys and values
 * @param sinks  the sinks' keys and values when kept apart from the store (0 on the CPU, where they are store slots)
 */
public record KvBytes(long store, long labels, long window, long sinks) {
    public static final int VALUE_BYTES = 2;

    public long total() {
        return store + labels + window + sinks;
    }

    public KvBytes plus(KvBytes o) {
        return new KvBytes(store + o.store, labels + o.labels, window + o.window, sinks + o.sinks);
    }
}
