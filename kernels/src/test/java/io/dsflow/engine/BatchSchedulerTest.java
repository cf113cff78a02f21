package io.dsflow.engine;

import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.sample.SamplingParams;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

class BatchSchedulerTest {

    /** Collects what the scheduler reports. */
    static class Recorder implements BatchScheduler.Listener {
        final Map<String, List<Integer>> tokens = new HashMap<>();
        final Map<String, int[]> history = new HashMap<>();
        final Map<String, FinishReason> finish = new HashMap<>();
        final List<String> order = new ArrayList<>();
        final Map<String, DsflowException> errors = new HashMap<>();

        @Override
        public void token(BatchScheduler.Work work, int index, int tokenId) {
            String id = work.requestId();
            List<Integer> l = tokens.computeIfAbsent(id, k -> new ArrayList<>());
            assertEquals(l.size(), index, "tokens arrive in index order");
            l.add(tokenId);
            order.add(id);
        }

        @Override
        public void finished(BatchScheduler.Work work, FinishReason reason, int promptTokens, int completionTokens,
                             int[] h) {
            String id = work.requestId();
            finish.put(id, reason);
            history.put(id, h);
            assertEquals(tokens.getOrDefault(id, List.of()).size(), completionTokens);
        }

        @Override
        public void failed(BatchScheduler.Work work, DsflowException error) {
            errors.put(work.requestId(), error);
        }

        int[] of(String id) {
            return tokens.getOrDefault(id, List.of()).stream().mapToInt(Integer::intValue).toArray();
        }
    }

    static void drain(BatchScheduler s, Recorder r) {
        for (int i = 0; i < 100000 && s.hasWork(); i++) s.step(r);
        assertTrue(!s.hasWork(), "scheduler drained");
    }

    static int[] randomPrompt(Random rnd, int n) {
        int[] p = new int[n];
        p[0] = 0;
        for (int i = 1; i < n; i++) p[i] = 3 + rnd.nextInt(509);
        return p;
    }

    @Test
    void concurrentRequestsMatchGenerateAloneAndInterleave() {
        Engine e = TestModels.engine("probe-retrieval");
        BatchScheduler s = new BatchScheduler(e, 64);
        Recorder r = new Recorder();
        Random rnd = new Random(1);
        Map<String, int[]> prompts = new HashMap<>();
        Map<String, SamplingParams> params = new HashMap<>();
        for (int i = 0; i < 6; i++) {
            int[] p = randomPrompt(rnd, 5 + rnd.nextInt(150));
            SamplingParams sp = i % 2 == 0 ? SamplingParams.greedy(12) : new SamplingParams(0.8, 0.9, 20, 100 + i, 12, List.of());
            prompts.put("r" + i, p);
            params.put("r" + i, sp);
            s.submit(new BatchScheduler.Work("r" + i, "c" + i, new int[0], p, sp, KvConfig.DENSE, 0));
        }
        drain(s, r);
        for (String id : prompts.keySet()) {
            int[] alone = e.generate(prompts.get(id), params.get(id), KvConfig.DENSE).tokenIds();
            assertArrayEquals(alone, r.of(id), id);
        }
        // interleaved: some conversation's token arrives between two tokens of another
        int firstEnd = r.order.lastIndexOf(r.order.get(0));
        assertTrue(r.order.subList(0, firstEnd).stream().distinct().count() > 1, "tokens of concurrent requests interleave");
    }

