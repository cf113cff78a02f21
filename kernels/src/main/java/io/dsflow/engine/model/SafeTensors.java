package io.dsflow.engine.model;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Collections;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * A memory-mapped reader of one .safetensors file: 8-byte little-endian header length, a JSON header mapping each
 * tensor name to {dtype, shape, data_offsets}, then raw little-endian bytes. Nothing is read onto the heap but the
 * header; each tensor is mapped on its own when asked for, so files of any size work (a Java mapping holds at most
 * 2 GB, a file may hold 5 GB; a single tensor over 2 GB is refused with a message).
 */
public final class SafeTensors {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final long MAX_HEADER = 100L << 20;

    /** One tensor's place in a file. */
    public record Entry(Path file, String name, DType dtype, long[] shape, long begin, long end) {
        public long elements() {
            long n = 1;
            for (long d : shape) n *= d;
            return n;
        }

        /** Maps the tensor's bytes read-only, little-endian. */
        public ByteBuffer map() {
            long size = end - begin;
            if (size > Integer.MAX_VALUE) {
                throw new ModelLoadException(file + ": tensor " + name + " is " + size + " bytes; tensors over 2 GB are not supported");
            }
            try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
                return ch.map(FileChannel.MapMode.READ_ONLY, begin, size).order(ByteOrder.LITTLE_ENDIAN);
            } catch (IOException e) {
                throw new ModelLoadException("cannot map " + name + " from " + file + ": " + e.getMessage(), e);
            }
        }

        /** Converts rows [row0, row0 + rows) of the tensor (rows = first dimension) to float32 into {@code dst}. */
        public void readRows(long row0, int rows, float[] dst, int dstOffset) {
            long rowElems = shape.length == 0 ? 1 : elements() / shape[0];
            ByteBuffer buf = map();
            long first = row0 * rowElems;
            long n = rows * rowElems;
            for (long i = 0; i < n; i++) {
                dst[(int) (dstOffset + i)] = dtype.read(buf, first + i);
            }
        }

        /** The whole tensor as float32 (for tensors up to 2^31 elements). */
        public float[] toFloats() {
            long n = elements();
            if (n > Integer.MAX_VALUE - 8) {
                throw new ModelLoadException(name + " has " + n + " elements; too many for one float array");
            }
            float[] out = new float[(int) n];
            ByteBuffer buf = map();
            for (int i = 0; i < n; i++) out[i] = dtype.read(buf, i);
            return out;
        }

        public String shapeString() {
            StringBuilder b = new StringBuilder("[");
            for (int i = 0; i < shape.length; i++) b.append(i == 0 ? "" : ", ").append(shape[i]);
            return b.append(']').toString();
        }
    }

    private final Path file;
    private final Map<String, Entry> entries;

    private SafeTensors(Path file, Map<String, Entry> entries) {
        this.file = file;
        this.entries = entries;
    }

    public Path file() {
        return file;
    }

    public Map<String, Entry> entries() {
        return Collections.unmodifiableMap(entries);
    }

    /** Reads and checks the header: every tensor's byte range must lie inside the file and match its dtype and shape. */
    public static SafeTensors open(Path file) {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            long fileSize = ch.size();
            if (fileSize < 8) {
                throw new ModelLoadException(file + ": truncated safetensors file (" + fileSize + " bytes, no header)");
            }
            ByteBuffer lenBuf = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
            readFully(ch, lenBuf, 0);
            long headerLen = lenBuf.getLong(0);
            if (headerLen <= 0 || headerLen > MAX_HEADER || 8 + headerLen > fileSize) {
                throw new ModelLoadException(file + ": corrupt safetensors header: length " + headerLen
                        + " runs past the end of the " + fileSize + "-byte file");
            }
            ByteBuffer header = ByteBuffer.allocate((int) headerLen);
            readFully(ch, header, 8);
            JsonNode root;
            try {
                root = JSON.readTree(header.array());
            } catch (IOException e) {
                throw new ModelLoadException(file + ": corrupt safetensors header: " + Json.describe(e));
            }
            if (root == null || !root.isObject()) {
                throw new ModelLoadException(file + ": corrupt safetensors header (not a JSON object)");
            }
            long dataStart = 8 + headerLen;
            long dataSize = fileSize - dataStart;
            Map<String, Entry> entries = new LinkedHashMap<>();
            for (Iterator<Map.Entry<String, JsonNode>> it = root.fields(); it.hasNext(); ) {
                Map.Entry<String, JsonNode> f = it.next();
                if (f.getKey().equals("__metadata__")) continue;
                entries.put(f.getKey(), entry(file, f.getKey(), f.getValue(), dataStart, dataSize));
            }
            return new SafeTensors(file, entries);
        } catch (IOException e) {
            throw new ModelLoadException("cannot read " + file + ": " + e.getMessage(), e);
        }
    }

    private static Entry entry(Path file, String name, JsonNode t, long dataStart, long dataSize) {
        String where = file + ": tensor " + name;
        JsonNode offsets = t.get("data_offsets");
        JsonNode shapeNode = t.get("shape");
        if (!t.path("dtype").isTextual() || offsets == null || offsets.size() != 2 || shapeNode == null || !shapeNode.isArray()) {
            throw new ModelLoadException(where + ": corrupt header entry " + t);
        }
        DType dtype = DType.of(t.get("dtype").asText(), where);
        long[] shape = new long[shapeNode.size()];
        long elements = 1;
        for (int i = 0; i < shape.length; i++) {
            shape[i] = shapeNode.get(i).asLong(-1);
            if (shape[i] < 0) throw new ModelLoadException(where + ": negative or non-numeric dimension in " + shapeNode);
            elements = Math.multiplyExact(elements, shape[i]);
        }
        long begin = offsets.get(0).asLong(-1);
        long end = offsets.get(1).asLong(-1);
        if (begin < 0 || end < begin || end > dataSize) {
            throw new ModelLoadException(where + ": data_offsets [" + begin + ", " + end
                    + "] out of range (data section is " + dataSize + " bytes; truncated file?)");
        }
        if (end - begin != elements * dtype.bytes) {
            throw new ModelLoadException(where + ": " + (end - begin) + " bytes do not hold " + dtype + " " + shapeNode);
        }
        return new Entry(file, name, dtype, shape, dataStart + begin, dataStart + end);
    }

    private static void readFully(FileChannel ch, ByteBuffer buf, long pos) throws IOException {
        while (buf.hasRemaining()) {
            int n = ch.read(buf, pos + buf.position());
            if (n < 0) throw new IOException("unexpected end of file");
        }
    }
}
