package io.dsflow.engine.load;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.PrintStream;
import java.util.Arrays;
import java.util.Locale;

/**
 * What a {@link Load} measured.
 *
 * @param served           requests that completed
 * @param failed           requests refused by the engine (bad for this model)
 * @param seconds          from the first arrival to the last token
 * @param ttftMs           per served request, arrival to first token
 * @param itlMs            every gap between two tokens of a request
 * @param lastFirstTokenS  when the last request got its first token, from the first arrival
 * @param meanDecodeRows   rows a step that decoded one token
 * @param meanStepTokens   tokens a step fed the model (decode rows plus prefill chunks)
 * @param peakDeviceBytes  the engine's peak GPU allocation, -1 where not measured (the CPU; through the job)
 */
public record LoadReport(Load load, int prefillTokens, int maxRunning, int served, int failed, double seconds,
                         long promptTokens, long outputTokens, double[] ttftMs, double[] itlMs, double lastFirstTokenS,
                         int steps, double meanDecodeRows, double meanStepTokens, long peakDeviceBytes) {

    public double outputTokensPerSecond() {
        return outputTokens / seconds;
    }

    public double totalTokensPerSecond() {
        return (promptTokens + outputTokens) / seconds;
    }

    /** The p-th percentile (0-100) of values, nearest rank; NaN for none. */
    static double percentile(double[] values, double p) {
        if (values.length == 0) return Double.NaN;
        double[] v = values.clone();
        Arrays.sort(v);
        int rank = (int) Math.ceil(p / 100 * v.length);
        return v[Math.max(0, Math.min(v.length - 1, rank - 1))];
    }

    public void print(PrintStream out) {
        out.printf(Locale.ROOT, "loadgen: %d requests of %s prompt and %s output tokens, %s, kv %s; prefill %d tokens"
                        + " a step, at most %d running%n", load.requests(), load.prompt(), load.output(),
                load.rate() == 0 ? "all queued at once" : load.rate() + " requests/s", load.kv(), prefillTokens,
                maxRunning);
        out.printf(Locale.ROOT, "  served %d, failed %d in %.2f s: %.1f output tokens/s, %.1f total tokens/s,"
                        + " %.2f requests/s%n", served, failed, seconds, outputTokensPerSecond(),
                totalTokensPerSecond(), served / seconds);
        out.printf(Locale.ROOT, "  TTFT p50 %.1f ms, p99 %.1f ms; ITL p50 %.2f ms, p99 %.2f ms; last first token at"
                        + " %.2f s%n", percentile(ttftMs, 50), percentile(ttftMs, 99), percentile(itlMs, 50),
                percentile(itlMs, 99), lastFirstTokenS);
        out.printf(Locale.ROOT, "  %d steps: %.1f decode rows and %.1f tokens a step; peak device memory %s%n", steps,
                meanDecodeRows, meanStepTokens, peakDeviceBytes < 0 ? "not measured"
                        : String.format(Locale.ROOT, "%.2f GB", peakDeviceBytes / 1e9));
    }

    public ObjectNode toJson() {
        ObjectNode o = new ObjectMapper().createObjectNode();
        o.put("requests", load.requests());
        o.put("prompt_tokens", load.prompt().toString());
        o.put("output_tokens", load.output().toString());
        o.put("rate", load.rate());
        o.put("kv", load.kv().toString());
        o.put("prefill_tokens_per_step", prefillTokens);
        o.put("max_running", maxRunning);
        o.put("served", served);
        o.put("failed", failed);
        o.put("seconds", seconds);
        o.put("output_tokens_per_s", outputTokensPerSecond());
        o.put("total_tokens_per_s", totalTokensPerSecond());
        o.put("ttft_ms_p50", percentile(ttftMs, 50));
        o.put("ttft_ms_p99", percentile(ttftMs, 99));
        o.put("itl_ms_p50", percentile(itlMs, 50));
        o.put("itl_ms_p99", percentile(itlMs, 99));
        o.put("last_first_token_s", lastFirstTokenS);
        o.put("steps", steps);
        o.put("mean_decode_rows", meanDecodeRows);
        o.put("mean_step_tokens", meanStepTokens);
        o.put("peak_device_bytes", peakDeviceBytes);
        return o;
    }
}
