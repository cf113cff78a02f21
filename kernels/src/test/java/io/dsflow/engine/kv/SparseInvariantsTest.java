package io.dsflow.engine.kv;

import io.dsflow.engine.model.DType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.TreeSet;
import java.util.stream.Collectors;
import java.util.stream.IntStream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The invariants of docs/algorithm.md, on caches filled with random keys, values and queries (odd sizes). */
class SparseInvariantsTest {
    /**
     * dspp's defaults without the short-context rule (dense-until), which would make these few-dozen-token contexts
     * dense: the invariants are about what a selection does.
     */
    private static KvConfig selecting() {
        return KvConfig.defaults(KvPolicy.DSPP).with(Map.of("dense-until", "0"));
    }

    static final int LAYERS = 4, HEADS = 6, KV_HEADS = 2, D = 18, T = 301;

    /** Fills caches with the same random tokens in every layer; returns the last decode step's outputs per layer. */
    static float[][] run(CpuKvCache cache, long seed) {
        float[][] steps = decode(cache, seed, T);
        return Arrays.copyOfRange(steps, (T - 1) * LAYERS, T * LAYERS);
    }

    /** Decodes {@code tokens} random tokens, layer by layer; returns every step's output, [token * LAYERS + layer]. */
    static float[][] decode(CpuKvCache cache, long seed, int tokens) {
        Random rnd = new Random(seed);
        float[][] out = new float[tokens * LAYERS][];
        float scale = (float) (1 / Math.sqrt(D));
        for (int t = 0; t < tokens; t++) {
            for (int l = 0; l < LAYERS; l++) {
                float[] k = gaussian(rnd, KV_HEADS * D), v = gaussian(rnd, KV_HEADS * D), q = gaussian(rnd, HEADS * D);
                cache.append(l, k, v);
                float[][] o = new float[1][HEADS * D];
                cache.attend(l, new float[][]{q}, 0, 1, o, HEADS, scale);
                out[t * LAYERS + l] = o[0];
            }
        }
        return out;
    }

