package io.dsflow.engine.kv;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.dsflow.engine.DsflowException;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Iterator;
import java.util.Map;

/**
 * Calibrated heavy channels in the DoubleSparse JSON format:
 * {@code {"model.layers.{l}.self_attn.qk_proj": [[permutation of 0..d-1, most important first] per head], ...}}
 * with {@code q_proj} and {@code k_proj} keys for the other statistics. Channel indices are in Hugging Face's
 * rotate-half layout. Rows are per query head; a file with one row per kv head is expanded to the heads of each
 * group. The runtime takes the first r of each row.
 *
 * <pre>order[layer][queryHead][rank] = channel</pre>
 */
public final class ChannelConfig {
    private static final ObjectMapper JSON = new ObjectMapper();

    private final int[][][] order;

    public ChannelConfig(int[][][] order) {
        this.order = order;
    }

    public int layers() {
        return order.length;
    }

    /** The r most important channels of a query head, most important first. */
    public int[] top(int layer, int head, int r) {
        return Arrays.copyOf(order[layer][head], r);
    }

    public int[] order(int layer, int head) {
        return order[layer][head].clone();
    }

    /**
     * A fixed random order of each query head's channels ({@code layers x heads x headDim}, seeded): what a model with
     * random weights (synthetic:NAME) gets in place of calibrated channels, whose statistics would mean nothing.
     */
    public static ChannelConfig random(int layers, int heads, int headDim, long seed) {
        java.util.Random rnd = new java.util.Random(seed);
        int[][][] order = new int[layers][heads][];
        for (int[][] layer : order) {
            for (int h = 0; h < heads; h++) {
                java.util.List<Integer> ch = new java.util.ArrayList<>();
                for (int i = 0; i < headDim; i++) ch.add(i);
                java.util.Collections.shuffle(ch, rnd);
                layer[h] = ch.stream().mapToInt(Integer::intValue).toArray();
            }
        }
        return new ChannelConfig(order);
    }

    /** Orders each head's channels by a statistic, largest first (ties by channel index). */
    public static ChannelConfig fromStatistic(double[][][] stat) {
        int[][][] order = new int[stat.length][][];
        for (int l = 0; l < stat.length; l++) {
            order[l] = new int[stat[l].length][];
            for (int h = 0; h < stat[l].length; h++) {
                double[] s = stat[l][h];
                order[l][h] = java.util.stream.IntStream.range(0, s.length).boxed()
                        .sorted((a, b) -> s[a] != s[b] ? Double.compare(s[b], s[a]) : Integer.compare(a, b))
                        .mapToInt(Integer::intValue).toArray();
            }
        }
        return new ChannelConfig(order);
    }

    /**
     * A row per query head: this config where it has one already, else (a row per kv head, as the k statistic has) each
     * kv head's row given to the heads of its group, as read() expands such a file.
     */
    public ChannelConfig perQueryHead(int heads) {
        int[][][] rows = new int[order.length][][];
        for (int l = 0; l < order.length; l++) {
            if (order[l].length == heads) return this;
            int group = heads / order[l].length;
            rows[l] = new int[heads][];
            for (int h = 0; h < heads; h++) rows[l][h] = order[l][h / group];
        }
        return new ChannelConfig(rows);
    }

    /**
     * One list per kv head for its group of {@code layers x heads / kvHeads} query heads, given to each of them: the
     * channels by the sum of their ranks in the group's lists (the channel heavy for most of the group first; ties by
     * channel index). The group's heads then have the same label channels, so one label row serves the group.
     */
    public ChannelConfig grouped(int kvHeads) {
        int[][][] merged = new int[order.length][][];
        for (int l = 0; l < order.length; l++) {
            int heads = order[l].length, group = heads / kvHeads, dim = order[l][0].length;
            merged[l] = new int[heads][];
            for (int g = 0; g < kvHeads; g++) {
                long[] rankSum = new long[dim];
                for (int h = g * group; h < (g + 1) * group; h++) {
                    for (int rank = 0; rank < dim; rank++) rankSum[order[l][h][rank]] += rank;
                }
                int[] list = java.util.stream.IntStream.range(0, dim).boxed()
                        .sorted((a, b) -> rankSum[a] != rankSum[b] ? Long.compare(rankSum[a], rankSum[b]) : Integer.compare(a, b))
                        .mapToInt(Integer::intValue).toArray();
                for (int h = g * group; h < (g + 1) * group; h++) merged[l][h] = list;
            }
        }
        return new ChannelConfig(merged);
    }

