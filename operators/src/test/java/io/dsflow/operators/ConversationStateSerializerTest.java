package io.dsflow.operators;

import org.apache.flink.api.common.typeutils.TypeSerializerSchemaCompatibility;
import org.apache.flink.api.common.typeutils.TypeSerializerSnapshot;
import org.apache.flink.core.memory.DataInputDeserializer;
import org.apache.flink.core.memory.DataOutputSerializer;
import org.junit.jupiter.api.Test;

import java.io.IOException;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class ConversationStateSerializerTest {

    static Request request(String id, int[] ids, String prompt) {
        Request r = new Request();
        r.conversationId = "conv-é";
        r.requestId = id;
        r.prompt = prompt;
        r.promptIds = ids;
        r.maxTokens = 17;
        r.temperature = 0.7;
        r.topP = 0.9;
        r.topK = 40;
        r.seed = -123456789012345L;
        r.stop = new String[]{"\n", "END"};
        r.kv = "{\"policy\":\"dspp\",\"window\":16}";
        r.raw = "x".repeat(70_000); // longer than writeUTF allows
        return r;
    }

    static ConversationState sample() {
        ConversationState s = new ConversationState();
        s.history = new int[]{0, 5, 9, 300, 511};
        s.active = request("r2", null, "a prompt ✓");
        s.activePrompt = new int[]{7, 8};
        s.completion = new int[]{44, 45, 46};
        s.queued = new Request[]{request("r3", new int[]{1, 2, 3}, null)};
        s.recentRequestIds = new String[]{"r1", "r2", "r3"};
        return s;
    }

    static ConversationState roundTrip(ConversationState s) throws IOException {
        DataOutputSerializer out = new DataOutputSerializer(64);
        ConversationStateSerializer.INSTANCE.serialize(s, out);
        return ConversationStateSerializer.INSTANCE.deserialize(new DataInputDeserializer(out.getCopyOfBuffer()));
    }

    @Test
    void everyFieldSurvivesARoundTrip() throws IOException {
        ConversationState s = sample(), back = roundTrip(s);
        assertArrayEquals(s.history, back.history);
        assertArrayEquals(s.activePrompt, back.activePrompt);
        assertArrayEquals(s.completion, back.completion);
        assertArrayEquals(s.recentRequestIds, back.recentRequestIds);
        assertEquals("a prompt ✓", back.active.prompt);
        assertNull(back.active.promptIds);
        assertEquals(s.active.seed, back.active.seed);
        assertEquals(s.active.temperature, back.active.temperature);
        assertArrayEquals(s.active.stop, back.active.stop);
        assertEquals(s.active.kv, back.active.kv);
        assertEquals(70_000, back.active.raw.length());
        assertEquals(1, back.queued.length);
        assertArrayEquals(new int[]{1, 2, 3}, back.queued[0].promptIds);
        assertNull(back.queued[0].prompt);
        ConversationState idle = new ConversationState();
        idle.history = new int[]{0, 1};
        assertNull(roundTrip(idle).active);
    }

    /** The checkpoint size of a conversation, reported in the issue note. */
    @Test
    void idleConversationOfAThousandTokensTakesAboutFourBytesAToken() throws IOException {
        ConversationState idle = new ConversationState();
        idle.history = new int[1000];
        idle.recentRequestIds = new String[]{"req-1", "req-2"};
        DataOutputSerializer out = new DataOutputSerializer(64);
        ConversationStateSerializer.INSTANCE.serialize(idle, out);
        assertTrue(out.length() < 4 * 1000 + 64, "bytes " + out.length());
    }

    @Test
    void copyIsDeepAndSnapshotIsVersioned() throws IOException {
        ConversationState s = sample(), c = ConversationStateSerializer.INSTANCE.copy(s);
        c.history[0] = 99;
        c.active.stop[0] = "changed";
        assertEquals(0, s.history[0]);
        assertEquals("\n", s.active.stop[0]);

        TypeSerializerSnapshot<ConversationState> snap = ConversationStateSerializer.INSTANCE.snapshotConfiguration();
        DataOutputSerializer out = new DataOutputSerializer(64);
        TypeSerializerSnapshot.writeVersionedSnapshot(out, snap);
        TypeSerializerSnapshot<ConversationState> read = TypeSerializerSnapshot.readVersionedSnapshot(
                new DataInputDeserializer(out.getCopyOfBuffer()), getClass().getClassLoader());
        assertEquals(ConversationStateSerializer.FORMAT_VERSION, read.getCurrentVersion());
        TypeSerializerSchemaCompatibility<ConversationState> compat =
                ConversationStateSerializer.INSTANCE.snapshotConfiguration().resolveSchemaCompatibility(read);
        assertTrue(compat.isCompatibleAsIs());
        assertThrows(IOException.class, () -> new ConversationStateSerializer.Snapshot().readSnapshot(
                ConversationStateSerializer.FORMAT_VERSION + 1, new DataInputDeserializer(new byte[0]), getClass().getClassLoader()));
    }
}
