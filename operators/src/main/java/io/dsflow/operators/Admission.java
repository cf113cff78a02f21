package io.dsflow.operators;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
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
 *   <li>Budgets: a request is admitted when fewer than {@code maxRunning} run and its bytes fit both budgets: the
 *       cache budget (managed memory, or a GPU's free memory where the caches live) and the host budget (the pinned
 *       host stores of placement=host, from managed memory). Its conversation then holds those bytes, also while
 *       idle between requests, until its cache is dropped.</li>
 *   <li>Waiting: a conversation's active request {@link #enqueue enqueues} with its {@link Need}. A request whose
 *       conversation holds a cache (warm: only its new tokens to prefill) is admitted in arrival order, never
 *       overtaken. A request without one (cold: a new conversation, or one whose cache was dropped and whose history
 *       must be prefilled again) keeps its order among the cold ones, but a warm request behind it that can run
 *       overtakes it while it waits for memory: the work whose cache is resident goes first.</li>
 *   <li>Eviction, only of idle caches and only when it admits the request (never a drop for nothing), coldest
 *       first: (1) conversations with no request waiting that ended their last request more than {@code maxRunning}
 *       ends ago, in the order they ended; then (2) those that ended more recently (their next request may be on its
 *       way: a closed-loop client answers at once), then conversations whose next request waits, the cache resident
 *       longest first (so a cache just rebuilt is the last to go). The second kind is a displacement: that
 *       conversation will likely prefill its history again soon. Dropping the cache of one whose request waits
 *       adds that rebuild to the debt below at once; one whose next request has not come owes nothing until it
 *       comes (then it is a rebuild like any other): a replay of one-turn conversations nobody ends would otherwise
 *       owe for every cache it displaces and admit one request a wave.</li>
 *   <li>Thrash guard: a cold request that would prefill its history (a rebuild) starts only while the rebuild debt
 *       is paid: it then owes {@value #REBUILD_SHARE} times its history's tokens, and every admitted request pays back
 *       its new tokens (prompt + max_tokens). So rebuilds take at most about one token in {@value #REBUILD_SHARE} of
 *       the work served, however far the working set outgrew the budget; until its turn the cold request waits
 *       (backpressure) while warm ones run, rather than evict caches that the next admissions would rebuild. A warm
 *       request may always displace (its growth is a few tokens, and without it a full budget would hold every
 *       resident conversation back), and when nothing runs the first request may start whatever it needs (no later
 *       step would come to retry it).</li>
 *   <li>Refusal: a request whose cache alone exceeds a budget can never run; it is {@link Verdict#REFUSED refused}
 *       and its conversation's cache dropped.</li>
 *   <li>Backpressure: while more than {@value #WAITING_PER_SLOT} times {@code maxRunning} requests wait,
 *       {@link #mustBackpressure} tells the operator to serve results instead of taking input. Nothing fails for lack
 *       of memory.</li>
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

    /**
     * What a request's cache will take: bytes of the cache budget and of the host budget; and its tokens, for the
     * rebuild debt: {@code historyTokens} the conversation's tokens before this prompt (prefilled again if its cache is
     * gone), {@code newTokens} the prompt's and the completion's (max_tokens).
     */
    public record Need(long cacheBytes, long hostBytes, long historyTokens, long newTokens) {
        /** A need without token counts (no history to rebuild, nothing paid back). */
        public Need(long cacheBytes, long hostBytes) {
            this(cacheBytes, hostBytes, 0, 0);
        }
    }

    public enum Verdict {
        /** Bytes reserved, a slot taken: submit the work to the engine. */
        ADMITTED,
        /** Nothing more can start now; try again when a request ends. */
        WAIT,
        /** It can never fit: end it with an error. It left the queue. */
        REFUSED
    }

    /**
     * The outcome for a waiting request: the one admitted or refused (not always the first: a warm request may
     * overtake cold ones), or for WAIT the first waiting one.
     *
     * @param evicted          idle conversations whose caches were dropped to make room, in the order dropped: drop
     *                         them in the engine too (before submitting this decision's work, so the memory is free
     *                         first); empty unless ADMITTED
     * @param droppedOwnCache  REFUSED only: the conversation's own kept cache was released as well
     * @param refusal          REFUSED only: why, for the error record
     */
    public record Decision<W>(Verdict verdict, String conversationId, W work, List<String> evicted,
                              boolean droppedOwnCache, String refusal) {
    }

    private record Waiting<W>(String conversationId, Need need, W work) {
    }

    /**
     * Rebuild tokens may be one in this many of the tokens served (see the class comment):
     * a history prefill costs about what the same number of decoded tokens cost on the CPU, so this bounds what
     * rotating caches through a budget the working set outgrew takes from throughput.
     */
    static final int REBUILD_SHARE = 4;
    /** Requests that may wait per running slot before the input is held back (see {@link #mustBackpressure}). */
    public static final int WAITING_PER_SLOT = 4;

    private final Budget cache, host;
    private final int maxRunning, maxConversations;
    /** Waiting requests by conversation (one at most each: the operator enqueues a conversation's active request). */
    private final LinkedHashMap<String, Waiting<W>> waiting = new LinkedHashMap<>();
    private final Set<String> running = new HashSet<>();
    /** Kept caches of conversations with nothing running, in the order their last request ended (oldest first). */
    private final LinkedHashSet<String> idle = new LinkedHashSet<>();
    /** When each held cache was built (an admission count): the order displacement takes them in. */
    private final Map<String, Long> residentSince = new HashMap<>();
    /** The tokens each held cache will have once its request ends (what a displacement makes its owner rebuild). */
    private final Map<String, Long> cacheTokens = new HashMap<>();
    private long admissions;
    /** Requests ended so far, and the count at each conversation's last end (see {@link #recentlyEnded}). */
    private long ends;
    private final Map<String, Long> endedAt = new HashMap<>();
    /** Served tokens still owed for rebuilds; a rebuild waits while it is positive (unless nothing runs). */
    private long rebuildDebt;
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

    /**
     * How many conversations needing {@code need} each the budgets hold at once: the fewer that either budget holds
     * (a budget the need takes nothing of holds any number), at most {@code maxConversations}. What the operator's log
     * says a subtask holds at a length.
     */
    public long held(Need need) {
        long n = maxConversations;
        if (need.cacheBytes() > 0) n = Math.min(n, cache.limit() / need.cacheBytes());
        if (need.hostBytes() > 0) n = Math.min(n, host.limit() / need.hostBytes());
        return n;
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
        if (waiting.containsKey(conv)) throw new IllegalStateException(conv + " has a request waiting already");
        waiting.put(conv, new Waiting<>(conv, need, work));
    }

    public boolean isWaiting(String conv) {
        return waiting.containsKey(conv);
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

    /** Idle conversations holding a cache, in the order their requests ended (oldest first). */
    public List<String> idleCaches() {
        return List.copyOf(idle);
    }

    /** Whether the conversation holds a cache (its next request prefills only its new tokens). */
    public boolean isResident(String conv) {
        return cache.of(conv) > 0 || host.of(conv) > 0;
    }

    /** Served tokens still owed before a rebuild may displace another cache (0: none owed). */
    public long rebuildDebt() {
        return rebuildDebt;
    }

    /**
     * Whether the operator should stop taking input until requests end: more wait than {@value #WAITING_PER_SLOT}
     * times what may run at once. Admission must see the requests that wait: a conversation whose next request is
     * still in the input looks idle, and its cache would be evicted first (the conversations that ended longest ago are
     * the ones whose requests were read last); with 64 waiting at most, 200 conversations in a closed loop were
     * evicted and rebuilt on nearly every admission, as if nothing had changed.
     */
    public boolean mustBackpressure() {
        return waiting.size() > WAITING_PER_SLOT * maxRunning;
    }

    /**
     * Decides for the waiting requests: admits or refuses one of them, or says WAIT when none can start now; call
     * while {@link #hasWaiting}, stopping at WAIT.
     *
     * @throws Exception when managed memory refuses a reservation the budget allowed (a bug: the budget is the
     *                   operator's share of it)
     */
    public Decision<W> admitNext() throws Exception {
        if (waiting.isEmpty()) throw new IllegalStateException("no request waits");
        Waiting<W> first = waiting.values().iterator().next();
        boolean coldBlocked = false;
        for (Waiting<W> w : List.copyOf(waiting.values())) {
            String conv = w.conversationId();
            Need need = w.need();
            if (need.cacheBytes() > cache.limit || need.hostBytes() > host.limit) {
                waiting.remove(conv);
                boolean heldCache = isResident(conv);   // bytes in either budget
                if (heldCache) release(conv);
                return new Decision<>(Verdict.REFUSED, conv, w.work(), List.of(), heldCache, refusal(need));
            }
            if (running.size() >= maxRunning) break;
            boolean warm = isResident(conv);
            if (!warm && coldBlocked) continue;   // cold requests keep their order among themselves
            List<String> victims = victims(conv, need, warm);
            if (victims != null) return admit(w, warm, victims);
            if (warm) break;                       // a warm request is never overtaken
            coldBlocked = true;
        }
        return new Decision<>(Verdict.WAIT, first.conversationId(), first.work(), List.of(), false, null);
    }

    /**
     * The idle caches to drop so that the request fits, coldest first (see the class comment); null when it cannot
     * be made to fit now, in which case nothing is dropped.
     */
    private List<String> victims(String conv, Need need, boolean warm) {
        long bytes = cache.shortfall(conv, need.cacheBytes()), hostBytes = host.shortfall(conv, need.hostBytes());
        List<String> victims = new ArrayList<>();
        for (String c : idle) {   // (1) nobody is asking for these, nor has just finished a request
            if (bytes <= 0 && hostBytes <= 0) return victims;
            if (c.equals(conv) || waiting.containsKey(c) || recentlyEnded(c)) continue;
            victims.add(c);
            bytes -= cache.of(c);
            hostBytes -= host.of(c);
        }
        if (bytes <= 0 && hostBytes <= 0) return victims;
        if (!warm && rebuildDebt > 0 && !running.isEmpty()) return null;   // wait rather than thrash
        // (2) displacements: conversations that just finished a request (the next may be on its way: a client answers
        // a completion at once), in the order they ended; then those whose request waits, the longest resident first
        List<String> displaceable = new ArrayList<>(), waitingOnes = new ArrayList<>();
        for (String c : idle) {
            if (c.equals(conv)) continue;
            if (waiting.containsKey(c)) waitingOnes.add(c);
            else if (recentlyEnded(c)) displaceable.add(c);
        }
        waitingOnes.sort(Comparator.comparingLong(c -> residentSince.getOrDefault(c, 0L)));
        displaceable.addAll(waitingOnes);
        for (String c : displaceable) {
            if (bytes <= 0 && hostBytes <= 0) break;
            victims.add(c);
            bytes -= cache.of(c);
            hostBytes -= host.of(c);
        }
        return bytes <= 0 && hostBytes <= 0 ? victims : null;
    }

    private Decision<W> admit(Waiting<W> w, boolean warm, List<String> victims) throws Exception {
        String conv = w.conversationId();
        Need need = w.need();
        for (String v : victims) {
            if (waiting.containsKey(v)) rebuildDebt += REBUILD_SHARE * cacheTokens.getOrDefault(v, 0L);
            release(v);
        }
        if (!warm) rebuildDebt += REBUILD_SHARE * need.historyTokens();
        rebuildDebt = Math.max(0, rebuildDebt - need.newTokens());
        waiting.remove(conv);
        idle.remove(conv);
        cache.reserve(conv, need.cacheBytes());
        host.reserve(conv, need.hostBytes());
        admissions++;
        if (!warm) residentSince.put(conv, admissions);
        cacheTokens.put(conv, need.historyTokens() + need.newTokens());
        running.add(conv);
        return new Decision<>(Verdict.ADMITTED, conv, w.work(), List.copyOf(victims), false, null);
    }

    /** The conversation's running request ended (finished or failed): its cache is kept, idle, and may be evicted. */
    public void ended(String conv) {
        running.remove(conv);
        idle.add(conv);
        endedAt.put(conv, ++ends);
    }

    /**
     * Whether the conversation's last request ended within the last {@code maxRunning} ends: its next request may not
     * have reached admission yet (the client's round trip, the input), so its cache counts as wanted.
     */
    private boolean recentlyEnded(String conv) {
        return ends - endedAt.getOrDefault(conv, Long.MIN_VALUE / 2) < maxRunning;
    }

    private void release(String conv) {
        idle.remove(conv);
        residentSince.remove(conv);
        cacheTokens.remove(conv);
        endedAt.remove(conv);
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
