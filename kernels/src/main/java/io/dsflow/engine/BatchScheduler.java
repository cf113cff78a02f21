package io.dsflow.engine;

import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.sample.SamplingParams;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Deque;
import java.util.HashMap;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Continuous batching over one engine: every {@link #step()} is one forward pass that advances each generating
 * conversation by one token and fills the rest of the step's prefill budget with chunks of the prompts waiting, oldest
 * first, as many as fit (chunked prefill, as vLLM and SGLang schedule it): new requests join at the next step, several
 * prompts of different lengths are prefilled in one pass, and a long prompt stalls the others for one budget at most.
 * Where a step's cost grows with its tokens (the CPU), a step in which a prompt's prefill ends adds later prompts only
 * whole, never a partial chunk: the chunk would delay that prompt's first token by its own cost and serve the later
 * prompt no sooner overall (the same tokens come before its end either way). Where a step costs about the same up to
 * thousands of tokens (a GPU reads its weights once a step), the budget is filled.
 * <ul>
 *   <li>A conversation keeps its sequence (KV cache) between requests: a follow-up prompt continues the cache, and only
 *       its new tokens are prefilled. {@link #dropCache} frees an idle conversation's cache; its next request then
 *       re-prefills the whole history, which the caller passes in.</li>
 *   <li>Not thread-safe: one thread submits and steps (the decode operator's engine thread).</li>
 * </ul>
 */
public final class BatchScheduler {

    /**
     * What happened in a step, per request. Each event names the {@link Work} it is about, not its request id alone:
     * request ids come from clients and two conversations may use the same one, while a conversation has at most one
     * request here at a time.
     */
    public interface Listener {
        /** A new token of a request's completion; index counts from 0 within the completion. */
        void token(Work work, int index, int tokenId);

        /** The request ended; its conversation's full token history is {@code history}. */
        void finished(Work work, FinishReason reason, int promptTokens, int completionTokens, int[] history);

        /** The request failed (bad input for this model); nothing of it was kept. */
        void failed(Work work, DsflowException error);
    }

    /**
     * A request to serve.
     *
     * @param history the conversation's tokens before this prompt (used only when its cache was dropped)
     * @param prompt  the new tokens
     * @param resumeFrom completion tokens already produced before a restore (regenerated silently: seeded sampling
     *                   gives the same tokens), 0 normally
     */
    public record Work(String requestId, String conversationId, int[] history, int[] prompt, SamplingParams params,
                       KvConfig kv, int resumeFrom) {
    }

    /**
     * What one step fed the model.
     *
     * @param decodeRows     requests that each fed one token (their last sampled)
     * @param prefillPrompts prompts that fed a prefill chunk
     * @param tokens         tokens the forward pass took (decode rows plus prefill chunks)
     * @param waiting        requests submitted and not yet admitted, after the step
     */
    public record StepStats(int decodeRows, int prefillPrompts, int tokens, int waiting) {
        public static final StepStats NONE = new StepStats(0, 0, 0, 0);
    }

    private static final class Active {
        final Work work;
        final Sequence seq;
        final Generation gen;
        int[] pending;          // tokens still to prefill
        int token = -1;         // sampled, not yet fed to the model
        int produced;           // completion tokens so far (regenerated ones included)

        Active(Work work, Sequence seq, Generation gen, int[] pending) {
            this.work = work;
            this.seq = seq;
            this.gen = gen;
            this.pending = pending;
        }
    }

    /** A conversation's kept cache between requests, with the last completion token not yet fed to it. */
    private record Kept(Sequence seq, int tail) {
    }

    /**
     * Prompt tokens a step prefills unless configured: thousands on a GPU, where a step's products reach their rate
     * with thousands of rows; a few hundred on the CPU, where 256 prompt tokens already take a few hundred milliseconds
     * that every decoding request waits.
     */
    public static final int GPU_PREFILL_TOKENS = 8192, CPU_PREFILL_TOKENS = 256;

    /** The prefill budget of a step unless configured, on a backend whose caches are on a device (a GPU) or not. */
    public static int defaultPrefillTokens(boolean cachesOnDevice) {
        return cachesOnDevice ? GPU_PREFILL_TOKENS : CPU_PREFILL_TOKENS;
    }

    /**
     * Requests a step runs at once unless configured: hundreds on a GPU, as serving engines run (decode products stay
     * memory-bound up to about 250 rows, so each row added is nearly free; memory admission bounds them further); 64
     * on the CPU, where every row costs its share of a step.
     */
    public static final int GPU_MAX_RUNNING = 256, CPU_MAX_RUNNING = 64;

    /** The cap on running requests unless configured, on a backend whose caches are on a device (a GPU) or not. */
    public static int defaultMaxRunning(boolean cachesOnDevice) {
        return cachesOnDevice ? GPU_MAX_RUNNING : CPU_MAX_RUNNING;
    }

    private final Engine engine;
    private final int prefillTokens;
    private final int maxRunning;
    /** Whether a step in which a prompt's prefill ends is filled with a partial chunk of the next prompt. */
    private final boolean partialChunkAfterAnEnd;
    private final Deque<Work> waiting = new ArrayDeque<>();
    private final List<Active> active = new ArrayList<>();
    private final Map<String, Kept> idle = new LinkedHashMap<>(16, 0.75f, true); // least recently used first
    private final Map<String, Sequence> busy = new HashMap<>();
    private long prefilledTokens;
    private long historyPrefills;
    private StepStats lastStep = StepStats.NONE;

    /** A scheduler with no limit of its own on running requests (its caller admits by memory). */
    public BatchScheduler(Engine engine, int prefillTokens) {
        this(engine, prefillTokens, Integer.MAX_VALUE);
    }

    /**
     * @param prefillTokens most prompt tokens one step prefills, over all the prompts it takes (bounds the stall that
     *                      the generating conversations see)
     * @param maxRunning    most requests prefilling or generating at once; the rest wait, in order
     */
    public BatchScheduler(Engine engine, int prefillTokens, int maxRunning) {
        this(engine, prefillTokens, maxRunning, engine.backend().gpu());
    }

    /**
     * @param partialChunkAfterAnEnd whether a step in which a prompt's prefill ends takes a partial chunk of the next
     *                               prompt too (the default: on a backend whose caches are on a device, a GPU)
     */
    public BatchScheduler(Engine engine, int prefillTokens, int maxRunning, boolean partialChunkAfterAnEnd) {
        if (prefillTokens < 1) throw new IllegalArgumentException("prefill tokens a step must be >= 1");
        if (maxRunning < 1) throw new IllegalArgumentException("running requests must be >= 1");
        this.engine = engine;
        this.prefillTokens = prefillTokens;
        this.maxRunning = maxRunning;
        this.partialChunkAfterAnEnd = partialChunkAfterAnEnd;
    }

    public Engine engine() {
        return engine;
    }

    public void submit(Work w) {
        waiting.add(w);
    }

    public boolean hasWork() {
        return !waiting.isEmpty() || !active.isEmpty();
    }

    /** Requests admitted and not finished (prefilling or generating). */
    public int activeCount() {
        return active.size();
    }

    /** What the last step fed the model. */
    public StepStats lastStep() {
        return lastStep;
    }

    /** Tokens fed through prefill so far (prompts, plus histories re-prefilled after a dropped cache). */
    public long prefilledTokens() {
        return prefilledTokens;
    }

    /** Requests whose conversation history had to be prefilled again (its cache was dropped or lost). */
    public long historyPrefills() {
        return historyPrefills;
    }

    /** Frees an idle conversation's cache; returns the bytes freed (0 if it had none). */
    public long dropCache(String conversationId) {
        Kept k = idle.remove(conversationId);
        if (k == null) return 0;
        long bytes = k.seq().cache().bytes().total();
        k.seq().cache().release();
        return bytes;
    }

    /** Whether this conversation has a cache kept (idle or in use). */
    public boolean hasCache(String conversationId) {
        return idle.containsKey(conversationId) || busy.containsKey(conversationId);
    }

    /**
     * One forward pass: admit waiting work, one decode token for every generating request and prefill chunks of the
     * admitted prompts, oldest first, up to the step's prefill budget.
     */
    public void step(Listener listener) {
        admit(listener);
        if (active.isEmpty()) {
            lastStep = new StepStats(0, 0, 0, waiting.size());
            return;
        }
        Batch batch = new Batch();
        List<Active> rows = new ArrayList<>();
        int budget = prefillTokens, decodeRows = 0, prompts = 0;
        boolean aPromptEnds = false;
        for (Active a : active) {
            if (a.pending != null) {
                if (budget == 0) continue;
                int n = Math.min(Math.min(budget, a.pending.length), engine.longestStep(a.seq));
                if (n < a.pending.length && aPromptEnds && !partialChunkAfterAnEnd) {
                    budget = 0;   // first come, first served: no later prompt's chunk either
                    continue;
                }
                aPromptEnds |= n == a.pending.length;
                batch.add(a.seq.cache(), Arrays.copyOf(a.pending, n), a.seq.position());
                a.pending = n == a.pending.length ? null : Arrays.copyOfRange(a.pending, n, a.pending.length);
                prefilledTokens += n;
                budget -= n;
                prompts++;
            } else {
                batch.add(a.seq.cache(), new int[]{a.token}, a.seq.position());
                decodeRows++;
            }
            rows.add(a);
        }
        lastStep = new StepStats(decodeRows, prompts, batch.rows(), waiting.size());
        // a token for each row that ends its prompt or decodes (rows with more prompt to prefill take none)
        SamplingParams[] params = new SamplingParams[rows.size()];
        int[] steps = new int[rows.size()];
        for (int i = 0; i < rows.size(); i++) {
            Active a = rows.get(i);
            if (a.pending == null && !a.gen.finished()) {
                params[i] = a.gen.params();
                steps[i] = a.gen.step();
            }
        }
        int[] sampled = engine.backend().forwardSampled(batch, params, steps);
        for (int i = 0; i < rows.size(); i++) {
            Active a = rows.get(i);
            a.seq.advance(batch.segments().get(i).tokens());
            a.token = -1;
            if (a.pending != null) continue; // more prompt to prefill
            if (!a.gen.finished()) {
                int token = a.gen.acceptToken(sampled[i]);
                if (token >= 0) {
                    if (a.produced >= a.work.resumeFrom()) listener.token(a.work, a.produced, token);
                    a.produced++;
                    a.token = token;
                }
            }
            if (a.gen.finished()) finish(a, listener);
        }
        active.removeIf(a -> a.gen.finished());
    }

    private void admit(Listener listener) {
        for (Iterator<Work> it = waiting.iterator(); it.hasNext() && active.size() < maxRunning; ) {
            Work w = it.next();
            if (busy.containsKey(w.conversationId())) continue; // one request at a time per conversation
            it.remove();
            Kept kept = idle.remove(w.conversationId());
            try {
                Sequence seq;
                int[] toPrefill;
                if (kept != null) {
                    seq = kept.seq();
                    toPrefill = kept.tail() >= 0 ? concat(new int[]{kept.tail()}, w.prompt()) : w.prompt();
                } else {
                    seq = engine.newSequence(w.kv());
                    toPrefill = concat(w.history(), w.prompt());
                    if (w.history().length > 0) historyPrefills++;
                }
                engine.checkTokens(seq, toPrefill);
                // the room the whole turn takes, once, as admission budgeted it (growing on demand takes up to twice)
                seq.cache().reserveTotal((long) seq.position() + toPrefill.length + w.params().maxNewTokens() + 1);
                Generation gen = engine.startGeneration(seq, w.params());
                busy.put(w.conversationId(), seq);
                active.add(new Active(w, seq, gen, toPrefill));
            } catch (DsflowException e) {
                if (kept != null) idle.put(w.conversationId(), kept); // the conversation's cache is unaffected
                listener.failed(w, e);
            }
        }
    }

    private void finish(Active a, Listener listener) {
        busy.remove(a.work.conversationId());
        int[] history = a.token >= 0 ? concat(a.seq.tokens(), new int[]{a.token}) : a.seq.tokens();
        idle.put(a.work.conversationId(), new Kept(a.seq, a.token));
        listener.finished(a.work, a.gen.finishReason(), a.work.prompt().length, a.produced, history);
    }

    static int[] concat(int[] a, int[] b) {
        int[] r = Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, r, a.length, b.length);
        return r;
    }
}
