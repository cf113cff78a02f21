package io.dsflow.engine.model;

/**
 * Rotary position embedding parameters, in Hugging Face's rotate-half layout (channel i pairs with i + d/2).
 *
 * @param theta base of the inverse frequencies
 * @param type "default", "linear" or "llama3"
 * @param factor scaling factor (linear, llama3)
 * @param lowFreqFactor llama3 only
 * @param highFreqFactor llama3 only
 * @param originalMaxPositions llama3 only: the context length the frequencies were trained at
 */
public record RopeConfig(double theta, String type, double factor, double lowFreqFactor, double highFreqFactor,
                         int originalMaxPositions) {

    public static RopeConfig defaults(double theta) {
        return new RopeConfig(theta, "default", 1, 1, 1, 0);
    }

    /**
     * The inverse frequency of each of the d/2 rotation pairs, computed in float32 as transformers does so that
     * angles at long positions round the same way.
     */
    public float[] inverseFrequencies(int headDim) {
        int half = headDim / 2;
        float[] inv = new float[half];
        for (int i = 0; i < half; i++) {
            float exponent = (float) (2 * i) / headDim;
            inv[i] = (float) (1.0 / (float) Math.pow(theta, exponent));
        }
        switch (type) {
            case "default" -> { }
            case "linear" -> {
                for (int i = 0; i < half; i++) inv[i] = (float) (inv[i] / factor);
            }
            case "llama3" -> {
                double lowWavelen = originalMaxPositions / lowFreqFactor;
                double highWavelen = originalMaxPositions / highFreqFactor;
                for (int i = 0; i < half; i++) {
                    double wavelen = 2 * Math.PI / inv[i];
                    if (wavelen > lowWavelen) {
                        inv[i] = (float) (inv[i] / factor);
                    } else if (wavelen >= highWavelen) {
                        double smooth = (originalMaxPositions / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
                        inv[i] = (float) ((1 - smooth) * inv[i] / factor + smooth * inv[i]);
                    }
                }
            }
            default -> throw new ModelLoadException("rope_type '" + type + "' is not supported (default, linear, llama3)");
        }
        return inv;
    }
}
