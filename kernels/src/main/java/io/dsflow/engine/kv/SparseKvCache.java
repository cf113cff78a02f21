package io.dsflow.engine.kv;

import java.util.Arrays;
import java.util.List;

/**
 * The sparse policies on the CPU: the specification of the GPU kernels (docs/algorithm.md).
 * <ul>
 *   <li>{@code ds}, Double Sparsity: approximate scores of every past token from a label cache of r calibrated
 *       channels, top-k, exact attention over the k;</li>
 *   <li>{@code dspp}, DoubleSparse++: sinks S + ring window W + top-k_l of the candidates between them, exact attention
 *       over the disjoint union (one softmax partial per source, merged by log-sum-exp), k_l decaying with depth at
 *       equal mean. With S = W = 0 and lambda = 0 it is {@code ds}.</li>
 * </ul>
 * The first denseLayers layers, every prefill (several rows) and any decode step whose candidates fit the budget
 * attend densely. Labels exist only for sparse layers. With lookahead (dspp), the layers that {@link #selectsAhead}
 * rank their candidates by the query the forward pass predicted from the previous layer's input; attention itself
 * always uses the layer's own query.
 * <pre>
 *   labels[layer][(h / labelGroup) * r + i][slot]   channel channels[layer][h][i] of the key in that store slot:
 *                                                   16-bit labels as fp16 values, 8- and 4-bit ones as the
 *                                                   integers stored (#writeLabels), in floats; labelGroup:
 *                                                   KvConfig#labelGroup, the query heads one label row serves
 *                                                   (they have the same channels)
 *   labelScales[layer][h / labelGroup][slot]        8- and 4-bit labels: the row's fp16 scale (label = integer *
 *                                                   scale); null for 16-bit labels
 * </pre>
 * Scores ({@link #select}): 16-bit labels in floats, s += q_c * label_c channel after channel; 8- and 4-bit labels in
 * integers, each head's q channels quantised to int8 ({@link LabelQueries}), s = (float) sum_c qi_c label_c * (q's
 * scale * the label's). The GPU's selection kernels compute the same floats.
 */
public final class SparseKvCache implements StoredKvCache {
    private final KvConfig cfg;
    private final int layers, numHeads, kvHeads, headDim, group, r, sinks, labelGroup;
    private final KvStore store;
    private final RingWindow ring;
    private final int[][][] channels;      // [layer][head][r]
    private final float[][][] labels;      // [layer][(head / labelGroup) * r + i][slot]; null for dense layers
    private final float[][][] labelScales; // [layer][head / labelGroup][slot]; null for dense layers, 16-bit labels
    private final float[][] predicted;     // [layer][numHeads * headDim]: lookahead's query for the next decode step
    private AttentionObserver observer;
    /** Observed only: each layer's selection at the previous decode step, [layer][head][k] (sorted). */
    private int[][][] lastSelected;
    /** Observed only: the device row caches a kv head's selections would fill, [factor][layer][kv head]. */
    private RowCache[][][] rowCaches;
    private SparseStepPolicy policy;

    public SparseKvCache(KvConfig cfg, int layers, int numHeads, int kvHeads, int headDim, ChannelConfig channelConfig) {
        this(cfg, layers, numHeads, kvHeads, headDim, channelConfig, null);
    }

