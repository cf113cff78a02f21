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
        r.kv = KvOverrides.fromJson("{\"policy\":\"dspp\",\"window\":16}");
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

    /**
     * A conversation with a request in progress as the build before KvOverrides wrote it (format 1, the request's kv
     * field the JSON it arrived with, numbers as numbers), byte by byte: it restores, with the same kv configuration.
     */
    @Test
    void stateWrittenBeforeKvOverridesRestoresWithTheSameKvConfiguration() throws IOException {
        DataOutputSerializer out = new DataOutputSerializer(256);
        writeInts(out, 0, 5, 9);                        // history
        out.writeBoolean(true);                         // an active request:
        out.writeUTF("c1");
        out.writeUTF("r1");
        out.writeInt(-1);                               // no prompt text
        out.writeBoolean(true);
        writeInts(out, 7, 8);                           // prompt ids
        out.writeInt(32);                               // max tokens
        out.writeDouble(0.7);
        out.writeDouble(0.9);
        out.writeInt(40);
        out.writeLong(11);
        out.writeInt(0);                                // no stop strings
        writeString(out, "{\"policy\":\"dspp\",\"window\":16,\"lambda\":0.5,\"lookahead\":\"on\"}");
        writeString(out, "{\"raw\":true}");
        writeInts(out, 7, 8);                           // its prompt tokens
        writeInts(out, 44, 45);                         // completion emitted at the checkpoint
        out.writeInt(0);                                // nothing queued
        out.writeInt(1);
        out.writeUTF("r1");

        ConversationState s = ConversationStateSerializer.forVersion(1).deserialize(
                new DataInputDeserializer(out.getCopyOfBuffer()));
        assertArrayEquals(new int[]{44, 45}, s.completion);
        assertEquals(0, s.idleDeadline, "format 1 has no expiry: the operator arms one at restore");
        io.dsflow.engine.kv.KvConfig kv = s.active.kvConfig(io.dsflow.engine.kv.KvConfig.DENSE);
        assertEquals(io.dsflow.engine.kv.KvPolicy.DSPP, kv.policy());
        assertEquals(16, kv.window());
        assertEquals(0.5, kv.lambda());
        assertTrue(kv.lookahead());
        assertEquals(kv, roundTrip(s).active.kvConfig(io.dsflow.engine.kv.KvConfig.DENSE), "and after a new write");
    }

    /**
     * Format 2 (issue 22, item 4): an end command queued behind the active request and the expiry time survive, and
     * a snapshot of format 1 restores through a serializer of format 1, migrated to the current one.
     */
    @Test
    void endCommandsAndTheIdleDeadlineSurviveAndFormatOneMigrates() throws Exception {
        ConversationState s = sample();
        s.queued = new Request[]{Request.end("conv-é", null, "tombstone"), request("r4", new int[]{4}, null)};
        s.idleDeadline = 3_600_123L;
        ConversationState back = roundTrip(s);
        assertTrue(back.queued[0].endConversation);
        assertEquals("conv-é", back.queued[0].conversationId);
        assertNull(back.queued[0].requestId);
        assertEquals("tombstone", back.queued[0].raw);
        assertTrue(!back.queued[1].endConversation);
        assertArrayEquals(new int[]{4}, back.queued[1].promptIds);
        assertEquals(3_600_123L, back.idleDeadline);
        assertTrue(ConversationStateSerializer.INSTANCE.copy(s).queued[0].endConversation, "copy keeps the kind");

        ConversationStateSerializer.Snapshot formatOne = new ConversationStateSerializer.Snapshot();
        formatOne.readSnapshot(1, new DataInputDeserializer(new byte[0]), getClass().getClassLoader());
        assertTrue(ConversationStateSerializer.INSTANCE.snapshotConfiguration().resolveSchemaCompatibility(formatOne)
                .isCompatibleAfterMigration());
        ConversationState idle = new ConversationState();
        idle.history = new int[]{0, 5};
        idle.recentRequestIds = new String[]{"r1"};
        DataOutputSerializer out = new DataOutputSerializer(64);
        ConversationStateSerializer.forVersion(1).serialize(idle, out);
        ConversationState read = formatOne.restoreSerializer().deserialize(
                new DataInputDeserializer(out.getCopyOfBuffer()));
        assertArrayEquals(new int[]{0, 5}, read.history);
        assertArrayEquals(new String[]{"r1"}, read.recentRequestIds);
    }

    /**
     * Format 3 (issue 23): a request's ignore_eos survives a checkpoint (a resumed request still runs to max_tokens),
     * and format 2, which has none, reads as false and migrates.
     */
    @Test
    void ignoreEosSurvivesAndFormatTwoReadsAsFalse() throws Exception {
        ConversationState s = sample();
        s.active.ignoreEos = true;
        assertTrue(roundTrip(s).active.ignoreEos);
        assertTrue(!roundTrip(s).queued[0].ignoreEos);
        assertTrue(ConversationStateSerializer.INSTANCE.copy(s).active.ignoreEos, "copy keeps it");

        ConversationStateSerializer formatTwo = ConversationStateSerializer.forVersion(2);
        DataOutputSerializer out = new DataOutputSerializer(64);
        formatTwo.serialize(s, out);
        ConversationState read = formatTwo.deserialize(new DataInputDeserializer(out.getCopyOfBuffer()));
        assertTrue(!read.active.ignoreEos, "format 2 has no ignore_eos");
        assertArrayEquals(s.completion, read.completion, "and the rest reads in place");
        assertEquals(s.active.raw, read.active.raw);
        ConversationStateSerializer.Snapshot snapshotTwo = new ConversationStateSerializer.Snapshot();
        snapshotTwo.readSnapshot(2, new DataInputDeserializer(new byte[0]), getClass().getClassLoader());
        assertTrue(ConversationStateSerializer.INSTANCE.snapshotConfiguration().resolveSchemaCompatibility(snapshotTwo)
                .isCompatibleAfterMigration());
    }

    private static void writeInts(DataOutputSerializer out, int... values) throws IOException {
        out.writeInt(values.length);
        for (int v : values) out.writeInt(v);
    }

    private static void writeString(DataOutputSerializer out, String s) throws IOException {
        byte[] b = s.getBytes(java.nio.charset.StandardCharsets.UTF_8);
        out.writeInt(b.length);
        out.write(b);
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
                ConversationStateSerializer.FORMAT_VERSION + 1, new DataInputDeserializer(new byte[0]),
                getClass().getClassLoader()));
    }
}
