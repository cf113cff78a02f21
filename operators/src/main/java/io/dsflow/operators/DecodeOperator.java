package io.dsflow.operators;

import io.dsflow.engine.BatchScheduler;
import io.dsflow.engine.DsflowException;
import io.dsflow.engine.Engine;
import io.dsflow.engine.FinishReason;
import io.dsflow.engine.InvalidRequestException;
import io.dsflow.engine.Tokenizer;
import io.dsflow.engine.cuda.CudaRuntime;
import io.dsflow.engine.kv.KvConfig;
import org.apache.flink.api.common.accumulators.LongCounter;
import org.apache.flink.api.common.operators.MailboxExecutor;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.core.memory.ManagedMemoryUseCase;
import org.apache.flink.metrics.Counter;
import org.apache.flink.metrics.Histogram;
import org.apache.flink.metrics.Meter;
import org.apache.flink.metrics.MeterView;
import org.apache.flink.metrics.MetricGroup;
import org.apache.flink.runtime.memory.MemoryManager;
import org.apache.flink.runtime.metrics.DescriptiveStatisticsHistogram;
import org.apache.flink.runtime.state.VoidNamespace;
import org.apache.flink.runtime.state.StateInitializationContext;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.BoundedOneInput;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.util.function.ThrowingRunnable;

import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Deque;
import java.util.HashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

/**
 * The keyed decode operator: serves completion requests keyed by conversation_id, streaming one chunk record per
 * token and a final record per request.
 * <ul>
 *   <li>open(): loads the engine (one per subtask, on its own GPU: {@link GpuBinding}), computes its share of the task's managed memory, starts the engine
 *       thread, and resumes any request that was in progress at the restored checkpoint;</li>
 *   <li>the engine thread runs a {@link BatchScheduler}: every step advances all active conversations of the subtask
 *       together, new requests join at the next step; results return through the task mailbox, where state is
 *       updated and records are emitted, so a checkpoint always holds exactly the tokens emitted before it;</li>
 *   <li>bounded work: each conversation's KV cache bytes are reserved from the MemoryManager (on a GPU backend: counted
 *       against the device's free memory, where the caches live; the pinned host stores of placement=host are reserved
 *       from the MemoryManager); when a budget or the limit of running requests is full, idle conversations' caches
 *       are dropped (rebuilt by prefill when they return) and new requests wait, which backpressures the input;
 *       nothing fails for lack of memory;</li>
 *   <li>bounded state: a subtask holds at most limits.max-conversations conversations; a request opening one more
 *       gets a conversation_limit error record (counted again from the keyed state on restore or rescale);</li>
 *   <li>a new prompt on a conversation continues its cache (no re-prefill of the history while the cache is kept);</li>
 *   <li>finish()/endInput(): waits until every request is served (bounded replays); close(): stops the engine thread,
 *       releases the reserved memory and the engine.</li>
 * </ul>
 */