    /**
     * With {@code rotary} (the model's, null without rotary positions) and a capacity, positions follow the cache
     * ({@link KvStore}).
     */
    public SparseKvCache(KvConfig cfg, int layers, int numHeads, int kvHeads, int headDim, ChannelConfig channelConfig,
                         Rotary rotary) {
        if (!cfg.sparse()) throw new IllegalArgumentException("SparseKvCache is for ds and dspp");
        if (channelConfig == null || channelConfig.layers() != layers) {
            throw new IllegalArgumentException("a channel config for all " + layers + " layers is required");
        }
        this.cfg = cfg;
        this.layers = layers;
        this.numHeads = numHeads;
        this.kvHeads = kvHeads;
        this.headDim = headDim;
        this.group = numHeads / kvHeads;
        this.r = cfg.labelChannels(headDim);
        this.sinks = cfg.sinks();
        this.labelGroup = cfg.labelGroup(numHeads, kvHeads);
        this.store = new KvStore(layers, kvHeads, headDim, KvStore.INITIAL_CAPACITY, cfg.capacity(), sinks, rotary);
        this.ring = new RingWindow(layers, cfg.window(), kvHeads * headDim);
        this.channels = new int[layers][numHeads][];
        this.labels = new float[layers][][];
        this.labelScales = new float[layers][][];
        this.predicted = new float[layers][];
        this.policy = new SparseStepPolicy(cfg, layers);
        channelConfig.requireLabelRows(cfg, numHeads, kvHeads, headDim);
        for (int l = 0; l < layers; l++) {
            for (int h = 0; h < numHeads; h++) channels[l][h] = channelConfig.top(l, h, r);
            if (!policy.hasLabels(l)) continue;
            labels[l] = new float[numHeads / labelGroup * r][store.capacity()];
            if (cfg.labelBits() < 16) labelScales[l] = new float[numHeads / labelGroup][store.capacity()];
        }
    }

    private SparseKvCache(SparseKvCache o) {
        cfg = o.cfg;
        layers = o.layers;
        numHeads = o.numHeads;
        kvHeads = o.kvHeads;
        headDim = o.headDim;
        group = o.group;
        r = o.r;
        sinks = o.sinks;
        labelGroup = o.labelGroup;
        store = o.store.copy();
        ring = o.ring.copy();
        channels = o.channels;
        policy = new SparseStepPolicy(cfg, layers);
        predicted = new float[layers][];
        labels = copyRows(o.labels, store.capacity());
        labelScales = copyRows(o.labelScales, store.capacity());
    }

    /** Each layer's rows copied at a length ({@code null} layers stay null). */
    private static float[][][] copyRows(float[][][] rows, int length) {
        float[][][] copy = new float[rows.length][][];
        for (int l = 0; l < rows.length; l++) {
            if (rows[l] == null) continue;
            copy[l] = rows[l].clone();
            growRows(copy[l], length);
        }
        return copy;
    }

    /** Each row replaced by its copy at a length. */
    private static void growRows(float[][] rows, int length) {
        for (int i = 0; i < rows.length; i++) rows[i] = Arrays.copyOf(rows[i], length);
    }

    public KvConfig config() {
        return cfg;
    }

    public void observe(AttentionObserver observer) {
        this.observer = observer;
    }

    /**
     * Whether a decode step whose candidates all fit the budget attends densely (the default, and faster) instead of
     * selecting all of them through the sparse path; the two agree to rounding, which the tests check.
     */
    void denseFallback(boolean enabled) {
        this.policy = new SparseStepPolicy(cfg, layers, enabled);
    }

    /** The step decisions this cache follows (SparseStepPolicy: the same that the GPU's step planner asks). */
    public SparseStepPolicy policy() {
        return policy;
    }

    @Override
    public KvStore store() {
        return store;
    }

    public RingWindow ring() {
        return ring;
    }

    @Override
    public int length() {
        return store.length();
    }

    /** A turn of the store's keys (KvStore#rebaseFor) turns the ring's copies and the labels taken from them too. */
    @Override
    public void beforeStep(long first, int rows) {
        long delta = store.rebaseFor(first, rows);
        if (delta == 0) return;
        ring.turn(store.rotary(), headDim, -delta);
        float[] key = new float[kvHeads * headDim];
        for (int l = 0; l < layers; l++) {
            if (labels[l] == null) continue;
            for (int slot = 0; slot < store.length(l); slot++) {
                for (int c = 0; c < key.length; c++) key[c] = store.keys[l][c][slot];
                writeLabels(l, slot, key);
            }
        }
    }

