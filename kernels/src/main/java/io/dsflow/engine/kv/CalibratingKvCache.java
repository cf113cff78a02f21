package io.dsflow.engine.kv;

/**
 * A dense cache that adds each prefilled token's channel statistics to a {@link CalibrationStatistics}: it sees the
 * post-RoPE key in {@link #append} and the query of the same token in {@link #attend}, so calibration needs no hook in
 * the forward pass.
 */
public final class CalibratingKvCache implements CpuKvCache {
    private final DenseKvCache dense;
    private final CalibrationStatistics stats;

    public CalibratingKvCache(int layers, int kvHeads, int headDim, CalibrationStatistics stats) {
        this.dense = new DenseKvCache(layers, kvHeads, headDim);
        this.stats = stats;
    }

    @Override
    public int length() {
        return dense.length();
    }

    @Override
    public void append(int layer, float[] key, float[] value) {
        dense.append(layer, key, value);
    }

    @Override
    public void attend(int layer, float[][] q, int row0, int rows, float[][] out, int numHeads, float scale) {
        KvStore store = dense.store();
        int d = store.headDim, kvHeads = store.kvHeads, group = numHeads / kvHeads, len = store.length(layer);
        for (int i = 0; i < rows; i++) {
            int slot = len - rows + i;
            float[] qi = q[row0 + i];
            for (int h = 0; h < numHeads; h++) {
                int g = h / group;
                double[] qk = stats.qk[layer][h], qs = stats.q[layer][h];
                for (int c = 0; c < d; c++) {
                    float qc = qi[h * d + c], kc = store.keys[layer][g * d + c][slot];
                    qk[c] += Math.abs(qc * kc);
                    qs[c] += Math.abs(qc);
                }
            }
            for (int g = 0; g < kvHeads; g++) {
                for (int c = 0; c < d; c++) stats.k[layer][g][c] += Math.abs(store.keys[layer][g * d + c][slot]);
            }
            if (layer == store.layers - 1) stats.tokens++;
        }
        dense.attend(layer, q, row0, rows, out, numHeads, scale);
    }

    @Override
    public CpuKvCache copy() {
        throw new UnsupportedOperationException("a calibration cache is not copied");
    }

    @Override
    public long heapBytes() {
        return dense.heapBytes();
    }

    @Override
    public KvBytes bytes() {
        return dense.bytes();
    }
}
