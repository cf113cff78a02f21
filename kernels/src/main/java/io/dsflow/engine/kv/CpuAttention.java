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
     * to the slots whose position is at most its own (tokens evicted before it are gone); where positions follow the
     * cache, the row's query meets the sinks turned by {@link KvStore#sinkShift}.
     */
    private static void causalByPosition(KvStore store, int layer, float[][] q, int row0, int rows, float[][] out,
                                         int numHeads, float scale) {
        int kvHeads = store.kvHeads, len = store.length(layer);
        long last = store.appended(layer) - 1;
        long work = (long) rows * len * numHeads;
        CpuOps.forEach(kvHeads * rows, work >= (1 << 16), task -> {
            int g = task % kvHeads, i = task / kvHeads;
            attendGroupUpTo(store, layer, g, numHeads / kvHeads, q[row0 + i], out[row0 + i], last - rows + 1 + i,
                    scale);
        });
    }

    /** One query row at text position pos, one GQA group, over the held slots whose tokens are not after it. */
    private static void attendGroupUpTo(KvStore store, int layer, int g, int group, float[] q, float[] out, long pos,
                                        float scale) {
        int d = store.headDim, h0 = g * group, len = store.length(layer);
        float[][] s = scores(group, len);
        groupScores(store, layer, g, group, q, s, len);
        long shift = store.sinkShift(pos);
        int sinks = Math.min(store.sinks(), len);
        if (shift > 0 && sinks > 0) {   // the sinks' scores again, with the query turned back by the shift
            float[] qs = java.util.Arrays.copyOfRange(q, h0 * d, (h0 + group) * d);
            store.rotary().turn(qs, group, -shift);
            for (int hh = 0; hh < group; hh++) {
                for (int j = 0; j < sinks; j++) s[hh][j] = store.score(layer, qs, hh * d, g, j);
            }
        }
        for (int hh = 0; hh < group; hh++) softmax(s[hh], len, scale, store.position[layer], pos);
        weightedValues(store.values[layer], store.kvDim, g * d, d, s, group, len, out, h0 * d);
    }

    /** Tokens scored per block: the group's score tiles stay in L1 while every channel is added in. */
    private static final int BLOCK = 512;

    /** One query row, one GQA group: heads g*G .. g*G+G-1 attend to stored tokens [0, n). */
    static void attendGroup(KvStore store, int layer, int g, int group, float[] q, float[] out, int n, float scale) {
        float[][] s = scores(group, n);
        groupScores(store, layer, g, group, q, s, n);
        // softmax weights, then out[h] = sum_j p[h][j] v[j], four heads per pass over the values
        for (int hh = 0; hh < group; hh++) softmax(s[hh], n, scale, null, 0);
        weightedValues(store.values[layer], store.kvDim, g * store.headDim, store.headDim, s, group, n, out,
                g * group * store.headDim);
    }

    /**
     * s[hh][j] = sum_c q[h0 + hh][c] * k[j][c] for the group's heads h0 = g * group and slots j < n, channel by
     * channel, four heads per pass over a key block.
     */
    private static void groupScores(KvStore store, int layer, int g, int group, float[] q, float[][] s, int n) {
        int d = store.headDim;
        int h0 = g * group;
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

    /**
     * s[j] <- the softmax weight exp(scale * (s[j] - max)) / sum of the slots j < n a row sees, 0 for the others: all
     * of them where {@code position} is null, else those holding tokens at positions up to {@code upTo} (a bounded
     * store's row). A row that sees none (a step longer than the window: its later rows took every slot) gets zeros.
     */
    static void softmax(float[] s, int n, float scale, int[] position, long upTo) {
        float max = Float.NEGATIVE_INFINITY;
        for (int j = 0; j < n; j++) if (position == null || position[j] <= upTo) max = Math.max(max, s[j]);
        float sum = 0;
        for (int j = 0; j < n; j++) {
            float e = position == null || position[j] <= upTo ? CpuOps.expf((s[j] - max) * scale) : 0f;
            s[j] = e;
            sum += e;
        }
        float inv = sum > 0 ? 1f / sum : 0f;
        for (int j = 0; j < n; j++) s[j] *= inv;
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
