package io.dsflow.engine;

/**
 * A finished completion with its timings.
 *
 * @param lastPromptLogits float32 logits [vocab] at the last prompt position
 * @param decodeTokensPerSecond tokens produced by decode steps per second of those steps (0 when there were none)
 */
public record GenerationResult(int[] tokenIds, String text, FinishReason finishReason, int promptTokens,
                               float[] lastPromptLogits, double prefillMs, double decodeTokensPerSecond) {
}
