package io.dsflow.engine.model;

import io.dsflow.engine.TestModels;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Every bad model folder is a ModelLoadException with a one-line message naming the cause. */
class ModelFolderTest {
    @TempDir
    Path tmp;

    private Path copyOf(String model) throws IOException {
        Path dst = tmp.resolve(model);
        Files.createDirectories(dst);
        try (var files = Files.list(TestModels.dir(model))) {
            for (Path f : files.toList()) Files.copy(f, dst.resolve(f.getFileName()), StandardCopyOption.REPLACE_EXISTING);
        }
        return dst;
    }

    private static String failure(Path dir) {
        ModelLoadException e = assertThrows(ModelLoadException.class, () -> new ModelWeights(ModelFolder.open(dir)));
        assertFalse(e.getMessage().contains("\n"), "one line: " + e.getMessage());
        return e.getMessage();
    }

    @Test
    void missingFolder() {
        assertTrue(failure(tmp.resolve("nope")).contains("does not exist"));
    }

    @Test
    void folderIsAFile() throws IOException {
        Path f = Files.writeString(tmp.resolve("file"), "x");
        assertTrue(failure(f).contains("not a directory"));
    }

    @Test
    void missingConfig() throws IOException {
        Path d = copyOf("llama-tiny");
        Files.delete(d.resolve("config.json"));
        assertTrue(failure(d).contains("no config.json"));
    }

    @Test
    void configNotJson() throws IOException {
        Path d = copyOf("llama-tiny");
        Files.writeString(d.resolve("config.json"), "{ not json");
        assertTrue(failure(d).contains("config.json"));
    }

    @Test
    void missingWeights() throws IOException {
        Path d = copyOf("llama-tiny");
        Files.delete(d.resolve("model.safetensors"));
        assertTrue(failure(d).contains("no weights"));
    }

    @Test
    void unsupportedModelType() throws IOException {
        Path d = copyOf("llama-tiny");
        Files.writeString(d.resolve("config.json"), Files.readString(d.resolve("config.json")).replace("\"llama\"", "\"gpt2\""));
        assertTrue(failure(d).contains("model_type 'gpt2' is not supported"));
    }

    @Test
    void onlyPickledWeightsAreRefusedWithoutUnpickling() throws IOException {
        Path d = copyOf("llama-tiny");
        Files.delete(d.resolve("model.safetensors"));
        // a pickle whose loading would run code: it must never be opened
        Files.write(d.resolve("pytorch_model.bin"), new byte[]{(byte) 0x80, 2, 'c', 'o', 's', '\n', 's', 'y', 's', 't', 'e', 'm'});
        String m = failure(d);
        assertTrue(m.contains("only pickled weights") && m.contains("pytorch_model.bin"), m);
    }

    @Test
    void headerLengthPastEndOfFile() throws IOException {
        Path d = copyOf("llama-tiny");
        try (RandomAccessFile f = new RandomAccessFile(d.resolve("model.safetensors").toFile(), "rw")) {
            f.write(le(1L << 40));
        }
        assertTrue(failure(d).contains("runs past the end"));
    }

    @Test
    void truncatedFile() throws IOException {
        Path d = copyOf("llama-tiny");
        try (RandomAccessFile f = new RandomAccessFile(d.resolve("model.safetensors").toFile(), "rw")) {
            f.setLength(f.length() / 2);
        }
        assertTrue(failure(d).contains("out of range"));
    }

    @Test
    void tinyFile() throws IOException {
        Path d = copyOf("llama-tiny");
        Files.write(d.resolve("model.safetensors"), new byte[5]);
        assertTrue(failure(d).contains("truncated"));
    }

    @Test
    void offsetsOutOfRange() throws IOException {
        Path d = copyOf("llama-tiny");
        Files.delete(d.resolve("model.safetensors"));
        writeSafetensors(d.resolve("model.safetensors"),
                "{\"model.norm.weight\":{\"dtype\":\"BF16\",\"shape\":[128],\"data_offsets\":[0,9999999]}}", new byte[256]);
        assertTrue(failure(d).contains("out of range"));
    }

    @Test
    void bytesDoNotMatchShape() throws IOException {
        Path d = copyOf("llama-tiny");
        writeSafetensors(d.resolve("model.safetensors"),
                "{\"model.norm.weight\":{\"dtype\":\"BF16\",\"shape\":[128],\"data_offsets\":[0,200]}}", new byte[256]);
        assertTrue(failure(d).contains("do not hold"));
    }

    @Test
    void unknownDtype() throws IOException {
        Path d = copyOf("llama-tiny");
        writeSafetensors(d.resolve("model.safetensors"),
                "{\"model.norm.weight\":{\"dtype\":\"F8_E4M3\",\"shape\":[128],\"data_offsets\":[0,128]}}", new byte[128]);
        assertTrue(failure(d).contains("dtype F8_E4M3 is not supported"));
    }

    @Test
    void shapeMismatchWithConfig() throws IOException {
        Path d = copyOf("llama-tiny");
        Files.writeString(d.resolve("config.json"), Files.readString(d.resolve("config.json"))
                .replace("\"intermediate_size\": 256", "\"intermediate_size\": 320"));
        String m = failure(d);
        assertTrue(m.contains("gate_proj.weight has shape [256, 128] but the config implies [320, 128]"), m);
    }

