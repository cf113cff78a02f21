package io.dsflow.engine.kv;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * A cache of one sequence's selected key/value rows for one layer and kv head, as a GPU would keep them in device
 * memory while the full store lives in host memory (issue 26): it holds up to {@link #slots()} rows; a decode step asks
 * for the rows its selection attends, the rows present are hits and the others are copied in (misses), and when it is
 * full the row selected least recently makes room. The CPU's model of that cache: eval measures its hit rate on the
 * probe model's trained attention. Not thread-safe.
 */
public final class RowCache {
    private int slots;
    private final LinkedHashMap<Integer, Boolean> rows = new LinkedHashMap<>(16, 0.75f, true) {
        @Override
        protected boolean removeEldestEntry(Map.Entry<Integer, Boolean> eldest) {
            return size() > slots;
        }
    };

    public RowCache(int slots) {
        if (slots < 1) throw new IllegalArgumentException("a row cache needs at least one slot, got " + slots);
        this.slots = slots;
    }

    public int slots() {
        return slots;
    }

    /** Rows held now. */
    public int size() {
        return rows.size();
    }

    /** Grows the cache to {@code slots} rows (a budget that grew with the context); never shrinks it. */
    public void growTo(int slots) {
        this.slots = Math.max(this.slots, slots);
    }

    /**
     * Serves one step: {@code tokens} (distinct, at most {@link #slots()}) become the most recently selected rows;
     * returns how many of them the cache held (hits). The misses are copied in, evicting the least recently selected
     * rows of earlier steps, never one this step asks for.
     */
    public int serve(int[] tokens) {
        if (tokens.length > slots) {
            throw new IllegalArgumentException(tokens.length + " rows asked of a cache of " + slots);
        }
        int hits = 0;
        for (int t : tokens) if (rows.get(t) != null) hits++;   // get moves a hit to the most recent end
        for (int t : tokens) rows.putIfAbsent(t, Boolean.TRUE);   // (a present row's recency is refreshed again)
        return hits;
    }
}
