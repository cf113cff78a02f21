package io.dsflow.operators;

import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.kv.KvPolicy;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.runtime.checkpoint.OperatorSubtaskState;
import org.apache.flink.streaming.runtime.tasks.mailbox.Mail;
import org.apache.flink.streaming.runtime.tasks.mailbox.TaskMailbox;
import org.apache.flink.streaming.util.KeyedOneInputStreamOperatorTestHarness;
import org.junit.jupiter.api.Test;

import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.function.Predicate;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * The decode operator on Flink's keyed operator test harness (a mock task: keyed state, snapshots, a mailbox the test
 * thread drives), on the CPU with the bundled probe model. The engine thread hands results to the mailbox; the test
 * runs that mail itself, so it decides exactly which results are applied before a snapshot.
 */
class DecodeOperatorHarnessTest {
    static final Path MODEL = Path.of("..", "models", "probe-retrieval");
    private static final Duration PATIENCE = Duration.ofSeconds(60);
    private static final int MAX_TOKENS = 24;
    private static final String REQUEST = "{\"conversation_id\": \"c1\", \"request_id\": \"r1\", \"prompt_ids\": "
            + "[0, 17, 230, 41, 88, 301, 12, 77, 450, 9, 163, 205], \"max_tokens\": " + MAX_TOKENS
            + ", \"temperature\": 0.9, \"top_p\": 0.95, \"seed\": 7, \"kv\": {\"policy\": \"dense\"}}";

    static DecodeSettings settings(String modelDir) {
        return new DecodeSettings(modelDir, "cpu", KvConfig.defaults(KvPolicy.DSPP), Limits.DEFAULT, 32);
    }

    static KeyedOneInputStreamOperatorTestHarness<String, Request, OutputRecord> harness(DecodeSettings s)
            throws Exception {
        return new KeyedOneInputStreamOperatorTestHarness<>(new DecodeOperator(s), r -> r.conversationId,
                Types.STRING);
    }

    static Request request(String json) {
        RequestParser.Parsed p = new RequestParser(Limits.DEFAULT).parse(json);
        if (p.request() == null) throw new IllegalArgumentException(p.error().toJson());
        return p.request();
    }

    /** The operator's records so far, in emission order. */
    static List<OutputRecord> records(KeyedOneInputStreamOperatorTestHarness<String, Request, OutputRecord> h) {
        return new ArrayList<>(h.extractOutputValues());
    }

    /**
     * Runs the mail the engine thread sends (each a step's results) on this thread, the harness's mailbox thread,
     * until the records emitted satisfy {@code done}; fails after {@link #PATIENCE}.
     */
    static void runMailUntil(KeyedOneInputStreamOperatorTestHarness<String, Request, OutputRecord> h,
                             Predicate<List<OutputRecord>> done) throws Exception {
        long deadline = System.nanoTime() + PATIENCE.toNanos();
        while (!done.test(records(h))) {
            if (System.nanoTime() > deadline) fail("no such output within " + PATIENCE + ": " + records(h));
            Optional<Mail> mail = h.getTaskMailbox().tryTake(TaskMailbox.MIN_PRIORITY);
            if (mail.isPresent()) mail.get().run();
            else Thread.sleep(1);
        }
    }

    static List<OutputRecord> chunks(List<OutputRecord> out, String requestId) {
        return out.stream().filter(r -> OutputRecord.CHUNK.equals(r.kind) && requestId.equals(r.requestId)).toList();
    }

    static Optional<OutputRecord> finalRecord(List<OutputRecord> out, String requestId) {
        return out.stream().filter(r -> OutputRecord.FINAL.equals(r.kind) && requestId.equals(r.requestId))
                .findFirst();
    }

    /** The whole completion of REQUEST, served without interruption. */
    private static List<OutputRecord> uninterrupted() throws Exception {
        var h = harness(settings(MODEL.toString()));
        try {
            h.open();
            h.processElement(request(REQUEST), 0);
            runMailUntil(h, out -> finalRecord(out, "r1").isPresent());
            return records(h);
        } finally {
            h.close();
        }
    }

