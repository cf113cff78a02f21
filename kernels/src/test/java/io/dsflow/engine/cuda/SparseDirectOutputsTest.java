package io.dsflow.engine.cuda;

import io.dsflow.engine.Engine;
import io.dsflow.engine.Sequence;
import io.dsflow.engine.kv.ChannelConfig;
import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.kv.KvPolicy;
import io.dsflow.engine.sample.Sampler;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * A layer whose selecting rows' attention writes their outputs itself, with no attention_merge after it (CudaBackend's
 * direct path: one split, every selecting row's group sharing one selection of rows in device memory,
 * sparse_attention_pipelined built for the head size and group), gives the CPU's logits over whole decode steps, its
 * outputs in bf16 (more than 32 rows: the output product's operand on tensor cores) and in f32 (32 rows or fewer).
 * CudaModelTest's models (head_dim 32, two query heads a kv head) never take the pipelined kernel, and the kernel tests
 * launch it alone; here a random-weight Llama of head_dim 128 and four query heads a kv head decodes under dspp's
 * defaults (a selection a kv head from the group's maximum, 4-bit labels, device placement) without the short-context
 * rule, with as many rows as make the kernel's one wave over the (row, kv head) pairs one split a pair. The backend
 * counts how each layer's outputs were written, so the test fails where the path was not taken; steps of two rows
 * (several splits, then the merge) are held to the CPU too, and counted as merged. The CPU picks the tokens both are
 * fed; the bound is CudaModelTest's for 4-bit labels (a key a last bit apart can move a quantised label and so a
 * selection): each row's logits within 5% of the CPU's largest, a different argmax only at a near-tie. Skipped where
 * there is no GPU.
 */
class SparseDirectOutputsTest {
    static final int LAYERS = 4, HIDDEN = 128, HEADS = 64, KV_HEADS = 16, HEAD_DIM = 128, INTER = 256, VOCAB = 512;
    /** Decode steps of each batch. */
    static final int STEPS = 3;

    @TempDir
    static Path model;

    @BeforeAll
    static void requireGpu() {
        assumeTrue(CudaRuntime.available(), "no CUDA: " + CudaRuntime.unavailableReason());
    }

    @Test
    void directSparseOutputsGiveTheCpusLogits() throws IOException {
        writeRandomLlama(model, 11);
        try (Engine gpu = Engine.load(model, "cuda"); Engine cpu = Engine.load(model, "cpu")) {
            CudaBackend b = (CudaBackend) gpu.backend();
            int group = HEADS / KV_HEADS;
            assertTrue(CudaOps.pipelined(b.runtime(), HEAD_DIM, group), "sparse_attention_pipelined is built");
            int oneSplit = fewestOneSplitRows(b.runtime(), group);
            assertTrue(oneSplit <= 32, "this device holds a wave of " + oneSplit + " rows: the f32 outputs (32 rows or"
                    + " fewer) need more kv heads");
            // dspp's defaults, but for dense-until: at these contexts of about 100 tokens it would attend densely
            KvConfig kv = KvConfig.defaults(KvPolicy.DSPP).with(Map.of("dense-until", "0"));
            int sequences = Math.max(33, oneSplit);
            List<Sequence> onGpu = new ArrayList<>(), onCpu = new ArrayList<>();
            int[] next = new int[sequences];
            Random rnd = new Random(5);
            // 96-124 prompt tokens: 28-56 candidates past the 4 sinks and 64 window slots, of which each sparse layer
            // (the last two) keeps k_min = 8
            for (int i = 0; i < sequences; i++) {
                int[] prompt = new int[96 + 4 * (i % 8)];
                for (int t = 0; t < prompt.length; t++) prompt[t] = 3 + rnd.nextInt(VOCAB - 3);
                onGpu.add(gpu.newSequence(kv));
                onCpu.add(cpu.newSequence(kv));
                float[] want = cpu.prefill(onCpu.get(i), prompt), got = gpu.prefill(onGpu.get(i), prompt);
                compare(want, got, "prefill of sequence " + i);
                next[i] = Sampler.argmax(want);
            }
            b.takeSparseOutputCounts();
            decode(cpu, gpu, onCpu, onGpu, next, sequences, "all " + sequences + " rows (bf16 outputs)");
            CudaBackend.SparseOutputCounts bf16 = b.takeSparseOutputCounts();
            assertTrue(bf16.direct() > 0 && bf16.merged() == 0, sequences + " rows: " + bf16);
            decode(cpu, gpu, onCpu, onGpu, next, oneSplit, oneSplit + " rows (f32 outputs)");
            CudaBackend.SparseOutputCounts f32 = b.takeSparseOutputCounts();
            assertTrue(f32.direct() > 0 && f32.merged() == 0, oneSplit + " rows: " + f32);
            decode(cpu, gpu, onCpu, onGpu, next, 2, "2 rows (several splits, merged)");
            CudaBackend.SparseOutputCounts merged = b.takeSparseOutputCounts();
            assertTrue(merged.direct() == 0 && merged.merged() > 0, "2 rows: " + merged);
            for (Sequence s : onGpu) s.cache().release();
            for (Sequence s : onCpu) s.cache().release();
        }
    }

    /**
     * The fewest decode rows for which sparse_attention_pipelined's one wave over the (row, kv head) pairs is one split
     * a pair (CudaOps#pipelinedSplits; the slots asked are many, so that the wave alone decides).
     */
    private static int fewestOneSplitRows(CudaRuntime gpu, int group) {
        int rows = 1;
        while (CudaOps.pipelinedSplits(gpu, HEAD_DIM, group, rows * KV_HEADS, 1 << 20) > 1) rows++;
        return rows;
    }

    /**
     * {@link #STEPS} decode steps of the first {@code rows} sequences in one batch on each backend, both fed the CPU's
     * argmax tokens ({@code next}, updated), each row's logits compared.
     */
    private static void decode(Engine cpu, Engine gpu, List<Sequence> onCpu, List<Sequence> onGpu, int[] next,
                               int rows, String what) {
        for (int step = 0; step < STEPS; step++) {
            int[] tokens = Arrays.copyOf(next, rows);
            float[][] want = cpu.decode(onCpu.subList(0, rows), tokens);
            float[][] got = gpu.decode(onGpu.subList(0, rows), tokens);
            for (int i = 0; i < rows; i++) {
                compare(want[i], got[i], what + ", step " + step + ", row " + i);
                next[i] = Sampler.argmax(want[i]);
            }
        }
    }

    /** The GPU's logits within 5% of the CPU's largest; a different argmax only where the CPU's two are that close. */
    private static void compare(float[] want, float[] got, String what) {
        assertEquals(want.length, got.length, what);
        float max = 0, diff = 0;
        for (int v = 0; v < want.length; v++) {
            assertTrue(Float.isFinite(got[v]), what + ": logit " + v + " is " + got[v]);
            max = Math.max(max, Math.abs(want[v]));
            diff = Math.max(diff, Math.abs(want[v] - got[v]));
        }
        assertTrue(diff <= 0.05f * max, what + ": logits differ by " + diff + " of " + max);
        int a = Sampler.argmax(want), b = Sampler.argmax(got);
        assertTrue(a == b || Math.abs(want[a] - want[b]) <= 2 * diff, what + ": argmax " + a + " vs " + b + ", CPU gap "
                + Math.abs(want[a] - want[b]) + ", logits differ by " + diff);
    }

    /**
     * A Llama folder of random bf16 weights (seeded) in the test's shapes: embeddings N(0, 1), each product's weights
     * N(0, 1 / in) so that activations and attention scores stay of order 1, norms 1; random channel orders in
     * channels.json (calibrating random weights would measure nothing) and no tokenizer (prompts are token ids).
     */
    private static void writeRandomLlama(Path dir, long seed) throws IOException {
        Files.writeString(dir.resolve("config.json"), String.format(Locale.ROOT, """
                {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": %d,
                 "num_hidden_layers": %d, "num_attention_heads": %d, "num_key_value_heads": %d, "head_dim": %d,
                 "intermediate_size": %d, "vocab_size": %d, "max_position_embeddings": 2048, "rms_norm_eps": 1e-6,
                 "hidden_act": "silu", "rope_theta": 10000.0, "tie_word_embeddings": false, "bos_token_id": 0,
                 "eos_token_id": 1}
                """, HIDDEN, LAYERS, HEADS, KV_HEADS, HEAD_DIM, INTER, VOCAB));
        int q = HEADS * HEAD_DIM, kv = KV_HEADS * HEAD_DIM;
        Map<String, int[]> shapes = new LinkedHashMap<>();
        shapes.put("model.embed_tokens.weight", new int[]{VOCAB, HIDDEN});
        for (int l = 0; l < LAYERS; l++) {
            String p = "model.layers." + l + ".";
            shapes.put(p + "input_layernorm.weight", new int[]{HIDDEN});
            shapes.put(p + "self_attn.q_proj.weight", new int[]{q, HIDDEN});
            shapes.put(p + "self_attn.k_proj.weight", new int[]{kv, HIDDEN});
            shapes.put(p + "self_attn.v_proj.weight", new int[]{kv, HIDDEN});
            shapes.put(p + "self_attn.o_proj.weight", new int[]{HIDDEN, q});
            shapes.put(p + "post_attention_layernorm.weight", new int[]{HIDDEN});
            shapes.put(p + "mlp.gate_proj.weight", new int[]{INTER, HIDDEN});
            shapes.put(p + "mlp.up_proj.weight", new int[]{INTER, HIDDEN});
            shapes.put(p + "mlp.down_proj.weight", new int[]{HIDDEN, INTER});
        }
        shapes.put("model.norm.weight", new int[]{HIDDEN});
        shapes.put("lm_head.weight", new int[]{VOCAB, HIDDEN});
        StringBuilder header = new StringBuilder("{");
        long at = 0;
        for (Map.Entry<String, int[]> e : shapes.entrySet()) {
            int[] s = e.getValue();
            long bytes = 2L * s[0] * (s.length > 1 ? s[1] : 1);
            header.append(at == 0 ? "" : ",").append('"').append(e.getKey()).append("\":{\"dtype\":\"BF16\",\"shape\":")
                    .append(Arrays.toString(s).replace(" ", "")).append(",\"data_offsets\":[").append(at)
                    .append(',').append(at + bytes).append("]}");
            at += bytes;
        }
        byte[] h = header.append('}').toString().getBytes(StandardCharsets.UTF_8);
        Random rnd = new Random(seed);
        try (OutputStream out = Files.newOutputStream(dir.resolve("model.safetensors"))) {
            out.write(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(h.length).array());
            out.write(h);
            for (Map.Entry<String, int[]> e : shapes.entrySet()) {
                int[] s = e.getValue();
                boolean norm = s.length == 1, embedding = e.getKey().startsWith("model.embed");
                double scale = norm ? 0 : embedding ? 1 : 1 / Math.sqrt(s[1]);
                ByteBuffer w = ByteBuffer.allocate(2 * s[0] * (norm ? 1 : s[1])).order(ByteOrder.LITTLE_ENDIAN);
                while (w.hasRemaining()) {
                    w.putShort(CudaWeights.toBf16(norm ? 1f : (float) (rnd.nextGaussian() * scale)));
                }
                out.write(w.array());
            }
        }
        ChannelConfig.write(dir.resolve(Engine.CHANNEL_FILE), ChannelConfig.random(LAYERS, HEADS, HEAD_DIM, seed + 1),
                ChannelConfig.random(LAYERS, HEADS, HEAD_DIM, seed + 2),
                ChannelConfig.random(LAYERS, KV_HEADS, HEAD_DIM, seed + 3));
    }
}
