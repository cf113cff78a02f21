package io.dsflow.engine;

import io.dsflow.engine.kv.KvPolicy;
import io.dsflow.engine.sample.SamplingParams;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Sequences at different positions decoded together in one batch produce what each produces alone. */
class BatchDecodeTest {

    @ParameterizedTest
    @ValueSource(strings = {"llama-tiny", "qwen2-tiny", "opt-tiny", "probe-retrieval"})
    void batchOfSequencesAtDifferentPositionsEqualsEachAlone(String model) {
        Engine engine = TestModels.engine(model);
        Random rnd = new Random(42);
        int[] lengths = {3, 17, 64, 129, 250};
        int steps = 12;
        List<int[]> prompts = new ArrayList<>();
        for (int len : lengths) {
            int[] p = new int[len];
            for (int i = 0; i < len; i++) p[i] = 3 + rnd.nextInt(engine.config().vocabSize() - 3);
            prompts.add(p);
        }
        // alone: each sequence prefilled and greedily decoded by itself
        List<int[]> alone = new ArrayList<>();
        for (int[] p : prompts) {
            alone.add(engine.generate(p, new SamplingParams(0, 1, 0, 0, steps, List.of()), KvPolicy.DENSE).tokenIds());
        }
        // together: all prefilled, then one batched decode step per token for all of them
        List<Sequence> seqs = new ArrayList<>();
        int[] next = new int[prompts.size()];
        int[][] got = new int[prompts.size()][steps];
        for (int i = 0; i < prompts.size(); i++) {
            Sequence s = engine.newSequence(KvPolicy.DENSE);
            next[i] = io.dsflow.engine.sample.Sampler.argmax(engine.prefill(s, prompts.get(i)));
            seqs.add(s);
        }
        for (int step = 0; step < steps; step++) {
            for (int i = 0; i < seqs.size(); i++) got[i][step] = next[i];
            if (step == steps - 1) break;
            float[][] logits = engine.decode(seqs, next);
            for (int i = 0; i < seqs.size(); i++) next[i] = io.dsflow.engine.sample.Sampler.argmax(logits[i]);
        }
        for (int i = 0; i < prompts.size(); i++) {
            assertEquals(steps, alone.get(i).length, "no EOS expected in " + steps + " greedy steps");
            assertArrayEquals(alone.get(i), got[i], "sequence of " + lengths[i] + " prompt tokens");
            assertEquals(lengths[i] + steps - 1, seqs.get(i).position());
        }
        assertTrue(seqs.size() > 1);
    }
}
