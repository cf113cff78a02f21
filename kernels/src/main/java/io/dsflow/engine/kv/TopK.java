package io.dsflow.engine.kv;

import java.util.Arrays;

/** The k largest of n scores, by quickselect (O(n)); ties go to the lower index, so selection is deterministic. */
public final class TopK {
    private TopK() {
    }

    /**
     * Writes the indices (into scores[0..n)) of the k largest scores to out[0..k), in ascending index order.
     * Requires k <= n.
     */
    public static void select(float[] scores, int n, int k, int[] out) {
        if (k >= n) {
            for (int i = 0; i < n; i++) out[i] = i;
            return;
        }
        float[] tmp = Arrays.copyOf(scores, n);
        float threshold = kthLargest(tmp, k);
        int above = 0;
        for (int i = 0; i < n; i++) if (scores[i] > threshold) above++;
        int equalTaken = k - above, m = 0;
        for (int i = 0; i < n; i++) {
            float s = scores[i];
            if (s > threshold || (s == threshold && equalTaken-- > 0)) out[m++] = i;
        }
    }

    /** The k-th largest value (1-based) of a, which is reordered. */
    static float kthLargest(float[] a, int k) {
        int lo = 0, hi = a.length - 1, target = k - 1;
        java.util.concurrent.ThreadLocalRandom rnd = java.util.concurrent.ThreadLocalRandom.current();
        while (lo < hi) {
            float pivot = a[lo + rnd.nextInt(hi - lo + 1)];
            int i = lo, j = hi;
            while (i <= j) {
                while (a[i] > pivot) i++;
                while (a[j] < pivot) j--;
                if (i <= j) {
                    float t = a[i];
                    a[i++] = a[j];
                    a[j--] = t;
                }
            }
            if (target <= j) hi = j;
            else if (target >= i) lo = i;
            else return a[target];
        }
        return a[target];
    }
}