    @Test
    void missingTensor() throws IOException {
        Path d = copyOf("qwen2-tiny");
        Files.writeString(d.resolve("config.json"), Files.readString(d.resolve("config.json"))
                .replace("\"tie_word_embeddings\": true", "\"tie_word_embeddings\": false"));
        assertTrue(failure(d).contains("lm_head.weight is missing"));
    }

    @Test
    void shardedIndexNamingAMissingShard() throws IOException {
        Path d = copyOf("llama-tiny");
        Files.writeString(d.resolve("model.safetensors.index.json"),
                "{\"weight_map\":{\"model.norm.weight\":\"model-00002-of-00002.safetensors\"}}");
        assertTrue(failure(d).contains("missing"));
    }

    @Test
    void shardedWeightsLoadLikeOneFile() throws IOException {
        // split the single file in two shards with an index, as published checkpoints are
        Path d = copyOf("llama-tiny");
        SafeTensors one = SafeTensors.open(d.resolve("model.safetensors"));
        StringBuilder map = new StringBuilder("{\"weight_map\":{");
        StringBuilder[] headers = {new StringBuilder("{"), new StringBuilder("{")};
        java.io.ByteArrayOutputStream[] data = {new java.io.ByteArrayOutputStream(), new java.io.ByteArrayOutputStream()};
        int i = 0;
        for (SafeTensors.Entry e : one.entries().values()) {
            int s = i++ % 2;
            byte[] bytes = new byte[(int) (e.end() - e.begin())];
            e.map().get(bytes);
            String shard = "model-0000" + (s + 1) + "-of-00002.safetensors";
            if (headers[s].length() > 1) headers[s].append(',');
            headers[s].append('"').append(e.name()).append("\":{\"dtype\":\"").append(e.dtype()).append("\",\"shape\":")
                    .append(e.shapeString()).append(",\"data_offsets\":[").append(data[s].size()).append(',')
                    .append(data[s].size() + bytes.length).append("]}");
            data[s].write(bytes);
            map.append(map.charAt(map.length() - 1) == '{' ? "" : ",").append('"').append(e.name()).append("\":\"").append(shard).append('"');
        }
        Files.delete(d.resolve("model.safetensors"));
        for (int s = 0; s < 2; s++) {
            writeSafetensors(d.resolve("model-0000" + (s + 1) + "-of-00002.safetensors"), headers[s] + "}", data[s].toByteArray());
        }
        Files.writeString(d.resolve("model.safetensors.index.json"), map + "}}");
        ModelFolder folder = ModelFolder.open(d);
        ModelWeights w = new ModelWeights(folder);
        assertEquals(one.entries().size(), folder.tensors().size());
        assertTrue(w.layers[1].down().file().getFileName().toString().startsWith("model-0000"));
    }

    /** A file over 2 GB (sparse on disk): tensors past the 2 GB mark are mapped on their own and read right. */
    @Test
    void tensorsBeyondTwoGigabytesAreRead() throws IOException {
        Path f = tmp.resolve("big.safetensors");
        long big = (1L << 31) + 64;   // one F32 tensor of 2^31 + 64 bytes, never read
        String header = "{\"pad\":{\"dtype\":\"F32\",\"shape\":[" + big / 4 + "],\"data_offsets\":[0," + big + "]},"
                + "\"x\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[" + big + "," + (big + 6) + "]}}";
        byte[] h = header.getBytes(StandardCharsets.UTF_8);
        try (RandomAccessFile raf = new RandomAccessFile(f.toFile(), "rw")) {
            raf.write(le(h.length));
            raf.write(h);
            raf.seek(8 + h.length + big);
            raf.write(new byte[]{(byte) 0x80, 0x3f, 0x00, 0x40, (byte) 0x80, (byte) 0xc0}); // bf16 1, 2, -4
        }
        SafeTensors st = SafeTensors.open(f);
        assertTrue(Files.size(f) > (1L << 31));
        float[] x = st.entries().get("x").toFloats();
        assertEquals(1f, x[0]);
        assertEquals(2f, x[1]);
        assertEquals(-4f, x[2]);
        ModelLoadException e = assertThrows(ModelLoadException.class, () -> st.entries().get("pad").map());
        assertTrue(e.getMessage().contains("over 2 GB"));
    }

    @Test
    void halfPrecisionConversionIsExact() {
        assertEquals(1f, DType.halfToFloat((short) 0x3c00));
        assertEquals(-2f, DType.halfToFloat((short) 0xc000));
        assertEquals(65504f, DType.halfToFloat((short) 0x7bff));
        assertEquals(0x1p-24f, DType.halfToFloat((short) 0x0001));
        assertEquals(Float.POSITIVE_INFINITY, DType.halfToFloat((short) 0x7c00));
        assertTrue(Float.isNaN(DType.halfToFloat((short) 0x7e00)));
    }

    private static byte[] le(long v) {
        return ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(v).array();
    }

    private static void writeSafetensors(Path f, String header, byte[] data) throws IOException {
        byte[] h = header.getBytes(StandardCharsets.UTF_8);
        try (var out = Files.newOutputStream(f)) {
            out.write(le(h.length));
            out.write(h);
            out.write(data);
        }
    }
}
