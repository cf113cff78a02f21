package io.dsflow.engine.cuda;

import io.dsflow.engine.kv.AttentionObserver;
import io.dsflow.engine.kv.ChannelConfig;
import io.dsflow.engine.kv.CpuKvCache;
import io.dsflow.engine.kv.DenseKvCache;
import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.kv.KvPolicy;
import io.dsflow.engine.kv.SparseKvCache;
import io.dsflow.engine.kv.SparseStepPolicy.LayerStep;
import io.dsflow.engine.model.Architecture;
import io.dsflow.engine.model.ModelConfig;
import io.dsflow.engine.model.RopeConfig;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The GPU's step plan (StepPlanner's selection runs, no GPU needed) and the CPU's SparseKvCache decide the same for
 * random batches: per decode row and layer, dense or select, over how many candidates, with what budget, selected
 * ahead or not; prefill rows stay dense; look-ahead rows staged from host memory come first in a layer.
 */
class StepPlanAgreementTest {
    static final int LAYERS = 7, HEADS = 4, KV_HEADS = 2, D = 16;
    static final ModelConfig MODEL = new ModelConfig(Architecture.LLAMA, HEADS * D, LAYERS, HEADS, KV_HEADS, D, 96,
            256, 4096, 1e-5f, new RopeConfig(10000, "default", 1, 1, 1, 4096), false, false, false, true, 4096, 1,
            new int[]{2});

    /** A segment of a random batch: its policy, the tokens it held before the step and the rows it feeds. */
    record Segment(KvConfig kv, int held, int rows) {
    }

    /** The GPU planner's view of a cache: what CudaKvCache reports for the same policy and length. */
    record PlannedView(KvConfig sparse, int length, int labelChannels, int labelBits, int labelGroup)
            implements StepPlanner.PlannedCache {
        @Override
        public boolean onHost(int layer) {
            return sparse != null && sparse.placement() == KvConfig.Placement.HOST && layer >= sparse.denseLayers();
        }

        @Override
        public int capacity() {
            return Integer.highestOneBit(Math.max(256, length + 1) - 1) << 1;
        }
    }

    @Test
    void cpuAndGpuPlansAgreeOnRandomBatches() {
        Random rnd = new Random(21);
        int selecting = 0, ahead = 0, staged = 0, fallback = 0;
        for (int trial = 0; trial < 60; trial++) {
            List<Segment> batch = new ArrayList<>();
            int n = 1 + rnd.nextInt(6);
            for (int s = 0; s < n; s++) {
                batch.add(new Segment(randomPolicy(rnd), 1 + rnd.nextInt(500), rnd.nextInt(5) == 0 ? 2 + rnd.nextInt(20)
                        : 1));
            }
            Map<Integer, LayerStep[]> cpu = cpuDecisions(batch, rnd);
            StepPlanner.SelectionRuns gpu = gpuRuns(batch);
            int[] firstRow = new int[n];
            for (int s = 1; s < n; s++) firstRow[s] = firstRow[s - 1] + batch.get(s - 1).rows();
            int decodeRows = firstRow[n - 1] + batch.get(n - 1).rows(), stride = Math.max(1, decodeRows);
            for (int s = 0; s < n; s++) {
                for (int r = 0; r < batch.get(s).rows(); r++) {
                    int row = firstRow[s] + r;
                    for (int l = 0; l < LAYERS; l++) {
                        LayerStep want = cpu.containsKey(s) ? cpu.get(s)[l] : null;
                        int p = position(gpu, l, row, stride);
                        String where = "trial " + trial + " segment " + s + " " + batch.get(s) + " layer " + l;
                        if (want == null || !want.selects()) {
                            assertEquals(-1, p, where + ": dense on the CPU, so not selecting on the GPU");
                            assertTrue(isDense(gpu, l, row, stride), where + ": listed among the dense rows");
                            if (want != null && batch.get(s).kv().sparse()) fallback++;
                            continue;
                        }
                        assertTrue(p >= 0, where + ": selects on the CPU, so on the GPU");
                        int at = (l * stride + p) * SparseRowDescriptor.FIELDS;
                        assertEquals(want.candidates(), gpu.descriptors()[at + SparseRowDescriptor.Field.CAND.ordinal()],
                                where + ": candidates");
                        assertEquals(want.budget(), gpu.descriptors()[at + SparseRowDescriptor.Field.K.ordinal()],
                                where + ": budget");
                        assertEquals(want.selectsAhead(), p < gpu.aheadCount()[l], where + ": selected ahead");
                        boolean stagedRow = want.selectsAhead() && batch.get(s).kv().placement()
                                == KvConfig.Placement.HOST && batch.get(s).kv().gqaSelection()
                                != KvConfig.GqaSelection.PER_HEAD;
                        assertEquals(stagedRow, p < gpu.stagedCount()[l], where + ": staged from host memory");
                        selecting++;
                        if (want.selectsAhead()) ahead++;
                        if (stagedRow) staged++;
                    }
                }
            }
        }
        // the random batches reach every kind of decision
        assertTrue(selecting > 200 && ahead > 50 && staged > 10 && fallback > 50,
                selecting + " selecting, " + ahead + " ahead, " + staged + " staged, " + fallback + " dense fallbacks");
    }