    /**
     * Issue 22, item 6: a stop string taken from the uninterrupted completion's text is not in any chunk, the chunks are
     * that text up to it, and completion_tokens counts the chunks emitted (the stop string's tokens are not counted).
     */
    @Test
    void aStopStringIsNotStreamedNorCounted() throws Exception {
        List<OutputRecord> reference = uninterrupted();
        StringBuilder text = new StringBuilder();
        for (OutputRecord c : chunks(reference, "r1")) text.append(c.text);
        String full = text.toString();
        assertTrue(full.length() > 8, "a completion with text to stop in: " + full);
        String stop = full.substring(full.length() / 2, full.length() / 2 + 2);
        String expected = full.substring(0, full.indexOf(stop));
        var h = harness(settings(MODEL.toString()));
        try {
            h.open();
            String json = REQUEST.replace("\"seed\": 7,", "\"seed\": 7, \"stop\": [" + jsonString(stop) + "],");
            h.processElement(request(json), 0);
            runMailUntil(h, out -> finalRecord(out, "r1").isPresent());
            List<OutputRecord> got = chunks(records(h), "r1");
            StringBuilder streamed = new StringBuilder();
            for (OutputRecord c : got) streamed.append(c.text);
            assertEquals(expected, streamed.toString(), "the chunks are the text up to the stop string");
            OutputRecord fin = finalRecord(records(h), "r1").orElseThrow();
            assertEquals("stop", fin.finishReason);
            assertEquals(got.size(), fin.completionTokens, "usage counts the chunks emitted");
        } finally {
            h.close();
        }
    }

    private static String jsonString(String s) {
        return new com.fasterxml.jackson.databind.ObjectMapper().valueToTree(s).toString();
    }

    @Test
    void aCompletionInFlightAtASnapshotResumesInANewOperatorWithEachIndexExactlyOnce() throws Exception {
        List<OutputRecord> reference = uninterrupted();
        OutputRecord referenceFinal = finalRecord(reference, "r1").orElseThrow();
        assertEquals("length", referenceFinal.finishReason, "the reference runs to max_tokens: " + reference);
        List<Integer> referenceTokens = chunks(reference, "r1").stream().map(r -> r.tokenId).toList();
        assertEquals(MAX_TOKENS, referenceTokens.size());

        // first operator: a few tokens out, then a checkpoint with the request in flight, then it fails
        int beforeSnapshot = 6;
        OperatorSubtaskState snapshot;
        List<OutputRecord> first;
        var h1 = harness(settings(MODEL.toString()));
        try {
            h1.open();
            h1.processElement(request(REQUEST), 0);
            runMailUntil(h1, out -> chunks(out, "r1").size() >= beforeSnapshot);
            h1.prepareSnapshotPreBarrier(1);
            snapshot = h1.snapshot(1, 1);
            first = records(h1);
        } finally {
            h1.getOperator().close();   // a failure: no finish(), the rest of its mail is never run
            h1.getEnvironment().close();
        }
        assertEquals(beforeSnapshot, chunks(first, "r1").size(), "one step's results per mail: " + first);
        assertTrue(finalRecord(first, "r1").isEmpty());

        // a new operator instance restored from the snapshot finishes the request
        List<OutputRecord> second;
        var h2 = harness(settings(MODEL.toString()));
        try {
            h2.initializeState(snapshot);
            h2.open();
            runMailUntil(h2, out -> finalRecord(out, "r1").isPresent());
            second = records(h2);
        } finally {
            h2.close();
        }

        List<OutputRecord> union = new ArrayList<>(chunks(first, "r1"));
        union.addAll(chunks(second, "r1"));
        assertEquals(rangeTo(MAX_TOKENS), union.stream().map(r -> r.index).toList(),
                "indices 0..n-1, each once, in order: before " + first + "; after " + second);
        assertEquals(referenceTokens, union.stream().map(r -> r.tokenId).toList(),
                "the tokens an uninterrupted run produced");
        assertEquals(chunks(reference, "r1").stream().map(r -> r.text).toList(),
                union.stream().map(r -> r.text).toList(), "the same text, split the same way");
        OutputRecord fin = finalRecord(second, "r1").orElseThrow();
        assertEquals("length", fin.finishReason);
        assertEquals(12, fin.promptTokens);
        assertEquals(MAX_TOKENS, fin.completionTokens);
        assertEquals(0, second.stream().filter(OutputRecord::isError).count(), "no error: " + second);
    }

