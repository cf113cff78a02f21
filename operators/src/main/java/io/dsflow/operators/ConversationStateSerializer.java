package io.dsflow.operators;

import io.dsflow.engine.DsflowException;
import org.apache.flink.api.common.typeutils.TypeSerializer;
import org.apache.flink.api.common.typeutils.TypeSerializerSchemaCompatibility;
import org.apache.flink.api.common.typeutils.TypeSerializerSnapshot;
import org.apache.flink.core.memory.DataInputView;
import org.apache.flink.core.memory.DataOutputView;

import java.io.IOException;
import java.util.Arrays;

/**
 * The checkpoint format of a conversation's state, written field by field so that it stays small (token ids as
 * ints, no class names) and versioned: the snapshot records {@link #FORMAT_VERSION}, and a later version of this
 * class reads what an older one wrote (a snapshot of format 1 restores through {@link #forVersion}: Flink migrates
 * the state, reading it with the old format and writing the current one). Format 3, the current one:
 * <pre>
 *   int[] history | bool hasActive [Request active, int[] activePrompt] | int[] completion | int n, Request[n] queued
 *   | int n, String[n] recentRequestIds | long idleDeadline
 *   Request: bool end, then for an end command: str conversationId, nullable str requestId, nullable str raw;
 *            else: str conversationId, str requestId, nullable str prompt, nullable int[] promptIds, int maxTokens,
 *            double temperature, double topP, int topK, long seed, int n, str[n] stop, nullable str kv,
 *            bool ignoreEos, nullable str raw
 *   kv: the request's kv overrides as a JSON object ({@link KvOverrides#toJson}; earlier builds wrote the request's
 *       own kv JSON, which reads the same)
 * </pre>
 * Format 2: the same without {@code ignoreEos} (read as false). Format 1 (before conversations could end): as format
 * 2 without {@code bool end} (every request a completion) and without {@code idleDeadline} (read as 0: the operator
 * arms the expiry of such an idle conversation at restore).
 */
public final class ConversationStateSerializer extends TypeSerializer<ConversationState> {
    private static final long serialVersionUID = 1L;
    public static final int FORMAT_VERSION = 3;
    public static final ConversationStateSerializer INSTANCE = new ConversationStateSerializer(FORMAT_VERSION);

    /** The format this serializer reads and writes. */
    private final int version;

    private ConversationStateSerializer(int version) {
        this.version = version;
    }

    /** The serializer of a format, for state a snapshot wrote in it (1 or 2). */
    public static ConversationStateSerializer forVersion(int version) {
        if (version == FORMAT_VERSION) return INSTANCE;
        if (version < 1 || version > FORMAT_VERSION) {
            throw new IllegalArgumentException("no conversation state format " + version);
        }
        return new ConversationStateSerializer(version);
    }

    @Override
    public boolean isImmutableType() {
        return false;
    }

    @Override
    public TypeSerializer<ConversationState> duplicate() {
        return this; // immutable
    }

    @Override
    public ConversationState createInstance() {
        return new ConversationState();
    }

    @Override
    public ConversationState copy(ConversationState from) {
        ConversationState c = new ConversationState();
        c.history = from.history.clone();
        c.active = from.active == null ? null : copy(from.active);
        c.activePrompt = from.activePrompt == null ? null : from.activePrompt.clone();
        c.completion = from.completion.clone();
        c.queued = Arrays.stream(from.queued).map(ConversationStateSerializer::copy).toArray(Request[]::new);
        c.recentRequestIds = from.recentRequestIds.clone();
        c.idleDeadline = from.idleDeadline;
        return c;
    }

    private static Request copy(Request r) {
        Request c = new Request();
        c.endConversation = r.endConversation;
        c.conversationId = r.conversationId;
        c.requestId = r.requestId;
        c.prompt = r.prompt;
        c.promptIds = r.promptIds == null ? null : r.promptIds.clone();
        c.maxTokens = r.maxTokens;
        c.temperature = r.temperature;
        c.topP = r.topP;
        c.topK = r.topK;
        c.seed = r.seed;
        c.stop = r.stop == null ? null : r.stop.clone();
        c.kv = r.kv == null ? null : r.kv.copy();
        c.ignoreEos = r.ignoreEos;
        c.raw = r.raw;
        return c;
    }

    @Override
    public ConversationState copy(ConversationState from, ConversationState reuse) {
        return copy(from);
    }

    @Override
    public int getLength() {
        return -1;
    }

    @Override
    public void serialize(ConversationState s, DataOutputView out) throws IOException {
        writeInts(s.history, out);
        out.writeBoolean(s.active != null);
        if (s.active != null) {
            writeRequest(s.active, out);
            writeInts(s.activePrompt, out);
        }
        writeInts(s.completion, out);
        out.writeInt(s.queued.length);
        for (Request r : s.queued) writeRequest(r, out);
        out.writeInt(s.recentRequestIds.length);
        for (String id : s.recentRequestIds) out.writeUTF(id);
        if (version >= 2) out.writeLong(s.idleDeadline);
    }

    @Override
    public ConversationState deserialize(DataInputView in) throws IOException {
        ConversationState s = new ConversationState();
        s.history = readInts(in);
        if (in.readBoolean()) {
            s.active = readRequest(in);
            s.activePrompt = readInts(in);
        }
        s.completion = readInts(in);
        s.queued = new Request[in.readInt()];
        for (int i = 0; i < s.queued.length; i++) s.queued[i] = readRequest(in);
        s.recentRequestIds = new String[in.readInt()];
        for (int i = 0; i < s.recentRequestIds.length; i++) s.recentRequestIds[i] = in.readUTF();
        if (version >= 2) s.idleDeadline = in.readLong();
        return s;
    }