    /**
     * Issue 23, acceptance 1: one step prefills chunks of several prompts of different lengths beside a decoding row,
     * and every request's tokens equal its prompt served alone (greedy and seeded), on every test model.
     */
    @ParameterizedTest
    @ValueSource(strings = {"llama-tiny", "qwen2-tiny", "opt-tiny", "probe-retrieval"})
    void oneStepPrefillsSeveralPromptsBesideDecodingRows(String model) {
        Engine e = TestModels.engine(model);
        BatchScheduler s = new BatchScheduler(e, 48, Integer.MAX_VALUE, true);   // as on a GPU: the budget filled
        Recorder r = new Recorder();
        Random rnd = new Random(3);
        Map<String, int[]> prompts = new HashMap<>();
        Map<String, SamplingParams> params = new HashMap<>();
        int[] lengths = {6, 13, 29, 40};
        for (int i = 0; i < lengths.length; i++) {
            prompts.put("r" + i, randomPrompt(rnd, lengths[i]));
            params.put("r" + i, i % 2 == 0 ? SamplingParams.greedy(10)
                    : new SamplingParams(0.9, 0.95, 30, 50 + i, 10, List.of()));
        }
        s.submit(new BatchScheduler.Work("r0", "c0", new int[0], prompts.get("r0"), params.get("r0"), KvConfig.DENSE, 0));
        s.step(r);   // r0's prompt, and its first token
        for (int i = 1; i < lengths.length; i++) {
            s.submit(new BatchScheduler.Work("r" + i, "c" + i, new int[0], prompts.get("r" + i), params.get("r" + i),
                    KvConfig.DENSE, 0));
        }
        s.step(r);
        BatchScheduler.StepStats step = s.lastStep();
        assertEquals(1, step.decodeRows(), "r0 decodes");
        assertEquals(3, step.prefillPrompts(), "13 + 29 tokens and 6 of the 40-token prompt fill the budget of 48");
        assertEquals(1 + 48, step.tokens());
        drain(s, r);
        for (String id : prompts.keySet()) {
            int[] alone = e.generate(prompts.get(id), params.get(id), KvConfig.DENSE).tokenIds();
            assertArrayEquals(alone, r.of(id), model + " " + id);
        }
    }

    @Test
    void runningRequestsAreCappedAndTheRestWaitInOrder() {
        Engine e = TestModels.engine("llama-tiny");
        BatchScheduler s = new BatchScheduler(e, 64, 2);
        Recorder r = new Recorder();
        for (int i = 0; i < 5; i++) {
            s.submit(new BatchScheduler.Work("r" + i, "c" + i, new int[0], new int[]{0, 7 + i, 9}, SamplingParams.greedy(4),
                    KvConfig.DENSE, 0));
        }
        s.step(r);
        assertEquals(2, s.activeCount());
        assertEquals(3, s.lastStep().waiting());
        drain(s, r);
        for (int i = 0; i < 5; i++) assertEquals(4, r.of("r" + i).length);
        assertTrue(r.order.indexOf("r0") < r.order.indexOf("r2"), "first come, first served");
    }

    /**
     * Issue 22, item 5: a step prefills up to a chunk of prompt tokens over as many prompts as fit. One prompt a step
     * let each admitted request start only one step after the one before it: with 64 follow-ups of a few tokens
     * waiting, the 64th started 64 steps later, each step a chunk's cost when rebuilds and new prompts were among them.
     */
    @Test
    void shortPromptsShareAStepsPrefillChunk() {
        Engine e = TestModels.engine("probe-retrieval");
        BatchScheduler s = new BatchScheduler(e, 32);
        Recorder r = new Recorder();
        Random rnd = new Random(4);
        for (int i = 0; i < 4; i++) {
            s.submit(new BatchScheduler.Work("r" + i, "c" + i, new int[0], randomPrompt(rnd, 8), SamplingParams.greedy(4),
                    KvConfig.DENSE, 0));
        }
        s.submit(new BatchScheduler.Work("long", "c4", new int[0], randomPrompt(rnd, 40), SamplingParams.greedy(4),
                KvConfig.DENSE, 0));
        s.step(r);
        for (int i = 0; i < 4; i++) assertEquals(1, r.of("r" + i).length, "r" + i + " prefilled in the first step");
        assertEquals(32, s.prefilledTokens(), "4 prompts of 8 tokens: the chunk is full, the long prompt waits");
        s.step(r);
        assertEquals(0, r.of("long").length);
        s.step(r);
        assertEquals(1, r.of("long").length, "its 40 tokens in two chunks");
    }

    /**
     * Issue 23, the demo's first answer: on the CPU, whose step cost grows with its tokens, a step in which a prompt
     * ends takes later prompts only whole (a short one still shares it), not a partial chunk that would delay that
     * prompt's first token; a GPU's scheduler fills the budget. Tokens equal each prompt alone either way.
     */
    @Test
    void onTheCpuAStepInWhichAPromptEndsTakesLaterPromptsOnlyWhole() {
        Engine e = TestModels.engine("probe-retrieval");
        Random rnd = new Random(5);
        int[][] prompts = {randomPrompt(rnd, 20), randomPrompt(rnd, 10), randomPrompt(rnd, 40)};
        for (boolean gpuLike : new boolean[]{false, true}) {
            BatchScheduler s = gpuLike ? new BatchScheduler(e, 48, Integer.MAX_VALUE, true) : new BatchScheduler(e, 48);
            Recorder r = new Recorder();
            for (int i = 0; i < prompts.length; i++) {
                s.submit(new BatchScheduler.Work("r" + i, "c" + i, new int[0], prompts[i], SamplingParams.greedy(5),
                        KvConfig.DENSE, 0));
            }
            s.step(r);
            assertEquals(gpuLike ? 3 : 2, s.lastStep().prefillPrompts(), "gpu-like " + gpuLike);
            assertEquals(gpuLike ? 48 : 30, s.lastStep().tokens(), "20 and 10 end; the 40-token prompt waits on the cpu");
            drain(s, r);
            for (int i = 0; i < prompts.length; i++) {
                assertArrayEquals(e.generate(prompts[i], SamplingParams.greedy(5), KvConfig.DENSE).tokenIds(),
                        r.of("r" + i), "gpu-like " + gpuLike + " r" + i);
            }
        }
    }

