package io.dsflow.job;

import io.dsflow.engine.Engine;
import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.kv.KvPolicy;
import io.dsflow.engine.sample.SamplingParams;
import io.dsflow.operators.Admission;
import io.dsflow.operators.DecodeOperator;
import io.dsflow.operators.DecodeSettings;
import io.dsflow.operators.Limits;
import io.dsflow.operators.OutputRecord;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.MemorySize;
import org.apache.flink.configuration.TaskManagerOptions;
import org.apache.flink.core.execution.JobClient;
import org.apache.flink.runtime.testutils.MiniClusterResourceConfiguration;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.test.junit5.MiniClusterExtension;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.RegisterExtension;

import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Issue 26, acceptance 3 on the CPU: the decode operator admits conversations by the bytes of their KV caches, against
 * both of its budgets. One slot's managed memory (the cache budget on the CPU) holds two caches of the big
 * conversations here: at most two of them generate at once, the others wait and start as earlier ones end (nothing
 * refused, nothing lost), a request whose cache alone exceeds the budget gets an error record, and smaller
 * conversations run more at once in the same budget. What "at once" means is read from the output: a request is open
 * from its first chunk to its final record.
 * <p>
 * A GPU's two budgets (device memory for the caches, and managed memory for the pinned host stores of placement=host)
 * bind here through the CPU backend with a GPU's memory budget ({@code cpu:device-memory=SIZE}): the same forward pass
 * and caches (on the heap), counted as the CUDA backend keeps them. With device memory for three big caches,
 * conversations wait for device memory (three at once, more than managed memory would hold); with placement=host,
 * the sparse layers' keys and values count against managed memory, which holds two such stores while the device
 * memory holds many: conversations wait for host memory. In both a request that can never fit one budget gets an
 * error record, and the input is held back (backpressure: {@link DecodeOperator#MOST_WAITING} stays at
 * {@link Admission#WAITING_PER_SLOT} times max-running, plus one) while every other request is served in full.
 */
class AdmissionBudgetITCase {
    /** Tokens a big conversation's cache is sized for (prompt + max_tokens + 1): a CPU store of room 96. */
    static final int BIG_PROMPT_MIN = 50, BIG_PROMPT_MAX = 60, BIG_MAX_TOKENS = 16;
    /** A small one fits a store of room 32 (16 tokens each, so that those admitted together overlap in the output). */
    static final int SMALL_PROMPT_MAX = 12, SMALL_MAX_TOKENS = 16;
    static final KvConfig KV = KvConfig.DENSE;   // Conversations' requests ask for the dense policy
    static final long BIG_BYTES = bytes(BIG_PROMPT_MAX + BIG_MAX_TOKENS + 1);
    static final long SMALL_BYTES = bytes(SMALL_PROMPT_MAX + SMALL_MAX_TOKENS + 1);
    /** Two and a half big caches, in whole pages of managed memory (32 KiB, what MemoryManager budgets in). */
    static final long BUDGET = (BIG_BYTES * 5 / 2) / (32 << 10) * (32 << 10);
    static final int MAX_RUNNING = 8;
    /** The modelled GPU's device memory: three and a half big caches, in whole KiB (more than managed memory holds). */
    static final long DEVICE_MEMORY = BIG_BYTES * 7 / 2 / 1024 * 1024;
    /** Running slots on the modelled GPU: more than either budget holds (memory binds), few (backpressure is soon). */
    static final int GPU_MAX_RUNNING = 4;
    /** Requests that wait at most, with the input held back (Admission#mustBackpressure). */
    static final int MOST_WAITING = Admission.WAITING_PER_SLOT * GPU_MAX_RUNNING + 1;
    /** Conversations a run on the modelled GPU sends: more than what runs at once and MOST_WAITING together. */
    static final int GPU_CONVERSATIONS = 24;
    /** placement=host conversations: their caches are sized for 97 to 117 tokens (room 128). */
    static final int HOST_PROMPT_MIN = 80, HOST_PROMPT_MAX = 100, HOST_MAX_TOKENS = 16;
    /** What the placement=host conversations' requests ask for (dspp's sparse layers: 4 of the 6). */
    static final Map<String, String> HOST_KV = Map.of("policy", "dspp", "placement", "host");
    /** The modelled GPU's huge request: a cache of 3 + 400 + 1 tokens (room 416), which the budget under test lacks. */
    static final int HUGE_MAX_TOKENS = 400;

    /** One slot, so the decode operator (the only user of managed memory) gets all of it. */
    @RegisterExtension
    static final MiniClusterExtension CLUSTER = new MiniClusterExtension(new MiniClusterResourceConfiguration.Builder()
            .setNumberTaskManagers(1).setNumberSlotsPerTaskManager(1).setConfiguration(memory()).build());

    static long bytes(int tokens) {
        return Conversations.reference().estimateCacheBytes(KV, tokens);
    }

    private static Engine modelledGpu;

    /** The CPU backend counting caches as a GPU does (its device budget is not used here, only its split of needs). */
    static synchronized Engine modelledGpu() {
        if (modelledGpu == null) modelledGpu = Engine.load(Conversations.MODEL, "cpu:device-memory=64MiB");
        return modelledGpu;
    }

    static Configuration memory() {
        Configuration c = new Configuration();
        c.set(TaskManagerOptions.MANAGED_MEMORY_SIZE, new MemorySize(BUDGET));
        return c;
    }

    static DecodeSettings settings(String backend, int maxRunning) {
        return new DecodeSettings(Conversations.MODEL.toString(), backend, KvConfig.defaults(KvPolicy.DSPP),
                new Limits(1 << 20, 4096, 512, maxRunning, 100_000, 256), 32);
    }

    /** {@code n} one-turn conversations of the dense policy, greedy and seeded sampling alternately. */
    static Conversations oneTurn(String prefix, int n, int minPrompt, int maxPrompt, int maxTokens, long seed) {
        return oneTurn(prefix, n, minPrompt, maxPrompt, maxTokens, seed, Map.of("policy", "dense"));
    }

    /** {@code n} one-turn conversations whose requests ask for the kv options {@code kv}. */
    static Conversations oneTurn(String prefix, int n, int minPrompt, int maxPrompt, int maxTokens, long seed,
                                 Map<String, String> kv) {
        Conversations c = new Conversations();
        Random rnd = new Random(seed);
        for (int i = 0; i < n; i++) {
            int[] p = new int[minPrompt + rnd.nextInt(maxPrompt - minPrompt + 1)];
            for (int j = 0; j < p.length; j++) p[j] = 3 + rnd.nextInt(509);
            p[0] = 0;
            SamplingParams sp = i % 2 == 0 ? SamplingParams.greedy(maxTokens)
                    : new SamplingParams(0.9, 0.95, 40, 700 + i, maxTokens, List.of());
            c.requests.add(new Conversations.Req(prefix + i, prefix + "req-" + i, 0, p, sp, kv));
        }
        return c;
    }

    /** The input: each conversation's request and its end (which frees its bytes), and {@code huge} after the third. */
    static List<String> endedEach(Conversations c, String huge) {
        List<String> lines = new ArrayList<>();
        for (int i = 0; i < c.requests.size(); i++) {
            Conversations.Req q = c.requests.get(i);
            lines.add(q.json());
            lines.add("{\"conversation_id\":\"" + q.conversationId() + "\",\"end_conversation\":true}");
            if (i == 2) lines.add(huge);
        }
        return lines;
    }

    /** The conversation "huge": one request whose cache is sized for 3 + max_tokens + 1 tokens, kv {@code kvJson}. */
    static String huge(int maxTokens, String kvJson) {
        return "{\"conversation_id\":\"huge\",\"request_id\":\"huge-0\",\"prompt_ids\":[0,5,6],\"max_tokens\":"
                + maxTokens + ",\"temperature\":0,\"kv\":" + kvJson + "}";
    }

    /** @param mostWaiting the most requests that waited for admission at once (DecodeOperator#MOST_WAITING) */
    record Run(List<OutputRecord> out, long evictions, long mostWaiting) {
        List<OutputRecord> of(String conversationId) {
            return out.stream().filter(o -> conversationId.equals(o.conversationId)).toList();
        }

        List<OutputRecord> except(String conversationId) {
            return out.stream().filter(o -> !conversationId.equals(o.conversationId)).toList();
        }
    }

    static Run run(List<String> lines) throws Exception {
        return run(lines, settings("cpu", MAX_RUNNING));
    }

    static Run run(List<String> lines, DecodeSettings settings) throws Exception {
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        env.setParallelism(1);
        List<OutputRecord> out = new ArrayList<>();
        try (var it = Pipeline.build(env.fromData(lines), settings).collectAsync()) {
            JobClient job = env.executeAsync("admission budget");
            it.forEachRemaining(out::add);
            Map<String, Object> acc = job.getJobExecutionResult().get().getAllAccumulatorResults();
            return new Run(out, ((Number) acc.get(DecodeOperator.CACHE_EVICTIONS)).longValue(),
                    ((Number) acc.get(DecodeOperator.MOST_WAITING)).longValue());
        }
    }

    /** The huge request's output: one error record whose message names {@code memory}, and its final record. */
    static void refusedNaming(List<OutputRecord> huge, String memory) {
        assertEquals(2, huge.size(), trace(huge));
        assertEquals(OutputRecord.ERROR, huge.get(0).kind);
        assertTrue(huge.get(0).errorMessage.contains(memory), huge.get(0).errorMessage);
        assertEquals(OutputRecord.FINAL, huge.get(1).kind);
        assertEquals("error", huge.get(1).finishReason);
    }

    /** The most requests open at once in the output (from a request's first chunk to its final record). */
    static int mostOpen(List<OutputRecord> out) {
        Set<String> open = new HashSet<>(), done = new HashSet<>();
        int most = 0;
        for (OutputRecord r : out) {
            String id = r.conversationId + "/" + r.requestId;
            if (OutputRecord.CHUNK.equals(r.kind) && !done.contains(id)) {
                open.add(id);
                most = Math.max(most, open.size());
            } else if (OutputRecord.FINAL.equals(r.kind)) {
                open.remove(id);
                done.add(id);
            }
        }
        return most;
    }

    /** Requests whose first chunk came after some other request's final record: they waited for one to end. */
    static int startedAfterAnEnd(List<OutputRecord> out) {
        Set<String> started = new HashSet<>();
        boolean anyFinal = false;
        int after = 0;
        for (OutputRecord r : out) {
            String id = r.conversationId + "/" + r.requestId;
            if (OutputRecord.CHUNK.equals(r.kind) && started.add(id) && anyFinal) after++;
            if (OutputRecord.FINAL.equals(r.kind)) anyFinal = true;
        }
        return after;
    }

    /** The output in short, for the log: c, f or e (chunk, final, error) and the conversation of each record. */
    static String trace(List<OutputRecord> out) {
        StringBuilder t = new StringBuilder("records:");
        for (OutputRecord o : out) t.append(' ').append(o.kind.charAt(0)).append(o.conversationId);
        return t.toString();
    }

    @Test
    @Timeout(300)   // a request that can never fit must be refused, not left waiting
    void conversationsWaitForCacheBytesAndEveryOneIsServedWhileOneThatCanNeverFitIsRefused() throws Exception {
        assertEquals(2, BUDGET / BIG_BYTES, "the budget holds two big caches: " + BUDGET + " / " + BIG_BYTES);
        assertEquals(BIG_BYTES, bytes(BIG_PROMPT_MIN + BIG_MAX_TOKENS + 1), "every big conversation needs as much");

        // six big conversations, each ended after its request (its bytes are freed then), and one request in the
        // middle whose cache alone (3 + 250 + 1 tokens) is larger than the whole budget
        Conversations big = oneTurn("big-", 6, BIG_PROMPT_MIN, BIG_PROMPT_MAX, BIG_MAX_TOKENS, 26);
        assertTrue(bytes(3 + 250 + 1) > BUDGET, "the huge request can never fit");
        Run r = run(endedEach(big, huge(250, "{\"policy\":\"dense\"}")));
        List<OutputRecord> served = r.except("huge");
        System.out.printf("budget %,d bytes, big cache %,d: at most %d open at once, %d started after an end,"
                + " %d evictions; %s%n", BUDGET, BIG_BYTES, mostOpen(served), startedAfterAnEnd(served),
                r.evictions(), trace(r.out()));

        // (d) the request that can never fit: one error record naming the cache budget, and its final record
        refusedNaming(r.of("huge"), "KV cache");
        refusedNaming(r.of("huge"), "managed memory");
        // (a, b) two at once, as the budget holds; the other four waited for earlier conversations to end
        assertEquals(0, served.stream().filter(OutputRecord::isError).count(), "no big request was refused");
        int mostBig = mostOpen(served);   // the output can only undercount: a request shows from its first chunk
        assertTrue(mostBig >= 1 && mostBig <= 2, "never more big conversations at once than the budget holds: "
                + mostBig);
        assertTrue(startedAfterAnEnd(served) >= 4, "the others started after earlier ones ended");
        // (c) nothing lost: every request's full completion, as generate makes it
        big.check(served, Conversations.reference());

        // the same budget holds seven small caches: more run at once; nobody ends these conversations, so the eighth
        // runs only once an idle cache is dropped for it
        assertEquals(7, BUDGET / SMALL_BYTES, "the budget holds seven small caches");
        Conversations small = oneTurn("small-", 8, 3, SMALL_PROMPT_MAX, SMALL_MAX_TOKENS, 27);
        Run s = run(small.jsonLines());
        System.out.printf("small cache %,d: at most %d open at once, %d evictions; %s%n", SMALL_BYTES,
                mostOpen(s.out()), s.evictions(), trace(s.out()));
        assertEquals(0, s.out().stream().filter(OutputRecord::isError).count(), "no small request was refused");
        int most = mostOpen(s.out());
        assertTrue(most > 2 && most <= 7, "more small conversations at once, within the budget: " + most);
        assertTrue(s.evictions() >= 1, "an idle cache was dropped to admit the eighth");
        small.check(s.out(), Conversations.reference());
    }

    @Test
    @Timeout(300)
    void onAModelledGpuConversationsWaitForDeviceMemoryAndTheInputIsHeldBackWhileTooManyWait() throws Exception {
        assertEquals(3, DEVICE_MEMORY / BIG_BYTES, "the device memory holds three big caches: " + DEVICE_MEMORY);
        assertEquals(2, BUDGET / BIG_BYTES, "managed memory would hold two");
        assertTrue(bytes(3 + HUGE_MAX_TOKENS + 1) > DEVICE_MEMORY, "the huge request can never fit the device");
        Conversations big = oneTurn("big-", GPU_CONVERSATIONS, BIG_PROMPT_MIN, BIG_PROMPT_MAX, BIG_MAX_TOKENS, 28);
        assertTrue(GPU_CONVERSATIONS - 3 > MOST_WAITING, "without backpressure more would wait");

        Run r = run(endedEach(big, huge(HUGE_MAX_TOKENS, "{\"policy\":\"dense\"}")),
                settings("cpu:device-memory=" + DEVICE_MEMORY, GPU_MAX_RUNNING));
        List<OutputRecord> served = r.except("huge");
        System.out.printf("device memory %,d bytes, big cache %,d: at most %d open at once, %d started after an end,"
                + " at most %d waiting, %d evictions; %s%n", DEVICE_MEMORY, BIG_BYTES, mostOpen(served),
                startedAfterAnEnd(served), r.mostWaiting(), r.evictions(), trace(r.out()));

        // (c) the request that can never fit the device: its error names device memory
        refusedNaming(r.of("huge"), "device memory");
        // (a) three at once, as the device memory holds (more than managed memory would), the others waited
        assertEquals(0, served.stream().filter(OutputRecord::isError).count(), "no big request was refused");
        int most = mostOpen(served);
        assertTrue(most > 2 && most <= 3, "as many big conversations at once as the device memory holds: " + most);
        assertTrue(startedAfterAnEnd(served) >= GPU_CONVERSATIONS - 3, "the others started after earlier ones ended");
        // (d) the input was held back, rather than anything failing, at the most that may wait
        assertEquals(MOST_WAITING, r.mostWaiting(), "requests waiting when the input was held back");
        big.check(served, Conversations.reference());
    }

    @Test
    @Timeout(300)
    void onAModelledGpuHostPlacedConversationsWaitForHostMemoryAndTheInputIsHeldBackWhileTooManyWait()
            throws Exception {
        Engine gpu = modelledGpu();
        KvConfig host = KvConfig.DENSE.with(HOST_KV);
        long hostBytes = gpu.backend().hostCacheBytes(host, HOST_PROMPT_MAX + HOST_MAX_TOKENS + 1);
        long deviceBytes = gpu.estimateCacheBytes(host, HOST_PROMPT_MAX + HOST_MAX_TOKENS + 1);
        assertEquals(hostBytes, gpu.backend().hostCacheBytes(host, HOST_PROMPT_MIN + HOST_MAX_TOKENS + 1),
                "every host-placed conversation needs as much");
        assertEquals(2, BUDGET / hostBytes, "managed memory holds two host stores: " + BUDGET + " / " + hostBytes);
        assertTrue(gpu.backend().deviceCacheBudget() / deviceBytes > GPU_MAX_RUNNING, "the device memory holds many");
        int hugeTokens = 3 + HUGE_MAX_TOKENS + 1;
        assertTrue(gpu.backend().hostCacheBytes(host, hugeTokens) > BUDGET
                && gpu.estimateCacheBytes(host, hugeTokens) < gpu.backend().deviceCacheBudget(),
                "the huge request fits the device but can never fit the host budget");
        Conversations placed = oneTurn("host-", GPU_CONVERSATIONS, HOST_PROMPT_MIN, HOST_PROMPT_MAX, HOST_MAX_TOKENS,
                29, HOST_KV);
        assertTrue(GPU_CONVERSATIONS - 2 > MOST_WAITING, "without backpressure more would wait");

        Run r = run(endedEach(placed, huge(HUGE_MAX_TOKENS, "{\"policy\":\"dspp\",\"placement\":\"host\"}")),
                settings("cpu:device-memory=64MiB", GPU_MAX_RUNNING));
        List<OutputRecord> served = r.except("huge");
        System.out.printf("managed memory %,d bytes, host store %,d (device part %,d): at most %d open at once, %d"
                + " started after an end, at most %d waiting, %d evictions; %s%n", BUDGET, hostBytes, deviceBytes,
                mostOpen(served), startedAfterAnEnd(served), r.mostWaiting(), r.evictions(), trace(r.out()));

        // (c) the request that can never fit the host budget: its error names the pinned host memory
        refusedNaming(r.of("huge"), "pinned host memory");
        // (b) two at once, as managed memory holds their host stores, the others waited for host memory
        assertEquals(0, served.stream().filter(OutputRecord::isError).count(), "no host-placed request was refused");
        int most = mostOpen(served);
        assertTrue(most >= 1 && most <= 2, "never more host-placed conversations at once than managed memory holds: "
                + most);
        assertTrue(startedAfterAnEnd(served) >= GPU_CONVERSATIONS - 2, "the others started after earlier ones ended");
        // (d) the input was held back, rather than anything failing, at the most that may wait
        assertEquals(MOST_WAITING, r.mostWaiting(), "requests waiting when the input was held back");
        placed.check(served, Conversations.reference());
    }
}
