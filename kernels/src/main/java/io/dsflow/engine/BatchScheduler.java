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
 * conversation by one token and feeds at most {@code prefillChunk} prompt tokens of newly admitted requests (several
 * short prompts, or a chunk of a long one), so new requests join at the next step and long prompts do not stall the
 * others for more than a chunk.
 * <ul>
 *   <li>A conversation keeps its sequence (KV cache) between requests: a follow-up prompt continues the cache, and only
 *       its new tokens are prefilled. {@link #dropCache} frees an idle conversation's cache; its next request then
 *       re-prefills the whole history, which the caller passes in.</li>
 *   <li>Not thread-safe: one thread submits and steps (the decode operator's engine thread).</li>
 * </ul>
 */
public final class BatchScheduler {

    /** What happened in a step, per request. */
    public interface Listener {
        /** A new token of a request's completion; index counts from 0 within the completion. */
        void token(String requestId, int index, int tokenId);

        /** The request ended; its conversation's full token history is {@code history}. */
        void finished(String requestId, FinishReason reason, int promptTokens, int completionTokens, int[] history);

        /** The request failed (bad input for this model); nothing of it was kept. */
        void failed(String requestId, DsflowException error);
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

    private final Engine engine;
    private final int prefillChunk;
    private final Deque<Work> waiting = new ArrayDeque<>();
    private final List<Active> active = new ArrayList<>();
    private final Map<String, Kept> idle = new LinkedHashMap<>(16, 0.75f, true); // least recently used first
    private final Map<String, Sequence> busy = new HashMap<>();
    private long prefilledTokens;
    private long historyPrefills;

    /** @param prefillChunk most prompt tokens one step prefills (bounds the stall other conversations see) */
    public BatchScheduler(Engine engine, int prefillChunk) {
        if (prefillChunk < 1) throw new IllegalArgumentException("prefill chunk must be >= 1");
        this.engine = engine;
        this.prefillChunk = prefillChunk;
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

    /** One forward pass: admit waiting work, up to a chunk of prompt tokens, a decode token for every generating request. */
    public void step(Listener listener) {
        admit(listener);
        if (active.isEmpty()) return;
        Batch batch = new Batch();
        List<Active> rows = new ArrayList<>();
        int prefillLeft = prefillChunk;   // prompt tokens this step may still take, over one or several prompts
        for (Active a : active) {
            if (a.pending != null) {
                if (prefillLeft == 0) continue;
                int n = Math.min(prefillLeft, a.pending.length);
                batch.add(a.seq.cache(), Arrays.copyOf(a.pending, n), a.seq.position());
                a.pending = n == a.pending.length ? null : Arrays.copyOfRange(a.pending, n, a.pending.length);
                prefilledTokens += n;
                prefillLeft -= n;
            } else {
                batch.add(a.seq.cache(), new int[]{a.token}, a.seq.position());
            }
            rows.add(a);
        }
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
                    if (a.produced >= a.work.resumeFrom()) listener.token(a.work.requestId(), a.produced, token);
                    a.produced++;
                    a.token = token;
                }
            }
            if (a.gen.finished()) finish(a, listener);
        }
        active.removeIf(a -> a.gen.finished());
    }

    private void admit(Listener listener) {
        for (Iterator<Work> it = waiting.iterator(); it.hasNext(); ) {
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
                Generation gen = engine.startGeneration(seq, w.params());
                busy.put(w.conversationId(), seq);
                active.add(new Active(w, seq, gen, toPrefill));
            } catch (DsflowException e) {
                if (kept != null) idle.put(w.conversationId(), kept); // the conversation's cache is unaffected
                listener.failed(w.requestId(), e);
            }
        }
    }

    private void finish(Active a, Listener listener) {
        busy.remove(a.work.conversationId());
        int[] history = a.token >= 0 ? concat(a.seq.tokens(), new int[]{a.token}) : a.seq.tokens();
        idle.put(a.work.conversationId(), new Kept(a.seq, a.token));
        listener.finished(a.work.requestId(), a.gen.finishReason(), a.work.prompt().length, a.produced, history);
    }

    static int[] concat(int[] a, int[] b) {
        int[] r = Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, r, a.length, b.length);
        return r;
    }
}
