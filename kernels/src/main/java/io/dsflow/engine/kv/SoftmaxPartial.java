package io.dsflow.engine.kv;

/**
 * Softmax attention over one source of tokens (sinks, selected, window), kept unnormalised so sources can be merged
 * by log-sum-exp: max m of the scaled scores, l = sum e^(s - m), o = sum e^(s - m) v.
 */
final class SoftmaxPartial {
    float max = Float.NEGATIVE_INFINITY;
    float sum;
    final float[] out;

    SoftmaxPartial(int headDim) {
        out = new float[headDim];
    }

    void reset() {
        max = Float.NEGATIVE_INFINITY;
        sum = 0;
        java.util.Arrays.fill(out, 0f);
    }

    /**
     * Fills this partial from n scaled scores and the values they weight.
     *
     * @param valueOffset value of token i starts at values[valueOffset[i]]
     */
    void fill(float[] scores, int n, float[] values, int[] valueOffset) {
        reset();
        for (int i = 0; i < n; i++) max = Math.max(max, scores[i]);
        for (int i = 0; i < n; i++) {
            float e = (float) Math.exp(scores[i] - max);
            sum += e;
            io.dsflow.engine.cpu.CpuOps.axpy(out, 0, e, values, valueOffset[i], out.length);
        }
    }

    /** Merges partials into dst (normalised attention output): o = sum_i o_i e^(m_i - M) / sum_i l_i e^(m_i - M). */
    static void merge(SoftmaxPartial[] parts, float[] dst, int dstOffset) {
        float m = Float.NEGATIVE_INFINITY;
        for (SoftmaxPartial p : parts) if (p.sum > 0) m = Math.max(m, p.max);
        double total = 0;
        int d = parts[0].out.length;
        java.util.Arrays.fill(dst, dstOffset, dstOffset + d, 0f);
        for (SoftmaxPartial p : parts) {
            if (p.sum == 0) continue;
            float w = (float) Math.exp(p.max - m);
            total += p.sum * w;
            io.dsflow.engine.cpu.CpuOps.axpy(dst, dstOffset, w, p.out, 0, d);
        }
        float inv = (float) (1.0 / total);
        for (int c = 0; c < d; c++) dst[dstOffset + c] *= inv;
    }
}