    @Override
    public ConversationState deserialize(ConversationState reuse, DataInputView in) throws IOException {
        return deserialize(in);
    }

    @Override
    public void copy(DataInputView in, DataOutputView out) throws IOException {
        serialize(deserialize(in), out);
    }

    private void writeRequest(Request r, DataOutputView out) throws IOException {
        if (version >= 2) {
            out.writeBoolean(r.endConversation);
            if (r.endConversation) {
                out.writeUTF(r.conversationId);
                writeNullable(r.requestId, out);
                writeNullable(r.raw, out);
                return;
            }
        } else if (r.endConversation) {
            throw new IOException("conversation state format " + version + " has no end commands");
        }
        out.writeUTF(r.conversationId);
        out.writeUTF(r.requestId);
        writeNullable(r.prompt, out);
        out.writeBoolean(r.promptIds != null);
        if (r.promptIds != null) writeInts(r.promptIds, out);
        out.writeInt(r.maxTokens);
        out.writeDouble(r.temperature);
        out.writeDouble(r.topP);
        out.writeInt(r.topK);
        out.writeLong(r.seed);
        out.writeInt(r.stop.length);
        for (String s : r.stop) out.writeUTF(s);
        writeNullable(r.kv == null ? null : r.kv.toJson(), out);
        if (version >= 3) out.writeBoolean(r.ignoreEos);
        writeNullable(r.raw, out);
    }

    private Request readRequest(DataInputView in) throws IOException {
        if (version >= 2 && in.readBoolean()) {
            String conversationId = in.readUTF();
            String requestId = readNullable(in);
            return Request.end(conversationId, requestId, readNullable(in));
        }
        Request r = new Request();
        r.conversationId = in.readUTF();
        r.requestId = in.readUTF();
        r.prompt = readNullable(in);
        if (in.readBoolean()) r.promptIds = readInts(in);
        r.maxTokens = in.readInt();
        r.temperature = in.readDouble();
        r.topP = in.readDouble();
        r.topK = in.readInt();
        r.seed = in.readLong();
        r.stop = new String[in.readInt()];
        for (int i = 0; i < r.stop.length; i++) r.stop[i] = in.readUTF();
        String kv = readNullable(in);
        try {
            r.kv = kv == null ? null : KvOverrides.fromJson(kv);
        } catch (DsflowException e) {
            throw new IOException("a request in the conversation state has a bad kv field: " + e.getMessage(), e);
        }
        r.ignoreEos = version >= 3 && in.readBoolean();
        r.raw = readNullable(in);
        return r;
    }

    /** Strings of any length (writeUTF stops at 64 KB, and a prompt or a raw record can be longer). */
    private static void writeNullable(String s, DataOutputView out) throws IOException {
        if (s == null) {
            out.writeInt(-1);
            return;
        }
        byte[] b = s.getBytes(java.nio.charset.StandardCharsets.UTF_8);
        out.writeInt(b.length);
        out.write(b);
    }

    private static String readNullable(DataInputView in) throws IOException {
        int n = in.readInt();
        if (n < 0) return null;
        byte[] b = new byte[n];
        in.readFully(b);
        return new String(b, java.nio.charset.StandardCharsets.UTF_8);
    }

    private static void writeInts(int[] a, DataOutputView out) throws IOException {
        out.writeInt(a.length);
        for (int v : a) out.writeInt(v);
    }

    private static int[] readInts(DataInputView in) throws IOException {
        int[] a = new int[in.readInt()];
        for (int i = 0; i < a.length; i++) a[i] = in.readInt();
        return a;
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof ConversationStateSerializer other && other.version == version;
    }

    @Override
    public int hashCode() {
        return ConversationStateSerializer.class.hashCode() * 31 + version;
    }

    @Override
    public TypeSerializerSnapshot<ConversationState> snapshotConfiguration() {
        return new Snapshot();
    }

    /** Records the format version; restores a serializer that reads it. */
    public static final class Snapshot implements TypeSerializerSnapshot<ConversationState> {
        private int version = FORMAT_VERSION;

        @Override
        public int getCurrentVersion() {
            return FORMAT_VERSION;
        }

        @Override
        public void writeSnapshot(DataOutputView out) {
            // the format is the version: nothing else to write
        }

        @Override
        public void readSnapshot(int readVersion, DataInputView in, ClassLoader loader) throws IOException {
            if (readVersion > FORMAT_VERSION) {
                throw new IOException("conversation state format " + readVersion + " is newer than this dsflow reads ("
                        + FORMAT_VERSION + ")");
            }
            version = readVersion;
        }

        @Override
        public TypeSerializer<ConversationState> restoreSerializer() {
            return forVersion(version);
        }

        @Override
        public TypeSerializerSchemaCompatibility<ConversationState> resolveSchemaCompatibility(
                TypeSerializerSnapshot<ConversationState> oldSnapshot) {
            if (!(oldSnapshot instanceof Snapshot old)) return TypeSerializerSchemaCompatibility.incompatible();
            return old.version == FORMAT_VERSION ? TypeSerializerSchemaCompatibility.compatibleAsIs()
                    : TypeSerializerSchemaCompatibility.compatibleAfterMigration();
        }
    }
}
