package io.dsflow.engine.kv;

import io.dsflow.engine.cpu.CpuOps;

/**
 * Exact softmax attention on the CPU over a {@link KvStore}: the specification the GPU kernels are held against.
 * Query heads of one GQA group share each key and value read (scores of the group are computed together).
 */
public final class CpuAttention {
    private CpuAttention() {
    }

    private static final ThreadLocal<float[][]> SCORES = ThreadLocal.withInitial(() -> new float[1][0]);

    /**
     * Causal attention of the last {@code rows} tokens of a layer: row i (0-based among them) attends to stored tokens
     * [0, length - rows + i].
     *
     * @param q   [.][numHeads * headDim], rows row0 .. row0 + rows - 1
     * @param out same shape as q, written at the same rows
     */
    public static void causal(KvStore store, int layer, float[][] q, int row0, int rows, float[][] out,
                              int numHeads, float scale) {
        int kvHeads = store.kvHeads;
        int length = store.length(layer);
        long work = (long) rows * length * numHeads;
        CpuOps.forEach(kvHeads * rows, work >= (1 << 16), task -> {
            int g = task % kvHeads, i = task / kvHeads;
            int n = length - rows + i + 1;
            attendGroup(store, layer, g, numHeads / kvHeads, q[row0 + i], out[row0 + i], n, scale);
        });
    }

    /** One query row, one GQA group: heads g*G .. g*G+G-1 attend to stored tokens [0, n). */
    static void attendGroup(KvStore store, int layer, int g, int group, float[] q, float[] out, int n, float scale) {
        int d = store.headDim;
        float[][] s = scores(group, n);
        for (int hh = 0; hh < group; hh++) java.util.Arrays.fill(s[hh], 0, n, 0f);
        // scores: s[h][j] = sum_c q[h][c] * k[j][c], one channel at a time
        for (int c = 0; c < d; c++) {
            float[] kc = store.keys[layer][g * d + c];
            for (int hh = 0; hh < group; hh++) {
                CpuOps.axpy(s[hh], 0, q[(g * group + hh) * d + c], kc, 0, n);
            }
        }
        float[] values = store.values[layer];
        int kvDim = store.kvDim;
        for (int hh = 0; hh < group; hh++) {
            float[] sh = s[hh];
            float inv = 1f / softmax(sh, n, scale);
            int o = (g * group + hh) * d;
            java.util.Arrays.fill(out, o, o + d, 0f);
            for (int j = 0; j < n; j++) CpuOps.axpy(out, o, sh[j] * inv, values, j * kvDim + g * d, d);
        }
    }

    /** s[j] <- exp(scale * (s[j] - max)) for j < n; returns their sum. */
    static float softmax(float[] s, int n, float scale) {
        float max = Float.NEGATIVE_INFINITY;
        for (int j = 0; j < n; j++) max = Math.max(max, s[j]);
        float sum = 0;
        for (int j = 0; j < n; j++) {
            float e = CpuOps.expf((s[j] - max) * scale);
            s[j] = e;
            sum += e;
        }
        return sum;
    }

    private static float[][] scores(int group, int n) {
        float[][] s = SCORES.get();
        if (s.length < group || s[0].length < n) {
            int cap = Math.max(n, s[0].length * 2);
            s = new float[Math.max(group, s.length)][cap];
            SCORES.set(s);
        }
        return s;
    }
}
