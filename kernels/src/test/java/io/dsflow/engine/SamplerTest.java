package io.dsflow.engine;

import io.dsflow.engine.kv.KvPolicy;
import io.dsflow.engine.sample.Sampler;
import io.dsflow.engine.sample.SamplingParams;
import org.junit.jupiter.api.Test;

import java.util.Arrays;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class SamplerTest {
    private static final int[] PROMPT = {0, 45, 77, 101, 23, 300, 12};

    @Test
    void sameSeedSameTokensOtherSeedOtherTokens() {
        Engine e = TestModels.engine("llama-tiny");
        SamplingParams a = new SamplingParams(1.0, 1.0, 0, 1234, 24, List.of());
        int[] first = e.generate(PROMPT, a, KvPolicy.DENSE).tokenIds();
        int[] again = e.generate(PROMPT, a, KvPolicy.DENSE).tokenIds();
        int[] other = e.generate(PROMPT, new SamplingParams(1.0, 1.0, 0, 99, 24, List.of()), KvPolicy.DENSE).tokenIds();
        assertArrayEquals(first, again);
        assertFalse(java.util.Arrays.equals(first, other), "a different seed should change 24 sampled tokens");
    }

    @Test
    void topKOneAndTinyTopPAreGreedy() {
        Random rnd = new Random(3);
        for (int trial = 0; trial < 50; trial++) {
            float[] logits = new float[97];
            for (int i = 0; i < logits.length; i++) logits[i] = (float) rnd.nextGaussian() * 3;
            int greedy = Sampler.argmax(logits);
            assertEquals(greedy, Sampler.sample(logits, new SamplingParams(0.8, 1.0, 1, trial, 1, List.of()), trial));
            assertEquals(greedy, Sampler.sample(logits, new SamplingParams(0.8, 1e-9, 0, trial, 1, List.of()), trial));
        }
    }

    @Test
    void topKDrawsOnlyFromTheKLargest() {
        float[] logits = new float[50];
        for (int i = 0; i < logits.length; i++) logits[i] = i; // 49, 48, 47 are the three largest
        for (int step = 0; step < 500; step++) {
            int t = Sampler.sample(logits, new SamplingParams(50.0, 1.0, 3, 11, 1, List.of()), step);
            assertTrue(t >= 47, "token " + t + " is not among the top 3");
        }
    }

    @Test
    void samplingFollowsTheDistribution() {
        float[] logits = {0f, (float) Math.log(3)}; // p = 1/4, 3/4
        int ones = 0, n = 20000;
        for (int step = 0; step < n; step++) ones += Sampler.sample(logits, new SamplingParams(1.0, 1.0, 0, 5, 1, List.of()), step);
        assertEquals(0.75, ones / (double) n, 0.015);
    }

    @Test
    void stopStringEndsTheCompletionAndIsCutFromTheText() {
        Engine e = TestModels.engine("probe-retrieval");
        int[] prompt = e.tokenizer().encode(" The river grows calm after the rain. The forest", true);
        GenerationResult free = e.generate(prompt, SamplingParams.greedy(30), KvPolicy.DENSE);
        String text = free.text();
        assertTrue(text.length() > 12, text);
        String stop = text.substring(6, 9);
        GenerationResult stopped = e.generate(prompt, new SamplingParams(0, 1, 0, 0, 30, List.of(stop)), KvPolicy.DENSE);
        assertEquals(FinishReason.STOP, stopped.finishReason());
        assertEquals(text.substring(0, text.indexOf(stop)), stopped.text());
        assertTrue(stopped.tokenIds().length < free.tokenIds().length);
    }

    /** Issue 22, item 6: a stop string is not returned and its tokens are not counted. */
    @Test
    void theTokensOfAStopStringAreNotPartOfTheCompletion() {
        Engine e = TestModels.engine("probe-retrieval");
        int[] prompt = e.tokenizer().encode(" The river grows calm after the rain. The forest", true);
        int[] free = e.generate(prompt, SamplingParams.greedy(30), KvPolicy.DENSE).tokenIds();
        // a stop string that is exactly one later token's text, first seen where that token begins
        int k = 2;
        String before = "", stop = null;
        for (; k < free.length; k++) {
            before = e.tokenizer().decode(Arrays.copyOf(free, k));
            String piece = e.tokenizer().decode(Arrays.copyOf(free, k + 1)).substring(before.length());
            if (piece.strip().length() >= 2 && (before + piece).indexOf(piece) == before.length()) {
                stop = piece;
                break;
            }
        }
        assertTrue(stop != null, "the probe model's greedy completion has a token to stop at");
        GenerationResult stopped = e.generate(prompt, new SamplingParams(0, 1, 0, 0, 30, List.of(stop)), KvPolicy.DENSE);
        assertEquals(FinishReason.STOP, stopped.finishReason());
        assertEquals(before, stopped.text());
        assertArrayEquals(Arrays.copyOf(free, k), stopped.tokenIds(), "the stop string's token is not returned");
    }

    @Test
    void eosEndsTheCompletionWithStop() {
        Engine e = TestModels.engine("llama-tiny");
        int[] greedy = e.generate(PROMPT, SamplingParams.greedy(8), KvPolicy.DENSE).tokenIds();
        // make the third greedy token an EOS id: the completion ends before it, with reason stop
        Generation g = new Generation(e.newSequence(KvPolicy.DENSE), SamplingParams.greedy(8), new int[]{greedy[2]},
                e.config().maxPositions(), null);
        Sequence seq = g.sequence();
        float[] logits = e.prefill(seq, PROMPT);
        int produced = 0;
        while (!g.finished()) {
            int t = g.accept(logits);
            if (t < 0 || g.finished()) break;
            produced++;
            logits = e.decode(List.of(seq), new int[]{t})[0];
        }
        assertEquals(FinishReason.STOP, g.finishReason());
        assertEquals(2, produced);
        assertArrayEquals(new int[]{greedy[0], greedy[1]}, g.tokens());
    }

    @Test
    void maxTokensEndsWithLength() {
        GenerationResult r = TestModels.engine("llama-tiny").generate(PROMPT, SamplingParams.greedy(5), KvPolicy.DENSE);
        assertEquals(5, r.tokenIds().length);
        assertEquals(FinishReason.LENGTH, r.finishReason());
    }

    @Test
    void nonsenseParametersAreRefused() {
        assertThrows(InvalidRequestException.class, () -> new SamplingParams(-1, 1, 0, 0, 4, List.of()));
        assertThrows(InvalidRequestException.class, () -> new SamplingParams(Double.NaN, 1, 0, 0, 4, List.of()));
        assertThrows(InvalidRequestException.class, () -> new SamplingParams(1, 0, 0, 0, 4, List.of()));
        assertThrows(InvalidRequestException.class, () -> new SamplingParams(1, 1.5, 0, 0, 4, List.of()));
        assertThrows(InvalidRequestException.class, () -> new SamplingParams(1, 1, -3, 0, 4, List.of()));
        assertThrows(InvalidRequestException.class, () -> new SamplingParams(1, 1, 0, 0, -1, List.of()));
        assertThrows(InvalidRequestException.class, () -> new SamplingParams(1, 1, 0, 0, 4, List.of("")));
    }
}
