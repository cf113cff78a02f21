package io.dsflow.engine.model;

import java.util.Arrays;
import java.util.Map;

/**
 * The tensors of a model by role, resolved from a folder's names and checked against the config's shapes.
 * Backend-neutral: each entry is still a mapping into the file; a backend converts them to its own layout.
 * Shapes are Hugging Face's: linear weights are [out, in].
 */
public final class ModelWeights {

    /** One decoder layer. Norm biases, attention and MLP biases are null where the architecture has none. */
    public record Layer(
            SafeTensors.Entry attnNorm, SafeTensors.Entry attnNormBias,
            SafeTensors.Entry q, SafeTensors.Entry qBias,
            SafeTensors.Entry k, SafeTensors.Entry kBias,
            SafeTensors.Entry v, SafeTensors.Entry vBias,
            SafeTensors.Entry o, SafeTensors.Entry oBias,
            SafeTensors.Entry mlpNorm, SafeTensors.Entry mlpNormBias,
            SafeTensors.Entry gate, SafeTensors.Entry gateBias,   // SwiGLU only (null for OPT)
            SafeTensors.Entry up, SafeTensors.Entry upBias,       // OPT: fc1
            SafeTensors.Entry down, SafeTensors.Entry downBias) { // OPT: fc2
    }

    public final ModelConfig config;
    public final SafeTensors.Entry embed;        // [vocab, wordEmbedDim]
    public final SafeTensors.Entry positions;    // OPT: [maxPositions + 2, hidden]; else null
    public final SafeTensors.Entry projectIn;    // OPT with wordEmbedDim != hidden: [hidden, wordEmbedDim]
    public final SafeTensors.Entry projectOut;   // OPT with wordEmbedDim != hidden: [wordEmbedDim, hidden]
    public final Layer[] layers;
    public final SafeTensors.Entry finalNorm, finalNormBias;   // finalNorm null for OPT without a final norm
    public final SafeTensors.Entry lmHead;       // [vocab, wordEmbedDim]; the embedding when tied

    private final Map<String, SafeTensors.Entry> tensors;

    public ModelWeights(ModelFolder folder) {
        this.config = folder.config();
        this.tensors = folder.tensors();
        ModelConfig c = config;
        int h = c.hiddenSize();
        boolean opt = c.architecture() == Architecture.OPT;
        String p = opt ? "model.decoder." : "model.";
        embed = require(p + "embed_tokens.weight", c.vocabSize(), c.wordEmbedDim());
        positions = opt ? require(p + "embed_positions.weight", c.maxPositions() + ModelConfig.OPT_POSITION_OFFSET, h) : null;
        boolean project = opt && c.wordEmbedDim() != h;
        projectIn = project ? require(p + "project_in.weight", h, c.wordEmbedDim()) : null;
        projectOut = project ? require(p + "project_out.weight", c.wordEmbedDim(), h) : null;
        layers = new Layer[c.numLayers()];
        boolean qkvBias = c.attentionBias();
        boolean oBias = opt ? c.attentionBias() : c.architecture() == Architecture.LLAMA && c.attentionBias();
        boolean mlpBias = c.mlpBias();
        for (int l = 0; l < layers.length; l++) {
            String lp = p + "layers." + l + ".";
            if (opt) {
                layers[l] = new Layer(
                        require(lp + "self_attn_layer_norm.weight", h), require(lp + "self_attn_layer_norm.bias", h),
                        require(lp + "self_attn.q_proj.weight", c.qDim(), h), optional(qkvBias, lp + "self_attn.q_proj.bias", c.qDim()),
                        require(lp + "self_attn.k_proj.weight", c.kvDim(), h), optional(qkvBias, lp + "self_attn.k_proj.bias", c.kvDim()),
                        require(lp + "self_attn.v_proj.weight", c.kvDim(), h), optional(qkvBias, lp + "self_attn.v_proj.bias", c.kvDim()),
                        require(lp + "self_attn.out_proj.weight", h, c.qDim()), optional(oBias, lp + "self_attn.out_proj.bias", h),
                        require(lp + "final_layer_norm.weight", h), require(lp + "final_layer_norm.bias", h),
                        null, null,
                        require(lp + "fc1.weight", c.intermediateSize(), h), optional(mlpBias, lp + "fc1.bias", c.intermediateSize()),
                        require(lp + "fc2.weight", h, c.intermediateSize()), optional(mlpBias, lp + "fc2.bias", h));
            } else {
                layers[l] = new Layer(
                        require(lp + "input_layernorm.weight", h), null,
                        require(lp + "self_attn.q_proj.weight", c.qDim(), h), optional(qkvBias, lp + "self_attn.q_proj.bias", c.qDim()),
                        require(lp + "self_attn.k_proj.weight", c.kvDim(), h), optional(qkvBias, lp + "self_attn.k_proj.bias", c.kvDim()),
                        require(lp + "self_attn.v_proj.weight", c.kvDim(), h), optional(qkvBias, lp + "self_attn.v_proj.bias", c.kvDim()),
                        require(lp + "self_attn.o_proj.weight", h, c.qDim()), optional(oBias, lp + "self_attn.o_proj.bias", h),
                        require(lp + "post_attention_layernorm.weight", h), null,
                        require(lp + "mlp.gate_proj.weight", c.intermediateSize(), h), optional(mlpBias, lp + "mlp.gate_proj.bias", c.intermediateSize()),
                        require(lp + "mlp.up_proj.weight", c.intermediateSize(), h), optional(mlpBias, lp + "mlp.up_proj.bias", c.intermediateSize()),
                        require(lp + "mlp.down_proj.weight", h, c.intermediateSize()), optional(mlpBias, lp + "mlp.down_proj.bias", h));
            }
        }
        if (opt) {
            boolean hasFinal = c.layerNormBefore() && tensors.containsKey(p + "final_layer_norm.weight");
            finalNorm = hasFinal ? require(p + "final_layer_norm.weight", h) : null;
            finalNormBias = hasFinal ? require(p + "final_layer_norm.bias", h) : null;
        } else {
            finalNorm = require("model.norm.weight", h);
            finalNormBias = null;
        }
        SafeTensors.Entry head = tensors.get("lm_head.weight");
        if (head != null && !c.tieWordEmbeddings()) {
            lmHead = require("lm_head.weight", c.vocabSize(), c.wordEmbedDim());
        } else if (c.tieWordEmbeddings()) {
            lmHead = embed;
        } else {
            throw new ModelLoadException("lm_head.weight is missing and tie_word_embeddings is false");
        }
    }

    private SafeTensors.Entry optional(boolean present, String name, long... shape) {
        return present ? require(name, shape) : null;
    }

    private SafeTensors.Entry require(String name, long... shape) {
        SafeTensors.Entry e = tensors.get(name);
        if (e == null) throw new ModelLoadException("tensor " + name + " is missing from the weights");
        if (!Arrays.equals(e.shape(), shape)) {
            throw new ModelLoadException("tensor " + name + " has shape " + e.shapeString() + " but the config implies "
                    + Arrays.toString(shape));
        }
        return e;
    }
}