public final class DecodeOperator extends AbstractStreamOperator<OutputRecord>
        implements OneInputStreamOperator<Request, OutputRecord>, BoundedOneInput {
    private static final long serialVersionUID = 1L;
    /** Its own logger (AbstractStreamOperator's LOG carries Flink's name and level). */
    private static final org.slf4j.Logger LOG = org.slf4j.LoggerFactory.getLogger(DecodeOperator.class);

    /** Accumulator names, readable from a JobClient (tests check that follow-ups do not re-prefill history). */
    public static final String HISTORY_PREFILLS = "dsflow-history-prefills";
    public static final String PREFILLED_TOKENS = "dsflow-prefilled-tokens";
    /** Idle caches dropped to make room (their conversations re-prefill their history when they return). */
    public static final String CACHE_EVICTIONS = "dsflow-cache-evictions";
    /** Requests in progress at a restored checkpoint, resumed by this attempt (their caches rebuilt by prefill). */
    public static final String RESUMED_REQUESTS = "dsflow-resumed-requests";
    private static final java.util.concurrent.atomic.AtomicLong RESUMED_IN_PROCESS = new java.util.concurrent.atomic.AtomicLong();

    /**
     * Requests resumed after restores by every decode operator of this JVM since it started (a local cluster's view;
     * the accumulator above reports per job attempt, and a cancelled job's accumulators are gone).
     */
    public static long resumedRequestsInProcess() {
        return RESUMED_IN_PROCESS.get();
    }

    private final DecodeSettings settings;

    private transient Engine engine;
    /** The GPU this subtask claimed (GpuBinding), -1 for none. */
    private transient int device = -1;
    private transient Tokenizer tokenizer;
    private transient ValueState<ConversationState> state;
    private transient MailboxExecutor mailbox;
    private transient MemoryManager memoryManager;
    private transient boolean cachesOnDevice;             // a GPU's memory, not Flink managed memory, bounds caches
    /** The caches' bytes, and the pinned host stores of host-placed GPU caches (reserved from managed memory). */
    private transient CacheBudget cacheBudget, hostBudget;
    private transient LinkedHashSet<String> idleCaches;    // kept caches of conversations with nothing active, LRU
    private transient Deque<String> admission;             // conversations whose next request waits for memory
    private transient long conversations;                  // conversations with state on this subtask
    private transient Map<String, Inflight> inflight;      // by request id
    private transient BlockingQueue<Runnable> inbox;       // task thread -> engine thread
    private transient Thread engineThread;
    private transient volatile boolean running;
    private transient BatchScheduler scheduler;
    private transient Histogram ttft, itl;
    private transient Meter tokensPerSecond;
    private transient Counter historyPrefillCounter;
    private transient LongCounter historyPrefills, prefilledTokens, cacheEvictions;
    private transient long lastHistoryPrefills, lastPrefilledTokens;

    /** A request in progress, as the task thread sees it. */
    private static final class Inflight {
        final String conversationId;
        final long startNanos;
        long lastTokenNanos;
        double itlSumMs;
        int itlCount;
        double ttftMs;
        /** Incremental detokenization: the chunk text of token n is decode(prefix..n) minus decode(prefix..read). */
        int prefixOffset, readOffset;
        /** The completion's tokens emitted so far (the first {@code emitted}); keyed state gets them at each checkpoint. */
        int[] completion = new int[16];
        int emitted;
        /** Tokens emitted since the keyed state last got them. */
        boolean unsaved;

        /** A request starting, or resuming after a restore with the tokens it had emitted at the checkpoint. */
        Inflight(String conversationId, int[] emittedBefore) {
            this.conversationId = conversationId;
            this.startNanos = System.nanoTime();
            completion = Arrays.copyOf(emittedBefore, Math.max(16, emittedBefore.length * 2));
            emitted = emittedBefore.length;
            prefixOffset = Math.max(0, emitted - 1);   // one token of context for the next text
            readOffset = emitted;
        }

        void append(int token) {
            if (emitted == completion.length) completion = Arrays.copyOf(completion, completion.length * 2);
            completion[emitted++] = token;
            unsaved = true;
        }

        int[] tokens() {
            return Arrays.copyOf(completion, emitted);
        }
    }

    public DecodeOperator(DecodeSettings settings) {
        this.settings = settings;
    }

    @Override
    public void initializeState(StateInitializationContext context) throws Exception {
        super.initializeState(context);
        state = getPartitionedState(new ValueStateDescriptor<>("conversation", ConversationStateSerializer.INSTANCE));
    }

    @Override
    public void open() throws Exception {
        super.open();
        mailbox = getContainingTask().getMailboxExecutorFactory().createExecutor(getOperatorConfig().getChainIndex());
        int subtask = getRuntimeContext().getTaskInfo().getIndexOfThisSubtask();
        device = "cpu".equalsIgnoreCase(settings.backend()) ? -1 : GpuBinding.claim(subtask,
                getRuntimeContext().getExternalResourceInfos(GpuBinding.RESOURCE), CudaRuntime.deviceCount());
        engine = Engine.load(Path.of(settings.modelDir()), settings.backend(), Math.max(0, device));
        if (device >= 0) LOG.info("decode subtask {} bound to GPU {} ({})", subtask, device, engine.backend().description());
        tokenizer = engine.tokenizer();
        scheduler = new BatchScheduler(engine, settings.prefillChunk());
        memoryManager = getContainingTask().getEnvironment().getMemoryManager();
        double fraction = getOperatorConfig().getManagedMemoryFractionOperatorUseCaseOfSlot(ManagedMemoryUseCase.OPERATOR,
                getContainingTask().getEnvironment().getTaskManagerInfo().getConfiguration(),
                getContainingTask().getEnvironment().getJobConfiguration(), getUserCodeClassloader());
        engine.backend().prepare(settings.kv());   // host placement: the budget counts what it frees on the device
        long deviceBudget = engine.backend().deviceCacheBudget();
        cachesOnDevice = deviceBudget >= 0;
        long managed = memoryManager.computeMemorySize(fraction);
        cacheBudget = new CacheBudget(cachesOnDevice ? deviceBudget : managed, !cachesOnDevice);
        hostBudget = new CacheBudget(cachesOnDevice ? managed : 0, true);
        idleCaches = new LinkedHashSet<>();
        admission = new ArrayDeque<>();
        inflight = new HashMap<>();
        inbox = new LinkedBlockingQueue<>();
        registerMetrics();
        LOG.info("decode subtask {}: {} MB of {} for KV caches, default kv policy {}",
                subtask, cacheBudget.limit >> 20,
                cachesOnDevice ? "device memory on " + engine.backend().description() : "managed memory", settings.kv());
        running = true;
        engineThread = new Thread(this::engineLoop, "dsflow-engine-" + subtask);
        engineThread.setDaemon(true);
        engineThread.start();
        resumeRestored();
    }

    private void registerMetrics() {
        MetricGroup g = getMetricGroup().addGroup("dsflow");
        ttft = g.histogram("time_to_first_token_ms", new DescriptiveStatisticsHistogram(2000));
        itl = g.histogram("inter_token_latency_ms", new DescriptiveStatisticsHistogram(2000));
        tokensPerSecond = g.meter("generation_tokens_per_second", new MeterView(10));
        historyPrefillCounter = g.counter("history_prefills");
        g.gauge("num_requests_running", () -> inflight.size());
        g.gauge("num_requests_waiting", () -> admission.size());
        g.gauge("num_conversations", () -> conversations);
        g.gauge("kv_cache_bytes", () -> cacheBudget.total);
        g.gauge("kv_cache_usage", () -> cacheBudget.limit == 0 ? 0.0 : cacheBudget.total / (double) cacheBudget.limit);
        historyPrefills = getRuntimeContext().getLongCounter(HISTORY_PREFILLS);
        prefilledTokens = getRuntimeContext().getLongCounter(PREFILLED_TOKENS);
        cacheEvictions = getRuntimeContext().getLongCounter(CACHE_EVICTIONS);
    }

    /** Requests in progress at the checkpoint restored: their caches are gone, so they prefill their history again. */
    private void resumeRestored() throws Exception {
        List<Object> keys = new ArrayList<>();
        try (var stream = getKeyedStateBackend().getKeys("conversation", VoidNamespace.INSTANCE)) {
            stream.forEach(keys::add);
        }
        for (Object key : keys) {
            setCurrentKey(key);
            ConversationState cs = state.value();
            if (cs != null) conversations++;
            if (cs != null && cs.active != null) {
                inflight.put(cs.active.requestId, new Inflight((String) key, cs.completion));
                admission.add((String) key);
            }
        }
        if (!keys.isEmpty()) LOG.info("restored {} conversations, {} with a request in progress", keys.size(), admission.size());
        getRuntimeContext().getLongCounter(RESUMED_REQUESTS).add(admission.size());
        RESUMED_IN_PROCESS.addAndGet(admission.size());
        admitWaiting();
    }

    @Override
    public void processElement(StreamRecord<Request> element) throws Exception {
        Request r = element.getValue();
        String conv = r.conversationId;
        ConversationState cs = state.value();
        if (cs == null) {
            if (conversations >= settings.limits().maxConversations()) {
                // no state is created: the conversations this subtask holds go on; this one may retry later
                output.collect(new StreamRecord<>(OutputRecord.error(conv, r.requestId, "conversation_limit",
                        "this decode subtask holds " + conversations + " conversations, its limit", r.raw)));
                return;
            }
            conversations++;
            cs = new ConversationState();
        }
        if (Arrays.asList(cs.recentRequestIds).contains(r.requestId)
                || (cs.active != null && cs.active.requestId.equals(r.requestId))
                || Arrays.stream(cs.queued).anyMatch(q -> q.requestId.equals(r.requestId))) {
            // a retried or replayed request: one error record, and the conversation goes on untouched
            output.collect(new StreamRecord<>(OutputRecord.error(conv, r.requestId, "duplicate_request_id",
                    "request_id " + r.requestId + " was already used in this conversation", r.raw)));
            return;
        }
        cs.recentRequestIds = remember(cs.recentRequestIds, r.requestId);
        if (cs.active != null || admission.contains(conv)) {
            cs.queued = Arrays.copyOf(cs.queued, cs.queued.length + 1);
            cs.queued[cs.queued.length - 1] = r;
            state.update(cs);
            return;
        }
        if (!activate(conv, cs, r)) return;
        admission.add(conv);
        admitWaiting();
        // backpressure: while too many requests wait for memory or a slot, serve results instead of taking input
        while (admission.size() > settings.limits().maxRunning()) {
            mailbox.yield();
            admitWaiting();
        }
    }

    /** The ids with {@code id} added, keeping the last REMEMBERED_IDS. */
    private static String[] remember(String[] ids, String id) {
        int keep = Math.min(ids.length, ConversationState.REMEMBERED_IDS - 1);
        String[] r = Arrays.copyOfRange(ids, ids.length - keep, ids.length + 1);
        r[keep] = id;
        return r;
    }

    /** Makes r the conversation's active request (tokenised, checked); emits an error instead if it is bad. */
    private boolean activate(String conv, ConversationState cs, Request r) throws Exception {
        int[] prompt;
        try {
            prompt = r.promptIds != null ? r.promptIds : tokenizer.encode(r.prompt, cs.history.length == 0);
            if (prompt.length == 0) throw new InvalidRequestException("the prompt has no tokens");
            if (prompt.length > settings.limits().maxPromptTokens()) {
                throw new InvalidRequestException("prompt has " + prompt.length + " tokens; the limit is "
                        + settings.limits().maxPromptTokens());
            }
            RequestParser.kvConfig(r.kv, settings.kv());
        } catch (DsflowException e) {
            state.update(cs); // the request id is remembered all the same
            fail(conv, r, e);
            return false;
        }
        cs.active = r;
        cs.activePrompt = prompt;
        cs.completion = new int[0];
        state.update(cs);
        inflight.put(r.requestId, new Inflight(conv, new int[0]));
        return true;
    }

    /** Starts waiting conversations in order while memory and slots allow; asks for idle caches to be dropped. */
    private void admitWaiting() throws Exception {
        while (!admission.isEmpty()) {
            String conv = admission.peek();
            setCurrentKey(conv);
            ConversationState cs = state.value();
            Request r = cs.active;
            KvConfig kv = RequestParser.kvConfig(r.kv, settings.kv());
            long tokens = (long) cs.history.length + cs.activePrompt.length + r.maxTokens + 1;
            long needed = engine.estimateCacheBytes(kv, tokens);
            long hostNeeded = engine.backend().hostCacheBytes(kv, tokens);   // host placement's pinned stores
            if (needed > cacheBudget.limit || hostNeeded > hostBudget.limit) {
                admission.poll();
                if (cacheBudget.of(conv) > 0) dropCache(conv);
                endWithError(conv, cs, r, new InvalidRequestException(needed > cacheBudget.limit
                        ? String.format("the request needs %.1f MB of KV cache; the decode operator has %.1f MB of %s",
                                needed / 1e6, cacheBudget.limit / 1e6, cachesOnDevice ? "device memory" : "managed memory")
                        : String.format("the request needs %.1f MB of pinned host memory for its KV store (placement"
                                + " host); the decode operator has %.1f MB of managed memory", hostNeeded / 1e6,
                                hostBudget.limit / 1e6)));
                continue;
            }
            int running = inflight.size() - admission.size();
            long cacheShort = cacheBudget.shortfall(conv, needed), hostShort = hostBudget.shortfall(conv, hostNeeded);
            if (running >= settings.limits().maxRunning() || cacheShort > 0 || hostShort > 0) {
                evictIdle(cacheShort, hostShort, conv);
                return;
            }
            admission.poll();
            idleCaches.remove(conv);
            cacheBudget.reserve(conv, needed);
            hostBudget.reserve(conv, hostNeeded);
            BatchScheduler.Work w = new BatchScheduler.Work(r.requestId, conv, cs.history, cs.activePrompt,
                    RequestParser.samplingParams(r), kv, inflight.get(r.requestId).emitted);
            inbox.add(() -> scheduler.submit(w));
        }
    }

    /**
     * Drops least recently used idle caches (not {@code keep}'s) until {@code bytes} of the cache budget and
     * {@code hostBytes} of pinned host memory would be free.
     */
    private void evictIdle(long bytes, long hostBytes, String keep) {
        long freed = 0, hostFreed = 0;
        for (String conv : new ArrayList<>(idleCaches)) {
            if (freed >= bytes && hostFreed >= hostBytes) break;
            if (conv.equals(keep)) continue;
            freed += cacheBudget.of(conv);
            hostFreed += hostBudget.of(conv);
            dropCache(conv);
            cacheEvictions.add(1);
        }
    }

    private void dropCache(String conv) {
        idleCaches.remove(conv);
        cacheBudget.release(conv);
        hostBudget.release(conv);
        inbox.add(() -> scheduler.dropCache(conv));
    }

    /**
     * Bytes conversations' caches hold against a limit, by conversation; {@code managed}: the bytes are also reserved
     * from the task's MemoryManager (Flink managed memory), where a GPU's own memory does not hold them.
     */
    private final class CacheBudget {
        final long limit;
        final boolean managed;
        final Map<String, Long> held = new HashMap<>();
        long total;

        CacheBudget(long limit, boolean managed) {
            this.limit = limit;
            this.managed = managed;
        }

        long of(String conv) {
            return held.getOrDefault(conv, 0L);
        }

        /** How many bytes others would have to free for conv to hold {@code needed} (0 or less: it fits). */
        long shortfall(String conv, long needed) {
            return total - of(conv) + needed - limit;
        }

        void reserve(String conv, long needed) throws org.apache.flink.runtime.memory.MemoryReservationException {
            long have = of(conv);
            if (needed <= have) return;
            if (managed) memoryManager.reserveMemory(DecodeOperator.this, needed - have);
            total += needed - have;
            held.put(conv, needed);
        }

        void release(String conv) {
            Long bytes = held.remove(conv);
            if (bytes == null) return;
            if (managed) memoryManager.releaseMemory(DecodeOperator.this, bytes);
            total -= bytes;
        }
    }

    private void fail(String conv, Request r, DsflowException e) {
        output.collect(new StreamRecord<>(OutputRecord.error(conv, r.requestId, "invalid_request", e.getMessage(), r.raw)));
        output.collect(new StreamRecord<>(OutputRecord.finalRecord(conv, r.requestId, FinishReason.ERROR.id(), 0, 0, 0, 0)));
    }

    // ---- engine thread ----

    private void engineLoop() {
        List<ThrowingRunnable<Exception>> events = new ArrayList<>();
        BatchScheduler.Listener listener = new BatchScheduler.Listener() {
            @Override
            public void token(String requestId, int index, int tokenId) {
                events.add(() -> onToken(requestId, index, tokenId));
            }

            @Override
            public void finished(String requestId, FinishReason reason, int promptTokens, int completionTokens, int[] history) {
                events.add(() -> onFinished(requestId, reason, promptTokens, completionTokens, history));
            }

            @Override
            public void failed(String requestId, DsflowException error) {
                events.add(() -> onFailed(requestId, error));
            }
        };
        try {
            while (running) {
                Runnable command = scheduler.hasWork() ? inbox.poll() : inbox.poll(50, TimeUnit.MILLISECONDS);
                while (command != null) {
                    command.run();
                    command = inbox.poll();
                }
                if (!scheduler.hasWork()) continue;
                scheduler.step(listener);
                long hp = scheduler.historyPrefills(), pt = scheduler.prefilledTokens();
                if (!events.isEmpty() || hp != lastHistoryPrefills || pt != lastPrefilledTokens) {
                    List<ThrowingRunnable<Exception>> batch = new ArrayList<>(events);
                    events.clear();
                    long dh = hp - lastHistoryPrefills, dp = pt - lastPrefilledTokens;
                    lastHistoryPrefills = hp;
                    lastPrefilledTokens = pt;
                    mailbox.execute(() -> {
                        historyPrefills.add(dh);
                        historyPrefillCounter.inc(dh);
                        prefilledTokens.add(dp);
                        for (ThrowingRunnable<Exception> e : batch) e.run();
                        admitWaiting();
                    }, "dsflow decode results");
                }
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        } catch (Throwable t) {
            if (running) {
                mailbox.execute(() -> {
                    throw new RuntimeException("the decode engine failed: " + t, t);
                }, "dsflow engine failure");
            }
        }
    }

    // ---- results, on the task thread ----

    private void onToken(String requestId, int index, int tokenId) throws Exception {
        // the token joins the keyed state at the next checkpoint (prepareSnapshotPreBarrier), not now: a state update
        // a token would serialise the conversation (its whole history, on RocksDB) for every token
        Inflight f = inflight.get(requestId);
        f.append(tokenId);
        String delta = textDelta(f);
        long now = System.nanoTime();
        if (index == 0 || f.lastTokenNanos == 0) {
            f.ttftMs = (now - f.startNanos) / 1e6;
            ttft.update(Math.round(f.ttftMs));
        } else {
            double ms = (now - f.lastTokenNanos) / 1e6;
            f.itlSumMs += ms;
            f.itlCount++;
            itl.update(Math.round(ms));
        }
        f.lastTokenNanos = now;
        tokensPerSecond.markEvent();
        output.collect(new StreamRecord<>(OutputRecord.chunk(f.conversationId, requestId, index, tokenId, delta)));
    }

    /**
     * The text the newest token adds, decoding only the tokens since the last emitted text and one before them (so
     * a tokenizer's leading-space rule treats both decodes alike): constant work a token instead of decoding the whole
     * completion each time. A token that ends inside a multi-byte character adds nothing until the character is whole.
     */
    private String textDelta(Inflight f) {
        String before = tokenizer.decode(Arrays.copyOfRange(f.completion, f.prefixOffset, f.readOffset));
        String now = tokenizer.decode(Arrays.copyOfRange(f.completion, f.prefixOffset, f.emitted));
        if (now.length() <= before.length() || now.endsWith("\uFFFD") || !now.startsWith(before)) return "";
        f.prefixOffset = f.readOffset;
        f.readOffset = f.emitted;
        return now.substring(before.length());
    }

    private void onFinished(String requestId, FinishReason reason, int promptTokens, int completionTokens, int[] history)
            throws Exception {
        Inflight f = inflight.remove(requestId);
        setCurrentKey(f.conversationId);
        ConversationState cs = state.value();
        cs.history = history;
        cs.active = null;
        cs.activePrompt = null;
        cs.completion = new int[0];
        idleCaches.add(f.conversationId);
        output.collect(new StreamRecord<>(OutputRecord.finalRecord(f.conversationId, requestId, reason.id(),
                promptTokens, completionTokens, f.ttftMs, f.itlCount == 0 ? 0 : f.itlSumMs / f.itlCount)));
        startNextQueued(f.conversationId, cs);
    }

    private void onFailed(String requestId, DsflowException error) throws Exception {
        Inflight f = inflight.get(requestId);
        setCurrentKey(f.conversationId);
        idleCaches.add(f.conversationId); // its reservation can be reclaimed like any idle cache
        endWithError(f.conversationId, state.value(), state.value().active, error);
    }

    /** Ends the active request with an error record and a final record, then serves the conversation's next one. */
    private void endWithError(String conv, ConversationState cs, Request r, DsflowException error) throws Exception {
        inflight.remove(r.requestId);
        cs.active = null;
        cs.activePrompt = null;
        cs.completion = new int[0];
        fail(conv, r, error);
        startNextQueued(conv, cs);
    }

    private void startNextQueued(String conv, ConversationState cs) throws Exception {
        while (cs.queued.length > 0) {
            Request next = cs.queued[0];
            cs.queued = Arrays.copyOfRange(cs.queued, 1, cs.queued.length);
            if (activate(conv, cs, next)) {
                admission.add(conv);
                return;
            }
        }
        state.update(cs);
    }

    /**
     * Before the barrier leaves this operator: the tokens each request in progress emitted since the last checkpoint go
     * into its conversation's state, so a checkpoint holds exactly the tokens emitted before it.
     */
    @Override
    public void prepareSnapshotPreBarrier(long checkpointId) throws Exception {
        super.prepareSnapshotPreBarrier(checkpointId);
        for (Map.Entry<String, Inflight> e : inflight.entrySet()) {
            Inflight f = e.getValue();
            if (!f.unsaved) continue;
            setCurrentKey(f.conversationId);
            ConversationState cs = state.value();
            if (cs != null && cs.active != null && cs.active.requestId.equals(e.getKey())) {
                cs.completion = f.tokens();
                state.update(cs);
            }
            f.unsaved = false;
        }
    }

    @Override
    public void endInput() throws Exception {
        drain();
    }

    @Override
    public void finish() throws Exception {
        drain();
        super.finish();
    }

    /** Serves every request taken so far (a bounded input has ended). */
    private void drain() throws Exception {
        while (!inflight.isEmpty()) {
            admitWaiting();
            mailbox.yield();
        }
    }

    @Override
    public void close() throws Exception {
        running = false;
        if (engineThread != null) {
            engineThread.interrupt();
            engineThread.join(10_000);
        }
        if (memoryManager != null) memoryManager.releaseAllMemory(this);
        if (engine != null) engine.close();
        GpuBinding.release(device);
        device = -1;
        super.close();
    }
}