    static float[] gaussian(Random rnd, int n) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float) rnd.nextGaussian() * 2;
        return x;
    }

    static SparseKvCache sparse(KvConfig cfg) {
        return new SparseKvCache(cfg, LAYERS, HEADS, KV_HEADS, D, randomChannels(7));
    }

    static ChannelConfig randomChannels(long seed) {
        Random rnd = new Random(seed);
        int[][][] order = new int[LAYERS][HEADS][D];
        for (int[][] l : order) {
            for (int[] h : l) {
                for (int c = 0; c < D; c++) h[c] = c;
                for (int c = D - 1; c > 0; c--) {
                    int j = rnd.nextInt(c + 1), t = h[c];
                    h[c] = h[j];
                    h[j] = t;
                }
            }
        }
        return new ChannelConfig(order);
    }

    static void assertClose(float[][] expected, float[][] actual, double tol) {
        for (int l = 0; l < expected.length; l++) {
            for (int i = 0; i < expected[l].length; i++) {
                assertEquals(expected[l][i], actual[l][i], tol, "layer " + l + " element " + i);
            }
        }
    }

    @ParameterizedTest
    @EnumSource(value = KvPolicy.class, names = {"DS", "DSPP"})
    void budgetsAtOrAboveTheCandidateCountGiveDenseOutput(KvPolicy policy) {
        float[][] dense = run(new DenseKvCache(LAYERS, KV_HEADS, D), 1);
        // k_floor past the context: every layer's budget covers all candidates, at every step
        KvConfig full = KvConfig.defaults(policy).with(Map.of("k-floor", "100000", "window", "16", "dense-layers", "1"));
        SparseKvCache throughSelection = sparse(full);
        throughSelection.denseFallback(false);   // select every candidate and merge sinks + selected + window
        int[] steps = new int[1];
        throughSelection.observe((layer, head, mass, idx, err) -> steps[0]++);
        assertClose(dense, run(throughSelection, 1), 2e-5);
        assertTrue(steps[0] > 0, "the sparse path ran");
        assertClose(dense, run(sparse(full), 1), 2e-5);
    }

    @Test
    void fullLabelChannelsWith16BitLabelsAndFullBudgetGiveDense() {
        float[][] dense = run(new DenseKvCache(LAYERS, KV_HEADS, D), 2);
        // budget = candidate count exactly: rho = 1 makes k_mean = T - S - W, which the decay clips at k_max
        KvConfig cfg = selecting().with(Map.of("r", String.valueOf(D), "rho", "1",
                "lambda", "0", "window", "8", "dense-layers", "0"));
        SparseKvCache cache = sparse(cfg);
        cache.denseFallback(false);
        double[] minMass = {1}, maxErr = {0}, minIdx = {1};
        cache.observe((layer, head, mass, idx, err) -> {
            minMass[0] = Math.min(minMass[0], mass);
            maxErr[0] = Math.max(maxErr[0], err);
            minIdx[0] = Math.min(minIdx[0], idx);
        });
        assertClose(dense, run(cache, 2), 2e-5);
        assertEquals(1.0, minMass[0], 1e-5, "every candidate selected: the attended set holds all the mass");
        assertEquals(0.0, maxErr[0], 1e-4, "and the output equals dense");
        assertEquals(1.0, minIdx[0], 1e-9, "and the selection is the exact top-k");
    }

    /**
     * A budget of 3 of 34 candidates: the sparse layer attends to exactly the sinks, the 3 candidates whose labels
     * score highest for each head, and the window. Each head's query points at one label channel, where 3 tokens of
     * its own have large keys; a decoy token agrees with both queries more than any other, but outside the label
     * channels, so the labels do not pick it. The output is attention over those positions, computed here, and differs
     * from dense attention, which the decoy dominates.
     */
    @Test
    void aSmallBudgetAttendsTheSinksTheTopKByLabelsAndTheWindowOnly() {
        int heads = 2, headDim = 8, tokens = 40;
        KvConfig cfg = selecting().with(Map.of("r", "2", "sinks", "2", "window", "4", "k-floor", "9", "k-min", "1",
                "lambda", "0", "dense-layers", "0", "gqa", "per_head", "label-bits", "16"));
        assertEquals(3, cfg.layerBudgets(1, tokens)[0], "k = k_floor - S - W");
        // both heads' channel order 0, 1, 2, ...: with r = 2 their labels keep channels 0 and 1
        int[][][] labelChannelsFirst = {{IntStream.range(0, headDim).toArray(), IntStream.range(0, headDim).toArray()}};
        SparseKvCache sparse = new SparseKvCache(cfg, 1, heads, 1, headDim, new ChannelConfig(labelChannelsFirst));
        DenseKvCache dense = new DenseKvCache(1, 1, headDim);

        // every head's query: its own label channel (head h: channel h) and the decoy's channel 5, outside the labels
        float[] q = new float[heads * headDim];
        q[0] = 2;
        q[headDim + 1] = 2;
        q[5] = q[headDim + 5] = 2;
        List<Set<Integer>> heavy = List.of(Set.of(7, 19, 25), Set.of(4, 12, 30));
        int decoy = 15;
        Random rnd = new Random(14);
        float[][] keys = new float[tokens][headDim], values = new float[tokens][];
        for (int t = 0; t < tokens; t++) {
            for (int c = 0; c < headDim; c++) keys[t][c] = (float) rnd.nextGaussian() * 0.3f;
            for (int h = 0; h < heads; h++) if (heavy.get(h).contains(t)) keys[t][h] = 3;
            if (t == decoy) keys[t][5] = 6;
            values[t] = gaussian(rnd, headDim);
            sparse.append(0, keys[t], values[t]);
            dense.append(0, keys[t], values[t]);
        }
        float scale = (float) (1 / Math.sqrt(headDim));
        float[][] sparseOut = new float[1][heads * headDim], denseOut = new float[1][heads * headDim];
        sparse.attend(0, new float[][]{q}, 0, 1, sparseOut, heads, scale);
        dense.attend(0, new float[][]{q}, 0, 1, denseOut, heads, scale);

        Set<Integer> sinksAndWindow = Set.of(0, 1, 36, 37, 38, 39);   // S = 2 first, W = 4 last; candidates 2 .. 35
        Set<Integer> everyToken = IntStream.range(0, tokens).boxed().collect(Collectors.toSet());
        for (int h = 0; h < heads; h++) {
            Set<Integer> attended = new TreeSet<>(sinksAndWindow);
            attended.addAll(heavy.get(h));
            float[] expected = attention(q, h, headDim, keys, values, attended, scale);
            float[] sparseHead = Arrays.copyOfRange(sparseOut[0], h * headDim, (h + 1) * headDim);
            float[] denseHead = Arrays.copyOfRange(denseOut[0], h * headDim, (h + 1) * headDim);
            assertArrayEquals(expected, sparseHead, 1e-5f, "head " + h + " attends to exactly " + attended);
            assertArrayEquals(attention(q, h, headDim, keys, values, everyToken, scale), denseHead, 1e-5f,
                    "dense attention, computed the same way");
            double largestDifference = 0;
            for (int c = 0; c < headDim; c++) {
                largestDifference = Math.max(largestDifference, Math.abs(sparseHead[c] - denseHead[c]));
            }
            assertTrue(largestDifference > 0.5, "head " + h + ": without the decoy the output is another one, "
                    + largestDifference);
        }
    }

    /** Softmax attention of query head h over the tokens at the given positions (one kv head): the reference. */
    private static float[] attention(float[] q, int h, int headDim, float[][] keys, float[][] values,
                                     Set<Integer> positions, float scale) {
        double[] weight = new double[keys.length];
        double max = Double.NEGATIVE_INFINITY, sum = 0;
        for (int t : positions) {
            for (int c = 0; c < headDim; c++) weight[t] += q[h * headDim + c] * keys[t][c] * (double) scale;
            max = Math.max(max, weight[t]);
        }
        for (int t : positions) sum += weight[t] = Math.exp(weight[t] - max);
        float[] out = new float[headDim];
        for (int t : positions) for (int c = 0; c < headDim; c++) out[c] += (float) (weight[t] / sum * values[t][c]);
        return out;
    }

    @Test
    void lambdaZeroNoSinksNoWindowIsExactlyDoubleSparsity() {
        KvConfig ds = KvConfig.defaults(KvPolicy.DS).with(Map.of("k-floor", "12"));
        KvConfig dspp = selecting().with(Map.of("k-floor", "12", "lambda", "0", "sinks", "0", "window", "0",
                "gqa", "per_head", "label-bits", "16"));   // ds's selection
        float[][] a = run(sparse(ds), 4), b = run(sparse(dspp), 4);
        for (int l = 0; l < LAYERS; l++) assertArrayEquals(a[l], b[l], "layer " + l);
    }

    /**
     * Lookahead: a layer that selects ahead ranks its candidates by the predicted query and attends with its own, so a
     * prediction equal to the layer's own query gives the synchronous output exactly, and another one changes only
     * those layers; it must be handed over before every decode step of such a layer.
     */
    @Test
    void aLayerSelectingAheadRanksByThePredictedQueryAndAttendsWithItsOwn() {
        KvConfig sync = selecting().with(Map.of("k-floor", "30", "window", "8", "dense-layers", "1"));
        KvConfig ahead = sync.with(Map.of("lookahead", "on"));
        SparseKvCache own = sparse(ahead), other = sparse(ahead);
        assertTrue(!own.selectsAhead(1) && own.selectsAhead(2) && !own.selectsAhead(3), "layers 2 .. L - 2");
        Random rnd = new Random(8), noise = new Random(10);   // run()'s tokens for seed 8, with predictions
        float[][] outSync = run(sparse(sync), 8);
        float[][] outOwn = new float[LAYERS][], outOther = new float[LAYERS][];
        float scale = (float) (1 / Math.sqrt(D));
        for (int t = 0; t < T; t++) {
            for (int l = 0; l < LAYERS; l++) {
                float[] k = gaussian(rnd, KV_HEADS * D), v = gaussian(rnd, KV_HEADS * D), q = gaussian(rnd, HEADS * D);
                outOwn[l] = step(own, l, k, v, q, q, scale);
                outOther[l] = step(other, l, k, v, q, gaussian(noise, HEADS * D), scale);
            }
        }
        for (int l = 0; l < LAYERS; l++) assertArrayEquals(outSync[l], outOwn[l], "layer " + l);
        assertArrayEquals(outSync[1], outOther[1], "layer 1 does not select ahead");
        assertArrayEquals(outSync[3], outOther[3], "the last layer does not select ahead");
        assertNotEquals(java.util.Arrays.toString(outSync[2]), java.util.Arrays.toString(outOther[2]),
                "another prediction selects other tokens");
        SparseKvCache missing = sparse(ahead);
        IllegalStateException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalStateException.class,
                () -> run(missing, 8));
        assertTrue(e.getMessage().contains("no query was predicted"), e.getMessage());
    }

    /**
     * lookahead-rerank F: the predicted query narrows the candidates to F k and the true query picks k of them. With F k
     * at least the candidates, any prediction gives the synchronous output exactly; with F = 2 a wrong prediction still
     * changes what layer 2 selects (it only narrows).
     */
    @Test
    void reRankingALookAheadSelectionByTheTrueQueryUndoesAWrongPrediction() {
        KvConfig sync = selecting().with(Map.of("k-floor", "30", "window", "8", "dense-layers", "1"));
        float[][] outSync = run(sparse(sync), 8);
        for (int f : new int[]{64, 2}) {
            SparseKvCache other = sparse(sync.with(Map.of("lookahead", "on", "lookahead-rerank", String.valueOf(f))));
            Random rnd = new Random(8), noise = new Random(10);
            float[][] out = new float[LAYERS][];
            float scale = (float) (1 / Math.sqrt(D));
            for (int t = 0; t < T; t++) {
                for (int l = 0; l < LAYERS; l++) {
                    float[] k = gaussian(rnd, KV_HEADS * D), v = gaussian(rnd, KV_HEADS * D), q = gaussian(rnd, HEADS * D);
                    out[l] = step(other, l, k, v, q, gaussian(noise, HEADS * D), scale);
                }
            }
            if (f == 64) for (int l = 0; l < LAYERS; l++) assertArrayEquals(outSync[l], out[l], "F 64, layer " + l);
            else assertNotEquals(java.util.Arrays.toString(outSync[2]), java.util.Arrays.toString(out[2]), "F 2");
        }
        org.junit.jupiter.api.Assertions.assertThrows(io.dsflow.engine.InvalidRequestException.class,
                () -> sync.with(Map.of("lookahead-rerank", "4")), "re-ranking needs lookahead");
    }

    private static float[] step(SparseKvCache cache, int layer, float[] k, float[] v, float[] q, float[] predicted,
                                float scale) {
        cache.append(layer, k, v);
        if (cache.selectsAhead(layer)) cache.predictQuery(layer, predicted);
        float[][] o = new float[1][HEADS * D];
        cache.attend(layer, new float[][]{q}, 0, 1, o, HEADS, scale);
        return o[0];
    }

    @ParameterizedTest
    @EnumSource(KvConfig.GqaSelection.class)
    void gqaSelectionsRunAndSharedOnesAgreeWithinAGroupSelection(KvConfig.GqaSelection gqa) {
        KvConfig cfg = selecting().with(Map.of("k-floor", "40", "gqa", gqa.name(), "dense-layers", "0"));
        float[][] out = run(sparse(cfg), 5);
        for (float[] l : out) for (float x : l) assertTrue(Float.isFinite(x));
        float[][] dense = run(new DenseKvCache(LAYERS, KV_HEADS, D), 5);
        double err = 0;
        for (int i = 0; i < out[2].length; i++) err += Math.abs(out[2][i] - dense[2][i]);
        assertTrue(err > 0, "a 40-token budget of 300 is sparse");
    }

    /**
     * 8-bit labels (int8 times the row's scale, max / 127) and 4-bit ones (int4, max / 7): the attention mass of 16-bit
     * labels in fewer bytes than the next wider width's.
     */
    @ParameterizedTest(name = "{0}-bit against 16-bit, fewer bytes than {1}-bit")
    @org.junit.jupiter.params.provider.CsvSource({"8, 16", "4, 8"})
    void narrowLabelsSelectAlmostAsWellAsSixteen(int bits, int widerBits) {
        KvConfig c16 = KvConfig.defaults(KvPolicy.DS).with(Map.of("k-floor", "60", "dense-layers", "0"));
        SparseKvCache a = sparse(c16), b = sparse(c16.with(Map.of("label-bits", Integer.toString(bits)))),
                wider = sparse(c16.with(Map.of("label-bits", Integer.toString(widerBits))));
        double[] recall = new double[2];
        int[] n = new int[2];
        a.observe((layer, head, mass, idx, err) -> { recall[0] += mass; n[0]++; });
        b.observe((layer, head, mass, idx, err) -> { recall[1] += mass; n[1]++; });
        run(a, 6);
        run(b, 6);
        run(wider, 6);
        assertTrue(n[0] > 0 && n[0] == n[1]);
        assertEquals(recall[0] / n[0], recall[1] / n[1], 0.05);
        assertTrue(wider.bytes().labels() > b.bytes().labels(), wider.bytes().labels() + " vs " + b.bytes().labels());
    }

    @Test
    void ringHoldsExactlyTheLastWPositionsAfterManyWrapsAndAnAppendTouchesOneSlot() {
        int w = 7, kvDim = 5;
        RingWindow ring = new RingWindow(1, w, kvDim);
        Random rnd = new Random(9);
        for (int t = 0; t < 10 * w + 3; t++) {
            float[][] before = {ring.keys[0].clone(), ring.values[0].clone()};
            int[] posBefore = ring.position[0].clone();
            float[] k = gaussian(rnd, kvDim), v = gaussian(rnd, kvDim);
            int slot = ring.append(0, t, k, v);
            assertEquals(t % w, slot);
            int changed = 0;
            for (int s = 0; s < w; s++) {
                boolean diff = posBefore[s] != ring.position[0][s];
                for (int c = 0; c < kvDim; c++) {
                    diff |= before[0][s * kvDim + c] != ring.keys[0][s * kvDim + c];
                    diff |= before[1][s * kvDim + c] != ring.values[0][s * kvDim + c];
                }
                if (diff) changed++;
            }
            assertEquals(1, changed, "append of token " + t + " changed " + changed + " slots");
            java.util.Set<Integer> held = new java.util.TreeSet<>();
            for (int s = 0; s < w; s++) if (ring.position(0, s) >= 0) held.add(ring.position(0, s));
            java.util.Set<Integer> expected = new java.util.TreeSet<>();
            for (int p = Math.max(0, t - w + 1); p <= t; p++) expected.add(p);
            assertEquals(expected, held);
            for (int c = 0; c < kvDim; c++) assertEquals(k[c], ring.keys[0][slot * kvDim + c]);
        }
    }

    @Test
    void perLayerBudgetsSumExactlyToTheTotal() {
        Random rnd = new Random(11);
        for (int trial = 0; trial < 2000; trial++) {
            int layers = 2 + rnd.nextInt(40), dense = rnd.nextInt(3), kMin = 1 + rnd.nextInt(20);
            int kMax = kMin + rnd.nextInt(5000), kMean = kMin + rnd.nextInt(kMax - kMin + 1);
            double lambda = rnd.nextDouble() * 4;
            int[] k = LayerBudgets.compute(layers, dense, lambda, kMean, kMin, kMax);
            int sparse = Math.max(0, layers - dense);
            long sum = 0;
            for (int l = 0; l < layers; l++) {
                if (l < dense) assertEquals(0, k[l]);
                else assertTrue(k[l] >= kMin && k[l] <= kMax, "k_" + l + " = " + k[l]);
                sum += k[l];
            }
            assertEquals((long) sparse * kMean, sum, "layers " + layers + " lambda " + lambda);
            for (int l = dense + 1; l < layers; l++) assertTrue(k[l] <= k[l - 1] + 1, "decays with depth");
        }
    }

    @Test
    void lambdaZeroIsUniformAndPositiveLambdaDecays() {
        int[] uniform = LayerBudgets.compute(32, 2, 0, 256, 8, 4000);
        for (int l = 2; l < 32; l++) assertEquals(256, uniform[l]);
        int[] decay = LayerBudgets.compute(32, 2, 1, 256, 8, 4000);
        assertTrue(decay[2] > 256 && decay[31] < 256, decay[2] + " .. " + decay[31]);
        assertEquals(Math.exp(-1.0 * 2 / 31) / Math.exp(-1.0), decay[2] / (double) decay[31], 0.02);
    }

    @Test
    void boundedCapacityKeepsSinksAndTheMostRecentTokensInConstantMemory() {
        int cap = 40, sinks = 3;
        KvStore store = new KvStore(1, 1, 2, 16, cap, sinks, null);
        for (int t = 0; t < 500; t++) store.append(0, new float[]{t, t}, new float[]{-t, -t});
        assertEquals(cap, store.length(0));
        java.util.Set<Integer> held = new java.util.TreeSet<>();
        for (int s = 0; s < cap; s++) held.add(store.position(0, s));
        java.util.Set<Integer> expected = new java.util.TreeSet<>();
        for (int p = 0; p < sinks; p++) expected.add(p);
        for (int p = 500 - (cap - sinks); p < 500; p++) expected.add(p);
        assertEquals(expected, held);
        for (int s = 0; s < cap; s++) assertEquals(store.position(0, s), (int) store.keyChannel(0, 0)[s]);
        KvConfig bounded = selecting().with(Map.of("capacity", "120", "k-floor", "30", "dense-layers", "0"));
        SparseKvCache c = sparse(bounded);
        run(c, 8);
        assertEquals(120, c.length());
        assertNotEquals(0, c.bytes().labels());
    }

    /**
     * channels=qk-group: a label row a kv head (the group's heads have one channel list) holds the numbers a label row a
     * query head would (channels=qk given the same lists), in 1 / group of the bytes. Selections from the group's max
     * rank the same floats, so the outputs are equal; a mean selection scores with the group's summed query (the same
     * sum in another order), so they agree to rounding. A channel config whose group members differ is refused.
     */
    @ParameterizedTest
    @org.junit.jupiter.params.provider.CsvSource({"16, max", "8, max", "16, mean", "8, mean"})
    void aLabelRowAKvHeadHoldsWhatRowsAHeadWouldHold(int bits, String gqa) {
        ChannelConfig grouped = randomChannels(7).grouped(KV_HEADS);
        KvConfig perHead = selecting().with(Map.of("k-floor", "40", "gqa", gqa, "dense-layers", "1",
                "label-bits", Integer.toString(bits)));
        KvConfig perKvHead = perHead.with(Map.of("channels", "qk-group"));
        SparseKvCache a = new SparseKvCache(perHead, LAYERS, HEADS, KV_HEADS, D, grouped);
        SparseKvCache b = new SparseKvCache(perKvHead, LAYERS, HEADS, KV_HEADS, D, grouped);
        float[][] outA = run(a, 13), outB = run(b, 13);
        if (gqa.equals("max")) for (int l = 0; l < LAYERS; l++) assertArrayEquals(outA[l], outB[l], "layer " + l);
        else assertClose(outA, outB, 1e-4);
        assertEquals(a.bytes().labels(), b.bytes().labels() * (HEADS / KV_HEADS));
        org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                () -> new SparseKvCache(perKvHead, LAYERS, HEADS, KV_HEADS, D, randomChannels(7)));
    }

    /**
     * A copy holds its own store, ring and labels: decoding on one of the pair leaves the other's contents as they
     * were, and each then decodes exactly as a cache that was never copied (the labels show there: a shared label row
     * would rank another cache's keys). The store is bounded and has wrapped, so every append overwrites a slot both
     * hold.
     */
    @Test
    void copyIsIndependent() {
        KvConfig cfg = selecting().with(Map.of("k-floor", "30", "window", "8", "capacity", "200"));
        SparseKvCache original = sparse(cfg), originalTwin = sparse(cfg), copyTwin = sparse(cfg);
        for (SparseKvCache c : List.of(original, originalTwin, copyTwin)) run(c, 12);
        assertTrue(original.store().wrapped(LAYERS - 1), "301 tokens in 200 slots");
        SparseKvCache copy = (SparseKvCache) original.copy();
        assertArrayEquals(contents(original), contents(copy), "a copy starts with the original's contents");
        assertEquals(original.bytes(), copy.bytes());

        Object[] originalBefore = contents(original);
        assertArrayEquals(decode(copyTwin, 20, 40), decode(copy, 20, 40), "the copy decodes as a cache of its own");
        assertArrayEquals(originalBefore, contents(original), "decoding on the copy left the original as it was");
        assertEquals(T, original.store().appended(0));

        Object[] copyBefore = contents(copy);
        assertArrayEquals(decode(originalTwin, 21, 40), decode(original, 21, 40),
                "the original decodes as if it had never been copied");
        assertArrayEquals(copyBefore, contents(copy), "decoding on the original left the copy as it was");
    }

    /** What a cache holds, layer by layer: its store's tokens (length, positions, keys, values) and its ring. */
    private static Object[] contents(SparseKvCache cache) {
        KvStore store = cache.store();
        RingWindow ring = cache.ring();
        Object[] layers = new Object[LAYERS];
        for (int l = 0; l < LAYERS; l++) {
            int held = store.length(l);
            int[] positions = new int[held], ringPositions = new int[ring.size()];
            for (int s = 0; s < held; s++) positions[s] = store.position(l, s);
            for (int s = 0; s < ring.size(); s++) ringPositions[s] = ring.position(l, s);
            float[][] keys = new float[store.kvDim()][];
            for (int c = 0; c < keys.length; c++) keys[c] = Arrays.copyOf(store.keyChannel(l, c), held);
            layers[l] = new Object[]{held, store.appended(l), positions, keys,
                    Arrays.copyOf(store.values(l), held * store.kvDim()), ringPositions, ring.keys[l].clone(),
                    ring.values[l].clone()};
        }
        return layers;
    }

    @Test
    void fp16RoundingIsExactOnRepresentableValuesAndRoundsToNearestEven() {
        assertEquals(1.5f, DType.roundToHalf(1.5f));
        assertEquals(65504f, DType.roundToHalf(65504f));
        assertEquals(Float.POSITIVE_INFINITY, DType.roundToHalf(70000f));
        assertEquals(1f, DType.roundToHalf(1f + 0x1p-11f));               // halfway: to even
        assertEquals(1f + 0x1p-10f, DType.roundToHalf(1f + 0x1p-11f + 0x1p-20f));
        Random rnd = new Random(1);
        for (int i = 0; i < 100000; i++) {
            float x = (float) (rnd.nextGaussian() * Math.pow(2, rnd.nextInt(30) - 20));
            float h = DType.roundToHalf(x);
            assertEquals(h, DType.roundToHalf(h), "idempotent");
            if (Math.abs(x) > 1e-4) assertEquals(x, h, Math.abs(x) * 0x1p-11 * 1.0001);
        }
    }
    /**
     * gqa=union keeps every head's strongest tokens whatever the scale of the others' scores: head 1's scores are a
     * hundred times head 0's, so the group's max (or mean) would take head 1's top four; the union takes the two heads'
     * first and second choices in turn.
     */
    @Test
    void aUnionSelectionTakesEachHeadsTopTokensInTurn() {
        float[][] approx = {
                {9, 8, 7, 1, 0, 0, 0, 0},
                {0, 0, 0, 0, 0, 900, 800, 700}};
        int[] cand = {10, 11, 12, 13, 14, 15, 16, 17};
        int[][] selected = new int[2][];
        SparseKvCache.unionOfHeadsTops(approx, 0, 2, cand, 4, selected);
        assertArrayEquals(new int[]{10, 11, 15, 16}, selected[0]);
        assertArrayEquals(selected[0], selected[1], "one selection for the group");
    }
}