    private static KvConfig randomPolicy(Random rnd) {
        if (rnd.nextInt(6) == 0) return KvConfig.DENSE;
        KvPolicy policy = rnd.nextBoolean() ? KvPolicy.DS : KvPolicy.DSPP;
        Map<String, String> o = new HashMap<>();
        o.put("k-floor", String.valueOf(4 + rnd.nextInt(200)));
        o.put("k-min", String.valueOf(1 + rnd.nextInt(8)));
        o.put("dense-layers", String.valueOf(rnd.nextInt(3)));
        o.put("gqa", List.of("per_head", "max", "mean").get(rnd.nextInt(3)));
        o.put("label-bits", List.of("16", "8", "4").get(rnd.nextInt(3)));
        o.put("placement", rnd.nextBoolean() ? "device" : "host");
        if (policy == KvPolicy.DSPP) {
            o.put("sinks", String.valueOf(rnd.nextInt(5)));
            o.put("window", String.valueOf(1 + rnd.nextInt(40)));
            o.put("lambda", String.valueOf(rnd.nextDouble() * 2));
            o.put("lookahead", rnd.nextBoolean() ? "on" : "off");
            // the short-context rule at sizes these contexts reach, or off (the default's 1024 would make most dense)
            o.put("dense-until", rnd.nextInt(3) == 0 ? String.valueOf(16 + rnd.nextInt(200)) : "0");
        }
        return KvConfig.defaults(policy).with(o);
    }

    /** Each decode segment's decisions by layer, from a CPU cache run through the step (null: a dense policy). */
    private static Map<Integer, LayerStep[]> cpuDecisions(List<Segment> batch, Random rnd) {
        Map<Integer, LayerStep[]> decisions = new HashMap<>();
        for (int s = 0; s < batch.size(); s++) {
            Segment seg = batch.get(s);
            CpuKvCache cache = seg.kv().sparse()
                    ? new SparseKvCache(seg.kv(), LAYERS, HEADS, KV_HEADS, D, channels(seg.kv(), rnd))
                    : new DenseKvCache(LAYERS, KV_HEADS, D);
            for (int t = 0; t < seg.held(); t++) {
                for (int l = 0; l < LAYERS; l++) cache.append(l, gaussian(rnd, KV_HEADS * D), gaussian(rnd, KV_HEADS * D));
            }
            LayerStep[] steps = new LayerStep[LAYERS];
            if (cache instanceof SparseKvCache sparse) {
                sparse.observe(new AttentionObserver() {
                    @Override
                    public void sparseHead(int layer, int head, double mass, double idx, double err) {
                    }

                    @Override
                    public void decided(int layer, LayerStep step) {
                        steps[layer] = step;
                    }
                });
            }
            float[][] q = new float[seg.rows()][], out = new float[seg.rows()][HEADS * D];
            for (int r = 0; r < seg.rows(); r++) q[r] = gaussian(rnd, HEADS * D);
            for (int l = 0; l < LAYERS; l++) {
                for (int r = 0; r < seg.rows(); r++) cache.append(l, gaussian(rnd, KV_HEADS * D), gaussian(rnd, KV_HEADS * D));
                if (seg.rows() == 1 && cache.selectsAhead(l)) cache.predictQuery(l, gaussian(rnd, HEADS * D));
                cache.attend(l, q, 0, seg.rows(), out, HEADS, 0.25f);
            }
            if (seg.kv().sparse()) decisions.put(s, steps);
        }
        return decisions;
    }

    /** The GPU planner's selection runs for the same batch, every row listed as a decode row (no prefill tiles). */
    private static StepPlanner.SelectionRuns gpuRuns(List<Segment> batch) {
        List<PlannedView> caches = new ArrayList<>();
        int[] segmentRows = new int[batch.size()];
        int rows = 0;
        for (int s = 0; s < batch.size(); s++) {
            Segment seg = batch.get(s);
            KvConfig kv = seg.kv().sparse() ? seg.kv() : null;
            caches.add(new PlannedView(kv, seg.held(), kv == null ? 0 : kv.labelChannels(D),
                    kv == null ? 0 : kv.labelBits(), kv == null ? 1 : kv.labelGroup(HEADS, KV_HEADS)));
            segmentRows[s] = seg.rows();
            rows += seg.rows();
        }
        int[] rowsOf = new int[rows], segmentOf = new int[rows];
        for (int s = 0, r = 0; s < batch.size(); s++) {
            for (int i = 0; i < segmentRows[s]; i++, r++) {
                rowsOf[r] = r;
                segmentOf[r] = s;
            }
        }
        return new StepPlanner(null, MODEL, null).selectionRuns(caches, segmentRows, rowsOf, rows, segmentOf);
    }

    /** Where a batch row is among a layer's selecting rows, or -1. */
    private static int position(StepPlanner.SelectionRuns runs, int layer, int row, int stride) {
        for (int p = 0; p < runs.selectCount()[layer]; p++) if (runs.selectRows()[layer * stride + p] == row) return p;
        return -1;
    }

    private static boolean isDense(StepPlanner.SelectionRuns runs, int layer, int row, int stride) {
        for (int p = 0; p < runs.denseCount()[layer]; p++) if (runs.denseRows()[layer * stride + p] == row) return true;
        return false;
    }

    private static ChannelConfig channels(KvConfig kv, Random rnd) {
        int[][][] order = new int[LAYERS][HEADS][D];
        for (int[][] layer : order) {
            for (int[] head : layer) {
                for (int c = 0; c < D; c++) head[c] = c;
                for (int c = D - 1; c > 0; c--) {
                    int j = rnd.nextInt(c + 1), t = head[c];
                    head[c] = head[j];
                    head[j] = t;
                }
            }
        }
        ChannelConfig ch = new ChannelConfig(order);
        return kv.labelGroup(HEADS, KV_HEADS) > 1 ? ch.grouped(KV_HEADS) : ch;
    }

    private static float[] gaussian(Random rnd, int n) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float) rnd.nextGaussian();
        return x;
    }
}
