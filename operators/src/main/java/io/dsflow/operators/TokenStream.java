package io.dsflow.operators;

import io.dsflow.engine.FinishReason;
import io.dsflow.engine.CompletionText;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Function;

/**
 * The output side of the requests a decode subtask has in progress: per request, the completion tokens released so far,
 * the text each adds ({@link CompletionText}: incremental detokenisation, stop strings held back) and the request's
 * timings. It turns the engine's tokens into chunk records (one a token, in index order) and a final record (finish
 * reason, usage, timings).
 * <ul>
 *   <li>A request is {@link #start started} when it becomes its conversation's active request, or when it resumes
 *       after a restore with the tokens it had emitted at the checkpoint (chunks then continue from that index);</li>
 *   <li>a token whose text may still begin one of the request's stop strings is held: {@link #chunks} returns the
 *       records of the tokens now certain (none, one or several). A stop string is never emitted and its tokens are
 *       not counted in the usage (OpenAI's contract);</li>
 *   <li>its emitted tokens go into keyed state only at checkpoints: {@link #takeUnsaved} hands over what changed (held
 *       tokens are not in it: after a restore they are generated again and decided again);</li>
 *   <li>it leaves with {@link #finish} (what was held, then the final record) or, when it fails, {@link #remove}.</li>
 * </ul>
 * Requests in progress are keyed by their conversation, which has at most one at a time: request ids come from clients,
 * and two conversations may use the same one at once. Every call names the request as well, and a call for a request
 * that is not its conversation's request in progress is a bug (IllegalStateException), never a mislabelled record.
 * No Flink types; used from the task thread only (the operator applies engine results there, in the mailbox).
 */
final class TokenStream {

    /** Where the stream reports its timings (the operator's Flink metrics). */
    interface Metrics {
        Metrics NONE = new Metrics() {
            @Override
            public void firstToken(double ms) {
            }

            @Override
            public void nextToken(double ms) {
            }
        };

        /** A request's first token, {@code ms} after the request started (or resumed). */
        void firstToken(double ms);

        /** A later token, {@code ms} after the previous one. */
        void nextToken(double ms);
    }

    /** Tokens a request emitted since keyed state last got them. */
    record Unsaved(String requestId, String conversationId, int[] tokens) {
    }

    /** A request in progress, as the task thread sees it. */
    private static final class Completion {
        final String requestId;
        final CompletionText text;
        final long startNanos = System.nanoTime();
        long lastTokenNanos;
        double itlSumMs;
        int itlCount;
        double ttftMs;
        boolean unsaved;

        Completion(String requestId, CompletionText text) {
            this.requestId = requestId;
            this.text = text;
        }
    }

    private final Function<int[], String> decode;
    private final Metrics metrics;
    /** By conversation id. */
    private final Map<String, Completion> inProgress = new HashMap<>();

    /** @param decode the model's detokeniser (special tokens left out) */
    TokenStream(Function<int[], String> decode, Metrics metrics) {
        this.decode = decode;
        this.metrics = metrics;
    }

    /**
     * A request starts (nothing emitted yet), or resumes after a restore having emitted {@code emittedBefore}; its
     * chunks hold back {@code stops}.
     */
    void start(String requestId, String conversationId, int[] emittedBefore, List<String> stops) {
        Completion c = new Completion(requestId, new CompletionText(decode, stops, emittedBefore));
        Completion other = inProgress.putIfAbsent(conversationId, c);
        if (other != null) {
            throw new IllegalStateException("conversation " + conversationId + " already has request "
                    + other.requestId + " in progress; " + requestId + " cannot start");
        }
    }

    boolean isEmpty() {
        return inProgress.isEmpty();
    }

    /** Requests in progress (waiting for admission or generating). */
    int size() {
        return inProgress.size();
    }

    /** Completion tokens the request has emitted (chunk records sent). */
    int emitted(String conversationId, String requestId) {
        return completion(conversationId, requestId).text.releasedCount();
    }

    /**
     * The request's next token ({@code index}: its position in the completion): the chunk records of the tokens now
     * certain to be output, in order (none while a stop string may be beginning).
     */
    List<OutputRecord> chunks(String conversationId, String requestId, int index, int tokenId) {
        Completion c = completion(conversationId, requestId);
        if (index != c.text.releasedCount() + heldCount(c)) {
            throw new IllegalStateException("request " + requestId + " of " + conversationId + ": token " + index
                    + " out of order");
        }
        return records(conversationId, c, c.text.add(tokenId));
    }

    /** Tokens the engine produced that the stream holds back (a stop string may be beginning). */
    private static int heldCount(Completion c) {
        return c.text.addedCount() - c.text.releasedCount();
    }

    private List<OutputRecord> records(String conversationId, Completion c, List<CompletionText.Piece> pieces) {
        if (pieces.isEmpty()) return List.of();
        List<OutputRecord> out = new ArrayList<>(pieces.size());
        long now = System.nanoTime();
        for (CompletionText.Piece p : pieces) {
            if (c.lastTokenNanos == 0) {
                c.ttftMs = (now - c.startNanos) / 1e6;
                metrics.firstToken(c.ttftMs);
            } else {
                double ms = (now - c.lastTokenNanos) / 1e6;
                c.itlSumMs += ms;
                c.itlCount++;
                metrics.nextToken(ms);
            }
            c.lastTokenNanos = now;
            out.add(OutputRecord.chunk(conversationId, c.requestId, p.index(), p.tokenId(), p.text()));
        }
        c.unsaved = true;
        return out;
    }

    /**
     * The request ended: the chunks of what was held (unless a stop string ended it), then its final record, whose
     * completion_tokens counts the chunks emitted. The request leaves the stream.
     */
    List<OutputRecord> finish(String conversationId, String requestId, FinishReason reason, int promptTokens) {
        Completion c = completion(conversationId, requestId);
        List<OutputRecord> out = new ArrayList<>(records(conversationId, c, c.text.finish()));
        inProgress.remove(conversationId);
        out.add(OutputRecord.finalRecord(conversationId, requestId, reason.id(), promptTokens,
                c.text.releasedCount(), c.ttftMs, c.itlCount == 0 ? 0 : c.itlSumMs / c.itlCount));
        return out;
    }

    /** The request leaves without a final record of its own (it ended with an error). */
    void remove(String conversationId, String requestId) {
        completion(conversationId, requestId);
        inProgress.remove(conversationId);
    }

    /** The requests that emitted tokens since the last call, with all their tokens so far; marks them saved. */
    List<Unsaved> takeUnsaved() {
        List<Unsaved> unsaved = new ArrayList<>();
        for (Map.Entry<String, Completion> e : inProgress.entrySet()) {
            Completion c = e.getValue();
            if (!c.unsaved) continue;
            unsaved.add(new Unsaved(c.requestId, e.getKey(), c.text.releasedTokens()));
            c.unsaved = false;
        }
        return unsaved;
    }

    private Completion completion(String conversationId, String requestId) {
        Completion c = inProgress.get(conversationId);
        if (c == null || !c.requestId.equals(requestId)) {
            throw new IllegalStateException("request " + requestId + " is not in progress in conversation "
                    + conversationId);
        }
        return c;
    }
}
