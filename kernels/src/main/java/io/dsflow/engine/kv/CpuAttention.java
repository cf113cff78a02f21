package io.dsflow.engine.kv;

import io.dsflow.engine.cpu.CpuOps;

/**
 * Exact softmax attention on the CPU over a {@link KvStore}: the specification the GPU kernels are held against.
 * Query heads of one GQA group share each key and value read (scores of the group are computed together).
 */
public final class CpuAttention {
    private CpuAttention() {
    }

    private static final ThreadLocal<float[][]> ACC = ThreadLocal.withInitial(() -> new float[4][0]);
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
        if (store.wrapped(layer)) {
            causalByPosition(store, layer, q, row0, rows, out, numHeads, scale);
            return;
        }
        long work = (long) rows * length * numHeads;
        CpuOps.forEach(kvHeads * rows, work >= (1 << 16), task -> {
            int g = task % kvHeads, i = task / kvHeads;
            int n = length - rows + i + 1;
            attendGroup(store, layer, g, numHeads / kvHeads, q[row0 + i], out[row0 + i], n, scale);
        });
    }

    /**
     * Causal attention once a bounded store has evicted tokens: slots are not in position order, so each row attends
     * to the slots whose position is at most its own (tokens evicted before it are gone).
     */
    private static void causalByPosition(KvStore store, int layer, float[][] q, int row0, int rows, float[][] out,
                                         int numHeads, float scale) {
        int d = store.headDim, group = numHeads / store.kvHeads, len = store.length(layer);
        long last = store.appended(layer) - 1;
        SoftmaxPartial part = new SoftmaxPartial(d);
        float[] scores = new float[len];
        int[] offsets = new int[len];
        for (int i = 0; i < rows; i++) {
            long pos = last - rows + 1 + i;
            for (int h = 0; h < numHeads; h++) {
                int g = h / group, n = 0;
                for (int j = 0; j < len; j++) {
                    if (store.position[layer][j] > pos) continue;
                    float s = 0;
                    for (int c = 0; c < d; c++) s += q[row0 + i][h * d + c] * store.keys[layer][g * d + c][j];
                    scores[n] = s * scale;
                    offsets[n++] = j * store.kvDim + g * d;
                }
                part.fill(scores, n, store.values[layer], offsets);
                SoftmaxPartial.merge(new SoftmaxPartial[]{part}, out[row0 + i], h * d);
            }
        }
    }

    /** Tokens scored per block: the group's score tiles stay in L1 while every channel is added in. */
    private static final int BLOCK = 512;

    /** One query row, one GQA group: heads g*G .. g*G+G-1 attend to stored tokens [0, n). */
    static void attendGroup(KvStore store, int layer, int g, int group, float[] q, float[] out, int n, float scale) {
        int d = store.headDim;
        int h0 = g * group;
        float[][] s = scores(group, n);
        // scores: s[h][j] = sum_c q[h][c] * k[j][c], channel by channel, four heads per pass over a key block
        for (int j0 = 0; j0 < n; j0 += BLOCK) {
            int j1 = Math.min(n, j0 + BLOCK);
            for (int hh = 0; hh < group; hh++) java.util.Arrays.fill(s[hh], j0, j1, 0f);
            for (int c = 0; c < d; c++) {
                float[] kc = store.keys[layer][g * d + c];
                int hh = 0;
                for (; hh + 4 <= group; hh += 4) {
                    float a0 = q[(h0 + hh) * d + c], a1 = q[(h0 + hh + 1) * d + c];
                    float a2 = q[(h0 + hh + 2) * d + c], a3 = q[(h0 + hh + 3) * d + c];
                    float[] s0 = s[hh], s1 = s[hh + 1], s2 = s[hh + 2], s3 = s[hh + 3];
                    for (int j = j0; j < j1; j++) {
                        float k = kc[j];
                        s0[j] += a0 * k;
                        s1[j] += a1 * k;
                        s2[j] += a2 * k;
                        s3[j] += a3 * k;
                    }
                }
                for (; hh < group; hh++) CpuOps.axpy(s[hh], j0, q[(h0 + hh) * d + c], kc, j0, j1 - j0);
            }
        }
        // softmax weights, then out[h] = sum_j p[h][j] v[j], four heads per pass over the values
        for (int hh = 0; hh < group; hh++) {
            float inv = 1f / softmax(s[hh], n, scale);
            for (int j = 0; j < n; j++) s[hh][j] *= inv;
        }
        weightedValues(store.values[layer], store.kvDim, g * d, d, s, group, n, out, h0 * d);
    }

    /**
     * out[h * d + c] = sum_{j < n} p[h][j] * values[j * kvDim + vo + c] for heads h < count, written from out[o0].
     */
    static void weightedValues(float[] values, int kvDim, int vo, int d, float[][] p, int count, int n,
                               float[] out, int o0) {
        java.util.Arrays.fill(out, o0, o0 + count * d, 0f);
        int hh = 0;
        if (count >= 4) {
            // four separate accumulators: C2 vectorises stores to distinct arrays, not to offsets of one array
            float[][] acc = ACC.get();
            if (acc[0].length < d) {
                acc = new float[4][d];
                ACC.set(acc);
            }
            float[] o0a = acc[0], o1a = acc[1], o2a = acc[2], o3a = acc[3];
            for (; hh + 4 <= count; hh += 4) {
                for (float[] a : acc) java.util.Arrays.fill(a, 0f);
                float[] p0 = p[hh], p1 = p[hh + 1], p2 = p[hh + 2], p3 = p[hh + 3];
                for (int j = 0; j < n; j++) {
                    float a0 = p0[j], a1 = p1[j], a2 = p2[j], a3 = p3[j];
                    int v0 = j * kvDim + vo;
                    for (int c = 0; c < d; c++) {
                        float v = values[v0 + c];
                        o0a[c] += a0 * v;
                        o1a[c] += a1 * v;
                        o2a[c] += a2 * v;
                        o3a[c] += a3 * v;
                    }
                }
                int o = o0 + hh * d;
                System.arraycopy(o0a, 0, out, o, d);
                System.arraycopy(o1a, 0, out, o + d, d);
                System.arraycopy(o2a, 0, out, o + 2 * d, d);
                System.arraycopy(o3a, 0, out, o + 3 * d, d);
            }
        }
        for (; hh < count; hh++) {
            for (int j = 0; j < n; j++) CpuOps.axpy(out, o0 + hh * d, p[hh][j], values, j * kvDim + vo, d);
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
