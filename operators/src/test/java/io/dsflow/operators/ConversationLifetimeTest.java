package io.dsflow.operators;

import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.kv.KvPolicy;
import org.apache.flink.runtime.checkpoint.OperatorSubtaskState;
import org.apache.flink.streaming.util.KeyedOneInputStreamOperatorTestHarness;
import org.junit.jupiter.api.Test;

import java.util.List;

import static io.dsflow.operators.DecodeOperatorHarnessTest.MODEL;
import static io.dsflow.operators.DecodeOperatorHarnessTest.alone;
import static io.dsflow.operators.DecodeOperatorHarnessTest.finals;
import static io.dsflow.operators.DecodeOperatorHarnessTest.harness;
import static io.dsflow.operators.DecodeOperatorHarnessTest.records;
import static io.dsflow.operators.DecodeOperatorHarnessTest.request;
import static io.dsflow.operators.DecodeOperatorHarnessTest.runMailUntil;
import static io.dsflow.operators.DecodeOperatorHarnessTest.tokenIds;
import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * Issue 22, item 4: a conversation's lifetime on the decode operator (Flink's keyed operator harness, processing time
 * driven by the test). A conversation ends when it has been idle for limits.conversation-idle-timeout, or on an end
 * record (a Kafka tombstone, or {@code "end_conversation": true}) once the requests sent before it are served; its
 * keyed state is then gone and it no longer counts against limits.max-conversations.
 */
class ConversationLifetimeTest {
    private static final long HOUR_MS = 3_600_000L;

    /** A request of conversation {@code conv}: a short greedy completion on the probe model. */
    static String json(String conv, String id, int salt) {
        return "{\"conversation_id\": \"" + conv + "\", \"request_id\": \"" + id + "\", \"prompt_ids\": [0, 17, "
                + (100 + salt) + ", 41, 88], \"max_tokens\": 6, \"temperature\": 0, \"kv\": {\"policy\": \"dense\"}}";
    }

    static String end(String conv) {
        return "{\"conversation_id\": \"" + conv + "\", \"end_conversation\": true}";
    }

    /** One conversation a subtask, ending after an hour idle (the default idle timeout). */
    static DecodeSettings oneConversation() {
        return new DecodeSettings(MODEL.toString(), "cpu", KvConfig.defaults(KvPolicy.DSPP),
                new Limits(1 << 20, 4096, 512, 8, 1, 256), 32);
    }

    private static void serve(KeyedOneInputStreamOperatorTestHarness<String, Request, OutputRecord> h, String json)
            throws Exception {
        Request r = request(json);
        int before = finals(records(h), r.conversationId).size();
        h.processElement(r, 0);
        runMailUntil(h, out -> finals(out, r.conversationId).size() > before);
    }

    /**
     * The only conversation a subtask may hold idles past the timeout: its state goes, so a new conversation opens,
     * and the old conversation's request id is free again (a new conversation, with no history: the same tokens as
     * the first time).
     */
    @Test
    void anIdleConversationExpiresAndANewOneTakesItsPlace() throws Exception {
        var h = harness(oneConversation());
        try {
            h.open();
            h.setProcessingTime(0);
            serve(h, json("a", "r1", 1));
            assertEquals(1, h.numKeyedStateEntries());
            h.setProcessingTime(HOUR_MS - 1);
            serve(h, json("b", "r1", 2));
            assertEquals("conversation_limit", records(h).get(records(h).size() - 2).errorCode,
                    "a is still live a millisecond before its hour: " + records(h));
            h.setProcessingTime(HOUR_MS + 1);
            assertEquals(0, h.numKeyedStateEntries(), "a expired: its state is gone");
            h.getOutput().clear();
            serve(h, json("b", "r1", 2));
            serve(h, json("b", "r2", 3));
            List<OutputRecord> out = records(h);
            assertEquals(List.of(), out.stream().filter(OutputRecord::isError).toList(), "b opened: " + out);
            assertEquals(2, finals(out, "b").size());
        } finally {
            h.close();
        }
    }

    /** An end record on an idle conversation ends it at once: its place and its request ids are free again. */
    @Test
    void anEndRecordEndsAnIdleConversationAndFreesItsPlace() throws Exception {
        var h = harness(oneConversation());
        try {
            h.open();
            serve(h, json("a", "r1", 1));
            h.processElement(request(end("a")), 0);
            assertEquals(0, h.numKeyedStateEntries(), "a's state is gone");
            h.processElement(request(end("never-opened")), 0);   // nothing to end: nothing happens
            serve(h, json("b", "r1", 2));
            List<OutputRecord> out = records(h);
            assertEquals(List.of(), out.stream().filter(OutputRecord::isError).toList(), "b opened: " + out);
            assertEquals(2, out.stream().filter(r -> OutputRecord.FINAL.equals(r.kind)).count(), "a's and b's: " + out);
        } finally {
            h.close();
        }
    }

