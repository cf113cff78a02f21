package io.dsflow.operators;

import org.apache.flink.runtime.state.VoidNamespace;
import org.apache.flink.streaming.api.operators.InternalTimerService;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * The rules of a conversation's lifetime on a decode subtask, apart from the operator's plumbing:
 * <ul>
 *   <li>Idle expiry: a conversation with no request active or queued for {@code idleTimeoutMs} of processing time ends
 *       (0: never). Each conversation has at most one expiry timer, a keyed processing-time timer (so it is in the
 *       checkpoint with the keyed state); {@link #track} arms it whenever the conversation becomes idle and disarms it
 *       when a request comes. The deadline is also kept in the state ({@link ConversationState#idleDeadline}), so a
 *       stale timer is recognised and ignored ({@link #expires}).</li>
 *   <li>End commands (a tombstone, or {@code "end_conversation": true}) are served in order with the conversation's
 *       requests: one that arrives while requests are active or queued waits behind them in the queue; the requests
 *       that arrive after it belong to the next conversation of the same id, so only their ids count as used
 *       ({@link #usesKnownId}, {@link #openedAfterEnd}).</li>
 * </ul>
 * The operator carries out an end (clears the keyed state, drops the engine's cache, and tells {@link Admission} the
 * conversation no longer counts against limits.max-conversations). Used from the task thread only, with the
 * conversation's key current (as keyed timers require).
 */
final class ConversationLifetime {
    private final long idleTimeoutMs;
    private final InternalTimerService<VoidNamespace> timers;

    ConversationLifetime(long idleTimeoutMs, InternalTimerService<VoidNamespace> timers) {
        this.idleTimeoutMs = idleTimeoutMs;
        this.timers = timers;
    }

    /** No request active or queued. */
    static boolean isIdle(ConversationState cs) {
        return cs.active == null && cs.queued.length == 0;
    }

    /**
     * Before the conversation's state is written: an idle conversation's expiry is (re)armed for the timeout from now,
     * a busy one's disarmed.
     */
    void track(ConversationState cs) {
        disarm(cs);
        if (idleTimeoutMs > 0 && isIdle(cs)) {
            cs.idleDeadline = timers.currentProcessingTime() + idleTimeoutMs;
            timers.registerProcessingTimeTimer(VoidNamespace.INSTANCE, cs.idleDeadline);
        }
    }

    /** Removes the conversation's expiry timer, if it has one (it is ending, or busy). */
    void disarm(ConversationState cs) {
        if (cs.idleDeadline == 0) return;
        timers.deleteProcessingTimeTimer(VoidNamespace.INSTANCE, cs.idleDeadline);
        cs.idleDeadline = 0;
    }

    /**
     * A restored conversation: arms the expiry of an idle one that has none (state of format 1, or idle expiry newly
     * configured) or a later one than the timeout now allows; its own timer came back with the state otherwise.
     * Returns whether {@code cs} changed (write it back).
     */
    boolean restored(ConversationState cs) {
        if (idleTimeoutMs <= 0 || !isIdle(cs)) return false;
        if (cs.idleDeadline != 0 && cs.idleDeadline <= timers.currentProcessingTime() + idleTimeoutMs) return false;
        track(cs);
        return true;
    }

    /** Whether the expiry timer that fired at {@code timestamp} ends the conversation: its own, and it is idle. */
    boolean expires(ConversationState cs, long timestamp) {
        return idleTimeoutMs > 0 && isIdle(cs) && cs.idleDeadline == timestamp;
    }

    /**
     * Whether a new request of the conversation reuses an id: one of the last ids it served, its active request's or a
     * queued one's. When an end command is queued, the new request belongs to the conversation after it, whose ids so
     * far are those queued after the last end.
     */
    static boolean usesKnownId(ConversationState cs, String requestId) {
        int lastEnd = lastEnd(cs.queued);
        if (lastEnd >= 0) {
            return Arrays.stream(cs.queued, lastEnd + 1, cs.queued.length)
                    .anyMatch(q -> q.requestId.equals(requestId));
        }
        return Arrays.asList(cs.recentRequestIds).contains(requestId)
                || (cs.active != null && cs.active.requestId.equals(requestId))
                || Arrays.stream(cs.queued).anyMatch(q -> q.requestId.equals(requestId));
    }

    /**
     * The state of the conversation that the requests queued after an end command open: those requests (and any
     * later end), their ids remembered; no history.
     */
    static ConversationState openedAfterEnd(Request[] after) {
        ConversationState fresh = new ConversationState();
        fresh.queued = after;
        List<String> ids = new ArrayList<>();
        for (Request q : after) {
            if (q.endConversation) break;
            ids.add(q.requestId);
        }
        int keep = Math.min(ids.size(), ConversationState.REMEMBERED_IDS);
        fresh.recentRequestIds = ids.subList(ids.size() - keep, ids.size()).toArray(new String[0]);
        return fresh;
    }

    private static int lastEnd(Request[] queued) {
        for (int i = queued.length - 1; i >= 0; i--) {
            if (queued[i].endConversation) return i;
        }
        return -1;
    }
}
