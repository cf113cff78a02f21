package io.dsflow.engine.kv;

/**
 * The channel statistics of Double Sparsity's offline calibration, summed over every token of every block
 * (the reference code keeps only the last block's "qk" sums; this does not), all on post-RoPE q and k:
 * <pre>
 *   qk[layer][head][c] += |q_t[head][c] * k_t[kvHead(head)][c]|   (each token attending to itself)
 *   q[layer][head][c]  += |q_t[head][c]|
 *   k[layer][kvHead][c] += |k_t[kvHead][c]|
 * </pre>
 */
public final class CalibrationStatistics {
    final double[][][] qk, q, k;
    long tokens;

    public CalibrationStatistics(int layers, int numHeads, int kvHeads, int headDim) {
        qk = new double[layers][numHeads][headDim];
        q = new double[layers][numHeads][headDim];
        k = new double[layers][kvHeads][headDim];
    }

    public long tokens() {
        return tokens;
    }

    public ChannelConfig channels(KvConfig.ChannelSource source) {
        return switch (source) {
            case QK -> ChannelConfig.fromStatistic(qk);
            case Q -> ChannelConfig.fromStatistic(q);
            case K -> ChannelConfig.fromStatistic(k);
            case QK_GROUP -> ChannelConfig.fromStatistic(qk).grouped(k[0].length);
        };
    }

    /** Whether these statistics are of a model of this shape. */
    public boolean hasShape(int layers, int numHeads, int kvHeads, int headDim) {
        return qk.length == layers && qk[0].length == numHeads && k[0].length == kvHeads && qk[0][0].length == headDim;
    }

    /**
     * Sums of a statistic, a copy: {@code head} is a query head for qk (and qk-group) and q, a kv head for k.
     *
     * @return [headDim]
     */
    public double[] sums(KvConfig.ChannelSource source, int layer, int head) {
        return (switch (source) {
            case QK, QK_GROUP -> qk;
            case Q -> q;
            case K -> k;
        })[layer][head].clone();
    }

    /**
     * Adds sums gathered elsewhere (a GPU's accumulators) over {@code tokens} more tokens, each array flat in
     * layer-major order like the fields: qk and q [layers][numHeads][headDim], k [layers][kvHeads][headDim].
     *
     * @throws IllegalArgumentException where an array's length does not fit this shape or tokens is negative
     */
    public void addSums(double[] qkSums, double[] qSums, double[] kSums, long tokens) {
        if (tokens < 0) throw new IllegalArgumentException("a negative token count: " + tokens);
        requireLength(qk, qkSums, "qk");   // all checked before any is added: a refused call changes nothing
        requireLength(q, qSums, "q");
        requireLength(k, kSums, "k");
        addFlat(qk, qkSums);
        addFlat(q, qSums);
        addFlat(k, kSums);
        this.tokens += tokens;
    }

    private static void requireLength(double[][][] a, double[] flat, String what) {
        if (flat.length != a.length * a[0].length * a[0][0].length) {
            throw new IllegalArgumentException(what + " sums: " + flat.length + " values for " + a.length + " layers x "
                    + a[0].length + " heads x " + a[0][0].length + " channels");
        }
    }

    private static void addFlat(double[][][] a, double[] flat) {
        int i = 0;
        for (double[][] layer : a) {
            for (double[] head : layer) for (int c = 0; c < head.length; c++) head[c] += flat[i++];
        }
    }

    /** Adds another block's sums. */
    public void add(CalibrationStatistics o) {
        add(qk, o.qk);
        add(q, o.q);
        add(k, o.k);
        tokens += o.tokens;
    }

    private static void add(double[][][] a, double[][][] b) {
        for (int l = 0; l < a.length; l++) for (int h = 0; h < a[l].length; h++) for (int c = 0; c < a[l][h].length; c++) a[l][h][c] += b[l][h][c];
    }

    /**
     * Mean Jaccard overlap of the top-r channel sets of two statistics over every layer and head: how stable the
     * calibration is across disjoint data.
     */
    public static double topOverlap(CalibrationStatistics a, CalibrationStatistics b, KvConfig.ChannelSource source, int r) {
        ChannelConfig x = a.channels(source), y = b.channels(source);
        double sum = 0;
        int n = 0;
        double[][][] shape = source == KvConfig.ChannelSource.K ? a.k : a.q;
        for (int l = 0; l < shape.length; l++) {
            for (int h = 0; h < shape[l].length; h++) {
                java.util.Set<Integer> s1 = new java.util.HashSet<>(), s2 = new java.util.HashSet<>();
                for (int c : x.top(l, h, r)) s1.add(c);
                for (int c : y.top(l, h, r)) s2.add(c);
                java.util.Set<Integer> union = new java.util.HashSet<>(s1);
                union.addAll(s2);
                s1.retainAll(s2);
                sum += s1.size() / (double) union.size();
                n++;
            }
        }
        return sum / n;
    }
}