    /**
     * Two requests whose caches do not fit the subtask's managed memory together (the harness gives the operator
     * about 1.5 MB; each needs 313 dense probe-model tokens, 0.96 MB): the second waits while the first runs, and
     * starts when the first ends, with no further input to prompt it (a quiet stream, or a replay's last records).
     */
    @Test
    void aRequestWaitingForMemoryStartsWhenTheRequestHoldingItEndsWithoutFurtherInput() throws Exception {
        String a = "{\"conversation_id\": \"a\", \"request_id\": \"ra\", \"prompt_ids\": [0, 17, 230, 41, 88, 301,"
                + " 12, 77, 450, 9, 163, 205], \"max_tokens\": 300, \"kv\": {\"policy\": \"dense\"}}";
        String b = a.replace("\"a\"", "\"b\"").replace("\"ra\"", "\"rb\"");
        var h = harness(settings(MODEL.toString()));
        try {
            h.open();
            h.processElement(request(a), 0);
            h.processElement(request(b), 0);
            runMailUntil(h, out -> finalRecord(out, "rb").isPresent());
            List<OutputRecord> out = records(h);
            int aEnds = out.indexOf(finalRecord(out, "ra").orElseThrow());
            int bStarts = out.indexOf(chunks(out, "rb").get(0));
            assertTrue(aEnds < bStarts, "b waited for a's memory: a ends at " + aEnds + ", b starts at " + bStarts);
            assertEquals(0, out.stream().filter(OutputRecord::isError).count(), "nothing failed: " + out);
        } finally {
            h.close();
        }
    }

    /**
     * Issue 22, item 1: request ids come from clients, and two live conversations may use the same one. Each
     * conversation's request gets its own tokens (those it gets alone), its own final record, and nothing fails
     * (in-flight work keyed by request id alone mislabelled the tokens and then failed the task).
     */
    @Test
    void twoLiveConversationsSharingARequestIdEachGetTheirOwnTokensAndOneFinal() throws Exception {
        String a = REQUEST;
        String b = REQUEST.replace("\"c1\"", "\"c2\"").replace("[0, 17, 230", "[0, 99, 411")
                .replace("\"seed\": 7", "\"seed\": 8");
        List<Integer> aAlone = tokenIds(alone(a), "c1"), bAlone = tokenIds(alone(b), "c2");
        assertTrue(!aAlone.equals(bAlone), "the two requests generate different tokens");
        var h = harness(settings(MODEL.toString()));
        try {
            h.open();
            h.processElement(request(a), 0);
            h.processElement(request(b), 0);
            runMailUntil(h, out -> finals(out, "c1").size() + finals(out, "c2").size() >= 2);
            List<OutputRecord> out = records(h);
            assertEquals(aAlone, tokenIds(out, "c1"), "c1's tokens: " + out);
            assertEquals(bAlone, tokenIds(out, "c2"), "c2's tokens: " + out);
            for (String conv : List.of("c1", "c2")) {
                assertEquals(1, finals(out, conv).size(), "one final for " + conv);
                assertEquals(MAX_TOKENS, finals(out, conv).get(0).completionTokens);
                assertEquals(rangeTo(MAX_TOKENS), out.stream().filter(r -> OutputRecord.CHUNK.equals(r.kind)
                        && conv.equals(r.conversationId)).map(r -> r.index).toList(), "each index once: " + conv);
            }
            assertEquals(0, out.stream().filter(OutputRecord::isError).count(), "no error: " + out);
        } finally {
            h.close();
        }
    }

