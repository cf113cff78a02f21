package io.dsflow.engine.kv;

/**
 * The per-layer token budget of DoubleSparse++ (docs/algorithm.md): over the sparse layers L (all but the first
 * denseLayers), x_l = l / (N - 1), w_l = exp(-lambda x_l), k_l = clip(k0 w_l, kMin, kMax) with k0 chosen so that
 * sum k_l = |L| * kMean. Clipped layers are fixed and k0 re-solved for the rest (water filling), then the real
 * budgets are rounded by largest remainder so the sum is exact. lambda = 0 gives the uniform budget.
 */
public final class LayerBudgets {
    private LayerBudgets() {
    }

    /**
     * @param layers      N
     * @param denseLayers the first layers, which get no budget (they attend densely)
     * @param kMean       mean budget per sparse layer
     * @param kMin        lower clip
     * @param kMax        upper clip (the candidate count: a larger budget selects nothing more)
     * @return budget per layer, 0 for dense layers; sums to |L| * kMean whenever |L| kMin <= |L| kMean <= |L| kMax
     */
    public static int[] compute(int layers, int denseLayers, double lambda, int kMean, int kMin, int kMax) {
        int[] k = new int[layers];
        int first = Math.min(denseLayers, layers);
        int sparse = layers - first;
        if (sparse == 0) return k;
        int lo = Math.min(kMin, kMax);
        long total = (long) sparse * kMean;
        if (total <= (long) sparse * lo || total >= (long) sparse * kMax) {
            int v = total <= (long) sparse * lo ? lo : kMax;
            for (int l = first; l < layers; l++) k[l] = v;
            return k;
        }
        double[] w = new double[layers];
        for (int l = first; l < layers; l++) w[l] = Math.exp(-lambda * (layers == 1 ? 0 : (double) l / (layers - 1)));
        // water filling: sum_l clip(k0 w_l) is monotone in k0, so bisection finds the k0 that spends the total
        double a = 0, b = kMax / w[layers - 1] + 1;
        for (int it = 0; it < 200; it++) {
            double mid = (a + b) / 2;
            if (mid == a || mid == b) break;   // adjacent doubles: further halvings change nothing (about 60 suffice)
            if (spend(w, first, mid, lo, kMax) < total) a = mid;
            else b = mid;
        }
        double[] real = new double[layers];
        long floorSum = 0;
        for (int l = first; l < layers; l++) {
            real[l] = Math.min(kMax, Math.max(lo, b * w[l]));
            k[l] = (int) Math.floor(real[l]);
            floorSum += k[l];
        }
        // largest remainder: give the missing units to the layers whose real budget lost the most to the floor
        long missing = total - floorSum;
        while (missing > 0) {
            int best = -1;
            for (int l = first; l < layers; l++) {
                if (k[l] < kMax && (best < 0 || real[l] - k[l] > real[best] - k[best])) best = l;
            }
            k[best]++;
            real[best] = Math.floor(real[best]); // its remainder is spent
            missing--;
        }
        while (missing < 0) { // bisection landed a hair above the total: take back from the largest remainders' opposite
            int best = -1;
            for (int l = first; l < layers; l++) if (k[l] > lo && (best < 0 || k[l] > k[best])) best = l;
            k[best]--;
            missing++;
        }
        return k;
    }

    private static double spend(double[] w, int first, double k0, int lo, int hi) {
        double s = 0;
        for (int l = first; l < w.length; l++) s += Math.min(hi, Math.max(lo, k0 * w[l]));
        return s;
    }
}
