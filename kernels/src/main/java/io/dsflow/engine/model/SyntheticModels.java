package io.dsflow.engine.model;

import io.dsflow.engine.DsflowException;

import java.util.Map;

/** Published models' shapes, for benchmarks with random weights made on the device ({@code synthetic:NAME}). */
public final class SyntheticModels {
    private SyntheticModels() {
    }

    /** How a model argument names one of these: synthetic:llama-3.1-8b. */
    public static final String PREFIX = "synthetic:";

    private static final RopeConfig LLAMA3 = new RopeConfig(500000, "llama3", 8, 1, 4, 8192);

    public static final Map<String, ModelConfig> SHAPES = Map.of(
            "llama-3.1-8b", new ModelConfig(Architecture.LLAMA, 4096, 32, 32, 8, 128, 14336, 128256, 131072, 1e-5f,
                    LLAMA3, false, false, false, true, 4096, 128000, new int[]{128001, 128009}),
            "llama-2-7b", new ModelConfig(Architecture.LLAMA, 4096, 32, 32, 32, 128, 11008, 32000, 4096, 1e-5f,
                    RopeConfig.defaults(10000), false, false, false, true, 4096, 1, new int[]{2}),
            "qwen2.5-7b", new ModelConfig(Architecture.QWEN2, 3584, 28, 28, 4, 128, 18944, 152064, 32768, 1e-6f,
                    RopeConfig.defaults(1_000_000), false, true, false, true, 3584, 151643, new int[]{151643}),
            "opt-6.7b", new ModelConfig(Architecture.OPT, 4096, 32, 32, 32, 128, 16384, 50272, 2048, 1e-5f,
                    null, true, true, true, true, 4096, 2, new int[]{2}));

    public static ModelConfig get(String name) {
        ModelConfig c = SHAPES.get(name);
        if (c == null) throw new DsflowException("unknown synthetic model '" + name + "' (" + String.join(", ", SHAPES.keySet()) + ")");
        return c;
    }
}
