package io.dsflow.engine.sample;

import java.util.Arrays;

/**
 * Picks the next token from logits: greedy (argmax, lowest id on ties), or temperature, then top-k, then top-p,
 * then a draw. The draw for completion step i depends only on (seed, i), so a step that is recomputed after a
 * restore, or in a different batch, picks the same token. Probabilities in double.
 */
public final class Sampler {
    private Sampler() {
    }

    public static int sample(float[] logits, SamplingParams p, int step) {
        if (p.greedy()) return argmax(logits);
        int n = logits.length;
        int keep = p.topK() > 0 ? Math.min(p.topK(), n) : n;
        int[] order = firstInOrder(logits, keep);
        double[] prob = new double[keep];
        double max = logits[order[0]];
        double sum = 0;
        for (int i = 0; i < keep; i++) {
            prob[i] = Math.exp((logits[order[i]] - max) / p.temperature());
            sum += prob[i];
        }
        // top-p: the smallest prefix of the sorted tokens whose mass reaches p
        double cum = 0;
        int nucleus = keep;
        for (int i = 0; i < keep; i++) {
            cum += prob[i] / sum;
            if (cum >= p.topP()) {
                nucleus = i + 1;
                break;
            }
        }
        double total = 0;
        for (int i = 0; i < nucleus; i++) total += prob[i];
        double u = uniform(p.seed(), step) * total;
        double acc = 0;
        for (int i = 0; i < nucleus; i++) {
            acc += prob[i];
            if (u < acc) return order[i];
        }
        return order[nucleus - 1];
    }

    /**
     * The ids of the {@code k} first tokens in order (logit descending, lower id first on ties), in that order: each
     * token is one sortable long (its logit's rank, then its id), so the order costs a primitive sort of the k kept
     * (found by a bounded heap when k is small) rather than a sort of boxed ids over the whole vocabulary.
     */
    static int[] firstInOrder(float[] logits, int k) {
        int n = logits.length;
        long[] keys;
        if (k < n / 8) {
            long[] heap = new long[k];   // max-heap of the k smallest keys
            int size = 0;
            for (int i = 0; i < n; i++) {
                long key = rankKey(logits[i], i);
                if (size < k) {
                    heap[size] = key;
                    siftUp(heap, size++);
                } else if (key < heap[0]) {
                    heap[0] = key;
                    siftDown(heap, k);
                }
            }
            keys = heap;
        } else {
            keys = new long[n];
            for (int i = 0; i < n; i++) keys[i] = rankKey(logits[i], i);
        }
        Arrays.sort(keys);
        int[] order = new int[k];
        for (int i = 0; i < k; i++) order[i] = (int) (keys[i] & 0x7fffffffL);
        return order;
    }

    /** Ascending in (logit descending, id ascending); non-negative. */
    private static long rankKey(float logit, int id) {
        int u = Float.floatToRawIntBits(logit + 0f);   // -0 + 0 = +0: the two zeros tie, as == has them
        int key = u < 0 ? ~u : u | 0x80000000;   // unsigned order of the logit
        return ((~key & 0xffffffffL) << 31) | id;
    }

    private static void siftUp(long[] h, int i) {
        while (i > 0 && h[(i - 1) / 2] < h[i]) {
            long t = h[i];
            h[i] = h[(i - 1) / 2];
            h[(i - 1) / 2] = t;
            i = (i - 1) / 2;
        }
    }

    private static void siftDown(long[] h, int size) {
        for (int i = 0; ; ) {
            int l = 2 * i + 1, r = l + 1, big = i;
            if (l < size && h[l] > h[big]) big = l;
            if (r < size && h[r] > h[big]) big = r;
            if (big == i) return;
            long t = h[i];
            h[i] = h[big];
            h[big] = t;
            i = big;
        }
    }

    public static int argmax(float[] logits) {
        int best = 0;
        for (int i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
        return best;
    }

    /**
     * A uniform double in [0, 1) from (seed, step): SplitMix64's finaliser over a mix of the two. Backends that sample
     * elsewhere (the GPU) draw with the same number, so a seed picks the same tokens on every backend.
     */
    public static double uniform(long seed, int step) {
        long z = seed * 0x9E3779B97F4A7C15L + (step + 1) * 0xD1B54A32D192ED03L;
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        z = z ^ (z >>> 31);
        return (z >>> 11) * 0x1.0p-53;
    }
}
