package io.dsflow.engine.probe;

import io.dsflow.engine.Engine;
import io.dsflow.engine.RowCacheCounts;
import io.dsflow.engine.Sequence;
import io.dsflow.engine.Tokenizer;
import io.dsflow.engine.kv.AttentionObserver;
import io.dsflow.engine.kv.CpuKvCache;
import io.dsflow.engine.kv.DenseKvCache;
import io.dsflow.engine.kv.KvBytes;
import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.kv.SparseKvCache;
import io.dsflow.engine.sample.Sampler;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Random;

/**
 * The quality probe: retrieval accuracy and attention fidelity of KV policies on the probe model's own format.
 * For each (length, sample) the context (filler and planted facts) is prefilled densely once; each policy then gets a
 * copy of that cache, is fed the question token by token through the decode path and answers greedily, so every
 * question and answer token attends through the policy's cache (the first answer token never comes from a prefill).
 */
public final class Eval {
    private static final Logger LOG = LoggerFactory.getLogger(Eval.class);

    /** A policy under evaluation, by name ("dspp", "dspp lambda=0.5", ...). */
    public record Policy(String name, KvConfig kv) {
    }

    /** Figures of one (task, length, policy) cell. */
    public static final class Cell {
        public final String task;
        public final int length;
        public final String policy;
        public int samples, correct;
        public long contextTokens;
        public double[] massRecallSum, indexRecallSum, relErrorSum;
        public long[] headSteps;
        /** Per layer: the shares of a head's selection its previous decode step selected too, and how many. */
        public double[] reselectedSum;
        public long[] reselectedSteps;
        /**
         * Per size of the modelled device row cache (AttentionObserver.ROW_CACHE_FACTORS): rows its kv heads' steps
         * asked for and how many it held.
         */
        public long[] rowCacheAsked = new long[AttentionObserver.ROW_CACHE_FACTORS.size()];
        public long[] rowCacheHits = new long[AttentionObserver.ROW_CACHE_FACTORS.size()];
        /** A policy with a device row cache (KvConfig#rowCache) on a GPU: the rows its steps asked of it and missed. */
        public RowCacheCounts deviceRowCache = RowCacheCounts.NONE;
        public KvBytes bytes = new KvBytes(0, 0, 0, 0);
        /** A sparse policy on a backend whose caches cannot report fidelity (the GPU): the metrics are unknown. */
        public boolean unobserved;

        Cell(String task, int length, String policy, int layers) {
            this.task = task;
            this.length = length;
            this.policy = policy;
            massRecallSum = new double[layers];
            indexRecallSum = new double[layers];
            relErrorSum = new double[layers];
            headSteps = new long[layers];
            reselectedSum = new double[layers];
            reselectedSteps = new long[layers];
        }

        public double accuracy() {
            return samples == 0 ? 0 : correct / (double) samples;
        }

        /** Mean over the sparse layers' head-steps (1.0 when the policy never attended sparsely; NaN: not measured). */
        public double massRecall() {
            return unobserved ? Double.NaN : mean(massRecallSum, 1.0);
        }

        public double indexRecall() {
            return unobserved ? Double.NaN : mean(indexRecallSum, 1.0);
        }

        public double relError() {
            return unobserved ? Double.NaN : mean(relErrorSum, 0.0);
        }

        /** A layer's mean over its head-steps, null where it never attended sparsely (or was not observed). */
        public Double massRecall(int layer) {
            return headSteps[layer] == 0 ? null : massRecallSum[layer] / headSteps[layer];
        }

        /** A layer's overlap with the exact top-k, null where it never attended sparsely (or was not observed). */
        public Double indexRecall(int layer) {
            return headSteps[layer] == 0 ? null : indexRecallSum[layer] / headSteps[layer];
        }

        /**
         * A layer's share of selected tokens that the same head selected at the previous decode step (consecutive
         * selections' overlap), null where it never selected twice in a row (or was not observed).
         */
        public Double reselected(int layer) {
            return reselectedSteps[layer] == 0 ? null : reselectedSum[layer] / reselectedSteps[layer];
        }

        /** Over all layers' heads and steps; NaN where nothing selected twice in a row. */
        public double reselected() {
            double s = 0;
            long n = 0;
            for (int l = 0; l < reselectedSum.length; l++) {
                s += reselectedSum[l];
                n += reselectedSteps[l];
            }
            return n == 0 ? Double.NaN : s / n;
        }

        /** The modelled row cache's hit rate at size ROW_CACHE_FACTORS.get(factor); NaN where none was asked. */
        public double rowCacheHitRate(int factor) {
            return rowCacheAsked[factor] == 0 ? Double.NaN : rowCacheHits[factor] / (double) rowCacheAsked[factor];
        }

        private double mean(double[] sum, double none) {
            double s = 0;
            long n = 0;
            for (int l = 0; l < sum.length; l++) {
                s += sum[l];
                n += headSteps[l];
            }
            return n == 0 ? none : s / n;
        }

        /** Mean bytes per sample. */
        public KvBytes meanBytes() {
            int n = Math.max(1, samples);
            return new KvBytes(bytes.store() / n, bytes.labels() / n, bytes.window() / n, bytes.sinks() / n);
        }
    }

    private Eval() {
    }

