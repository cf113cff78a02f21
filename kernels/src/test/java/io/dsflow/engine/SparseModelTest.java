package io.dsflow.engine;

import io.dsflow.engine.kv.CalibrationStatistics;
import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.kv.KvPolicy;
import io.dsflow.engine.probe.Eval;
import io.dsflow.engine.probe.ProbePrompts;
import io.dsflow.engine.sample.SamplingParams;
import org.junit.jupiter.api.Test;

import java.util.List;
import java.util.Map;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The sparse policies through the whole model (the probe model carries its calibrated channels.json). */
class SparseModelTest {

    private static int[] prompt(Engine e, int sentences, long seed) {
        return e.tokenizer().encode(ProbePrompts.passKey(new Random(seed), sentences).prompt(), true);
    }

    @Test
    void lambdaZeroNoSinksNoWindowGeneratesExactlyWhatDsGenerates() {
        Engine e = TestModels.engine("probe-retrieval");
        int[] p = prompt(e, 150, 3);
        KvConfig ds = KvConfig.defaults(KvPolicy.DS).with(Map.of("k-floor", "16"));
        KvConfig dspp = KvConfig.defaults(KvPolicy.DSPP).with(Map.of("k-floor", "16", "lambda", "0", "sinks", "0",
                "window", "0", "dense-until", "0", "gqa", "per_head", "label-bits", "16"));   // ds's selection
        SamplingParams sampled = new SamplingParams(0.9, 0.95, 0, 17, 20, List.of());
        GenerationResult a = e.generate(p, sampled, ds), b = e.generate(p, sampled, dspp);
        assertArrayEquals(a.tokenIds(), b.tokenIds());
    }

    @Test
    void fullBudgetSparsePoliciesGenerateWhatDenseGenerates() {
        Engine e = TestModels.engine("probe-retrieval");
        int[] p = prompt(e, 120, 4);
        int[] dense = e.generate(p, SamplingParams.greedy(12), KvPolicy.DENSE).tokenIds();
        for (KvPolicy policy : List.of(KvPolicy.DS, KvPolicy.DSPP)) {
            KvConfig full = KvConfig.defaults(policy).with(Map.of("rho", "1"));
            assertArrayEquals(dense, e.generate(p, SamplingParams.greedy(12), full).tokenIds(), policy.id());
        }
    }

    @Test
    void calibrationSumsEveryBlockAndIsStableAcrossHalves() {
        Engine e = TestModels.engine("probe-retrieval");
        List<int[]> blocks = Calibration.probeBlocks(e.tokenizer(), 4, 256, 5);
        Calibration.Result r = Calibration.run(e, blocks);
        assertEquals(4L * 256, r.all().tokens(), "every token of every block counted");
        CalibrationStatistics sum = new CalibrationStatistics(6, 8, 2, 32);
        sum.add(r.firstHalf());
        sum.add(r.secondHalf());
        for (int l = 0; l < 6; l++) {
            for (int h = 0; h < 8; h++) {
                assertArrayEquals(sum.channels(KvConfig.ChannelSource.QK).order(l, h), r.all().channels(KvConfig.ChannelSource.QK).order(l, h));
            }
        }
        double overlap = r.overlap(KvConfig.ChannelSource.QK, 16);
        assertTrue(overlap > 0.6 && overlap <= 1.0, "top-16 of 32 overlap between halves: " + overlap);
    }

    /** Acceptance 4: a bounded dspp cache holds constant memory past C and answers facts among the kept tokens. */
    @Test
    void boundedCapacityHoldsConstantMemoryAndAnswersRecentFacts() {
        Engine e = TestModels.engine("probe-retrieval");
        KvConfig bounded = KvConfig.defaults(KvPolicy.DSPP).with(Map.of("capacity", "512"));
        List<Eval.Cell> cells = Eval.run(e, List.of("passkey"), List.of(1024, 2048),
                List.of(new Eval.Policy("dspp-c512", bounded)), 3, 9, 256);
        assertEquals(2, cells.size());
        assertEquals(cells.get(0).meanBytes(), cells.get(1).meanBytes(), "constant memory past the capacity");
        assertTrue(cells.get(0).meanBytes().store() > 0);
        for (Eval.Cell c : cells) assertTrue(c.correct >= 2, c.length + ": " + c.correct + "/" + c.samples);
    }
}
