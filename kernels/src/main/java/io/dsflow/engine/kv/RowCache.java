package io.dsflow.engine.kv;

import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;

/**
 * A cache of one sequence's selected key/value rows for one layer and kv head, as a GPU keeps them in device memory
 * while the full store lives in host memory (issue 26): {@link #slots()} places for rows in a ring with a hand. A
 * decode step asks for the rows its selection attends; the rows present are hits; each miss, in the order asked, takes
 * the next place at or past the hand that this step does not read (empty, or holding a row it evicts), and the hand
 * moves past it. So rows leave in the order they came in, except that a row asked again is passed over for that step.
 * This is the policy a GPU can run in one scan a step (the misses take the free places in ring order by a prefix
 * sum), and measured on the probe model it hits within two points of exact least-recently-selected eviction
 * (docs/results/row-cache-policy-cpu-2026-12-07-s20.txt). The CPU's model of the device cache, and its specification:
 * eval reports its hit rate on the probe model's trained attention. Not thread-safe.
 */
public final class RowCache {
    private int[] owner;   // the row (token position) at each place, -1 for none
    private final Map<Integer, Integer> placeOf = new HashMap<>();
    private int hand;

    public RowCache(int slots) {
        if (slots < 1) throw new IllegalArgumentException("a row cache needs at least one slot, got " + slots);
        owner = new int[slots];
        Arrays.fill(owner, -1);
    }

    /**
     * Places a cache of {@code factor} times a step's {@code rows} rows holds (KvConfig#rowCache): the factor in 256ths,
     * rounded up, as the GPU's row_cache_serve computes it in integers.
     */
    public static int places(double factor, int rows) {
        return (int) (((long) factor256(factor) * rows + 255) / 256);
    }

    /** The factor F in 256ths, as both sides keep it (row_cache_serve reads it from the cache's index). */
    public static int factor256(double factor) {
        return (int) Math.round(factor * 256);
    }

    public int slots() {
        return owner.length;
    }

    /** Rows held now. */
    public int size() {
        return placeOf.size();
    }

    /**
     * Grows the cache to {@code slots} places (a budget that grew with the context), the new ones empty at the end of
     * the ring; never shrinks it.
     */
    public void growTo(int slots) {
        if (slots <= owner.length) return;
        int old = owner.length;
        owner = Arrays.copyOf(owner, slots);
        Arrays.fill(owner, old, slots, -1);
    }

    /**
     * Serves one step: {@code tokens} (distinct, at most {@link #slots()}) are read; returns how many of them the
     * cache held (hits). The misses are copied in as the class says, never evicting a row this step asks for.
     */
    public int serve(int[] tokens) {
        if (tokens.length > owner.length) {
            throw new IllegalArgumentException(tokens.length + " rows asked of a cache of " + owner.length);
        }
        boolean[] asked = new boolean[owner.length];
        int hits = 0;
        for (int t : tokens) {
            Integer at = placeOf.get(t);
            if (at != null) {
                asked[at] = true;
                hits++;
            }
        }
        for (int t : tokens) {
            if (placeOf.containsKey(t)) continue;
            while (asked[hand]) hand = (hand + 1) % owner.length;
            if (owner[hand] >= 0) placeOf.remove(owner[hand]);
            owner[hand] = t;
            placeOf.put(t, hand);
            asked[hand] = true;
            hand = (hand + 1) % owner.length;
        }
        return hits;
    }
}
