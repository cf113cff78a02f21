package io.dsflow.operators;

import io.dsflow.engine.BackendName;
import io.dsflow.engine.BatchScheduler;
import io.dsflow.engine.DsflowException;
import io.dsflow.engine.Engine;
import io.dsflow.engine.FinishReason;
import io.dsflow.engine.InvalidRequestException;
import io.dsflow.engine.RowCacheCounts;
import io.dsflow.engine.cuda.CudaRuntime;
import io.dsflow.engine.kv.KvConfig;
import org.apache.flink.api.common.accumulators.LongCounter;
import org.apache.flink.api.common.accumulators.LongMaximum;
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
import org.apache.flink.runtime.state.StateInitializationContext;
import org.apache.flink.runtime.state.VoidNamespace;
import org.apache.flink.runtime.state.VoidNamespaceSerializer;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.BoundedOneInput;
import org.apache.flink.streaming.api.operators.InternalTimer;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.api.operators.Triggerable;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The keyed decode operator: serves completion requests keyed by conversation_id, streaming one chunk record per
 * token and a final record per request.
 * <ul>
 *   <li>open(): loads the engine (one per subtask, on its own GPU: {@link GpuBinding}), sizes the KV cache budgets
 *       from its share of the task's managed memory (or the GPU's free memory), starts the {@link EngineThread}, and
 *       resumes any request that was in progress at the restored checkpoint (its cache is rebuilt by prefill and the
 *       tokens it had emitted are regenerated silently: chunks continue at the next index);</li>
 *   <li>processElement(): refuses a conversation past limits.max-conversations (conversation_limit error record) and a
 *       request id the conversation already used (duplicate_request_id); queues a request behind its conversation's
 *       active one; otherwise tokenises and checks it and hands it to {@link Admission}. A refused or failed request
 *       gets an error record and a final record (the rule of {@link OutputRecord#refusal});</li>
 *   <li>a conversation ends on an end command (a tombstone, or end_conversation) once the requests before it are
 *       served, or after limits.conversation-idle-timeout idle (a keyed processing-time timer): its state is cleared,
 *       its cache dropped, and it no longer counts against limits.max-conversations
 *       ({@link ConversationLifetime});</li>
 *   <li>the engine thread advances all admitted requests of the subtask together, one step at a time; each step's
 *       results come back through the task mailbox, where keyed state is updated and records are emitted
 *       ({@link TokenStream}), so a checkpoint always holds exactly the tokens emitted before its barrier
 *       (prepareSnapshotPreBarrier writes them into the conversations' state);</li>
 *   <li>bounded work: {@link Admission} reserves each conversation's cache bytes, drops idle conversations' caches
 *       when memory is short (rebuilt by prefill when they return) and makes new requests wait while memory or the
 *       limits.max-running slots are taken, which backpressures the input; nothing fails for lack of memory;</li>
 *   <li>a new prompt on a conversation continues its cache (no re-prefill of the history while the cache is kept);</li>
 *   <li>finish()/endInput(): waits until every request is served (bounded replays); close(): stops the engine thread,
 *       releases the reserved memory and the engine.</li>
 * </ul>
 * This class owns the Flink side (lifecycle, keyed state, mailbox, metrics); the decisions about memory are
 * {@link Admission}'s, the engine's thread is {@link EngineThread}'s, and the records are {@link TokenStream}'s.
 */
public final class DecodeOperator extends AbstractStreamOperator<OutputRecord>
        implements OneInputStreamOperator<Request, OutputRecord>, BoundedOneInput, Triggerable<String, VoidNamespace> {
    private static final long serialVersionUID = 1L;
    /** Its own logger (AbstractStreamOperator's LOG carries Flink's name and level). */
    private static final org.slf4j.Logger LOG = org.slf4j.LoggerFactory.getLogger(DecodeOperator.class);

    /** Accumulator names, readable from a JobClient (tests check that follow-ups do not re-prefill history). */
    public static final String HISTORY_PREFILLS = "dsflow-history-prefills";
    public static final String PREFILLED_TOKENS = "dsflow-prefilled-tokens";
    /** Idle caches dropped to make room (their conversations re-prefill their history when they return). */
    public static final String CACHE_EVICTIONS = "dsflow-cache-evictions";
    /**
     * The engine's steps, their decode rows and the tokens they fed the model, so far: a run's mean batch is rows over
     * steps (the load generator through the job reports it; the metrics engine_steps, engine_decode_rows and
     * engine_step_tokens count the same for a rate over any window).
     */
    public static final String ENGINE_STEPS = "dsflow-engine-steps";
    public static final String ENGINE_DECODE_ROWS = "dsflow-engine-decode-rows";
    public static final String ENGINE_STEP_TOKENS = "dsflow-engine-step-tokens";
    /** Requests in progress at a restored checkpoint, resumed by this attempt (their caches rebuilt by prefill). */
    public static final String RESUMED_REQUESTS = "dsflow-resumed-requests";
    /**
     * The most requests that waited for admission at once on a subtask: past {@link Admission#WAITING_PER_SLOT} times
     * limits.max-running the operator holds its input back (backpressure), so this is at most one more than that.
     */
    public static final String MOST_WAITING = "dsflow-most-waiting";
    private static final AtomicLong RESUMED_IN_PROCESS = new AtomicLong();

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
    private transient ValueState<ConversationState> state;
    private transient MailboxExecutor mailbox;
    private transient MemoryManager memoryManager;
    private transient Admission<BatchScheduler.Work> admission;
    private transient TokenStream tokens;
    /** Volatile: the metric reporters' threads read it through the gauges. */
    private transient volatile EngineThread engineThread;
    private transient ConversationLifetime lifetime;
    private transient Counter historyPrefillCounter, conversationsEnded, conversationsExpired;
    private transient LongCounter historyPrefills, prefilledTokens, cacheEvictions;
    private transient LongCounter engineSteps, engineDecodeRows, engineStepTokens;
    private transient LongMaximum mostWaiting;
    private transient Counter engineStepsMetric, engineDecodeRowsMetric, engineStepTokensMetric;

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
        device = BackendName.parse(settings.backend()).isCpu() ? -1 : GpuBinding.claim(subtask,
                getRuntimeContext().getExternalResourceInfos(GpuBinding.RESOURCE), CudaRuntime.deviceCount());
        engine = Engine.open(settings.modelDir(), settings.backend(), Math.max(0, device));
        if (device >= 0) {
            LOG.info("decode subtask {} bound to GPU {} ({})", subtask, device, engine.backend().description());
        }
        memoryManager = getContainingTask().getEnvironment().getMemoryManager();
        boolean gpu = engine.backend().gpu();
        int maxRunning = settings.limits().maxRunningFor(gpu);
        admission = newAdmission(subtask, maxRunning);
        // a synthetic model has no tokenizer: its chunks carry token ids and no text
        tokens = new TokenStream(engine.folder() == null ? ids -> "" : engine.tokenizer()::decode, registerMetrics());
        int prefillChunk = settings.prefillChunkFor(gpu);
        LOG.info("decode subtask {}: the engine prefills {} prompt tokens a step over as many prompts as fit{}, runs"
                + " at most {} requests", subtask, prefillChunk, gpu ? "" : " (after a prompt ends, only whole ones)",
                maxRunning);
        engineThread = new EngineThread(engine, prefillChunk, maxRunning, mailbox,
                new EngineResults(), "dsflow-engine-" + subtask);
        engineThread.start();
        lifetime = new ConversationLifetime(settings.limits().conversationIdleTimeoutMs(),
                getInternalTimerService("conversation-expiry", VoidNamespaceSerializer.INSTANCE, this));
        resumeRestored();
    }

    /**
     * The subtask's admission with its budgets: on the CPU the caches' bytes come from this operator's share of the
     * slot's managed memory; on a GPU from the device's free memory (on the CPU modelling one, cpu:device-memory, from
     * that), and the pinned host stores of placement=host from managed memory.
     */
    private Admission<BatchScheduler.Work> newAdmission(int subtask, int maxRunning) {
        var environment = getContainingTask().getEnvironment();
        double fraction = getOperatorConfig().getManagedMemoryFractionOperatorUseCaseOfSlot(
                ManagedMemoryUseCase.OPERATOR, environment.getTaskManagerInfo().getConfiguration(),
                environment.getJobConfiguration(), getUserCodeClassloader());
        engine.backend().prepare(settings.kv());   // host placement: the budget counts what it frees on the device
        long deviceBudget = engine.backend().deviceCacheBudget();
        boolean cachesOnDevice = deviceBudget >= 0;
        long managed = memoryManager.computeMemorySize(fraction);
        Admission.Reservations managedMemory = new Admission.Reservations() {
            @Override
            public void reserve(long bytes) throws Exception {
                memoryManager.reserveMemory(DecodeOperator.this, bytes);
            }

            @Override
            public void release(long bytes) {
                memoryManager.releaseMemory(DecodeOperator.this, bytes);
            }
        };
        Admission.Budget cache = cachesOnDevice
                ? new Admission.Budget(deviceBudget, "device memory", Admission.Reservations.NONE)
                : new Admission.Budget(managed, "managed memory", managedMemory);
        Admission.Budget host = new Admission.Budget(cachesOnDevice ? managed : 0, "managed memory", managedMemory);
        String memory = cachesOnDevice ? "device memory on " + engine.backend().description() : "managed memory";
        LOG.info("decode subtask {}: {} MB of {} for KV caches, default kv policy {}", subtask,
                String.format(Locale.ROOT, "%.1f", cache.limit() / 1048576.0), memory, settings.kv());
        Admission<BatchScheduler.Work> admission = new Admission<>(cache, host, maxRunning,
                settings.limits().maxConversations());
        LOG.info("decode subtask {}: {}", subtask, conversationsHeld(admission, settings.kv()));
        return admission;
    }

    /**
     * How many conversations the budgets hold at once at a few lengths the model's positions reach (any length with
     * a capacity), under the default policy and, for a sparse one, dense ("-" where dense cannot reach a length): "the
     * budgets hold 412 / 51 conversations of 4,096 / 32,768 tokens (dense: 148 / 18)".
     */
    private String conversationsHeld(Admission<?> admission, KvConfig kv) {
        int positions = engine.config().maxPositions();
        List<Long> lengths = new ArrayList<>();
        for (long tokens : new long[]{4096, 32768, 131072}) {
            if (kv.capacity() > 0 || tokens <= positions) lengths.add(tokens);
        }
        if (lengths.isEmpty()) lengths.add((long) positions);
        StringBuilder line = new StringBuilder("the budgets hold ").append(held(admission, kv, lengths, Long.MAX_VALUE))
                .append(" conversations of ");
        line.append(String.join(" / ", lengths.stream().map(t -> String.format(Locale.ROOT, "%,d", t)).toList()))
                .append(" tokens");
        if (kv.sparse()) {
            line.append(" (dense: ").append(held(admission, KvConfig.DENSE, lengths, positions)).append(')');
        }
        return line.toString();
    }

    private String held(Admission<?> admission, KvConfig kv, List<Long> lengths, long reach) {
        return String.join(" / ", lengths.stream().map(t -> t > reach ? "-"
                : String.valueOf(admission.held(need(kv, t, 0)))).toList());
    }

    /**
     * What a conversation's cache of {@code tokens} tokens needs of the budgets (the cache bytes, and the pinned host
     * stores of host placement), {@code history} of them already in its history (a rebuild's debt).
     */
    private Admission.Need need(KvConfig kv, long tokens, long history) {
        return new Admission.Need(engine.estimateCacheBytes(kv, tokens), engine.backend().hostCacheBytes(kv, tokens),
                history, tokens - history);
    }

    /** Registers the operator's metrics and accumulators; returns where the token stream reports its timings. */
    private TokenStream.Metrics registerMetrics() {
        MetricGroup g = getMetricGroup().addGroup("dsflow");
        Histogram ttft = g.histogram("time_to_first_token_ms", new DescriptiveStatisticsHistogram(2000));
        Histogram itl = g.histogram("inter_token_latency_ms", new DescriptiveStatisticsHistogram(2000));
        Meter tokensPerSecond = g.meter("generation_tokens_per_second", new MeterView(10));
        historyPrefillCounter = g.counter("history_prefills");
        conversationsEnded = g.counter("conversations_ended");
        conversationsExpired = g.counter("conversations_expired");
        g.gauge("num_requests_running", () -> tokens.size());
        g.gauge("num_requests_waiting", () -> admission.waitingCount());
        g.gauge("num_conversations", () -> admission.conversations());
        // the engine's batches: rows (decoding requests and prompts prefilling) and tokens of the latest step
        g.gauge("batch_rows", () -> {
            BatchScheduler.StepStats step = lastStep();   // one step's figures, not two steps'
            return step.decodeRows() + step.prefillPrompts();
        });
        g.gauge("batch_tokens", () -> lastStep().tokens());
        g.gauge("num_requests_scheduler_waiting", () -> lastStep().waiting());
        Admission.Budget cache = admission.cacheBudget();
        g.gauge("kv_cache_bytes", cache::total);
        g.gauge("kv_cache_usage", () -> cache.limit() == 0 ? 0.0 : cache.total() / (double) cache.limit());
        // the device row caches of host-placed conversations (row-cache=F): rows asked, missed (each over the host
        // link), and the share held since the subtask started (NaN before any was asked, or on the CPU)
        g.gauge("row_cache_rows_asked", () -> rowCaches().asked());
        g.gauge("row_cache_rows_missed", () -> rowCaches().missed());
        g.gauge("row_cache_hit_rate", () -> rowCaches().hitRate());
        historyPrefills = getRuntimeContext().getLongCounter(HISTORY_PREFILLS);
        prefilledTokens = getRuntimeContext().getLongCounter(PREFILLED_TOKENS);
        cacheEvictions = getRuntimeContext().getLongCounter(CACHE_EVICTIONS);
        engineSteps = getRuntimeContext().getLongCounter(ENGINE_STEPS);
        engineDecodeRows = getRuntimeContext().getLongCounter(ENGINE_DECODE_ROWS);
        engineStepTokens = getRuntimeContext().getLongCounter(ENGINE_STEP_TOKENS);
        mostWaiting = new LongMaximum();
        getRuntimeContext().addAccumulator(MOST_WAITING, mostWaiting);
        engineStepsMetric = g.counter("engine_steps");
        engineDecodeRowsMetric = g.counter("engine_decode_rows");
        engineStepTokensMetric = g.counter("engine_step_tokens");
        return new TokenStream.Metrics() {
            @Override
            public void firstToken(double ms) {
                ttft.update(Math.round(ms));
                tokensPerSecond.markEvent();
            }

            @Override
            public void nextToken(double ms) {
                itl.update(Math.round(ms));
                tokensPerSecond.markEvent();
            }
        };
    }

    private RowCacheCounts rowCaches() {
        EngineThread thread = engineThread;
        return thread == null ? RowCacheCounts.NONE : thread.rowCaches();
    }

    /** What the engine's latest step fed the model (nothing before the engine thread exists). */
    private BatchScheduler.StepStats lastStep() {
        EngineThread thread = engineThread;
        return thread == null ? BatchScheduler.StepStats.NONE : thread.lastStep();
    }

    /** Requests in progress at the checkpoint restored: their caches are gone, so they prefill their history again. */
    private void resumeRestored() throws Exception {
        List<Object> keys = new ArrayList<>();
        try (var stream = getKeyedStateBackend().getKeys("conversation", VoidNamespace.INSTANCE)) {
            stream.forEach(keys::add);
        }
        int resumed = 0;
        for (Object key : keys) {
            setCurrentKey(key);
            ConversationState cs = state.value();
            if (cs == null) continue;
            admission.restoredConversation();
            if (lifetime.restored(cs)) state.update(cs);
            if (cs.active != null) {
                String conv = (String) key;
                tokens.start(cs.active.requestId, conv, cs.completion, List.of(cs.active.stop));
                enqueue(conv, cs, cs.active.kvConfig(settings.kv()));
                resumed++;
            }
        }
        if (!keys.isEmpty()) LOG.info("restored {} conversations, {} with a request in progress", keys.size(), resumed);
        getRuntimeContext().getLongCounter(RESUMED_REQUESTS).add(resumed);
        RESUMED_IN_PROCESS.addAndGet(resumed);
        admitWaiting();
    }

    @Override
    public void processElement(StreamRecord<Request> element) throws Exception {
        Request r = element.getValue();
        String conv = r.conversationId;
        ConversationState cs = state.value();
        if (r.endConversation) {
            endCommand(conv, cs, r);
            return;
        }
        if (cs == null) {
            if (!admission.openConversation()) {
                // no state is created: the conversations this subtask holds go on; this one may retry later
                refuseOverLimit(conv, r);
                return;
            }
            cs = new ConversationState();
        }
        if (ConversationLifetime.usesKnownId(cs, r.requestId)) {
            // a retried or replayed request: one error record (no final: the final of this id belongs to the request
            // that used it first), and the conversation goes on untouched
            emit(OutputRecord.error(conv, r.requestId, "duplicate_request_id",
                    "request_id " + r.requestId + " was already used in this conversation", r.raw));
            return;
        }
        cs.recentRequestIds = remember(cs.recentRequestIds, r.requestId);
        if (cs.active != null || admission.isWaiting(conv)) {
            enqueueBehind(cs, r);
            save(cs);
            return;
        }
        if (!activate(conv, cs, r)) return;
        admitWaiting();
        // backpressure: while too many requests wait for memory or a slot, serve results instead of taking input
        while (admission.mustBackpressure()) {
            mailbox.yield();
            admitWaiting();
        }
    }

    private static void enqueueBehind(ConversationState cs, Request r) {
        cs.queued = Arrays.copyOf(cs.queued, cs.queued.length + 1);
        cs.queued[cs.queued.length - 1] = r;
    }

    private void refuseOverLimit(String conv, Request r) {
        emitRefusal(OutputRecord.error(conv, r.requestId, "conversation_limit",
                "this decode subtask holds " + admission.conversations() + " conversations, its limit", r.raw));
    }

    /**
     * An end command: a conversation with nothing active or queued ends now; a busy one ends when the requests sent
     * before the command are served (the command waits in its queue). Ending a conversation the subtask does not
     * hold does nothing (a tombstone for a key that is gone, as in a compacted topic).
     */
    private void endCommand(String conv, ConversationState cs, Request end) throws Exception {
        if (cs == null) return;
        if (ConversationLifetime.isIdle(cs)) {
            endConversation(conv, cs);
            conversationsEnded.inc();
            return;
        }
        enqueueBehind(cs, end);
        save(cs);
    }

    /** The conversation (the current key) ends: its state, expiry timer, engine cache and admission's count go. */
    private void endConversation(String conv, ConversationState cs) {
        lifetime.disarm(cs);
        state.clear();
        engineThread.dropCache(conv);
        admission.closeConversation(conv);
    }

    /** An idle conversation's expiry timer fired (the conversation is the current key). */
    @Override
    public void onProcessingTime(InternalTimer<String, VoidNamespace> timer) throws Exception {
        ConversationState cs = state.value();
        if (cs == null || !lifetime.expires(cs, timer.getTimestamp())) return;   // a stale timer
        endConversation(timer.getKey(), cs);
        conversationsExpired.inc();
    }

    @Override
    public void onEventTime(InternalTimer<String, VoidNamespace> timer) {
        // no event-time timers
    }

    /** Writes the conversation's state, its expiry timer armed if it is idle, disarmed if busy. */
    private void save(ConversationState cs) throws Exception {
        lifetime.track(cs);
        state.update(cs);
    }

    /** The ids with {@code id} added, keeping the last REMEMBERED_IDS. */
    private static String[] remember(String[] ids, String id) {
        int keep = Math.min(ids.length, ConversationState.REMEMBERED_IDS - 1);
        String[] r = Arrays.copyOfRange(ids, ids.length - keep, ids.length + 1);
        r[keep] = id;
        return r;
    }

    /**
     * Makes r the conversation's active request (tokenised, checked) and queues it for admission; emits an error
     * instead if it is bad.
     */
    private boolean activate(String conv, ConversationState cs, Request r) throws Exception {
        int[] prompt;
        KvConfig kv;
        try {
            prompt = r.promptIds != null ? r.promptIds : engine.tokenizer().encode(r.prompt, cs.history.length == 0);
            if (prompt.length == 0) throw new InvalidRequestException("the prompt has no tokens");
            if (prompt.length > settings.limits().maxPromptTokens()) {
                throw new InvalidRequestException("prompt has " + prompt.length + " tokens; the limit is "
                        + settings.limits().maxPromptTokens());
            }
            kv = r.kvConfig(settings.kv());
        } catch (DsflowException e) {
            save(cs); // the request id is remembered all the same
            fail(conv, r, e);
            return false;
        }
        cs.active = r;
        cs.activePrompt = prompt;
        cs.completion = new int[0];
        save(cs);
        tokens.start(r.requestId, conv, new int[0], List.of(r.stop));
        enqueue(conv, cs, kv);
        return true;
    }

    /** The conversation's active request waits for admission with the cache its whole completion can take. */
    private void enqueue(String conv, ConversationState cs, KvConfig kv) {
        Request r = cs.active;
        long cacheTokens = (long) cs.history.length + cs.activePrompt.length + r.maxTokens + 1;
        Admission.Need need = need(kv, cacheTokens, cs.history.length);
        BatchScheduler.Work work = new BatchScheduler.Work(r.requestId, conv, cs.history, cs.activePrompt,
                RequestParser.samplingParams(r), kv, tokens.emitted(conv, r.requestId));
        admission.enqueue(conv, need, work);
        mostWaiting.add(admission.waitingCount());
    }

    /**
     * Carries out admission's decisions for the waiting requests, in order, until one has to wait. The evictions and
     * admissions of one round reach the engine thread as one command, so its next step takes them all: handed over
     * one by one, an idle engine woke at the first and stepped with a few (a wave of requests ending together then
     * came back as a trickle of small steps).
     */
    private void admitWaiting() throws Exception {
        List<String> drops = new ArrayList<>();
        List<BatchScheduler.Work> admitted = new ArrayList<>();
        try {
            while (admission.hasWaiting()) {
                Admission.Decision<BatchScheduler.Work> d = admission.admitNext();
                drops.addAll(d.evicted());
                cacheEvictions.add(d.evicted().size());
                switch (d.verdict()) {
                    case ADMITTED -> admitted.add(d.work());
                    case REFUSED -> refuse(d.conversationId(), d.droppedOwnCache(), d.refusal());
                    case WAIT -> {
                        return;
                    }
                }
            }
        } finally {
            if (!drops.isEmpty() || !admitted.isEmpty()) engineThread.admit(drops, admitted);
        }
    }

    /** Ends a request that can never fit the subtask's memory. */
    private void refuse(String conv, boolean droppedOwnCache, String why) throws Exception {
        if (droppedOwnCache) engineThread.dropCache(conv);
        setCurrentKey(conv);
        ConversationState cs = state.value();
        endWithError(conv, cs, cs.active, new InvalidRequestException(why));
    }

    // ---- engine results, on the task thread (in the mailbox) ----

    /** Applies the engine thread's results; see {@link EngineThread.Results}. */
    private final class EngineResults implements EngineThread.Results {
        @Override
        public void token(BatchScheduler.Work work, int index, int tokenId) {
            // the token joins the keyed state at the next checkpoint (prepareSnapshotPreBarrier), not now: a state
            // update a token would serialise the conversation (its whole history, on RocksDB) for every token
            tokens.chunks(work.conversationId(), work.requestId(), index, tokenId).forEach(DecodeOperator.this::emit);
        }

        @Override
        public void finished(BatchScheduler.Work work, FinishReason reason, int promptTokens, int completionTokens,
                             int[] history) throws Exception {
            String conv = work.conversationId();
            List<OutputRecord> lastRecords = tokens.finish(conv, work.requestId(), reason, promptTokens);
            setCurrentKey(conv);
            ConversationState cs = state.value();
            cs.history = history;
            cs.active = null;
            cs.activePrompt = null;
            cs.completion = new int[0];
            admission.ended(conv);
            lastRecords.forEach(DecodeOperator.this::emit);
            startNextQueued(conv, cs);
        }

        @Override
        public void failed(BatchScheduler.Work work, DsflowException error) throws Exception {
            String conv = work.conversationId();
            setCurrentKey(conv);
            admission.ended(conv);   // its reservation can be reclaimed like any idle cache
            ConversationState cs = state.value();
            endWithError(conv, cs, cs.active, error);
        }

        @Override
        public void stepApplied(long historyPrefillsDelta, long prefilledTokensDelta, EngineThread.Steps steps)
                throws Exception {
            engineSteps.add(steps.count());
            engineDecodeRows.add(steps.decodeRows());
            engineStepTokens.add(steps.tokens());
            engineStepsMetric.inc(steps.count());
            engineDecodeRowsMetric.inc(steps.decodeRows());
            engineStepTokensMetric.inc(steps.tokens());
            historyPrefills.add(historyPrefillsDelta);
            historyPrefillCounter.inc(historyPrefillsDelta);
            prefilledTokens.add(prefilledTokensDelta);
            admitWaiting();
        }
    }

    /** Ends the active request with an error record and a final record, then serves the conversation's next one. */
    private void endWithError(String conv, ConversationState cs, Request r, DsflowException error) throws Exception {
        tokens.remove(conv, r.requestId);
        cs.active = null;
        cs.activePrompt = null;
        cs.completion = new int[0];
        fail(conv, r, error);
        startNextQueued(conv, cs);
    }

    /** Serves the conversation's queued requests in order until one is active; an end command ends it on the way. */
    private void startNextQueued(String conv, ConversationState cs) throws Exception {
        while (cs.queued.length > 0) {
            Request next = cs.queued[0];
            cs.queued = Arrays.copyOfRange(cs.queued, 1, cs.queued.length);
            if (next.endConversation) {
                cs = endQueued(conv, cs);
                if (cs == null) return;
            } else if (activate(conv, cs, next)) {
                return;
            }
        }
        save(cs);
    }

    /**
     * An end command's turn came: the conversation ends. Returns the state of the next conversation of the same id,
     * which the requests queued after the command open (null when there are none, or when the subtask has no room
     * for a conversation: then each gets a conversation_limit error).
     */
    private ConversationState endQueued(String conv, ConversationState cs) {
        Request[] after = cs.queued;
        endConversation(conv, cs);
        conversationsEnded.inc();
        if (after.length == 0) return null;
        if (!admission.openConversation()) {
            for (Request q : after) {
                if (!q.endConversation) refuseOverLimit(conv, q);
            }
            return null;
        }
        return ConversationLifetime.openedAfterEnd(after);
    }

    private void fail(String conv, Request r, DsflowException e) {
        emitRefusal(OutputRecord.error(conv, r.requestId, "invalid_request", e.getMessage(), r.raw));
    }

    /** A refused or failed request's records: its error record, then its final record (OutputRecord#refusal). */
    private void emitRefusal(OutputRecord error) {
        for (OutputRecord r : OutputRecord.refusal(error)) emit(r);
    }

    private void emit(OutputRecord record) {
        output.collect(new StreamRecord<>(record));
    }

    /**
     * Before the barrier leaves this operator: the tokens each request in progress emitted since the last checkpoint go
     * into its conversation's state, so a checkpoint holds exactly the tokens emitted before it.
     */
    @Override
    public void prepareSnapshotPreBarrier(long checkpointId) throws Exception {
        super.prepareSnapshotPreBarrier(checkpointId);
        for (TokenStream.Unsaved u : tokens.takeUnsaved()) {
            setCurrentKey(u.conversationId());
            ConversationState cs = state.value();
            if (cs != null && cs.active != null && cs.active.requestId.equals(u.requestId())) {
                cs.completion = u.tokens();
                state.update(cs);
            }
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
        while (!tokens.isEmpty()) {
            admitWaiting();
            mailbox.yield();
        }
    }

    @Override
    public void close() throws Exception {
        if (engineThread != null) engineThread.close();
        if (memoryManager != null) memoryManager.releaseAllMemory(this);
        if (engine != null) engine.close();
        GpuBinding.release(device);
        device = -1;
        super.close();
    }
}
