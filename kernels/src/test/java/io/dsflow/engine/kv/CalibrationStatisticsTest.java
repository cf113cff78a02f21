package io.dsflow.engine.kv;

import org.junit.jupiter.api.Test;

import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** CalibrationStatistics' raw sums (what a GPU's accumulators hand over) against its own per-block addition. */
class CalibrationStatisticsTest {
    private static final int LAYERS = 3, HEADS = 6, KV_HEADS = 2, DIM = 5;

    /** Random sums in the fields and the same values flat, layer-major: [layers][heads][dim]. */
    private static double[] fill(double[][][] field, Random rnd) {
        double[] flat = new double[field.length * field[0].length * field[0][0].length];
        int i = 0;
        for (double[][] layer : field) {
            for (double[] head : layer) for (int c = 0; c < head.length; c++) head[c] = flat[i++] = rnd.nextDouble();
        }
        return flat;
    }

    @Test
    void flatSumsAddAsAnotherStatisticsAdds() {
        Random rnd = new Random(1);
        CalibrationStatistics block = new CalibrationStatistics(LAYERS, HEADS, KV_HEADS, DIM);
        double[] qk = fill(block.qk, rnd), q = fill(block.q, rnd), k = fill(block.k, rnd);
        block.tokens = 37;
        CalibrationStatistics viaAdd = new CalibrationStatistics(LAYERS, HEADS, KV_HEADS, DIM);
        CalibrationStatistics viaSums = new CalibrationStatistics(LAYERS, HEADS, KV_HEADS, DIM);
        for (int twice = 0; twice < 2; twice++) {
            viaAdd.add(block);
            viaSums.addSums(qk, q, k, 37);
        }
        assertEquals(74, viaSums.tokens());
        for (KvConfig.ChannelSource s : KvConfig.ChannelSource.values()) {
            for (int l = 0; l < LAYERS; l++) {
                for (int h = 0; h < (s == KvConfig.ChannelSource.K ? KV_HEADS : HEADS); h++) {
                    assertArrayEquals(viaAdd.sums(s, l, h), viaSums.sums(s, l, h), s + " layer " + l + " head " + h);
                }
            }
        }
    }

    @Test
    void sumsOfTheWrongShapeChangeNothing() {
        CalibrationStatistics stats = new CalibrationStatistics(LAYERS, HEADS, KV_HEADS, DIM);
        double[] query = new double[LAYERS * HEADS * DIM], key = new double[LAYERS * KV_HEADS * DIM];
        java.util.Arrays.fill(query, 1);
        assertThrows(IllegalArgumentException.class, () -> stats.addSums(query, query, query, 1), "k has kv heads");
        assertThrows(IllegalArgumentException.class, () -> stats.addSums(query, query, key, -1));
        assertEquals(0, stats.tokens());
        assertEquals(0, stats.sums(KvConfig.ChannelSource.QK, 0, 0)[0], "a refused call adds nothing");
        assertTrue(stats.hasShape(LAYERS, HEADS, KV_HEADS, DIM));
        assertFalse(stats.hasShape(LAYERS, HEADS, HEADS, DIM));
    }

    @Test
    void sumsAreACopy() {
        CalibrationStatistics stats = new CalibrationStatistics(LAYERS, HEADS, KV_HEADS, DIM);
        stats.sums(KvConfig.ChannelSource.Q, 1, 2)[3] = 5;
        assertEquals(0, stats.q[1][2][3]);
    }
}
