package io.dsflow.engine.kv;

import io.dsflow.engine.cpu.CpuOps;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;

import static io.dsflow.engine.kv.SparseInvariantsTest.D;
import static io.dsflow.engine.kv.SparseInvariantsTest.HEADS;
import static io.dsflow.engine.kv.SparseInvariantsTest.KV_HEADS;
import static io.dsflow.engine.kv.SparseInvariantsTest.LAYERS;
import static io.dsflow.engine.kv.SparseInvariantsTest.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A bounded cache of a rotary model keeps positions within the cache, as StreamingLLM assigns them: after every token
 * its attention equals attention over the tokens it holds (the sinks, then the last tokens in text order) with each
 * key rotated to its index in that list and the query to the last index, whatever the text position and however many
 * times the store has turned its keys back (KvStore#rebaseFor); and no rotary position reaches the model's limit.
 * Random keys, values and queries of odd head counts, on the dense cache and on dspp's sparse path.
 */
class PositionsWithinCacheTest {
    static final int CAPACITY = 24, SINKS = 4, MAX_POSITIONS = 40, TOKENS = 150;
    static final Rotary ROTARY = new Rotary(inverseFrequencies(), D, MAX_POSITIONS);

    static float[] inverseFrequencies() {
        float[] f = new float[D / 2];
        for (int i = 0; i < f.length; i++) f[i] = (float) Math.pow(10000, -2.0 * i / D);
        return f;
    }

    @Test
    void denseAttentionIsStreamingLlmsOverTheHeldTokens() {
        check(new DenseKvCache(LAYERS, KV_HEADS, D, CAPACITY, SINKS, ROTARY));
    }

    @Test
    void dsppsSparsePathWithEveryCandidateSelectedIsTooAndItsRingAndLabelsTurnWithTheStore() {
        KvConfig cfg = KvConfig.defaults(KvPolicy.DSPP).with(Map.of("dense-until", "0", "capacity",
                String.valueOf(CAPACITY), "sinks", String.valueOf(SINKS), "window", "6", "k-floor", "100000",
                "dense-layers", "0"));
        SparseKvCache cache = new SparseKvCache(cfg, LAYERS, HEADS, KV_HEADS, D,
                SparseInvariantsTest.randomChannels(7), ROTARY);
        cache.denseFallback(false);   // every candidate through the selection, merged with sinks and window
        int[] sparseSteps = new int[1];
        cache.observe((layer, head, mass, idx, err) -> {
            sparseSteps[0]++;
            assertEquals(1.0, mass, 1e-5, "every held token attended");
        });
        check(cache);
        assertTrue(sparseSteps[0] > 0, "the sparse path ran");
    }

    @Test
    void aLimitTheModelsPositionsRunOutBeforeKeepsTextPositions() {
        DenseKvCache cache = new DenseKvCache(LAYERS, KV_HEADS, D, MAX_POSITIONS, SINKS, ROTARY);
        assertEquals(false, cache.positionsWithinCache());
        assertEquals(MAX_POSITIONS, cache.tokenLimit());
        assertEquals(false, new DenseKvCache(LAYERS, KV_HEADS, D, CAPACITY, SINKS, null).positionsWithinCache());
    }

    /**
     * A step of more rows than a bounded cache holds, without sinks: its first rows' own keys are gone by the time they
     * attend (the later rows took every slot), so they see nothing and get zeros, not NaN.
     */
    @Test
    void aRowWhoseTokensAStepEvictedAttendsToNothingAndGetsZeros() {
        DenseKvCache cache = new DenseKvCache(1, KV_HEADS, D, 8, 0, ROTARY);
        Random rnd = new Random(5);
        float[][] q = new float[20][];
        for (int r = 0; r < 20; r++) {
            cache.append(0, gaussian(rnd, KV_HEADS * D), gaussian(rnd, KV_HEADS * D));
            q[r] = gaussian(rnd, HEADS * D);
        }
        float[][] out = new float[20][HEADS * D];
        cache.attend(0, q, 0, 20, out, HEADS, 0.25f);
        for (int r = 0; r < 20; r++) {
            for (float v : out[r]) {
                assertTrue(!Float.isNaN(v) && (r >= 12 || v == 0), "row " + r + ": " + v);
            }
        }
        assertTrue(out[19][0] != 0);
    }

    /** Feeds TOKENS random tokens as the CPU forward pass does and checks every step against the reference. */
    private static void check(CpuKvCache cache) {
        assertTrue(cache.positionsWithinCache());
        Random rnd = new Random(3);
        float scale = (float) (1 / Math.sqrt(D));
        float[][][] keys = new float[LAYERS][TOKENS][], values = new float[LAYERS][TOKENS][];
        long turnedBack = 0;
        for (int t = 0; t < TOKENS; t++) {
            cache.beforeStep(t, 1);
            long rotary = t - cache.positionBase();
            assertTrue(rotary >= 0 && rotary < MAX_POSITIONS, "rotary position " + rotary + " at text position " + t);
            turnedBack = Math.max(turnedBack, cache.positionBase());
            for (int l = 0; l < LAYERS; l++) {
                keys[l][t] = gaussian(rnd, KV_HEADS * D);
                values[l][t] = gaussian(rnd, KV_HEADS * D);
                float[] q = gaussian(rnd, HEADS * D);
                float[] k = keys[l][t].clone(), qr = q.clone();
                CpuOps.rope(k, KV_HEADS, D, (int) rotary, ROTARY.invFreq());
                CpuOps.rope(qr, HEADS, D, (int) rotary, ROTARY.invFreq());
                cache.append(l, k, values[l][t]);
                float[][] out = new float[1][HEADS * D];
                cache.attend(l, new float[][]{qr}, 0, 1, out, HEADS, scale);
                float[] expected = streamingLlm(keys[l], values[l], q, t, scale);
                for (int i = 0; i < expected.length; i++) {
                    assertEquals(expected[i], out[0][i], 2e-4, "token " + t + ", layer " + l + ", element " + i);
                }
            }
        }
        assertTrue(turnedBack > 0, "the store turned its keys back");
    }

    /**
     * Attention of the query of token t over the tokens a cache of CAPACITY with SINKS sinks holds after it, each key
     * rotated to its index among them and the query to the last.
     */
    static float[] streamingLlm(float[][] keys, float[][] values, float[] q, int t, float scale) {
        List<Integer> held = new ArrayList<>();
        for (int p = 0; p <= t; p++) if (t < CAPACITY || p < SINKS || p > t - (CAPACITY - SINKS)) held.add(p);
        int n = held.size(), group = HEADS / KV_HEADS;
        float[] qr = q.clone();
        CpuOps.rope(qr, HEADS, D, n - 1, ROTARY.invFreq());
        float[][] k = new float[n][];
        for (int i = 0; i < n; i++) {
            k[i] = keys[held.get(i)].clone();
            CpuOps.rope(k[i], KV_HEADS, D, i, ROTARY.invFreq());
        }
        float[] out = new float[HEADS * D];
        for (int h = 0; h < HEADS; h++) {
            int g = h / group;
            double[] s = new double[n];
            double max = Double.NEGATIVE_INFINITY, sum = 0;
            for (int i = 0; i < n; i++) {
                for (int c = 0; c < D; c++) s[i] += (double) qr[h * D + c] * k[i][g * D + c];
                s[i] *= scale;
                max = Math.max(max, s[i]);
            }
            for (int i = 0; i < n; i++) sum += s[i] = Math.exp(s[i] - max);
            for (int i = 0; i < n; i++) {
                float[] v = values[held.get(i)];
                for (int c = 0; c < D; c++) out[h * D + c] += (float) (s[i] / sum * v[g * D + c]);
            }
        }
        return out;
    }
}