    @Test
    void followUpContinuesTheCacheWithoutPrefillingTheHistory() {
        Engine e = TestModels.engine("probe-retrieval");
        BatchScheduler s = new BatchScheduler(e, 32);
        Recorder r = new Recorder();
        Random rnd = new Random(2);
        int[] turn1 = randomPrompt(rnd, 40), turn2 = new int[]{44, 55, 66, 77};
        s.submit(new BatchScheduler.Work("t1", "conv", new int[0], turn1, SamplingParams.greedy(6), KvConfig.DENSE, 0));
        drain(s, r);
        long prefilled = s.prefilledTokens();
        int[] history = r.history.get("t1");
        assertEquals(turn1.length + 6, history.length);
        s.submit(new BatchScheduler.Work("t2", "conv", history, turn2, SamplingParams.greedy(6), KvConfig.DENSE, 0));
        drain(s, r);
        assertEquals(0, s.historyPrefills());
        assertEquals(prefilled + 1 + turn2.length, s.prefilledTokens(), "only the unfed last token and the new prompt");
        int[] full = BatchScheduler.concat(history, turn2);
        assertArrayEquals(e.generate(full, SamplingParams.greedy(6), KvConfig.DENSE).tokenIds(), r.of("t2"));

        // a dropped cache is rebuilt from the history, with the same result
        assertTrue(s.dropCache("conv") > 0);
        s.submit(new BatchScheduler.Work("t2again", "conv", history, turn2, SamplingParams.greedy(6), KvConfig.DENSE, 0));
        drain(s, r);
        assertEquals(1, s.historyPrefills());
        assertArrayEquals(r.of("t2"), r.of("t2again"));
    }

    @Test
    void resumeRegeneratesSilentlyAndContinues() {
        Engine e = TestModels.engine("llama-tiny");
        SamplingParams sp = new SamplingParams(1.0, 1.0, 0, 5, 10, List.of());
        int[] p = {0, 10, 20, 30};
        int[] full = e.generate(p, sp, KvConfig.DENSE).tokenIds();
        BatchScheduler s = new BatchScheduler(e, 8);
        Recorder r = new Recorder() {
            @Override
            public void token(BatchScheduler.Work work, int index, int tokenId) {
            String id = work.requestId();
                tokens.computeIfAbsent(id, k -> new ArrayList<>()).add(tokenId);
                assertTrue(index >= 4, "tokens before the resume point are not emitted again");
            }

            @Override
            public void finished(BatchScheduler.Work work, FinishReason reason, int promptTokens, int completionTokens,
                             int[] h) {
            String id = work.requestId();
                assertEquals(10, completionTokens, "usage counts the whole completion");
                finish.put(id, reason);
            }
        };
        s.submit(new BatchScheduler.Work("q", "c", new int[0], p, sp, KvConfig.DENSE, 4));
        drain(s, r);
        assertArrayEquals(java.util.Arrays.copyOfRange(full, 4, 10), r.of("q"));
    }

    @Test
    void badRequestFailsAloneAndOthersGoOn() {
        Engine e = TestModels.engine("llama-tiny");
        BatchScheduler s = new BatchScheduler(e, 8);
        Recorder r = new Recorder();
        s.submit(new BatchScheduler.Work("bad", "c1", new int[0], new int[]{0, 9999}, SamplingParams.greedy(3), KvConfig.DENSE, 0));
        s.submit(new BatchScheduler.Work("good", "c2", new int[0], new int[]{0, 5}, SamplingParams.greedy(3), KvConfig.DENSE, 0));
        drain(s, r);
        assertTrue(r.errors.get("bad") instanceof InvalidRequestException);
        assertEquals(3, r.of("good").length);
        assertTrue(!s.hasCache("c1"));
    }
}
