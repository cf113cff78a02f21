package io.dsflow.operators;

import io.dsflow.engine.BatchScheduler;
import io.dsflow.engine.DsflowException;

import java.io.Serializable;

/**
 * Limits enforced on every request; a request over one gets an error record.
 *
 * @param maxRequestBytes  size of the raw record
 * @param maxPromptTokens  tokens of one prompt (text prompts are checked after tokenising)
 * @param maxTokens        the largest max_tokens a request may ask for
 * @param maxRunning       requests one decode subtask generates at once (more wait for a slot: backpressure, nothing
 *                         is refused); {@link #AUTO}: sized for the backend ({@link #maxRunningFor})
 * @param maxConversations live conversations one decode subtask holds (each keeps its history in keyed state); a
 *                         request that would open one more gets a conversation_limit error record. A conversation
 *                         that ended (end record, tombstone) or expired no longer counts
 * @param maxIdLength      length of conversation_id and request_id
 * @param conversationIdleTimeoutMs a conversation with no request active or queued for this long (processing time)
 *                         ends: its state and cache are freed; 0: conversations live until ended
 */
public record Limits(int maxRequestBytes, int maxPromptTokens, int maxTokens, int maxRunning, int maxConversations,
                     int maxIdLength, long conversationIdleTimeoutMs) implements Serializable {
    /** One hour: a chat's pauses fit, while abandoned conversations do not pile up. */
    public static final long DEFAULT_CONVERSATION_IDLE_TIMEOUT_MS = 3_600_000L;
    /** maxRunning sized for the backend the decode operator opens ({@link BatchScheduler#defaultMaxRunning}). */
    public static final int AUTO = 0;
    public static final Limits DEFAULT = new Limits(1 << 20, 32768, 4096, AUTO, 100_000, 256);

    public Limits {
        if (maxRunning < 0) throw new DsflowException("max-running must be >= 1, or auto, got " + maxRunning);
        if (conversationIdleTimeoutMs < 0) {
            throw new DsflowException("the conversation idle timeout must be >= 0 ms (0: never), got "
                    + conversationIdleTimeoutMs);
        }
    }

    /** Requests one subtask runs at once on a backend whose caches are on a device or not: as configured, or the default. */
    public int maxRunningFor(boolean cachesOnDevice) {
        return maxRunning != AUTO ? maxRunning : BatchScheduler.defaultMaxRunning(cachesOnDevice);
    }

    /** The limits with the default conversation idle timeout. */
    public Limits(int maxRequestBytes, int maxPromptTokens, int maxTokens, int maxRunning, int maxConversations,
                  int maxIdLength) {
        this(maxRequestBytes, maxPromptTokens, maxTokens, maxRunning, maxConversations, maxIdLength,
                DEFAULT_CONVERSATION_IDLE_TIMEOUT_MS);
    }
}