    @Override
    public void append(int layer, float[] key, float[] value) {
        int pos = (int) store.appended(layer);
        int slot = store.append(layer, key, value);
        ring.append(layer, pos, key, value);
        float[][] lab = labels[layer];
        if (lab == null) return;
        if (slot >= lab[0].length) {   // the store grew: the labels and their scales follow it to the same room
            growRows(lab, store.capacity());
            if (labelScales[layer] != null) growRows(labelScales[layer], store.capacity());
        }
        writeLabels(layer, slot, key);
    }

    /** The label rows of a store slot from its key ([kvHeads * headDim], post-RoPE). */
    private void writeLabels(int layer, int slot, float[] key) {
        float[][] lab = labels[layer];
        for (int h = 0; h < numHeads; h += labelGroup) {   // a label row for each head, or each group sharing one
            int base = (h / group) * headDim, row = h / labelGroup;
            int[] ch = channels[layer][h];
            float scale = 0;
            if (cfg.labelBits() < 16) {   // the scale as a GPU keeps it, in fp16
                for (int i = 0; i < r; i++) scale = Math.max(scale, Math.abs(key[base + ch[i]]));
                scale = io.dsflow.engine.model.DType.roundToHalf(scale / levels());
            }
            if (labelScales[layer] != null) labelScales[layer][row][slot] = scale;
            for (int i = 0; i < r; i++) lab[row * r + i][slot] = quantise(key[base + ch[i]], scale);
        }
    }

    /**
     * A label as stored: fp16 (16-bit), or the integer that times the row's fp16 scale approximates it (8-bit: int8,
     * 4-bit: int4; rounded half up and clamped to +-127 or +-7, since the scale's fp16 rounding can put the largest
     * just past it).
     */
    private float quantise(float x, float scale) {
        int q = levels();
        if (cfg.labelBits() < 16) {
            return scale == 0 ? 0 : Math.max(-q, Math.min(q, (float) Math.floor(x / scale + 0.5f)));
        }
        return io.dsflow.engine.model.DType.roundToHalf(x);
    }

    /** The largest integer label: 127 for 8-bit labels, 7 for 4-bit ones. */
    private int levels() {
        return cfg.labelBits() == 4 ? 7 : 127;
    }

    @Override
    public boolean selectsAhead(int layer) {
        return policy.selectsAhead(layer);
    }

    @Override
    public void predictQuery(int layer, float[] q) {
        if (!selectsAhead(layer)) throw new IllegalStateException("layer " + layer + " does not select ahead");
        predicted[layer] = q.clone();
    }

    @Override
    public void attend(int layer, float[][] q, int row0, int rows, float[][] out, int numHeads, float scale) {
        if (rows > 1 || labels[layer] == null) {
            CpuAttention.causal(store, layer, q, row0, rows, out, numHeads, scale);
            return;
        }
        decodeStep(layer, q[row0], out[row0], scale);
    }

