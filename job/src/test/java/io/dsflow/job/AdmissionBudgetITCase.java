package io.dsflow.job;

import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.kv.KvPolicy;
import io.dsflow.engine.sample.SamplingParams;
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
 * Issue 26, acceptance 3 on the CPU: the decode operator admits conversations by the bytes of their KV caches. One
 * slot's managed memory (the cache budget on the CPU) holds two caches of the big conversations here: at most two of
 * them generate at once, the others wait and start as earlier ones end (nothing refused, nothing lost), a request
 * whose cache alone exceeds the budget gets an error record, and smaller conversations run more at once in the same
 * budget. What "at once" means is read from the output: a request is open from its first chunk to its final record.
 * <p>
 * The host budget (placement=host's pinned stores, from managed memory) is not exercised: on the CPU it is 0 and so is
 * every request's host need (the CPU backend keeps every store on the heap, whatever the placement), so it never binds
 * there; it binds on a GPU (CudaBackend#hostCacheBytes).
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

    /** One slot, so the decode operator (the only user of managed memory) gets all of it. */
    @RegisterExtension
    static final MiniClusterExtension CLUSTER = new MiniClusterExtension(new MiniClusterResourceConfiguration.Builder()
            .setNumberTaskManagers(1).setNumberSlotsPerTaskManager(1).setConfiguration(memory()).build());

    static long bytes(int tokens) {
        return Conversations.reference().estimateCacheBytes(KV, tokens);
    }

    static Configuration memory() {
        Configuration c = new Configuration();
        c.set(TaskManagerOptions.MANAGED_MEMORY_SIZE, new MemorySize(BUDGET));
        return c;
    }

    static DecodeSettings settings() {
        return new DecodeSettings(Conversations.MODEL.toString(), "cpu", KvConfig.defaults(KvPolicy.DSPP),
                new Limits(1 << 20, 4096, 512, MAX_RUNNING, 100_000, 256), 32);
    }

    /** {@code n} one-turn conversations, greedy and seeded sampling alternately. */
    static Conversations oneTurn(String prefix, int n, int minPrompt, int maxPrompt, int maxTokens, long seed) {
        Conversations c = new Conversations();
        Random rnd = new Random(seed);
        for (int i = 0; i < n; i++) {
            int[] p = new int[minPrompt + rnd.nextInt(maxPrompt - minPrompt + 1)];
            for (int j = 0; j < p.length; j++) p[j] = 3 + rnd.nextInt(509);
            p[0] = 0;
            SamplingParams sp = i % 2 == 0 ? SamplingParams.greedy(maxTokens)
                    : new SamplingParams(0.9, 0.95, 40, 700 + i, maxTokens, List.of());
            c.requests.add(new Conversations.Req(prefix + i, prefix + "req-" + i, 0, p, sp));
        }
        return c;
    }

    record Run(List<OutputRecord> out, long evictions) {
    }

    static Run run(List<String> lines) throws Exception {
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        env.setParallelism(1);
        List<OutputRecord> out = new ArrayList<>();
        try (var it = Pipeline.build(env.fromData(lines), settings()).collectAsync()) {
            JobClient job = env.executeAsync("admission budget");
            it.forEachRemaining(out::add);
            Map<String, Object> acc = job.getJobExecutionResult().get().getAllAccumulatorResults();
            return new Run(out, ((Number) acc.get(DecodeOperator.CACHE_EVICTIONS)).longValue());
        }
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
        List<String> lines = new ArrayList<>();
        for (int i = 0; i < big.requests.size(); i++) {
            Conversations.Req q = big.requests.get(i);
            lines.add(q.json());
            lines.add("{\"conversation_id\":\"" + q.conversationId() + "\",\"end_conversation\":true}");
            if (i == 2) {
                lines.add("{\"conversation_id\":\"huge\",\"request_id\":\"huge-0\",\"prompt_ids\":[0,5,6],"
                        + "\"max_tokens\":250,\"temperature\":0,\"kv\":{\"policy\":\"dense\"}}");
            }
        }
        assertTrue(bytes(3 + 250 + 1) > BUDGET, "the huge request can never fit");
        Run r = run(lines);
        List<OutputRecord> served = r.out().stream().filter(o -> !"huge".equals(o.conversationId)).toList();
        System.out.printf("budget %,d bytes, big cache %,d: at most %d open at once, %d started after an end,"
                + " %d evictions; %s%n", BUDGET, BIG_BYTES, mostOpen(served), startedAfterAnEnd(served),
                r.evictions(), trace(r.out()));

        // (d) the request that can never fit: one error record naming the cache budget, and its final record
        List<OutputRecord> huge = r.out().stream().filter(o -> "huge".equals(o.conversationId)).toList();
        assertEquals(2, huge.size(), trace(huge));
        assertEquals(OutputRecord.ERROR, huge.get(0).kind);
        assertTrue(huge.get(0).errorMessage.contains("KV cache")
                && huge.get(0).errorMessage.contains("managed memory"), huge.get(0).errorMessage);
        assertEquals(OutputRecord.FINAL, huge.get(1).kind);
        assertEquals("error", huge.get(1).finishReason);
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
}
