package io.dsflow.engine.kv;

import io.dsflow.engine.InvalidRequestException;

import java.util.Locale;
import java.util.Map;

/**
 * Everything that shapes a sequence's KV cache, settable from the command line and from a request's {@code kv}
 * field (same names): docs/algorithm.md. Defaults follow what was measured on the probe model (see the issue notes).
 *
 * @param policy        dense, ds (Double Sparsity) or dspp (DoubleSparse++)
 * @param labelChannels r: label channels per head; 0 means max(16, headDim / 8), capped at headDim
 * @param labelBits     16 (fp16 labels), 8 (int8 labels with a per-token, per-head scale) or 4 (int4 labels with such a
 *                      scale, two a byte)
 * @param sinks         S: first tokens always attended (dspp)
 * @param window        W: last tokens always attended, kept in a ring of W slots (dspp)
 * @param lambda        decay rate of the per-layer budget with depth (dspp); 0 = uniform
 * @param rho           budget as a share of the context: k_mean = max(kFloor, T * rho, short-context floor) - S - W
 * @param kFloor        smallest total budget per layer
 * @param kMin          smallest budget any sparse layer gets after the decay
 * @param denseLayers   the first this many layers attend densely (both ds and dspp)
 * @param channelSource which calibration statistic picks the channels: qk, q or k; qk-group: one channel list per kv
 *                      head, the group's qk lists merged by rank (ChannelConfig#grouped), so the group's heads share
 *                      their labels and a shared selection reads a kv head's labels once instead of once per head
 * @param gqaSelection  per_head: each query head selects its tokens; max / mean: one selection per kv head from the
 *                      group's maximum or mean approximate score (each selected row then serves the whole group);
 *                      union (CPU only so far): one selection per kv head taking the heads' own top tokens in turn
 * @param capacity      C: tokens a sequence keeps (0 = unbounded); past C the oldest non-sink tokens are evicted
 * @param placement     where a GPU keeps a sparse cache's full key/value store (the CPU keeps everything on its heap)
 * @param lookahead     dspp: a sparse layer's decode selection ranks the candidates by a query predicted from the
 *                      previous layer's input (that layer's residual stream through this layer's norm and q
 *                      projection), so a GPU selects, and gathers host-placed rows, on a side stream while the previous
 *                      layer computes; the first two layers and the last select from their own query
 * @param denseUntil    T0 (dspp; 0 = off): contexts up to T0 tokens are attended densely, and beyond them the total
 *                      budget is at least T0^2 / T, so the share of the context read falls from all at T0 to rho at
 *                      T0 / sqrt(rho) (4096 for T0 = 1024, rho = 1/16) instead of starving short contexts: at 1024
 *                      tokens T rho - S - W is 0, and sinks and window alone lost the probe's records (12/20)
 * @param lookaheadRerank F (lookahead; 1 = off; CPU only so far): a layer selecting ahead takes F k candidates by the
 *                      predicted query, and the true query, once computed, picks its k among them
 * @param rowCache      F (placement host, a shared selection; 0 = off): a GPU keeps each sparse layer's recently
 *                      selected rows in device memory, F times the rows a step selects a kv head (RowCache's ring), and
 *                      copies only the rows a step misses over the host link; where rows are read from, never which
 */
