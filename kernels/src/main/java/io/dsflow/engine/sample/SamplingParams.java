package io.dsflow.engine.sample;

import io.dsflow.engine.InvalidRequestException;

import java.util.List;

/**
 * How one completion is sampled and when it ends.
 *
 * @param temperature 0 means greedy
 * @param topP        nucleus mass in (0, 1]; 1 keeps every token
 * @param topK        0 keeps every token
 * @param seed        the same seed and inputs give the same tokens (each step draws from (seed, step index))
 * @param maxNewTokens the completion ends with finish_reason "length" after this many tokens
 * @param stop        the completion ends with finish_reason "stop" once its text contains one of these
 * @param ignoreEos   an end-of-sequence token does not end the completion (load generators: every completion then has
 *                    maxNewTokens tokens, as vLLM's benchmarks ask with ignore_eos)
 */
public record SamplingParams(double temperature, double topP, int topK, long seed, int maxNewTokens, List<String> stop,
                             boolean ignoreEos) {

    public static final int MAX_STOP_STRINGS = 16;

    public SamplingParams {
        stop = stop == null ? List.of() : List.copyOf(stop);
        if (!Double.isFinite(temperature) || temperature < 0 || temperature > 100) {
            throw new InvalidRequestException("temperature must be a number in [0, 100], got " + temperature);
        }
        if (!Double.isFinite(topP) || topP <= 0 || topP > 1) {
            throw new InvalidRequestException("top_p must be in (0, 1], got " + topP);
        }
        if (topK < 0) throw new InvalidRequestException("top_k must be >= 0 (0 = no limit), got " + topK);
        if (maxNewTokens < 0) throw new InvalidRequestException("max_new_tokens must be >= 0, got " + maxNewTokens);
        if (stop.size() > MAX_STOP_STRINGS) {
            throw new InvalidRequestException("at most " + MAX_STOP_STRINGS + " stop strings, got " + stop.size());
        }
        for (String s : stop) {
            if (s == null || s.isEmpty()) throw new InvalidRequestException("stop strings must not be empty");
        }
    }

    /** Ends at an end-of-sequence token, as requests do. */
    public SamplingParams(double temperature, double topP, int topK, long seed, int maxNewTokens, List<String> stop) {
        this(temperature, topP, topK, seed, maxNewTokens, stop, false);
    }

    public static SamplingParams greedy(int maxNewTokens) {
        return new SamplingParams(0, 1, 0, 0, maxNewTokens, List.of());
    }

    public boolean greedy() {
        return temperature == 0 || topK == 1;
    }
}
