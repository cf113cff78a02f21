package io.dsflow.operators;

/**
 * A conversation's checkpointed state (a Flink POJO): its token history and the request in progress. Small by
 * design: token ids and parameters, never cache bytes; after a restore the cache is rebuilt by prefill from
 * {@link #history} and the active request is regenerated from {@link #emitted} on (seeded sampling gives the same
 * tokens).
 */
public class ConversationState {
    /** Every token of the conversation before the active request (prompts and completions). */
    public int[] history = new int[0];
    /** The request being generated, or null. */
    public Request active;
    /** Its prompt tokens. */
    public int[] activePrompt;
    /**
     * Completion tokens emitted (chunk records sent downstream), as of the last checkpoint: the operator keeps the
     * running count in memory and writes it here before each barrier (and resets it when the request ends).
     */
    public int[] completion = new int[0];
    /**
     * Requests that arrived while one was active, served in order; an end command among them ends the conversation
     * when its turn comes, and the requests after it open a new one.
     */
    public Request[] queued = new Request[0];
    /** The last request ids seen in this conversation (a repeated one is refused as a duplicate). */
    public String[] recentRequestIds = new String[0];
    /**
     * While the conversation is idle: the processing time (ms) its expiry timer fires, when it ends unless a request
     * comes first; 0 while it is busy or when conversations never expire.
     */
    public long idleDeadline;

    /** How many request ids a conversation remembers for duplicate detection. */
    public static final int REMEMBERED_IDS = 64;

    public ConversationState() {
    }
}
