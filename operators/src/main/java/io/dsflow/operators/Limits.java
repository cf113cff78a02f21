package io.dsflow.operators;

import java.io.Serializable;

/**
 * Limits enforced on every request; a request over one gets an error record.
 *
 * @param maxRequestBytes  size of the raw record
 * @param maxPromptTokens  tokens of one prompt (text prompts are checked after tokenising)
 * @param maxTokens        the largest max_tokens a request may ask for
 * @param maxRunning       requests one decode subtask generates at once (more wait for a slot: backpressure, nothing
 *                         is refused)
 * @param maxConversations conversations one decode subtask holds (each keeps its history in keyed state); a request
 *                         that would open one more gets a conversation_limit error record
 * @param maxIdLength      length of conversation_id and request_id
 */
public record Limits(int maxRequestBytes, int maxPromptTokens, int maxTokens, int maxRunning, int maxConversations,
                     int maxIdLength) implements Serializable {
    public static final Limits DEFAULT = new Limits(1 << 20, 32768, 4096, 64, 100_000, 256);
}
