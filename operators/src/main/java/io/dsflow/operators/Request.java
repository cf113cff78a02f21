package io.dsflow.operators;

import io.dsflow.engine.kv.KvConfig;

import java.util.Arrays;

/**
 * A validated completion request (a Flink POJO: public fields, no-arg constructor), or the command that ends a
 * conversation ({@link #endConversation}: a Kafka tombstone keyed by the conversation, or a record with
 * {@code "end_conversation": true}). Built only by {@link RequestParser}; field names in JSON follow the OpenAI
 * completions API.
 */
public class Request {
    public String conversationId;
    /** Null only for an end command without one (a tombstone). */
    public String requestId;
    /**
     * An end command, not a completion: the conversation ends once the requests sent before it are served (its state
     * and cache are freed, and the same id later opens a new conversation). No prompt or parameters.
     */
    public boolean endConversation;
    /** Exactly one of prompt and promptIds is set. */
    public String prompt;
    public int[] promptIds;
    public int maxTokens;
    public double temperature;
    public double topP;
    public int topK;
    public long seed;
    public String[] stop = new String[0];
    /** An end-of-sequence token does not end the completion (vLLM's ignore_eos: benchmarks, fixed-length outputs). */
    public boolean ignoreEos;
    /** The request's kv overrides (policy, r, sinks, window, ...), read once from its JSON; null for none. */
    public KvOverrides kv;
    /** The request as it arrived, for error records. */
    public String raw;

    public Request() {
    }

    /** The request's KV configuration: its kv overrides applied to {@code base} (the decode operator's default). */
    public KvConfig kvConfig(KvConfig base) {
        return kv == null ? base : kv.applyTo(base);
    }

    /** The end command of a conversation ({@code requestId} may be null); {@code raw} is the record it came from. */
    public static Request end(String conversationId, String requestId, String raw) {
        Request r = new Request();
        r.endConversation = true;
        r.conversationId = conversationId;
        r.requestId = requestId;
        r.raw = raw;
        return r;
    }

    @Override
    public String toString() {
        if (endConversation) return "Request{end of " + conversationId + "}";
        return "Request{" + requestId + " in " + conversationId + ", " + (prompt != null ? prompt.length() + " chars"
                : Arrays.toString(promptIds)) + "}";
    }
}
