package io.dsflow.engine;

import io.dsflow.engine.kv.KvPolicy;
import io.dsflow.engine.sample.SamplingParams;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Greedy tokens and last-position logits against transformers (eager attention, float32) for the three families. */
class GoldenTest {

    static List<TestModels.GoldenCase> cases() {
        return TestModels.goldenCases();
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("cases")
    void greedyTokensAndLogitsMatchTransformers(TestModels.GoldenCase c) {
        Engine engine = TestModels.engine(c.model());
        GenerationResult r = engine.generate(c.promptIds(), SamplingParams.greedy(16), KvPolicy.DENSE);
        assertEquals(c.lastLogits().length, r.lastPromptLogits().length);
        double maxRef = 0, maxDiff = 0;
        for (int i = 0; i < c.lastLogits().length; i++) {
            maxRef = Math.max(maxRef, Math.abs(c.lastLogits()[i]));
            maxDiff = Math.max(maxDiff, Math.abs(c.lastLogits()[i] - r.lastPromptLogits()[i]));
        }
        assertTrue(maxRef > 0, "reference logits are all zero");
        assertTrue(maxDiff <= 1e-3 * maxRef, "max |diff| " + maxDiff + " > 1e-3 * max |ref| " + maxRef);
        assertArrayEquals(c.greedyIds(), r.tokenIds());
    }
}
