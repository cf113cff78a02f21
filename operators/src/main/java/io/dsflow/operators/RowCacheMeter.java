package io.dsflow.operators;

import io.dsflow.engine.Backend;
import io.dsflow.engine.RowCacheCounts;

/**
 * A decode subtask's tally of its device row caches (KvConfig#rowCache, issue 26): the rows their selections asked for
 * and the rows they missed (each copied over the host link), read from the backend by the engine thread at most once
 * a {@link #READ_NANOS} (the read waits for the device, which the step just finished with), and read by the gauges
 * from the metric reporters' threads (the totals are volatile). A backend that keeps no row caches (the CPU) leaves it
 * at zero.
 */
final class RowCacheMeter {
    /** How often the engine thread reads the backend's counters. */
    static final long READ_NANOS = 1_000_000_000L;

    private final Backend backend;
    /** Totals since the subtask started. */
    private volatile RowCacheCounts totals = RowCacheCounts.NONE;
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
        RowCacheCounts counts = backend.takeRowCacheCounts();
        if (counts == null) {
            none = true;
            return;
        }
        if (counts.asked() > 0) totals = totals.plus(counts);
    }

    RowCacheCounts totals() {
        return totals;
    }
}