    private void decodeStep(int layer, float[] q, float[] out, float scale) {
        float[] ahead = predicted[layer];   // one step's prediction, used once
        predicted[layer] = null;
        long context = store.appended(layer);   // this step's token included
        SparseStepPolicy.LayerStep step = policy.step(1, context)[layer];
        if (observer != null) observer.decided(layer, step);
        if (!step.selects()) {
            CpuAttention.causal(store, layer, new float[][]{q}, 0, 1, new float[][]{out}, numHeads, scale);
            return;
        }
        int window = ring.size();
        // candidates: non-sink slots whose token is older than the window
        int[] cand = candidates(layer, context - window);
        if (cand.length != step.candidates()) {
            throw new IllegalStateException("layer " + layer + " holds " + cand.length + " candidates, the step policy "
                    + "counted " + step.candidates());
        }
        int k = step.kept();
        int[][] selected;
        if (!step.selectsAhead()) {
            selected = select(layer, q, cand, k);
        } else {
            if (ahead == null) throw new IllegalStateException("layer " + layer + " selects ahead but no query was predicted");
            int wide = Math.min(cand.length, k * cfg.lookaheadRerank());
            selected = select(layer, ahead, cand, wide);
            // re-ranking: the predicted query narrowed the candidates to F k, the true query picks k of them
            if (wide > k) for (int h = 0; h < numHeads; h++) selected[h] = select(layer, q, selected[h], k)[h];
        }
        if (observer != null) {
            observeReselection(layer, selected);
            observeRowCaches(layer, selected);
        }
        // exact attention over sinks + selected + window, one softmax partial per source, merged by log-sum-exp
        int sinkCount = Math.min(sinks, store.length(layer));
        int[] sinkSlots = new int[sinkCount];
        for (int i = 0; i < sinkCount; i++) sinkSlots[i] = i;
        float[] sinkQuery = sinkQuery(q, context - 1);
        SoftmaxPartial[] parts = {new SoftmaxPartial(headDim), new SoftmaxPartial(headDim), new SoftmaxPartial(headDim)};
        float[] scores = new float[Math.max(k, Math.max(sinkCount, window))];
        int[] offsets = new int[scores.length];
        for (int h = 0; h < numHeads; h++) {
            int g = h / group;
            storePartial(layer, sinkQuery, h, g, sinkSlots, scale, scores, offsets, parts[0]);
            storePartial(layer, q, h, g, selected[h], scale, scores, offsets, parts[1]);
            windowPartial(layer, q, h, g, scale, scores, offsets, parts[2]);
            SoftmaxPartial.merge(parts, out, h * headDim);
            if (observer != null) observe(layer, q, sinkQuery, h, g, cand, selected[h], out, scale);
        }
    }

    /**
     * The query as the sinks meet it at text position pos: turned back by KvStore#sinkShift where positions follow the
     * cache (q itself otherwise).
     */
    private float[] sinkQuery(float[] q, long pos) {
        long shift = store.sinkShift(pos);
        if (shift == 0) return q;
        float[] turned = q.clone();
        store.rotary().turn(turned, numHeads, -shift);
        return turned;
    }

