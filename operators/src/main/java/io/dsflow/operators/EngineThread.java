package io.dsflow.operators;

import io.dsflow.engine.BatchScheduler;
import io.dsflow.engine.DsflowException;
import io.dsflow.engine.Engine;
import io.dsflow.engine.FinishReason;
import io.dsflow.engine.RowCacheCounts;
import org.apache.flink.api.common.operators.MailboxExecutor;
import org.apache.flink.util.function.ThrowingRunnable;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

/**
 * A decode subtask's engine thread: it owns the subtask's {@link BatchScheduler} (only this thread touches it), runs a
 * step whenever there is work, and hands each step's results to the task thread through the task mailbox, where
 * {@link Results} applies them in step order (keyed state is updated and records are emitted there, so a checkpoint
 * barrier, which the task thread also processes, falls between two steps' results, never inside one).
 * <ul>
 *   <li>The task thread talks to it only through {@link #admit} and {@link #dropCache}, which queue commands that run
 *       on this thread before its next step, in the order they were given.</li>
 *   <li>An engine failure fails the task: the exception is rethrown from the mailbox.</li>
 *   <li>Lifecycle: {@link #start} in the operator's open(), {@link #close} in its close() (stops the thread and waits
 *       for it; results not yet applied are dropped with the task).</li>
 * </ul>
 */
final class EngineThread implements AutoCloseable {
    /** How long an idle engine thread waits for a command before checking whether it should stop. */
    private static final long IDLE_POLL_MS = 50;
    private static final long JOIN_MS = 10_000;
    private static final long LOG_NANOS = 60_000_000_000L;
    private static final org.slf4j.Logger LOG = org.slf4j.LoggerFactory.getLogger(EngineThread.class);

    /**
     * What the task thread does with a step's results (run in the mailbox). Each result names the work it is about
     * (conversation and request): a request id alone may be live in two conversations at once.
     */
    interface Results {
        /** A new token of a request's completion; index counts from 0 within the completion. */
        void token(BatchScheduler.Work work, int index, int tokenId) throws Exception;

        /** The request ended; its conversation's full token history is {@code history}. */
        void finished(BatchScheduler.Work work, FinishReason reason, int promptTokens, int completionTokens,
                      int[] history) throws Exception;

        /** The request failed (bad input for this model); the engine kept nothing of it. */
        void failed(BatchScheduler.Work work, DsflowException error) throws Exception;

        /**
         * After a step's results: how many requests re-prefilled their conversation's history and how many tokens were
         * prefilled since the previous call (the scheduler's counters).
         */
        void stepApplied(long historyPrefills, long prefilledTokens, Steps steps) throws Exception;
    }

    /**
     * Steps the engine ran since the previous hand-over: how many, their decode rows (requests that each got a token)
     * and the tokens they fed the model (decode rows plus prefill chunks).
     */
    record Steps(long count, long decodeRows, long tokens) {
    }

    private final BatchScheduler scheduler;
    private final MailboxExecutor mailbox;
    private final Results results;
    private final BlockingQueue<Runnable> inbox = new LinkedBlockingQueue<>();
    private final Thread thread;
    private volatile boolean running;
    private volatile BatchScheduler.StepStats lastStep = BatchScheduler.StepStats.NONE;
    private final RowCacheMeter rowCaches;
    private RowCacheCounts loggedRowCaches = RowCacheCounts.NONE;
    private long lastHistoryPrefills, lastPrefilledTokens;
    /** The steps since the last hand-over (Steps). */
    private long stepsRun, decodeRowsRun, tokensRun;
    /**
     * The steps since the last log line: how many, their rows and tokens; and the time the thread waited with nothing
     * to step (a wave of requests that ended together waits for the task thread to admit the next).
     */
    private long loggedAt = System.nanoTime(), steps, rows, tokens, idleNanos;

    /**
     * @param prefillTokens prompt tokens a step prefills, over as many prompts as fit (the scheduler's budget)
     * @param maxRunning    requests the scheduler runs at once (admission also bounds them by memory)
     */
    EngineThread(Engine engine, int prefillTokens, int maxRunning, MailboxExecutor mailbox, Results results,
                 String name) {
        this.scheduler = new BatchScheduler(engine, prefillTokens, maxRunning);
        this.rowCaches = new RowCacheMeter(engine.backend());
        this.mailbox = mailbox;
        this.results = results;
        this.thread = new Thread(this::run, name);
        thread.setDaemon(true);
    }

    void start() {
        running = true;
        thread.start();
    }

    /** Free an idle conversation's cache (its next request re-prefills the history). */
    void dropCache(String conversationId) {
        inbox.add(() -> scheduler.dropCache(conversationId));
    }

