package io.dsflow.engine;

import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.kv.KvPolicy;
import io.dsflow.engine.sample.SamplingParams;
import org.junit.jupiter.api.Test;

import java.util.Arrays;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A conversation with a capacity set on a rotary model never runs out of positions (KvStore: positions within the
 * cache), and keeps only the tokens its cache holds; llama-tiny has 2,048 positions.
 */
class ConversationWithoutEndTest {
    private static final KvConfig BOUNDED = KvConfig.defaults(KvPolicy.DENSE).with(Map.of("capacity", "200",
            "sinks", "4"));

    @Test
    void aBoundedConversationGeneratesPastTheModelsPositions() {
        Engine e = TestModels.engine("llama-tiny");
        int[] prompt = {0, 17, 42, 99, 7, 300, 12};
        SamplingParams longer = new SamplingParams(0, 1, 0, 0, 2_300, List.of(), true);
        GenerationResult r = e.generate(prompt, longer, BOUNDED);
        assertEquals(2_300, r.tokenIds().length);
        assertEquals(FinishReason.LENGTH, r.finishReason());
        // unbounded, the same request stops where the positions do
        GenerationResult unbounded = e.generate(prompt, longer, KvConfig.defaults(KvPolicy.DENSE));
        assertEquals(2_048 - prompt.length, unbounded.tokenIds().length);
        // the two agree until the bounded cache first evicts
        assertArrayEquals(Arrays.copyOf(unbounded.tokenIds(), 190), Arrays.copyOf(r.tokenIds(), 190));
        // and a prompt past the positions is refused where the cache is unbounded, served where it is bounded
        int[] longPrompt = new int[2_100];
        for (int i = 0; i < longPrompt.length; i++) longPrompt[i] = 3 + i % 500;
        assertThrows(InvalidRequestException.class, () -> e.generate(longPrompt, SamplingParams.greedy(2),
                KvConfig.defaults(KvPolicy.DENSE)));
        assertEquals(2, e.generate(longPrompt, SamplingParams.greedy(2), BOUNDED).tokenIds().length);
    }

    @Test
    void aBoundedSequenceKeepsTheSinksAndTheLastTokensWhichARebuildPrefills() {
        Engine e = TestModels.engine("llama-tiny");
        Sequence seq = e.newSequence(BOUNDED);
        assertTrue(seq.cache().positionsWithinCache());
        assertEquals((200 - 4) / 4, e.longestStep(seq), "a step takes a quarter of the window at most");
        int[] text = new int[2_500];
        for (int i = 0; i < text.length; i++) text[i] = 3 + (i * 7) % 500;
        for (int at = 0; at < text.length; at += 300) {
            e.prefill(seq, Arrays.copyOfRange(text, at, Math.min(text.length, at + 300)));
        }
        assertEquals(2_500, seq.position());
        int[] kept = new int[200];
        System.arraycopy(text, 0, kept, 0, 4);
        System.arraycopy(text, 2_500 - 196, kept, 4, 196);
        assertArrayEquals(kept, seq.tokens());
        assertTrue(seq.cache().positionBase() > 0, "the cache turned its positions back");
        assertTrue(seq.position() - seq.cache().positionBase() < 2_048);
    }
}