    /**
     * The k candidates (store slots) each query head attends to beyond sinks and window, ranked by approximate scores
     * from the label cache, s~[h][i] = sum_c sq[h][C_h[c]] * label[h][c][slot_i]: top-k per query head, or one selection
     * per kv head (the group's max, mean or union). Rows of a group are equal for the shared selections.
     */
    private int[][] select(int layer, float[] sq, int[] cand, int k) {
        // A group's mean selection over one shared label row (qk-group) scores once with the group's summed query,
        // qsum[c] = q[h0][C[c]] + q[h0 + 1][C[c]] + ... (heads in order): s~[h0][i] = sum_c qsum[c] * label[c][slot_i],
        // the same sum as the heads' scores added, in a quarter of the products for groups of four.
        boolean groupQuery = cfg.gqaSelection() == KvConfig.GqaSelection.MEAN && labelGroup == group && group > 1;
        float[][] approx = new float[numHeads][];
        float[][] lab = labels[layer];
        float[] qc = new float[r];
        int[] qi = new int[r];
        for (int h = 0; h < numHeads; h += groupQuery ? group : 1) {
            int[] ch = channels[layer][h];
            for (int c = 0; c < r; c++) {
                qc[c] = sq[h * headDim + ch[c]];
                if (groupQuery) for (int j = 1; j < group; j++) qc[c] += sq[(h + j) * headDim + ch[c]];
            }
            float[] s = approx[h] = new float[cand.length];
            if (labelScales[layer] == null) {   // 16-bit labels: in floats, channel after channel
                for (int c = 0; c < r; c++) {
                    float[] row = lab[(h / labelGroup) * r + c];
                    for (int i = 0; i < cand.length; i++) s[i] += qc[c] * row[cand[i]];
                }
            } else {   // integer labels: the quantised query's dot products (exact), then the scales (LabelQueries)
                float queryScale = LabelQueries.quantise(qc, qi);
                int[] dot = new int[cand.length];
                for (int c = 0; c < r; c++) {
                    float[] row = lab[(h / labelGroup) * r + c];
                    for (int i = 0; i < cand.length; i++) dot[i] += qi[c] * (int) row[cand[i]];
                }
                float[] scales = labelScales[layer][h / labelGroup];
                for (int i = 0; i < cand.length; i++) s[i] = LabelQueries.score(dot[i], queryScale, scales[cand[i]]);
            }
        }
        // selection: top-k per query head, or one per kv head from the group's max or mean score (summed query above)
        int[][] selected = new int[numHeads][k];
        int[] picked = new int[k];
        for (int g = 0; g < kvHeads; g++) {
            if (groupQuery) {
                TopK.select(approx[g * group], cand.length, k, picked);
                for (int h = g * group; h < (g + 1) * group; h++) {
                    for (int i = 0; i < k; i++) selected[h][i] = cand[picked[i]];
                }
            } else if (cfg.gqaSelection() == KvConfig.GqaSelection.UNION) {
                unionOfHeadsTops(approx, g * group, group, cand, k, selected);
            } else if (cfg.gqaSelection() == KvConfig.GqaSelection.PER_HEAD) {
                for (int h = g * group; h < (g + 1) * group; h++) {
                    TopK.select(approx[h], cand.length, k, picked);
                    for (int i = 0; i < k; i++) selected[h][i] = cand[picked[i]];
                }
            } else {
                float[] combined = approx[g * group].clone();
                for (int h = g * group + 1; h < (g + 1) * group; h++) {
                    for (int i = 0; i < cand.length; i++) {
                        combined[i] = cfg.gqaSelection() == KvConfig.GqaSelection.MAX
                                ? Math.max(combined[i], approx[h][i]) : combined[i] + approx[h][i];
                    }
                }
                TopK.select(combined, cand.length, k, picked);
                for (int h = g * group; h < (g + 1) * group; h++) {
                    for (int i = 0; i < k; i++) selected[h][i] = cand[picked[i]];
                }
            }
        }
        return selected;
    }

    /**
     * One selection for the heads h0 .. h0 + group - 1 (a kv head's group): each head's candidates ranked by its own
     * approximate score, then taken in turn, the heads' first choices, then their second ones, ..., skipping tokens
     * already taken, until k; so every head keeps its strongest tokens whatever the scale of the others' scores (which
     * the group's max or mean compares). Written to each head's row of selected, in ascending candidate order.
     */
    static void unionOfHeadsTops(float[][] approx, int h0, int group, int[] cand, int k, int[][] selected) {
        int n = cand.length;
        Integer[][] ranked = new Integer[group][];
        int[] picked = new int[k];
        for (int j = 0; j < group; j++) {
            float[] s = approx[h0 + j];
            TopK.select(s, n, k, picked);
            Integer[] r = new Integer[k];
            for (int i = 0; i < k; i++) r[i] = picked[i];
            // best first; ties to the lower index, as TopK takes them
            Arrays.sort(r, (a, b) -> s[a] != s[b] ? Float.compare(s[b], s[a]) : Integer.compare(a, b));
            ranked[j] = r;
        }
        boolean[] taken = new boolean[n];
        int m = 0;
        for (int rank = 0; rank < k && m < k; rank++) {
            for (int j = 0; j < group && m < k; j++) {
                int i = ranked[j][rank];
                if (!taken[i]) {
                    taken[i] = true;
                    m++;
                }
            }
        }
        int[] union = new int[k];
        for (int i = 0, w = 0; i < n && w < k; i++) if (taken[i]) union[w++] = cand[i];
        for (int h = h0; h < h0 + group; h++) selected[h] = union.clone();
    }

