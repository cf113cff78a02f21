package io.dsflow.engine;

import io.dsflow.engine.kv.KvPolicy;
import io.dsflow.engine.probe.ProbePrompts;
import io.dsflow.engine.sample.SamplingParams;
import org.junit.jupiter.api.Test;

import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The bundled probe model answers a question about a fact planted far back in a ~1000-token context. */
class ProbeModelTest {

    @Test
    void answersRecordFromFarBack() {
        Engine engine = TestModels.engine("probe-retrieval");
        Tokenizer tok = engine.tokenizer();
        int correct = 0;
        int samples = 3;
        for (int seed = 0; seed < samples; seed++) {
            ProbePrompts.Sample s = ProbePrompts.records(new Random(seed), 120);
            int[] prompt = tok.encode(s.prompt(), true);
            assertTrue(prompt.length > 900 && prompt.length < 1300, "context of about 1000 tokens, got " + prompt.length);
            GenerationResult r = engine.generate(prompt, SamplingParams.greedy(6), KvPolicy.DENSE);
            if (r.text().trim().startsWith(s.answer())) correct++;
        }
        // transformers answers records 15-17 of 20 at 1K: demand at least two of three here
        assertTrue(correct >= 2, "answered " + correct + " of " + samples);
    }

    @Test
    void answersPassKey() {
        Engine engine = TestModels.engine("probe-retrieval");
        ProbePrompts.Sample s = ProbePrompts.passKey(new Random(7), 110);
        int[] prompt = engine.tokenizer().encode(s.prompt(), true);
        GenerationResult r = engine.generate(prompt, SamplingParams.greedy(7), KvPolicy.DENSE);
        assertEquals(" " + s.answer() + ".", r.text().substring(0, s.answer().length() + 2));
    }
}
