package io.dsflow.engine.load;

import java.util.Arrays;

/**
 * The latencies of a load's requests, from when each was sent and when each of its tokens was seen (by the engine's
 * load generator at the end of a step, by the job's at the Kafka client): time to first token per request, and the
 * time between consecutive tokens of a request (ITL). Times are System.nanoTime; figures in milliseconds.
 */
public final class Latencies {
    private final long[] sent, lastToken;
    private final double[] ttft;
    private double[] itl = new double[1024];
    private int itlCount;
    private long lastFirstToken = Long.MIN_VALUE;

    /** For requests 0 .. requests - 1. */
    public Latencies(int requests) {
        sent = new long[requests];
        lastToken = new long[requests];
        ttft = new double[requests];
        Arrays.fill(ttft, Double.NaN);
    }

    /** Request {@code r} was sent (queued) at {@code nanos}. */
    public void sent(int r, long nanos) {
        sent[r] = nanos;
    }

    /** Whether request {@code r}'s first token was seen. */
    public boolean hasFirstToken(int r) {
        return !Double.isNaN(ttft[r]);
    }

    /** A token of request {@code r} seen at {@code nanos}: its first (a TTFT) or a later one (an ITL). */
    public void token(int r, boolean first, long nanos) {
        if (first) {
            ttft[r] = (nanos - sent[r]) / 1e6;
            lastFirstToken = Math.max(lastFirstToken, nanos);
        } else {
            if (itlCount == itl.length) itl = Arrays.copyOf(itl, itlCount * 2);
            itl[itlCount++] = (nanos - lastToken[r]) / 1e6;
        }
        lastToken[r] = nanos;
    }

    /** The first-token latencies of the requests that had one, ms. */
    public double[] ttftMs() {
        return Arrays.stream(ttft).filter(d -> !Double.isNaN(d)).toArray();
    }

    /** Every gap between consecutive tokens of a request, ms. */
    public double[] itlMs() {
        return Arrays.copyOf(itl, itlCount);
    }

    /** Seconds from {@code startNanos} to the last first token seen (0 when none was). */
    public double lastFirstTokenSeconds(long startNanos) {
        return lastFirstToken == Long.MIN_VALUE ? 0 : (lastFirstToken - startNanos) / 1e9;
    }
}