    /** Non-sink store slots holding tokens at positions below {@code limit}. */
    private int[] candidates(int layer, long limit) {
        int len = store.length(layer);
        if (!store.wrapped(layer)) {
            int n = (int) Math.max(0, Math.min(len, limit) - sinks);
            int[] c = new int[n];
            for (int i = 0; i < n; i++) c[i] = sinks + i;
            return c;
        }
        int[] c = new int[len];
        int n = 0;
        for (int j = sinks; j < len; j++) if (store.position(layer, j) < limit) c[n++] = j;
        return Arrays.copyOf(c, n);
    }

    private float dotKey(int layer, float[] q, int h, int g, int slot) {
        return store.score(layer, q, h * headDim, g, slot);
    }

    private void storePartial(int layer, float[] q, int h, int g, int[] slots, float scale, float[] scores,
                              int[] offsets, SoftmaxPartial part) {
        for (int i = 0; i < slots.length; i++) {
            scores[i] = dotKey(layer, q, h, g, slots[i]) * scale;
            offsets[i] = slots[i] * store.kvDim + g * headDim;
        }
        part.fill(scores, slots.length, store.values[layer], offsets);
    }

    private void windowPartial(int layer, float[] q, int h, int g, float scale, float[] scores, int[] offsets,
                               SoftmaxPartial part) {
        int n = 0;
        float[] keys = ring.keys[layer];
        for (int slot = 0; slot < ring.size; slot++) {
            if (ring.position[layer][slot] < 0) continue;
            int base = slot * ring.kvDim + g * headDim;
            float s = 0;
            for (int c = 0; c < headDim; c++) s += q[h * headDim + c] * keys[base + c];
            scores[n] = s * scale;
            offsets[n++] = base;
        }
        part.fill(scores, n, ring.values[layer], offsets);
    }

    /**
     * Each head's share of selected tokens its previous decode step of this cache selected too (observed only; tokens
     * by position, so a slot a bounded store reuses for another token is not the same token).
     */
    private void observeReselection(int layer, int[][] selected) {
        if (lastSelected == null) lastSelected = new int[layers][][];
        int[][] last = lastSelected[layer], now = new int[selected.length][];
        for (int h = 0; h < selected.length; h++) {
            now[h] = positions(layer, selected[h]);
            if (last == null || now[h].length == 0) continue;
            int again = 0;
            for (int s : now[h]) if (Arrays.binarySearch(last[h], s) >= 0) again++;
            observer.reselected(layer, h, again / (double) now[h].length);
        }
        lastSelected[layer] = now;
    }

    /**
     * What a device cache of selected rows would hit (issue 26): for each kv head, the rows its step reads (the union
     * of its query heads' selections, or the one shared selection; tokens by position) served by a {@link RowCache} of
     * {@link AttentionObserver#ROW_CACHE_FACTORS} times the most rows a step of the budget can read (k shared, group x
     * k per head, however much the heads' selections overlap); reported from a sequence's second selecting step on
     * (the first only fills it).
     */
    private void observeRowCaches(int layer, int[][] selected) {
        List<Integer> factors = AttentionObserver.ROW_CACHE_FACTORS;
        if (rowCaches == null) rowCaches = new RowCache[factors.size()][layers][];
        boolean shared = cfg.gqaSelection() != KvConfig.GqaSelection.PER_HEAD;
        int stepRows = selected[0].length * (shared ? 1 : group);
        for (int g = 0; g < kvHeads; g++) {
            // the shared selection, or the group's selections with each token once
            int[] asked = shared ? positions(layer, selected[g * group])
                    : Arrays.stream(positions(layer, Arrays.stream(selected, g * group, (g + 1) * group)
                    .flatMapToInt(Arrays::stream).toArray())).distinct().toArray();
            for (int f = 0; f < factors.size(); f++) {
                if (rowCaches[f][layer] == null) rowCaches[f][layer] = new RowCache[kvHeads];
                RowCache cache = rowCaches[f][layer][g];
                boolean first = cache == null;
                int slots = Math.max(1, factors.get(f) * stepRows);
                if (first) cache = rowCaches[f][layer][g] = new RowCache(slots);
                cache.growTo(slots);
                int hits = cache.serve(asked);
                if (!first) observer.rowCache(layer, g, f, asked.length, hits);
            }
        }
    }