    /**
     * Issue 26: a conversation with a capacity (positions within the cache) keeps in its keyed state only what a
     * rebuild needs, the sinks and the last tokens up to the capacity, so its checkpoints stop growing once the cache
     * is full, turn after turn; and a restored operator serves its next turn from that state.
     */
    @Test
    void aBoundedConversationsCheckpointStaysFlatAndItsRestoredStateServesTheNextTurn() throws Exception {
        List<Long> sizes = new ArrayList<>();
        OperatorSubtaskState snapshot = null;
        var h = harness(settings(MODEL.toString()));
        try {
            h.open();
            for (int turn = 10; turn < 22; turn++) {
                h.processElement(request(boundedTurn(turn)), 0);
                String id = "r" + turn;
                runMailUntil(h, out -> finalRecord(out, id).isPresent());
                h.prepareSnapshotPreBarrier(turn);
                snapshot = h.snapshot(turn, turn);
                sizes.add(snapshot.getManagedKeyedState().stream()
                        .mapToLong(org.apache.flink.runtime.state.StateObject::getStateSize).sum());
            }
        } finally {
            h.close();
        }
        // 12 turns of 28 tokens: 336 unbounded; the cache holds 64 from the third turn on
        long growth = sizes.get(sizes.size() - 1) - sizes.get(3);
        assertTrue(growth < 120, "keyed state by turn " + sizes + ": past the capacity only the request ids it "
                + "remembers add to it");
        var restored = harness(settings(MODEL.toString()));
        try {
            restored.initializeState(snapshot);
            restored.open();
            restored.processElement(request(boundedTurn(22)), 0);
            runMailUntil(restored, out -> finalRecord(out, "r22").isPresent());
            assertEquals(8, chunks(records(restored), "r22").size());
            assertEquals(0, records(restored).stream().filter(OutputRecord::isError).count());
        } finally {
            restored.close();
        }
    }

    private static String boundedTurn(int turn) {
        StringBuilder ids = new StringBuilder();
        for (int i = 0; i < 20; i++) ids.append(i == 0 ? "" : ", ").append(3 + (turn * 31 + i * 7) % 500);
        return "{\"conversation_id\": \"long\", \"request_id\": \"r" + turn + "\", \"prompt_ids\": [" + ids
                + "], \"max_tokens\": 8, \"kv\": {\"policy\": \"dense\", \"capacity\": 64, \"sinks\": 4}}";
    }

    /** The records of one request served alone. */
    static List<OutputRecord> alone(String json) throws Exception {
        var h = harness(settings(MODEL.toString()));
        try {
            h.open();
            Request r = request(json);
            h.processElement(r, 0);
            runMailUntil(h, out -> !finals(out, r.conversationId).isEmpty());
            return records(h);
        } finally {
            h.close();
        }
    }

    static List<OutputRecord> finals(List<OutputRecord> out, String conversationId) {
        return out.stream().filter(r -> OutputRecord.FINAL.equals(r.kind) && conversationId.equals(r.conversationId))
                .toList();
    }

    /** The token ids of a conversation's chunks, in emission order. */
    static List<Integer> tokenIds(List<OutputRecord> out, String conversationId) {
        return out.stream().filter(r -> OutputRecord.CHUNK.equals(r.kind) && conversationId.equals(r.conversationId))
                .map(r -> r.tokenId).toList();
    }

    private static List<Integer> rangeTo(int n) {
        List<Integer> r = new ArrayList<>();
        for (int i = 0; i < n; i++) r.add(i);
        return r;
    }
}
