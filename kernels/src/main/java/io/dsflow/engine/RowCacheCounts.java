package io.dsflow.engine;

/**
 * Rows asked of device row caches (KvConfig#rowCache) and rows they missed, a kv head's key and value each; a miss
 * crossed the host link ({@link Backend#takeRowCacheCounts}; bench, eval and the decode operator's metrics add them
 * up).
 *
 * @param asked  rows the selections read
 * @param missed rows copied over the host link
 */
public record RowCacheCounts(long asked, long missed) {
    public static final RowCacheCounts NONE = new RowCacheCounts(0, 0);

    /** Share of the rows asked that were held, NaN when none was asked. */
    public double hitRate() {
        return asked == 0 ? Double.NaN : 1 - missed / (double) asked;
    }

    public RowCacheCounts plus(RowCacheCounts o) {
        return new RowCacheCounts(asked + o.asked, missed + o.missed);
    }

    public RowCacheCounts minus(RowCacheCounts o) {
        return new RowCacheCounts(asked - o.asked, missed - o.missed);
    }
}
