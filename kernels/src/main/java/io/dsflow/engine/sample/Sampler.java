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
        Integer[] order = new Integer[n];
        for (int i = 0; i < n; i++) order[i] = i;
        Arrays.sort(order, (a, b) -> logits[a] != logits[b] ? Float.compare(logits[b], logits[a]) : Integer.compare(a, b));
        int keep = p.topK() > 0 ? Math.min(p.topK(), n) : n;
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
