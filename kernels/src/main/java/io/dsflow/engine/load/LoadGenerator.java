package io.dsflow.engine.load;

import io.dsflow.engine.BatchScheduler;
import io.dsflow.engine.DsflowException;
import io.dsflow.engine.Engine;
import io.dsflow.engine.FinishReason;
import io.dsflow.engine.Sequence;
import io.dsflow.engine.load.Load.Request;
import io.dsflow.engine.cuda.CudaBackend;
import io.dsflow.engine.sample.SamplingParams;

import java.util.Arrays;
import java.util.List;
import java.util.function.Consumer;

/**
 * Runs a {@link Load} through the engine's {@link BatchScheduler}, as a serving process would (continuous batching,
 * chunked prefill under the step's budget, a cap on running requests), and measures what a user of the service sees:
 * output and total tokens a second, time to first token and between tokens, the last first token, memory.
 * <ul>
 *   <li>requests arrive at their time (all at once, or a seeded Poisson process); each prompt is random token ids, each
 *       completion seeded sampling with end-of-sequence ignored, so every completion has its drawn length;</li>
 *   <li>times are taken when a step's results are back (every token of a step shares its step's time);</li>
 *   <li>a progress line every 10 s; one thread; the engine is the caller's (warm it up first for steady figures).</li>
 * </ul>
 */
public final class LoadGenerator {
    private static final long PROGRESS_NANOS = 10_000_000_000L;

    private LoadGenerator() {
    }

    /**
     * Prefills {@code count} of the load's prompts one after another, nothing else in the step: the time the engine
     * needs to prefill them back to back, against which a scheduler's last first token is judged (it cannot come
     * sooner). In chunks of {@code prefillTokens}, as the scheduler feeds them.
     */
    public static double prefillBackToBackSeconds(Engine engine, Load load, int count, int prefillTokens) {
        List<Request> requests = requests(engine, load);
        long t0 = System.nanoTime();
        for (int i = 0; i < Math.min(count, requests.size()); i++) {
            int[] prompt = requests.get(i).prompt();
            Sequence seq = engine.newSequence(load.kv());
            for (int from = 0; from < prompt.length; from += prefillTokens) {
                engine.prefill(seq, Arrays.copyOfRange(prompt, from, Math.min(prompt.length, from + prefillTokens)));
            }
            seq.cache().release();
        }
        return (System.nanoTime() - t0) / 1e9;
    }

    /** Runs the load to its end; progress lines go to {@code progress}. */
    public static LoadReport run(Engine engine, Load load, int prefillTokens, int maxRunning,
                                 Consumer<String> progress) {
        List<Request> requests = requests(engine, load);
        int n = requests.size();
        BatchScheduler scheduler = new BatchScheduler(engine, prefillTokens, maxRunning);
        Recorder rec = new Recorder(n);
        long t0 = System.nanoTime(), lastProgress = t0;
        long outputAtProgress = 0;
        int next = 0, steps = 0;
        long decodeRows = 0, stepTokens = 0;
        while (rec.ended < n) {
            long now = System.nanoTime();
            while (next < n && t0 + requests.get(next).arrivalNanos() <= now) {
                Request r = requests.get(next);
                rec.latencies.sent(next, now);
                SamplingParams sp = new SamplingParams(1.0, 1.0, 0, load.samplingSeed(next), r.outputTokens(),
                        List.of(), true);
                scheduler.submit(new BatchScheduler.Work(Integer.toString(next), "c" + next, new int[0], r.prompt(),
                        sp, load.kv(), 0));
                next++;
            }
            if (!scheduler.hasWork()) {
                sleepUntil(t0 + requests.get(next).arrivalNanos());
                continue;
            }
            scheduler.step(rec);
            for (String done : rec.takeFinished()) scheduler.dropCache(done);   // one turn each: no cache is kept
            steps++;
            BatchScheduler.StepStats s = scheduler.lastStep();
            decodeRows += s.decodeRows();
            stepTokens += s.tokens();
            long after = System.nanoTime();
            rec.stepDone(after);
            if (after - lastProgress >= PROGRESS_NANOS) {
                double window = (after - lastProgress) / 1e9;
                progress.accept(String.format(java.util.Locale.ROOT, "loadgen: %.0f s, %d/%d requests done, %d running,"
                                + " %d waiting, %.0f output tokens/s (last %.0f s)", (after - t0) / 1e9, rec.ended, n,
                        scheduler.activeCount(), s.waiting(), (rec.outputTokens - outputAtProgress) / window, window));
                lastProgress = after;
                outputAtProgress = rec.outputTokens;
            }
        }
        double seconds = (System.nanoTime() - t0) / 1e9;
        long promptTokens = requests.stream().mapToLong(r -> r.prompt().length).sum();
        long peak = engine.backend() instanceof CudaBackend cb ? cb.runtime().peakAllocated() : -1;
        return new LoadReport(load, prefillTokens, maxRunning, n - rec.failed, rec.failed, seconds, promptTokens,
                rec.outputTokens, rec.latencies.ttftMs(), rec.latencies.itlMs(),
                rec.latencies.lastFirstTokenSeconds(t0), steps, steps == 0 ? 0 : decodeRows / (double) steps, steps == 0 ? 0 : stepTokens / (double) steps, peak);
    }

    private static List<Request> requests(Engine engine, Load load) {
        return load.requests(engine.config().vocabSize());
    }

    private static void sleepUntil(long nanos) {
        long wait = nanos - System.nanoTime();
        if (wait <= 0) return;
        try {
            Thread.sleep(wait / 1_000_000, (int) (wait % 1_000_000));
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new DsflowException("loadgen interrupted", e);
        }
    }

    /** What the scheduler reports, timed at the end of each step. */
    private static final class Recorder implements BatchScheduler.Listener {
        final Latencies latencies;
        long outputTokens;
        int ended, failed;
        /** Tokens of the step in progress, timed when it ends: request index, or -1 - index for a first token. */
        private int[] stepTokens = new int[256];
        private int stepCount;

        Recorder(int n) {
            latencies = new Latencies(n);
        }

        @Override
        public void token(BatchScheduler.Work work, int index, int tokenId) {
            if (stepCount == stepTokens.length) stepTokens = Arrays.copyOf(stepTokens, stepCount * 2);
            int r = Integer.parseInt(work.requestId());
            stepTokens[stepCount++] = index == 0 ? -1 - r : r;
            outputTokens++;
        }

        void stepDone(long now) {
            for (int i = 0; i < stepCount; i++) {
                int r = stepTokens[i];
                latencies.token(r < 0 ? -1 - r : r, r < 0, now);
            }
            stepCount = 0;
        }

        private final List<String> finished = new java.util.ArrayList<>();

        @Override
        public void finished(BatchScheduler.Work work, FinishReason reason, int promptTokens, int completionTokens,
                             int[] history) {
            ended++;
            finished.add(work.conversationId());
        }

        /** The conversations whose request finished since the last call. */
        List<String> takeFinished() {
            List<String> r = List.copyOf(finished);
            finished.clear();
            return r;
        }

        @Override
        public void failed(BatchScheduler.Work work, DsflowException error) {
            ended++;
            failed++;
        }
    }
}