    /** The positions of the tokens in {@code slots}, sorted. */
    private int[] positions(int layer, int[] slots) {
        int[] p = new int[slots.length];
        for (int i = 0; i < slots.length; i++) p[i] = store.position(layer, slots[i]);
        Arrays.sort(p);
        return p;
    }

    /** Fidelity of one head's sparse attention against dense attention over the same store. */
    private void observe(int layer, float[] q, float[] sinkQuery, int h, int g, int[] cand, int[] selected,
                         float[] out, float scale) {
        int len = store.length(layer);
        double[] p = new double[len];
        double max = Double.NEGATIVE_INFINITY;
        for (int j = 0; j < len; j++) {
            p[j] = dotKey(layer, j < sinks ? sinkQuery : q, h, g, j) * scale;
            max = Math.max(max, p[j]);
        }
        double sum = 0;
        for (int j = 0; j < len; j++) sum += p[j] = Math.exp(p[j] - max);
        double[] dense = new double[headDim];
        for (int j = 0; j < len; j++) {
            for (int c = 0; c < headDim; c++) dense[c] += p[j] / sum * store.values[layer][j * store.kvDim + g * headDim + c];
        }
        boolean[] attended = new boolean[len];
        for (int j = 0; j < Math.min(sinks, len); j++) attended[j] = true;
        for (int s : selected) attended[s] = true;
        long windowFrom = store.appended(layer) - ring.size();
        for (int j = 0; j < len; j++) if (store.position(layer, j) >= windowFrom) attended[j] = true;
        double mass = 0;
        for (int j = 0; j < len; j++) if (attended[j]) mass += p[j] / sum;
        // exact top-k of the candidates by their true scores
        float[] exact = new float[cand.length];
        for (int i = 0; i < cand.length; i++) exact[i] = dotKey(layer, q, h, g, cand[i]);
        int[] top = new int[selected.length];
        TopK.select(exact, cand.length, selected.length, top);
        java.util.Set<Integer> sel = new java.util.HashSet<>();
        for (int s : selected) sel.add(s);
        int hit = 0;
        for (int t : top) if (sel.contains(cand[t])) hit++;
        double err = 0, norm = 0;
        for (int c = 0; c < headDim; c++) {
            double d = out[h * headDim + c] - dense[c];
            err += d * d;
            norm += dense[c] * dense[c];
        }
        observer.sparseHead(layer, h, mass, hit / (double) selected.length, Math.sqrt(err / Math.max(norm, 1e-30)));
    }

    @Override
    public CpuKvCache copy() {
        return new SparseKvCache(this);
    }

    @Override
    public long heapBytes() {
        long b = store.heapBytes() + ring.heapBytes();
        for (float[][] lab : labels) if (lab != null) b += (long) lab.length * lab[0].length * Float.BYTES;
        for (float[][] sc : labelScales) if (sc != null) b += (long) sc.length * sc[0].length * Float.BYTES;
        return b;
    }

    @Override
    public KvBytes bytes() {
        long labelBytes = 0;
        for (int l = 0; l < layers; l++) {
            if (labels[l] == null) continue;
            long rows = numHeads / labelGroup;
            labelBytes += rows * cfg.labelRowBytes(r) * store.length(l);
        }
        long windowBytes = 2L * layers * ring.size() * ring.kvDim * KvBytes.VALUE_BYTES;
        return new KvBytes(store.bytes(KvBytes.VALUE_BYTES), labelBytes, windowBytes, 0);
    }
}