public record KvConfig(KvPolicy policy, int labelChannels, int labelBits, int sinks, int window, double lambda,
                       double rho, int kFloor, int kMin, int denseLayers, ChannelSource channelSource,
                       GqaSelection gqaSelection, int capacity, Placement placement,
                       boolean lookahead, int denseUntil, int lookaheadRerank, double rowCache) implements java.io.Serializable {

    public enum ChannelSource { QK, Q, K, QK_GROUP }

    public enum GqaSelection { PER_HEAD, MAX, MEAN, UNION }

    /**
     * DEVICE: the whole cache in device memory. HOST (ds / dspp): the sparse layers' full key/value store in pinned host
     * memory that the device reads through its mapping; the device keeps the labels, the sinks and the window (a ring of
     * W slots), and the selected rows are read from host memory during attention. The dense layers stay on the device.
     */
    public enum Placement { DEVICE, HOST }

    public static final KvConfig DENSE = defaults(KvPolicy.DENSE);

    public KvConfig {
        if (labelChannels < 0) throw new InvalidRequestException("label channels r must be >= 0 (0 = default), got " + labelChannels);
        if (labelBits != 16 && labelBits != 8 && labelBits != 4) {
            throw new InvalidRequestException("label bits must be 16, 8 or 4, got " + labelBits);
        }
        if (sinks < 0 || window < 0) throw new InvalidRequestException("sinks and window must be >= 0");
        if (!Double.isFinite(lambda) || lambda < 0 || lambda > 20) throw new InvalidRequestException("lambda must be in [0, 20], got " + lambda);
        if (!Double.isFinite(rho) || rho <= 0 || rho > 1) throw new InvalidRequestException("rho must be in (0, 1], got " + rho);
        if (kFloor < 1 || kMin < 1) throw new InvalidRequestException("k_floor and k_min must be >= 1");
        if (denseLayers < 0) throw new InvalidRequestException("dense layers must be >= 0, got " + denseLayers);
        if (capacity < 0) throw new InvalidRequestException("capacity must be >= 0 (0 = unbounded), got " + capacity);
        if (denseUntil < 0 || denseUntil > 1 << 20) {
            throw new InvalidRequestException("dense-until must be in [0, 1048576] tokens (0 = off), got "
                    + denseUntil);
        }
        if (placement == null) throw new InvalidRequestException("placement must be device or host");
        if (placement == Placement.HOST && policy == KvPolicy.DENSE) {
            throw new InvalidRequestException("placement host is for the sparse policies (ds, dspp): dense attention reads every row");
        }
        if (lookahead && (policy != KvPolicy.DSPP || window < 1)) {
            throw new InvalidRequestException("lookahead is a dspp option and needs window >= 1 (the newest token is read"
                    + " from the window, not selected)");
        }
        if (lookaheadRerank < 1 || lookaheadRerank > 64) {
            throw new InvalidRequestException("lookahead-rerank must be in [1, 64] (1 = off), got " + lookaheadRerank);
        }
        if (lookaheadRerank > 1 && !lookahead) {
            throw new InvalidRequestException("lookahead-rerank re-ranks a look-ahead selection: it needs lookahead on");
        }
        if (!Double.isFinite(rowCache) || rowCache != 0 && (rowCache < 1 || rowCache > 64)) {
            throw new InvalidRequestException("row-cache must be 0 (off) or in [1, 64] times a step's selected rows, got "
                    + rowCache);
        }
        if (rowCache > 0 && (placement != Placement.HOST || gqaSelection == GqaSelection.PER_HEAD
                || gqaSelection == GqaSelection.UNION)) {
            throw new InvalidRequestException("row-cache keeps host-placed rows on the device: it needs placement=host"
                    + " and a shared selection (gqa=max or mean)");
        }
        if (capacity > 0 && capacity < sinks + window + 1) {
            throw new InvalidRequestException("capacity " + capacity + " must exceed sinks + window = " + (sinks + window));
        }
    }

    /**
     * The defaults of a policy: S = 4, W = 64, lambda = 1, dense until 1024 tokens for dspp (none of them for ds, the
     * published method's uniform budget), rho = 1/16.
     */
    public static KvConfig defaults(KvPolicy policy) {
        boolean pp = policy == KvPolicy.DSPP;
        // dspp: one selection a kv head (the maximum of its heads' label scores) over 4-bit labels, so a step reads a
        // sixteenth of a kv head's rows and labels at 10 bytes a row; on the probe models it answers within one sample
        // of dense where per-head selections over 16-bit labels read four times the rows (docs/results/
        // eval-cpu-2026-12-07-s18.txt), and as 8-bit labels do (eval-cpu-2026-12-07-s19.txt; the GPU eval,
        // bench-h100-2026-12-07-s21.txt), 3-6% faster at 8-64 rows a step than 8-bit ones (the same calls)
        return new KvConfig(policy, 0, pp ? 4 : 16, pp ? 4 : 0, pp ? 64 : 0, pp ? 1.0 : 0.0, 1.0 / 16, 64, 8, 2,
                ChannelSource.QK, pp ? GqaSelection.MAX : GqaSelection.PER_HEAD, 0, Placement.DEVICE, false,
                pp ? 1024 : 0, 1, 0);
    }

    /**
     * Bytes of one label row of {@code r} labels as a label cache holds it: fp16 values, or int8 / int4 values (packed,
     * rounded up to a whole byte) and the row's fp16 scale.
     */
    public long labelRowBytes(int r) {
        return labelValueBytes(r) + (labelBits == 16 ? 0 : 2);
    }

    /**
     * Bytes of one label row's {@code r} values alone (a CUDA cache keeps them in one block and the scales of 8- and
     * 4-bit rows in another): 2 r, r, or (r + 1) / 2 (4-bit: two a byte, a row of odd r padded to a whole byte).
     */
    public long labelValueBytes(int r) {
        return ((long) r * labelBits + 7) / 8;
    }

    /** r for a head dimension. */
    public int labelChannels(int headDim) {
        int r = labelChannels > 0 ? labelChannels : Math.max(16, headDim / 8);
        return Math.min(r, headDim);
    }

    /**
     * This configuration with options applied; keys as on the command line without "--" (r, label-bits, sinks,
     * window, lambda, rho, k-floor, k-min, dense-layers, channels, gqa, capacity, placement, lookahead,
     * dense-until, lookahead-rerank, row-cache; "_" works for "-"). Changing the
     * policy first resets to that policy's defaults, so {"policy": "dspp", "window": 16} means dspp with W = 16.
     */
    public KvConfig with(Map<String, String> options) {
        KvConfig c = this;
        String policy = options.get("policy");
        if (policy != null) c = defaults(KvPolicy.parse(policy));
        int r = c.labelChannels, bits = c.labelBits, s = c.sinks, w = c.window, kf = c.kFloor, km = c.kMin;
        int dl = c.denseLayers, cap = c.capacity, du = c.denseUntil, rerank = c.lookaheadRerank;
        double lam = c.lambda, rh = c.rho, rows = c.rowCache;
        ChannelSource src = c.channelSource;
        GqaSelection gqa = c.gqaSelection;
        Placement placement = c.placement;
        boolean lookahead = c.lookahead;
        for (Map.Entry<String, String> e : options.entrySet()) {
            String key = e.getKey().toLowerCase(Locale.ROOT).replace('_', '-');
            String v = e.getValue();
            switch (key) {
                case "policy" -> { }
                case "r", "label-channels" -> r = integer(key, v);
                case "label-bits" -> bits = integer(key, v);
                case "sinks" -> s = integer(key, v);
                case "window" -> w = integer(key, v);
                case "lambda" -> lam = number(key, v);
                case "rho" -> rh = fraction(key, v);
                case "k-floor" -> kf = integer(key, v);
                case "k-min" -> km = integer(key, v);
                case "dense-layers" -> dl = integer(key, v);
                case "capacity" -> cap = integer(key, v);
                case "channels", "channel-source" -> src = choice(ChannelSource.class, key, v);
                case "gqa", "gqa-selection" -> gqa = choice(GqaSelection.class, key, v);
                case "placement" -> placement = choice(Placement.class, key, v);
                case "lookahead" -> lookahead = bool(key, v);
                case "dense-until" -> du = integer(key, v);
                case "lookahead-rerank" -> rerank = integer(key, v);
                case "row-cache" -> rows = number(key, v);
                default -> throw new InvalidRequestException("unknown kv option '" + e.getKey() + "'");
            }
        }
        return new KvConfig(c.policy, r, bits, s, w, lam, rh, kf, km, dl, src, gqa, cap, placement, lookahead, du,
                rerank, rows);
    }

    /**
     * The per-sequence token budget of a sparse layer's selection before decay: max(kFloor, T rho, min(T, T0^2 / T))
     * - S - W, T0 = {@link #denseUntil} (the last term absent when 0).
     */
    public int meanBudget(int context) {
        long total = Math.max(kFloor, (long) Math.floor(context * rho));
        if (denseUntil > 0 && context > 0) {
            total = Math.max(total, Math.min(context, ((long) denseUntil * denseUntil + context - 1) / context));
        }
        return (int) Math.max(0, total - sinks - window);
    }

    /**
     * A decode step's candidates at context T (this step's token included): the tokens a sequence holds (capacity
     * bounds them) that are neither sinks nor in the window.
     */
    public int candidates(long context) {
        long held = capacity > 0 ? Math.min(context, capacity) : context;
        return (int) Math.max(0, held - sinks - window);
    }

    /** The per-layer budgets at context T (LayerBudgets: decayed with depth at the mean budget), 0 for dense layers. */
    public int[] layerBudgets(int layers, long context) {
        return LayerBudgets.compute(layers, denseLayers, lambda, meanBudget((int) context), kMin,
                Math.max(1, candidates(context)));
    }

    /**
     * Whether layer {@code layer} of {@code layers} selects ahead ({@code lookahead}): a sparse layer from the third on,
     * but not the last.
     */
    public boolean selectsAhead(int layer, int layers) {
        return lookahead && layer >= Math.max(2, denseLayers) && layer < layers - 1;
    }

    public boolean sparse() {
        return policy != KvPolicy.DENSE;
    }

    /** Layers of a {@code numLayers}-layer model that select (and keep labels): none for dense. */
    public int sparseLayers(int numLayers) {
        return sparse() ? numLayers - Math.min(denseLayers, numLayers) : 0;
    }

    /**
     * Query heads one label row serves: the GQA group ({@code heads / kvHeads}) where the channel source gives the
     * group's heads one channel list (k, qk-group), so their labels are the same numbers and are stored once a kv head;
     * else 1, a row a query head.
     */
    public int labelGroup(int heads, int kvHeads) {
        return channelSource == ChannelSource.K || channelSource == ChannelSource.QK_GROUP ? heads / kvHeads : 1;
    }

    @Override
    public String toString() {
        if (!sparse()) return capacity > 0 ? "dense (capacity " + capacity + ")" : "dense";
        return String.format(Locale.ROOT, "%s r=%s/%d-bit S=%d W=%d lambda=%.2f rho=%.4f k_floor=%d k_min=%d"
                        + " dense_until=%d dense_layers=%d channels=%s gqa=%s%s%s%s", policy.id(),
                labelChannels == 0 ? "auto" : labelChannels, labelBits, sinks, window, lambda, rho, kFloor, kMin,
                denseUntil, denseLayers, channelSource.name().toLowerCase(Locale.ROOT).replace('_', '-'),
                gqaSelection.name().toLowerCase(Locale.ROOT), capacity > 0 ? " capacity=" + capacity : "",
                placement == Placement.HOST ? " placement=host" + (rowCache > 0 ? " row-cache=" + rowCache : "") : "",
                lookahead ? " lookahead" + (lookaheadRerank > 1 ? " rerank=" + lookaheadRerank : "") : "");
    }

    private static int integer(String key, String v) {
        try {
            return Integer.parseInt(v.trim());
        } catch (NumberFormatException e) {
            throw new InvalidRequestException("kv option " + key + " must be an integer, got '" + v + "'");
        }
    }

    private static boolean bool(String key, String v) {
        return switch (v.trim().toLowerCase(Locale.ROOT)) {
            case "on", "true", "yes", "1" -> true;
            case "off", "false", "no", "0" -> false;
            default -> throw new InvalidRequestException("kv option " + key + " must be on or off, got '" + v + "'");
        };
    }

    private static double number(String key, String v) {
        try {
            return Double.parseDouble(v.trim());
        } catch (NumberFormatException e) {
            throw new InvalidRequestException("kv option " + key + " must be a number, got '" + v + "'");
        }
    }

    /** A number or a fraction such as 1/16. */
    private static double fraction(String key, String v) {
        int slash = v.indexOf('/');
        if (slash < 0) return number(key, v);
        return number(key, v.substring(0, slash)) / number(key, v.substring(slash + 1));
    }

    private static <E extends Enum<E>> E choice(Class<E> type, String key, String v) {
        try {
            return Enum.valueOf(type, v.trim().toUpperCase(Locale.ROOT).replace('-', '_'));
        } catch (IllegalArgumentException e) {
            throw new InvalidRequestException("kv option " + key + ": unknown value '" + v + "'");
        }
    }
}