    /** One round of admission: free these idle caches, then serve this work, all before the same next step. */
    void admit(List<String> dropCaches, List<BatchScheduler.Work> works) {
        List<String> drops = List.copyOf(dropCaches);
        List<BatchScheduler.Work> submits = List.copyOf(works);
        inbox.add(() -> {
            for (String c : drops) scheduler.dropCache(c);
            for (BatchScheduler.Work w : submits) scheduler.submit(w);
        });
    }

    private void run() {
        List<ThrowingRunnable<Exception>> events = new ArrayList<>();
        BatchScheduler.Listener listener = new BatchScheduler.Listener() {
            @Override
            public void token(BatchScheduler.Work work, int index, int tokenId) {
                events.add(() -> results.token(work, index, tokenId));
            }

            @Override
            public void finished(BatchScheduler.Work work, FinishReason reason, int promptTokens,
                                 int completionTokens, int[] history) {
                events.add(() -> results.finished(work, reason, promptTokens, completionTokens, history));
            }

            @Override
            public void failed(BatchScheduler.Work work, DsflowException error) {
                events.add(() -> results.failed(work, error));
            }
        };
        try {
            while (running) {
                runCommands();
                if (!scheduler.hasWork()) continue;
                scheduler.step(listener);
                stepped(scheduler.lastStep());
                handOver(events);
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        } catch (Throwable t) {
            if (running) {
                mailbox.execute(() -> {
                    throw new RuntimeException("the decode engine failed: " + t, t);
                }, "dsflow engine failure");
            }
        }
    }

    /** What the latest step fed the model (the operator's gauges read it from the metric reporters' threads). */
    BatchScheduler.StepStats lastStep() {
        return lastStep;
    }

    /** The subtask's device row caches (the operator's gauges read them from the metric reporters' threads). */
    RowCacheCounts rowCaches() {
        return rowCaches.totals();
    }

    /** Keeps the step's figures; once a minute, one log line of the batches the engine ran. */
    private void stepped(BatchScheduler.StepStats s) {
        lastStep = s;
        long now = System.nanoTime();
        rowCaches.afterStep(now);
        stepsRun++;
        decodeRowsRun += s.decodeRows();
        tokensRun += s.tokens();
        steps++;
        rows += s.decodeRows() + s.prefillPrompts();
        tokens += s.tokens();
        if (now - loggedAt < LOG_NANOS) return;
        RowCacheCounts rc = rowCaches.totals(), minute = rc.minus(loggedRowCaches);
        loggedRowCaches = rc;
        LOG.info(String.format(java.util.Locale.ROOT, "%s: %d steps in %.0f s (%.1f s idle), %.1f rows and %.1f"
                        + " tokens a step, %d requests running, %d waiting%s", thread.getName(), steps,
                (now - loggedAt) / 1e9, idleNanos / 1e9, rows / (double) steps, tokens / (double) steps,
                scheduler.activeCount(), s.waiting(), minute.asked() == 0 ? "" : String.format(java.util.Locale.ROOT,
                        "; row caches held %.1f%% of %d rows asked", 100 * minute.hitRate(), minute.asked())));
        loggedAt = now;
        steps = rows = tokens = idleNanos = 0;
    }

    /** Runs the queued commands; waits a little for one when there is nothing to step. */
    private void runCommands() throws InterruptedException {
        Runnable command;
        if (scheduler.hasWork()) {
            command = inbox.poll();
        } else {
            long t0 = System.nanoTime();
            command = inbox.poll(IDLE_POLL_MS, TimeUnit.MILLISECONDS);
            idleNanos += System.nanoTime() - t0;
        }
        while (command != null) {
            command.run();
            command = inbox.poll();
        }
    }

    /** Sends a step's events (and the counters' progress) to the task thread, if anything happened. */
    private void handOver(List<ThrowingRunnable<Exception>> events) {
        long hp = scheduler.historyPrefills(), pt = scheduler.prefilledTokens();
        if (events.isEmpty() && hp == lastHistoryPrefills && pt == lastPrefilledTokens) return;
        List<ThrowingRunnable<Exception>> batch = new ArrayList<>(events);
        events.clear();
        long historyPrefills = hp - lastHistoryPrefills, prefilledTokens = pt - lastPrefilledTokens;
        lastHistoryPrefills = hp;
        lastPrefilledTokens = pt;
        Steps ran = new Steps(stepsRun, decodeRowsRun, tokensRun);
        stepsRun = decodeRowsRun = tokensRun = 0;
        mailbox.execute(() -> {
            for (ThrowingRunnable<Exception> e : batch) e.run();
            results.stepApplied(historyPrefills, prefilledTokens, ran);
        }, "dsflow decode results");
    }

    /** Stops the thread and waits for it (at most 10 s). */
    @Override
    public void close() throws InterruptedException {
        running = false;
        thread.interrupt();
        thread.join(JOIN_MS);
    }
}