    /**
     * @param recentTokens 0, or plant every fact within about the last this many tokens of the context (to show a
     *                     bounded cache answering while the fact is among the tokens it keeps)
     */
    public static List<Cell> run(Engine engine, List<String> tasks, List<Integer> lengths, List<Policy> policies,
                                 int samples, long seed, int recentTokens) {
        Tokenizer tok = engine.tokenizer();
        int layers = engine.config().numLayers();
        Map<String, Cell> cells = new LinkedHashMap<>();
        for (int length : lengths) {
            long t0 = System.nanoTime();
            for (String task : tasks) {
                for (int i = 0; i < samples; i++) {
                    long sampleSeed = seed * 1_000_003L + length * 31L + i * 7919L + task.hashCode();
                    ProbePrompts.Sample s = sampleOfLength(tok, task, length, sampleSeed, recentTokens);
                    int[] context = tok.encode(s.context(), true);
                    int[] question = tok.encode(s.question(), false);
                    Sequence prefilled = engine.newSequence(KvConfig.DENSE);
                    engine.prefill(prefilled, context);
                    for (Policy p : policies) {
                        Cell cell = cells.computeIfAbsent(task + "/" + length + "/" + p.name(),
                                k -> new Cell(task, length, p.name(), layers));
                        answer(engine, prefilled, context, p.kv(), question, s.answer(), cell);
                        cell.contextTokens += context.length;
                    }
                    prefilled.cache().release();
                    LOG.info(String.format(Locale.ROOT, "eval: length %d %s sample %d/%d (%d context tokens), %.1f s",
                            length, task, i + 1, samples, context.length, (System.nanoTime() - t0) / 1e9));
                }
            }
            for (Policy p : policies) {
                StringBuilder b = new StringBuilder();
                for (String task : tasks) {
                    Cell c = cells.get(task + "/" + length + "/" + p.name());
                    b.append(String.format(Locale.ROOT, " %s %d/%d (mass recall %.3f)", task, c.correct, c.samples, c.massRecall()));
                }
                LOG.info(String.format(Locale.ROOT, "eval: length %d policy %s:%s", length, p.name(), b));
            }
        }
        return new ArrayList<>(cells.values());
    }

    private static void answer(Engine engine, Sequence prefilled, int[] context, KvConfig kv, int[] question,
                               String expected, Cell cell) {
        Sequence seq;
        if (prefilled.cache() instanceof DenseKvCache dense) {   // the CPU: the dense prefill replayed into the policy
            // the backend that made a CPU cache makes CPU caches
            CpuKvCache target = (CpuKvCache) engine.backend().newCache(kv,
                    kv.sparse() ? engine.channels(kv.channelSource()) : null);
            seq = Sequence.replay(prefilled, dense.store(), target);
        } else {   // a GPU cache: prefill the context again under the policy (a prefill is dense under every policy)
            seq = engine.newSequence(kv);
            engine.prefill(seq, context);
        }
        if (kv.sparse() && !(seq.cache() instanceof SparseKvCache)) cell.unobserved = true;
        if (seq.cache() instanceof SparseKvCache sparse) {
            sparse.observe(new AttentionObserver() {
                @Override
                public void sparseHead(int layer, int head, double mass, double idx, double err) {
                    cell.massRecallSum[layer] += mass;
                    cell.indexRecallSum[layer] += idx;
                    cell.relErrorSum[layer] += err;
                    cell.headSteps[layer]++;
                }

                @Override
                public void reselected(int layer, int head, double share) {
                    cell.reselectedSum[layer] += share;
                    cell.reselectedSteps[layer]++;
                }

                @Override
                public void rowCache(int layer, int kvHead, int factor, int rows, int hits) {
                    cell.rowCacheAsked[factor] += rows;
                    cell.rowCacheHits[factor] += hits;
                }
            });
        }
        boolean rowCache = kv.rowCache() > 0 && engine.backend().takeRowCacheCounts() != null;   // (from zero)
        float[] logits = null;
        for (int t : question) logits = engine.decode(List.of(seq), new int[]{t})[0];
        // " 58213." is a space, one token per digit and a period: read the digits greedily
        int[] out = new int[expected.length() + 2];
        for (int i = 0; i < out.length; i++) {
            out[i] = Sampler.argmax(logits);
            if (i + 1 < out.length) logits = engine.decode(List.of(seq), new int[]{out[i]})[0];
        }
        String text = engine.tokenizer().decode(out).trim();
        boolean ok = text.startsWith(expected) && (text.length() == expected.length() || !Character.isDigit(text.charAt(expected.length())));
        if (rowCache) {
            cell.deviceRowCache = cell.deviceRowCache.plus(engine.backend().takeRowCacheCounts());
        }
        cell.samples++;
        if (ok) cell.correct++;
        cell.bytes = cell.bytes.plus(seq.cache().bytes());
        seq.cache().release();
    }

    /** A sample whose context is close to (not over) {@code length} tokens, the same for the same seed. */
    static ProbePrompts.Sample sampleOfLength(Tokenizer tok, String task, int length, long seed, int recentTokens) {
        int sentences = Math.max(1, length / 10);
        ProbePrompts.Sample best = null;
        for (int attempt = 0; attempt < 8; attempt++) {
            // about ten tokens a sentence: the facts go into the sentences of the last recentTokens
            int minDepth = recentTokens > 0 ? Math.max(0, sentences - recentTokens / 10) : 0;
            ProbePrompts.Sample s = build(task, new Random(seed), sentences, minDepth);
            int n = tok.encode(s.context(), true).length;
            if (n <= length) best = s;
            if (n <= length && n >= length * 0.98) return s;
            sentences = Math.max(1, (int) Math.floor(sentences * (length * 0.99) / n));
        }
        if (best == null) throw new IllegalStateException("cannot build a " + task + " context under " + length + " tokens");
        return best;
    }

    private static ProbePrompts.Sample build(String task, Random rnd, int sentences, int minDepth) {
        return switch (task) {
            case "passkey" -> ProbePrompts.passKey(rnd, sentences, minDepth);
            case "records" -> ProbePrompts.records(rnd, sentences, minDepth);
            default -> throw new io.dsflow.engine.InvalidRequestException("unknown eval task '" + task + "' (passkey, records)");
        };
    }
}
