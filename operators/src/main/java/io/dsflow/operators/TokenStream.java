package io.dsflow.operators;

import io.dsflow.engine.FinishReason;
import io.dsflow.engine.Tokenizer;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * The output side of the requests a decode subtask has in progress: per request, the completion tokens emitted so far,
 * the text each new token adds (incremental detokenisation) and the request's timings. It turns the engine's results
 * into chunk records (one a token, in index order) and a final record (finish reason, usage, timings).
 * <ul>
 *   <li>A request is {@link #start started} when it becomes its conversation's active request, or when it resumes
 *       after a restore with the tokens it had emitted at the checkpoint (chunks then continue from that index);</li>
 *   <li>its emitted tokens go into keyed state only at checkpoints: {@link #takeUnsaved} hands over what changed;</li>
 *   <li>it leaves with its {@link #finalRecord} or, when it fails, {@link #remove}.</li>
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
        final long startNanos = System.nanoTime();
        long lastTokenNanos;
        double itlSumMs;
        int itlCount;
        double ttftMs;
        /** Incremental detokenisation: the chunk text of token n is decode(prefix..n) minus decode(prefix..read). */
        int prefixOffset, readOffset;
        /** The completion's tokens emitted so far (the first {@code emitted}). */
        int[] tokens;
        int emitted;
        boolean unsaved;

        Completion(String requestId, int[] emittedBefore) {
            this.requestId = requestId;
            tokens = Arrays.copyOf(emittedBefore, Math.max(16, emittedBefore.length * 2));
            emitted = emittedBefore.length;
            prefixOffset = Math.max(0, emitted - 1);   // one token of context for the next text
            readOffset = emitted;
        }

        void append(int token) {
            if (emitted == tokens.length) tokens = Arrays.copyOf(tokens, tokens.length * 2);
            tokens[emitted++] = token;
            unsaved = true;
        }
    }

    private final Tokenizer tokenizer;
    private final Metrics metrics;
    /** By conversation id. */
    private final Map<String, Completion> inProgress = new HashMap<>();

    TokenStream(Tokenizer tokenizer, Metrics metrics) {
        this.tokenizer = tokenizer;
        this.metrics = metrics;
    }

    /** A request starts (nothing emitted yet), or resumes after a restore having emitted {@code emittedBefore}. */
    void start(String requestId, String conversationId, int[] emittedBefore) {
        Completion other = inProgress.putIfAbsent(conversationId, new Completion(requestId, emittedBefore));
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
        return completion(conversationId, requestId).emitted;
    }

    /** The chunk record of the request's next token ({@code index}: its position in the completion). */
    OutputRecord chunk(String conversationId, String requestId, int index, int tokenId) {
        Completion c = completion(conversationId, requestId);
        c.append(tokenId);
        String delta = textDelta(c);
        long now = System.nanoTime();
        if (index == 0 || c.lastTokenNanos == 0) {
            c.ttftMs = (now - c.startNanos) / 1e6;
            metrics.firstToken(c.ttftMs);
        } else {
            double ms = (now - c.lastTokenNanos) / 1e6;
            c.itlSumMs += ms;
            c.itlCount++;
            metrics.nextToken(ms);
        }
        c.lastTokenNanos = now;
        return OutputRecord.chunk(conversationId, requestId, index, tokenId, delta);
    }

    /**
     * The text the newest token adds, decoding only the tokens since the last emitted text and one before them (so
     * a tokenizer's leading-space rule treats both decodes alike): constant work a token instead of decoding the whole
     * completion each time. A token that ends inside a multi-byte character adds nothing until the character is whole.
     */
    private String textDelta(Completion c) {
        String before = tokenizer.decode(Arrays.copyOfRange(c.tokens, c.prefixOffset, c.readOffset));
        String now = tokenizer.decode(Arrays.copyOfRange(c.tokens, c.prefixOffset, c.emitted));
        if (now.length() <= before.length() || now.endsWith("\uFFFD") || !now.startsWith(before)) return "";
        c.prefixOffset = c.readOffset;
        c.readOffset = c.emitted;
        return now.substring(before.length());
    }

    /** The request's final record; the request leaves the stream. */
    OutputRecord finalRecord(String conversationId, String requestId, FinishReason reason, int promptTokens,
                             int completionTokens) {
        Completion c = completion(conversationId, requestId);
        inProgress.remove(conversationId);
        return OutputRecord.finalRecord(conversationId, requestId, reason.id(), promptTokens, completionTokens,
                c.ttftMs, c.itlCount == 0 ? 0 : c.itlSumMs / c.itlCount);
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
            unsaved.add(new Unsaved(c.requestId, e.getKey(), Arrays.copyOf(c.tokens, c.emitted)));
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
