package io.dsflow.operators;

import io.dsflow.engine.Backend;

/**
 * A decode subtask's tally of its device row caches (KvConfig#rowCache, issue 26): the rows their selections asked for
 * and the rows they missed (each copied over the host link), read from the backend by the engine thread at most once
 * a {@link #READ_NANOS} (the read waits for the device, which the step just finished with), and read by the metrics
 * from the task thread. A backend that keeps no row caches (the CPU) leaves it at zero.
 */
final class RowCacheMeter {
    /** How often the engine thread reads the backend's counters. */
    static final long READ_NANOS = 1_000_000_000L;

    /** Totals since the subtask started. */
    record Totals(long asked, long missed) {
        static final Totals NONE = new Totals(0, 0);

        /** Share of the rows asked that the caches held, NaN before any was asked. */
        double hitRate() {
            return asked == 0 ? Double.NaN : 1 - missed / (double) asked;
        }
    }

    private final Backend backend;
    private volatile Totals totals = Totals.NONE;
    private long readAt;
    private boolean read, none;

    RowCacheMeter(Backend backend) {
        this.backend = backend;
    }

    /** Engine thread, after a step: adds the backend's counters to the totals if a second has passed. */
    void afterStep(long now) {
        if (none || read && now - readAt < READ_NANOS) return;
        read = true;
        readAt = now;
        long[] counts = backend.takeRowCacheCounts();
        if (counts == null) {
            none = true;
            return;
        }
        if (counts[0] > 0) totals = new Totals(totals.asked() + counts[0], totals.missed() + counts[1]);
    }

    Totals totals() {
        return totals;
    }
}