    /**
     * Checks these channels suit a cache of {@code cfg} for a model of {@code heads} query and {@code kvHeads} kv heads:
     * where it keeps a label row a group ({@link KvConfig#labelGroup} > 1) the group's heads must share their label
     * channels (both backends' caches call this).
     *
     * @throws IllegalArgumentException where they do not
     */
    public void requireLabelRows(KvConfig cfg, int heads, int kvHeads, int headDim) {
        if (cfg.labelGroup(heads, kvHeads) > 1 && !sharedByGroups(kvHeads, cfg.labelChannels(headDim))) {
            throw new IllegalArgumentException("channels " + cfg.channelSource() + ": the heads of a kv head's group do"
                    + " not share their label channels");
        }
    }

    /** Whether the query heads of each group of {@code heads / kvHeads} have the same first r channels in every layer. */
    public boolean sharedByGroups(int kvHeads, int r) {
        for (int[][] layer : order) {
            int group = layer.length / kvHeads;
            for (int h = 0; h < layer.length; h++) {
                if (!Arrays.equals(layer[h], 0, r, layer[h - h % group], 0, r)) return false;
            }
        }
        return true;
    }

    static String key(int layer, KvConfig.ChannelSource source) {
        return "model.layers." + layer + ".self_attn." + switch (source) {
            case QK, QK_GROUP -> "qk_proj";
            case Q -> "q_proj";
            case K -> "k_proj";
        };
    }

    /**
     * Writes the three statistics in one file, as the reference code does: q_proj and qk_proj with a row per query
     * head, k_proj with a row per kv head.
     */
    public static void write(Path file, ChannelConfig qk, ChannelConfig q, ChannelConfig kPerKvHead) {
        ObjectNode root = JSON.createObjectNode();
        for (int l = 0; l < qk.order.length; l++) {
            put(root, key(l, KvConfig.ChannelSource.Q), q.order[l]);
            put(root, key(l, KvConfig.ChannelSource.K), kPerKvHead.order[l]);
            put(root, key(l, KvConfig.ChannelSource.QK), qk.order[l]);
        }
        try {
            Files.writeString(file, root.toString());
        } catch (IOException e) {
            throw new DsflowException("cannot write " + file + ": " + e.getMessage(), e);
        }
    }

    private static void put(ObjectNode root, String key, int[][] rows) {
        ArrayNode heads = root.putArray(key);
        for (int[] row : rows) {
            ArrayNode a = heads.addArray();
            for (int c : row) a.add(c);
        }
    }

    /** Reads the rows of one statistic; checks they are permutations of 0..headDim-1 for every layer and head. */
    public static ChannelConfig read(Path file, KvConfig.ChannelSource source, int layers, int numHeads, int numKvHeads,
                                     int headDim) {
        if (source == KvConfig.ChannelSource.QK_GROUP) {
            return read(file, KvConfig.ChannelSource.QK, layers, numHeads, numKvHeads, headDim).grouped(numKvHeads);
        }
        JsonNode root;
        try {
            root = JSON.readTree(Files.readAllBytes(file));
        } catch (IOException e) {
            throw new DsflowException("cannot read channel file " + file + ": " + e.getMessage().replace('\n', ' '), e);
        }
        if (root == null || !root.isObject()) throw new DsflowException("channel file " + file + " is not a JSON object");
        int[][][] order = new int[layers][numHeads][];
        for (int l = 0; l < layers; l++) {
            String key = key(l, source);
            JsonNode rows = root.get(key);
            if (rows == null || !rows.isArray()) {
                throw new DsflowException("channel file " + file + " has no '" + key + "' (keys: " + firstKeys(root) + ")");
            }
            if (rows.size() != numHeads && rows.size() != numKvHeads) {
                throw new DsflowException("channel file " + file + ": '" + key + "' has " + rows.size()
                        + " rows; the model has " + numHeads + " heads and " + numKvHeads + " kv heads");
            }
            for (int h = 0; h < numHeads; h++) {
                JsonNode row = rows.get(rows.size() == numHeads ? h : h / (numHeads / numKvHeads));
                int[] perm = new int[row.size()];
                boolean[] seen = new boolean[headDim];
                for (int i = 0; i < perm.length; i++) {
                    perm[i] = row.get(i).asInt(-1);
                    if (perm[i] < 0 || perm[i] >= headDim || seen[perm[i]]) {
                        throw new DsflowException("channel file " + file + ": '" + key + "' row " + h
                                + " is not a permutation of 0.." + (headDim - 1));
                    }
                    seen[perm[i]] = true;
                }
                if (perm.length != headDim) {
                    throw new DsflowException("channel file " + file + ": '" + key + "' row " + h + " has " + perm.length
                            + " channels; head_dim is " + headDim);
                }
                order[l][h] = perm;
            }
        }
        return new ChannelConfig(order);
    }

    private static String firstKeys(JsonNode root) {
        StringBuilder b = new StringBuilder();
        Iterator<Map.Entry<String, JsonNode>> it = root.fields();
        for (int i = 0; i < 3 && it.hasNext(); i++) b.append(i == 0 ? "" : ", ").append(it.next().getKey());
        return b.append(it.hasNext() ? ", ..." : "").toString();
    }
}
