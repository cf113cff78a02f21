package io.dsflow.operators;

import java.io.Serializable;

/**
 * Limits enforced on every request; a request over one gets an error record.
 *
 * @param maxRequestBytes  size of the raw record
 * @param maxPromptTokens  tokens of one prompt (text prompts are checked after tokenising)
 * @param maxTokens        the largest max_tokens a request may ask for
 * @param maxConversations conversations one decode subtask serves at once (more wait: backpressure)
 * @param maxIdLength      length of conversation_id and request_id
 */
public record Limits(int maxRequestBytes, int maxPromptTokens, int maxTokens, int maxConversations, int maxIdLength)
        implements Serializable {
    public static final Limits DEFAULT = new Limits(1 << 20, 32768, 4096, 64, 256);
}
