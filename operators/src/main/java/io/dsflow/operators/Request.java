package io.dsflow.operators;

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
    /** The request's kv overrides as JSON (policy, r, sinks, window, ...), or null. */
    public String kv;
    /** The request as it arrived, for error records. */
    public String raw;

    public Request() {
    }

    @Override
    public String toString() {
        return "Request{" + requestId + " in " + conversationId + ", " + (prompt != null ? prompt.length() + " chars"
                : Arrays.toString(promptIds)) + "}";
    }
}
