package io.dsflow.engine.model;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class ModelConfigTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    private static ModelConfig parse(String json) throws Exception {
        JsonNode n = JSON.readTree(json);
        return ModelConfig.parse(n, "config.json");
    }

    private static final String LLAMA31 = """
            {"model_type":"llama","hidden_size":4096,"num_hidden_layers":32,"num_attention_heads":32,
             "num_key_value_heads":8,"intermediate_size":14336,"vocab_size":128256,"max_position_embeddings":131072,
             "rms_norm_eps":1e-5,"rope_theta":500000.0,"eos_token_id":[128001,128008,128009],
             "rope_scaling":{"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
                             "original_max_position_embeddings":8192,"rope_type":"llama3"}}""";

    @Test
    void publishedLlama31ConfigWithTopLevelRopeScalingAndEosList() throws Exception {
        ModelConfig c = parse(LLAMA31);
        assertEquals(Architecture.LLAMA, c.architecture());
        assertEquals(128, c.headDim());
        assertEquals("llama3", c.rope().type());
        assertEquals(500000.0, c.rope().theta());
        assertArrayEquals(new int[]{128001, 128008, 128009}, c.eosTokenIds());
    }

    @Test
    void transformers5RopeParametersAreTheSame() throws Exception {
        ModelConfig a = parse(LLAMA31);
        ModelConfig b = parse(LLAMA31.replace("\"rope_theta\":500000.0,", "").replace("\"rope_scaling\"", "\"rope_parameters\"")
                .replace("\"rope_type\":\"llama3\"}", "\"rope_type\":\"llama3\",\"rope_theta\":500000.0}"));
        assertEquals(a.rope(), b.rope());
    }

    @Test
    void llama3ScalingKeepsHighFrequenciesAndDividesLowOnes() throws Exception {
        RopeConfig scaled = parse(LLAMA31).rope();
        float[] base = RopeConfig.defaults(500000.0).inverseFrequencies(128);
        float[] inv = scaled.inverseFrequencies(128);
        assertEquals(base[0], inv[0]);                 // wavelength 2 pi < 8192 / 4: unchanged
        assertEquals(base[63] / 8f, inv[63], 1e-12f);  // wavelength far over 8192: divided by the factor
        for (int i = 0; i < 64; i++) assertTrue(inv[i] <= base[i] && inv[i] >= base[i] / 8f - 1e-12f);
    }

    @Test
    void unsupportedRopeTypeIsRefused() {
        ModelLoadException e = assertThrows(ModelLoadException.class,
                () -> parse(LLAMA31.replace("\"rope_type\":\"llama3\"", "\"rope_type\":\"yarn\"")));
        assertTrue(e.getMessage().contains("yarn"));
    }

    @Test
    void headsMustDivide() {
        assertThrows(ModelLoadException.class, () -> parse(LLAMA31.replace("\"num_key_value_heads\":8", "\"num_key_value_heads\":7")));
    }

    @Test
    void missingFieldIsNamed() {
        ModelLoadException e = assertThrows(ModelLoadException.class, () -> parse(LLAMA31.replace("\"vocab_size\":128256,", "")));
        assertTrue(e.getMessage().contains("vocab_size"));
    }
}
