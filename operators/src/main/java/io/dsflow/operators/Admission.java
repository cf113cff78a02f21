package io.dsflow.operators;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Which requests of a decode subtask generate, which wait, and what their KV caches hold of the subtask's memory.
 * No Flink types: the decode operator asks it and carries out its decisions (submits work to the engine, drops
 * caches there, emits error records), so every rule below is tested without a cluster.
 * <ul>
 *   <li>Conversations: at most {@code maxConversations} hold state on the subtask; {@link #openConversation} refuses
 *       one more (the operator answers with a conversation_limit error record).</li>
 *   <li>Waiting: a conversation's active request {@link #enqueue enqueues} with the cache bytes it will need;
 *       requests are admitted in arrival order, the first one blocking the rest (no overtaking, so a large request is
 *       not starved by small ones).</li>
 *   <li>Budgets: a request is admitted when fewer than {@code maxRunning} run and its bytes fit both budgets: the
 *       cache budget (managed memory, or a GPU's free memory where the caches live) and the host budget (the pinned
 *       host stores of placement=host, from managed memory). Its conversation then holds those bytes, also while
 *       idle between requests, until its cache is dropped.</li>
 *   <li>Eviction: when the first waiting request lacks memory, idle caches are dropped in the order their
 *       conversations last finished a request (oldest first), never the waiting conversation's own, until the
 *       shortfall is covered or none are left. Their conversations re-prefill their history when they return.</li>
 *   <li>Refusal: a request whose cache alone exceeds a budget can never run; it is {@link Verdict#REFUSED refused}
 *       and its conversation's cache dropped.</li>
 *   <li>Backpressure: while more than {@code maxRunning} requests wait, {@link #mustBackpressure} tells the operator to
 *       serve results instead of taking input. Nothing fails for lack of memory.</li>
 * </ul>
 * Lifecycle: made in the operator's open() with the budgets it computed, used from the task thread only; the
 * operator releases whatever managed memory is still reserved when it closes.
 *
 * @param <W> the work a waiting request hands to the engine when admitted
 */
public final class Admission<W> {

    /** Where a budget's bytes are also reserved; managed memory reserves them from the task's MemoryManager. */
    public interface Reservations {
        Reservations NONE = new Reservations() {
            @Override
            public void reserve(long bytes) {
            }

            @Override
            public void release(long bytes) {
            }
        };

        void reserve(long bytes) throws Exception;

        void release(long bytes);
    }

    /**
     * Bytes conversations' caches hold against a limit, by conversation.
     *
     * @param memory what the limit is, for messages ("managed memory", "device memory")
     */
    public static final class Budget {
        private final long limit;
        private final String memory;
        private final Reservations reservations;
        private final Map<String, Long> held = new HashMap<>();
        private long total;

        public Budget(long limit, String memory, Reservations reservations) {
            this.limit = limit;
            this.memory = memory;
            this.reservations = reservations;
        }

        public long limit() {
            return limit;
        }

        /** Bytes held by all conversations. */
        public long total() {
            return total;
        }

        /** Bytes held by one conversation (0 if none). */
        public long of(String conv) {
            return held.getOrDefault(conv, 0L);
        }

        /** How many bytes others would have to free for conv to hold {@code needed} (0 or less: it fits). */
        long shortfall(String conv, long needed) {
            return total - of(conv) + needed - limit;
        }

        void reserve(String conv, long needed) throws Exception {
            long have = of(conv);
            if (needed <= have) return;
            reservations.reserve(needed - have);
            total += needed - have;
            held.put(conv, needed);
        }

        void release(String conv) {
            Long bytes = held.remove(conv);
            if (bytes == null) return;
            reservations.release(bytes);
            total -= bytes;
        }
    }

    /** What a request's cache will take: bytes of the cache budget and of the host budget. */
    public record Need(long cacheBytes, long hostBytes) {
    }

    public enum Verdict {
        /** Bytes reserved, a slot taken: submit the work to the engine. */
        ADMITTED,
        /** It waits (and every request behind it); try again when a request ends. */
        WAIT,
        /** It can never fit: end it with an error. It left the queue. */
        REFUSED
    }

    /**
     * The outcome for the first waiting request.
     *
     * @param evicted          idle conversations whose caches were dropped to make room, oldest first: drop them in the
     *                         engine too (before submitting this decision's work, so the memory is free first)
     * @param droppedOwnCache  REFUSED only: the conversation's own kept cache was released as well
     * @param refusal          REFUSED only: why, for the error record
     */
    public record Decision<W>(Verdict verdict, String conversationId, W work, List<String> evicted,
                              boolean droppedOwnCache, String refusal) {
    }

    private record Waiting<W>(String conversationId, Need need, W work) {
    }

    private final Budget cache, host;
    private final int maxRunning, maxConversations;
    private final Deque<Waiting<W>> waiting = new ArrayDeque<>();
    private final Set<String> running = new HashSet<>();
    /** Kept caches of conversations with nothing running, in the order their last request ended (oldest first). */
    private final LinkedHashSet<String> idle = new LinkedHashSet<>();
    private long conversations;

    public Admission(Budget cache, Budget host, int maxRunning, int maxConversations) {
        this.cache = cache;
        this.host = host;
        this.maxRunning = maxRunning;
        this.maxConversations = maxConversations;
    }

    public Budget cacheBudget() {
        return cache;
    }

    public Budget hostBudget() {
        return host;
    }

    /** A new conversation wants state on this subtask: false (nothing counted) when it holds its limit already. */
    public boolean openConversation() {
        if (conversations >= maxConversations) return false;
        conversations++;
        return true;
    }

    /** A conversation found in restored state (counted against the limit whatever it is). */
    public void restoredConversation() {
        conversations++;
    }

    /**
     * A conversation ended (an end record, or idle expiry; it has nothing running or waiting): it no longer counts
     * against the limit, and the bytes its kept cache held are free (the operator drops the cache in the engine).
     */
    public void closeConversation(String conv) {
        release(conv);
        conversations--;
    }

    public long conversations() {
        return conversations;
    }

    /** The conversation's active request waits for admission, needing {@code need}. */
    public void enqueue(String conv, Need need, W work) {
        waiting.add(new Waiting<>(conv, need, work));
    }

    public boolean isWaiting(String conv) {
        return waiting.stream().anyMatch(w -> w.conversationId().equals(conv));
    }

    public boolean hasWaiting() {
        return !waiting.isEmpty();
    }

    /** Requests waiting for a slot or memory. */
    public int waitingCount() {
        return waiting.size();
    }

    /** Requests admitted and not yet ended. */
    public int runningCount() {
        return running.size();
    }

    /** Idle conversations holding a cache, oldest first (the order they would be evicted in). */
    public List<String> idleCaches() {
        return List.copyOf(idle);
    }

    /** Whether the operator should stop taking input until requests end (more wait than may run at once). */
    public boolean mustBackpressure() {
        return waiting.size() > maxRunning;
    }

    /**
     * Decides for the first waiting request; call while {@link #hasWaiting}, stopping at WAIT.
     *
     * @throws Exception when managed memory refuses a reservation the budget allowed (a bug: the budget is the
     *                   operator's share of it)
     */
    public Decision<W> admitNext() throws Exception {
        Waiting<W> w = waiting.peek();
        if (w == null) throw new IllegalStateException("no request waits");
        String conv = w.conversationId();
        Need need = w.need();
        if (need.cacheBytes() > cache.limit || need.hostBytes() > host.limit) {
            waiting.poll();
            boolean heldCache = cache.of(conv) > 0;
            if (heldCache) release(conv);
            return new Decision<>(Verdict.REFUSED, conv, w.work(), List.of(), heldCache, refusal(need));
        }
        List<String> evicted = List.of();
        if (!fits(conv, need)) {
            evicted = evictIdle(cache.shortfall(conv, need.cacheBytes()), host.shortfall(conv, need.hostBytes()), conv);
        }
        // checked again after the eviction: when nothing else runs, no later result would come to retry it
        if (running.size() >= maxRunning || !fits(conv, need)) {
            return new Decision<>(Verdict.WAIT, conv, w.work(), evicted, false, null);
        }
        waiting.poll();
        idle.remove(conv);
        cache.reserve(conv, need.cacheBytes());
        host.reserve(conv, need.hostBytes());
        running.add(conv);
        return new Decision<>(Verdict.ADMITTED, conv, w.work(), evicted, false, null);
    }

    private boolean fits(String conv, Need need) {
        return cache.shortfall(conv, need.cacheBytes()) <= 0 && host.shortfall(conv, need.hostBytes()) <= 0;
    }

    /** The conversation's running request ended (finished or failed): its cache is kept, idle, and may be evicted. */
    public void ended(String conv) {
        running.remove(conv);
        idle.add(conv);
    }

    /**
     * Drops idle caches, oldest first and not {@code keep}'s, until {@code bytes} of the cache budget and
     * {@code hostBytes} of the host budget would be free; returns the conversations dropped.
     */
    private List<String> evictIdle(long bytes, long hostBytes, String keep) {
        List<String> evicted = new ArrayList<>();
        long freed = 0, hostFreed = 0;
        for (String conv : new ArrayList<>(idle)) {
            if (freed >= bytes && hostFreed >= hostBytes) break;
            if (conv.equals(keep)) continue;
            freed += cache.of(conv);
            hostFreed += host.of(conv);
            release(conv);
            evicted.add(conv);
        }
        return evicted;
    }

    private void release(String conv) {
        idle.remove(conv);
        cache.release(conv);
        host.release(conv);
    }

    private String refusal(Need need) {
        if (need.cacheBytes() > cache.limit) {
            return String.format("the request needs %.1f MB of KV cache; the decode operator has %.1f MB of %s",
                    need.cacheBytes() / 1e6, cache.limit / 1e6, cache.memory);
        }
        return String.format("the request needs %.1f MB of pinned host memory for its KV store (placement host); the"
                + " decode operator has %.1f MB of %s", need.hostBytes() / 1e6, host.limit / 1e6, host.memory);
    }
}
