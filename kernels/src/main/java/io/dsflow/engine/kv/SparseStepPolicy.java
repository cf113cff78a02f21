package io.dsflow.engine.kv;

/**
 * The sparse decision of one sequence's step, made here for both backends (the CPU's SparseKvCache and the GPU's step
 * planner ask; neither re-derives it): for each layer, whether the sequence's rows attend densely or its decode row
 * selects, over how many candidates, with what budget, and whether the selection ranks the candidates by the query
 * predicted from the previous layer's input (lookahead).
 * <ul>
 *   <li>dense: a dense policy, a prefill (several rows of one sequence in a step), one of the first denseLayers layers
 *       (no labels), no candidates, or (the dense fallback, on by default) every candidate fits the layer's
 *       budget;</li>
 *   <li>select: the top {@link LayerStep#kept} of the candidates by label scores, then attention over sinks, the
 *       selection and the window.</li>
 * </ul>
 * Budgets come from {@link KvConfig#layerBudgets} at the step's context (its new token included); the last context's
 * decisions are kept, since every sequence of a batch started together asks for the same one. Not thread-safe.
 */
public final class SparseStepPolicy {

    /**
     * One layer's decision for a sequence's step.
     *
     * @param selects      whether the decode row selects (else every row of the sequence attends densely)
     * @param candidates   tokens the selection ranks: held tokens that are neither sinks nor in the window
     * @param budget       the layer's budget k_l (0 for dense layers)
     * @param selectsAhead whether the selection ranks by the look-ahead query (KvConfig lookahead)
     */
    public record LayerStep(boolean selects, int candidates, int budget, boolean selectsAhead) {
        /** The tokens a selection keeps: the budget, or every candidate where there are fewer. */
        public int kept() {
            return Math.min(budget, candidates);
        }
    }

    private static final LayerStep DENSE = new LayerStep(false, 0, 0, false);

    private final KvConfig kv;
    private final int layers;
    private final boolean denseFallback;
    private final LayerStep[] prefill;
    private long lastContext = -1;
    private LayerStep[] last;

    /** The policy of a sequence under {@code kv} in a model of {@code layers} layers, with the dense fallback. */
    public SparseStepPolicy(KvConfig kv, int layers) {
        this(kv, layers, true);
    }

    /**
     * @param denseFallback whether a layer whose candidates all fit its budget attends densely (the default, and
     *                      faster) instead of selecting every candidate; the two agree to rounding, which tests check
     */
    public SparseStepPolicy(KvConfig kv, int layers, boolean denseFallback) {
        this.kv = kv;
        this.layers = layers;
        this.denseFallback = denseFallback;
        this.prefill = new LayerStep[layers];
        java.util.Arrays.fill(prefill, DENSE);
    }

    public KvConfig config() {
        return kv;
    }

    /** Whether a layer keeps labels (a sparse policy past the first denseLayers layers). */
    public boolean hasLabels(int layer) {
        return kv.sparse() && layer >= kv.denseLayers();
    }

    /**
     * Whether a layer's decode selections rank by the look-ahead query (KvConfig lookahead; a layer with labels from
     * the third on, but not the last), so the forward pass predicts that query before the layer.
     */
    public boolean selectsAhead(int layer) {
        return hasLabels(layer) && kv.selectsAhead(layer, layers);
    }

    /**
     * The decisions, by layer, for a step that feeds {@code rows} new tokens to a sequence whose context is then
     * {@code context} tokens (the new ones included). The array is shared: do not change it.
     */
    public LayerStep[] step(int rows, long context) {
        if (rows != 1 || !kv.sparse()) return prefill;
        if (context != lastContext) {
            last = decodeStep(context);
            lastContext = context;
        }
        return last;
    }

    private LayerStep[] decodeStep(long context) {
        int[] budgets = kv.layerBudgets(layers, context);
        int candidates = kv.candidates(context);
        LayerStep[] steps = new LayerStep[layers];
        for (int l = 0; l < layers; l++) {
            boolean selects = hasLabels(l) && candidates > 0 && !(denseFallback && candidates <= budgets[l]);
            steps[l] = selects ? new LayerStep(true, candidates, budgets[l], selectsAhead(l)) : DENSE;
        }
        return steps;
    }
}
