package io.dsflow.engine.kv;

/**
 * How a query meets 8- and 4-bit labels: its r label channels quantised to int8 with one scale a head (max |q_c| / 127,
 * q_c * (127 / max) rounded to the nearest integer, ties to even), so that a candidate's approximate score is an
 * integer dot product times two scales, {@code (float) sum_c qi_c label_c * (qScale * labelScale)}. Integer labels
 * against a quantised query take a GPU a quarter of the instructions of float products (dp4a: four products and their
 * sum in one), and the int8 query's error (at most 1/254 of its largest channel) is far below the labels' own (1/14 of
 * the key's largest channel at 4 bits). The CPU ({@link SparseKvCache#select}) and the GPU's selection kernels
 * (select.cu: LabelQuery) compute these same floats, so they rank candidates alike.
 */
public final class LabelQueries {
    private LabelQueries() {
    }

    /**
     * Quantises {@code q[0 .. qi.length)} into {@code qi}; returns the scale (0 where every channel is 0). A NaN
     * channel counts as 0 and sets no maximum (as the GPU's fmaxf), and every integer is clamped to +-127 (a maximum
     * below 127 / Float.MAX_VALUE makes 127 / max infinite).
     */
    public static float quantise(float[] q, int[] qi) {
        float max = 0;
        for (int c = 0; c < qi.length; c++) if (Math.abs(q[c]) > max) max = Math.abs(q[c]);
        float inverse = max > 0 ? 127f / max : 0f;
        for (int c = 0; c < qi.length; c++) qi[c] = Math.max(-127, Math.min(127, (int) Math.rint(q[c] * inverse)));
        return max / 127f;
    }

    /** A candidate's score from its integer dot product with the quantised query: each product rounded to float. */
    public static float score(int dot, float queryScale, float labelScale) {
        return (float) dot * (queryScale * labelScale);
    }
}