    /**
     * An end record sent right after a request waits for it: the request is served in full, then the conversation
     * ends, and a request sent after the end opens a new conversation of the same id (no history, its id free again),
     * in the place the old one left.
     */
    @Test
    void anEndRecordWaitsForTheRequestsBeforeItAndTheNextRequestOpensANewConversation() throws Exception {
        var h = harness(oneConversation());
        try {
            h.open();
            h.processElement(request(json("a", "r1", 1)), 0);
            h.processElement(request(json("a", "r2", 2)), 0);
            h.processElement(request(end("a")), 0);
            h.processElement(request(json("a", "r1", 3)), 0);
            h.processElement(request(json("a", "r1", 4)), 0);   // a duplicate within the new conversation
            runMailUntil(h, out -> finals(out, "a").size() >= 3);
            List<OutputRecord> out = records(h);
            List<OutputRecord> finals = finals(out, "a");
            assertEquals(List.of("r1", "r2", "r1"), finals.stream().map(r -> r.requestId).toList(), "in order: " + out);
            assertEquals(List.of("length", "length", "length"), finals.stream().map(r -> r.finishReason).toList());
            List<OutputRecord> errors = out.stream().filter(OutputRecord::isError).toList();
            assertEquals(List.of("duplicate_request_id"), errors.stream().map(r -> r.errorCode).toList(), "" + out);
            int secondR1 = out.indexOf(finals.get(1)) + 1;
            assertEquals(tokenIds(alone(json("a", "r1", 3)), "a"), tokenIds(out.subList(secondR1, out.size()), "a"),
                    "the new conversation has no history");
            assertEquals(1, h.numKeyedStateEntries());
        } finally {
            h.close();
        }
    }

    /**
     * A conversation checkpointed without an expiry (idle timeout 0 then, or state of format 1, which has no deadline)
     * gets one when restored into an operator with a timeout.
     */
    @Test
    void aRestoredIdleConversationWithoutAnExpiryGetsOne() throws Exception {
        DecodeSettings s = oneConversation();
        Limits l = s.limits();
        DecodeSettings never = new DecodeSettings(s.modelDir(), s.backend(), s.kv(), new Limits(l.maxRequestBytes(),
                l.maxPromptTokens(), l.maxTokens(), l.maxRunning(), l.maxConversations(), l.maxIdLength(), 0),
                s.prefillChunk());
        OperatorSubtaskState snapshot;
        var h1 = harness(never);
        try {
            h1.open();
            h1.setProcessingTime(0);
            serve(h1, json("a", "r1", 1));
            h1.setProcessingTime(10 * HOUR_MS);
            assertEquals(1, h1.numKeyedStateEntries(), "idle timeout 0: a never expires");
            snapshot = h1.snapshot(1, 1);
        } finally {
            h1.close();
        }
        var h2 = harness(s);
        try {
            h2.initializeState(snapshot);
            h2.setProcessingTime(10 * HOUR_MS);
            h2.open();
            h2.setProcessingTime(11 * HOUR_MS - 1);
            assertEquals(1, h2.numKeyedStateEntries(), "an hour from the restore, not from the last request");
            h2.setProcessingTime(11 * HOUR_MS);
            assertEquals(0, h2.numKeyedStateEntries(), "a expired");
        } finally {
            h2.close();
        }
    }

    /** An idle conversation's expiry timer is in the checkpoint: a restored operator expires it on time. */
    @Test
    void theIdleExpirySurvivesASnapshotAndRestore() throws Exception {
        OperatorSubtaskState snapshot;
        var h1 = harness(oneConversation());
        try {
            h1.open();
            h1.setProcessingTime(0);
            serve(h1, json("a", "r1", 1));
            snapshot = h1.snapshot(1, 1);
        } finally {
            h1.close();
        }
        var h2 = harness(oneConversation());
        try {
            h2.initializeState(snapshot);
            h2.open();
            h2.setProcessingTime(HOUR_MS + 1);
            assertEquals(0, h2.numKeyedStateEntries(), "a expired after the restore");
            serve(h2, json("a", "r1", 1));
            List<OutputRecord> out = records(h2);
            assertEquals(List.of(), out.stream().filter(OutputRecord::isError).toList(),
                    "a new conversation a, with r1 free again: " + out);
            assertEquals(tokenIds(alone(json("a", "r1", 1)), "a"), tokenIds(out, "a"), "and no history");
        } finally {
            h2.close();
        }
    }
}
