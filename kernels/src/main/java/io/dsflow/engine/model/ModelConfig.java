package io.dsflow.engine.model;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * The shape and numerics of a model, read from a Hugging Face config.json (model_type llama, qwen2 or opt).
 * Accepts both the published checkpoints' top-level {@code rope_theta}/{@code rope_scaling} and transformers 5's
 * {@code rope_parameters}; {@code eos_token_id} as a number or a list.
 */
public record ModelConfig(
        Architecture architecture,
        int hiddenSize,
        int numLayers,
        int numHeads,
        int numKvHeads,
        int headDim,
        int intermediateSize,
        int vocabSize,
        int maxPositions,
        float normEps,
        RopeConfig rope,
        boolean tieWordEmbeddings,
        boolean attentionBias,
        boolean mlpBias,
        boolean layerNormBefore,
        int wordEmbedDim,
        int bosTokenId,
        int[] eosTokenIds) {

    /** OPT's learned position table starts at row 2 (rows 0 and 1 are a fairseq padding leftover). */
    public static final int OPT_POSITION_OFFSET = 2;

    private static final ObjectMapper JSON = new ObjectMapper();

    public int qDim() {
        return numHeads * headDim;
    }

    public int kvDim() {
        return numKvHeads * headDim;
    }

    public static ModelConfig load(Path configFile) {
        JsonNode root;
        try {
            root = JSON.readTree(Files.readAllBytes(configFile));
        } catch (IOException e) {
            throw new ModelLoadException("cannot read " + configFile + ": " + Json.describe(e), e);
        }
        if (root == null || !root.isObject()) {
            throw new ModelLoadException(configFile + " is not a JSON object");
        }
        return parse(root, configFile.toString());
    }

    static ModelConfig parse(JsonNode c, String where) {
        String type = text(c, "model_type", where);
        Architecture arch = switch (type) {
            case "llama" -> Architecture.LLAMA;
            case "qwen2" -> Architecture.QWEN2;
            case "opt" -> Architecture.OPT;
            default -> throw new ModelLoadException(where + ": model_type '" + type
                    + "' is not supported (llama, qwen2, opt)");
        };
        int hidden = positive(c, "hidden_size", where);
        int layers = positive(c, "num_hidden_layers", where);
        int heads = positive(c, "num_attention_heads", where);
        int kvHeads = c.has("num_key_value_heads") && !c.get("num_key_value_heads").isNull()
                ? positive(c, "num_key_value_heads", where) : heads;
        if (heads % kvHeads != 0) {
            throw new ModelLoadException(where + ": num_attention_heads " + heads
                    + " is not a multiple of num_key_value_heads " + kvHeads);
        }
        int headDim = c.has("head_dim") && !c.get("head_dim").isNull() ? positive(c, "head_dim", where) : hidden / heads;
        int vocab = positive(c, "vocab_size", where);
        int maxPos = positive(c, "max_position_embeddings", where);
        int[] eos = eosIds(c.get("eos_token_id"));
        int bos = c.path("bos_token_id").isInt() ? c.get("bos_token_id").asInt() : -1;
        if (arch == Architecture.OPT) {
            int ffn = positive(c, "ffn_dim", where);
            int proj = c.has("word_embed_proj_dim") ? positive(c, "word_embed_proj_dim", where) : hidden;
            boolean enableBias = c.path("enable_bias").asBoolean(true);
            if (!c.path("layer_norm_elementwise_affine").asBoolean(true)) {
                throw new ModelLoadException(where + ": OPT with layer_norm_elementwise_affine=false is not supported");
            }
            String act = c.path("activation_function").asText("relu");
            if (!act.equals("relu")) {
                throw new ModelLoadException(where + ": OPT activation_function '" + act + "' is not supported (relu)");
            }
            return new ModelConfig(arch, hidden, layers, heads, heads, hidden / heads, ffn, vocab, maxPos, 1e-5f,
                    null, c.path("tie_word_embeddings").asBoolean(true), enableBias, enableBias,
                    c.path("do_layer_norm_before").asBoolean(true), proj, bos, eos);
        }
        String act = c.path("hidden_act").asText("silu");
        if (!act.equals("silu")) {
            throw new ModelLoadException(where + ": hidden_act '" + act + "' is not supported (silu)");
        }
        if (headDim % 2 != 0) {
            throw new ModelLoadException(where + ": head_dim " + headDim + " must be even for rotary positions");
        }
        float eps = (float) c.path("rms_norm_eps").asDouble(1e-6);
        boolean attnBias = arch == Architecture.QWEN2 || c.path("attention_bias").asBoolean(false);
        return new ModelConfig(arch, hidden, layers, heads, kvHeads, headDim, positive(c, "intermediate_size", where),
                vocab, maxPos, eps, rope(c, where), c.path("tie_word_embeddings").asBoolean(false), attnBias,
                c.path("mlp_bias").asBoolean(false), true, hidden, bos, eos);
    }

    /** Rotary settings from rope_parameters (transformers 5) or top-level rope_theta + rope_scaling (published). */
    private static RopeConfig rope(JsonNode c, String where) {
        JsonNode params = c.get("rope_parameters");
        JsonNode scaling = c.get("rope_scaling");
        double theta = c.path("rope_theta").asDouble(10000.0);
        JsonNode spec = null;
        if (params != null && params.isObject()) {
            theta = params.path("rope_theta").asDouble(theta);
            spec = params;
        }
        if (scaling != null && scaling.isObject()) {
            spec = scaling;
        }
        if (spec == null) {
            return RopeConfig.defaults(theta);
        }
        String type = spec.has("rope_type") ? spec.get("rope_type").asText() : spec.path("type").asText("default");
        RopeConfig rope = new RopeConfig(theta, type, spec.path("factor").asDouble(1.0),
                spec.path("low_freq_factor").asDouble(1.0), spec.path("high_freq_factor").asDouble(4.0),
                spec.path("original_max_position_embeddings").asInt(8192));
        rope.inverseFrequencies(2); // rejects an unsupported rope_type now, with the folder named by the caller
        if (type.equals("llama3") && !(rope.highFreqFactor() > rope.lowFreqFactor())) {
            throw new ModelLoadException(where + ": llama3 rope needs high_freq_factor > low_freq_factor");
        }
        return rope;
    }

    private static int[] eosIds(JsonNode n) {
        List<Integer> ids = new ArrayList<>();
        if (n != null && n.isInt()) ids.add(n.asInt());
        if (n != null && n.isArray()) n.forEach(e -> ids.add(e.asInt()));
        return ids.stream().mapToInt(Integer::intValue).toArray();
    }

    private static String text(JsonNode c, String key, String where) {
        JsonNode n = c.get(key);
        if (n == null || !n.isTextual()) throw new ModelLoadException(where + ": '" + key + "' is missing");
        return n.asText();
    }

    private static int positive(JsonNode c, String key, String where) {
        JsonNode n = c.get(key);
        if (n == null || !n.canConvertToInt() || n.asInt() <= 0) {
            throw new ModelLoadException(where + ": '" + key + "' must be a positive integer, got " + n);
        }
        return n.asInt();
    }

    /** A copy with other end-of-sequence ids (generation_config.json may override config.json). */
    public ModelConfig withEosTokenIds(int[] ids) {
        return new ModelConfig(architecture, hiddenSize, numLayers, numHeads, numKvHeads, headDim, intermediateSize,
                vocabSize, maxPositions, normEps, rope, tieWordEmbeddings, attentionBias, mlpBias, layerNormBefore,
                wordEmbedDim, bosTokenId, ids);
    }

    static int[] eosIdsOf(JsonNode n) {
        return eosIds(n);
    }

    @Override
    public String toString() {
        return architecture.name().toLowerCase() + " " + numLayers + " layers, hidden " + hiddenSize + ", heads "
                + numHeads + "/" + numKvHeads + " x " + headDim + ", vocab " + vocabSize;
    }
}
