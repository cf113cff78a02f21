package io.dsflow.operators;

import io.dsflow.engine.kv.KvConfig;

import java.util.Arrays;

/**
 * A validated completion request (a Flink POJO: public fields, no-arg constructor). Built only by
 * {@link RequestParser}; field names in JSON follow the OpenAI completions API.
 */
public class Request {
    public String conversationId;
    public String requestId;
    /** Exactly one of prompt and promptIds is set. */
    public String prompt;
    public int[] promptIds;
    public int maxTokens;
    public double temperature;
    public double topP;
    public int topK;
    public long seed;
    public String[] stop;
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

    @Override
    public String toString() {
        return "Request{" + requestId + " in " + conversationId + ", " + (prompt != null ? prompt.length() + " chars"
                : Arrays.toString(promptIds)) + "}";
    }
}
