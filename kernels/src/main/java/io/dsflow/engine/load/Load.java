package io.dsflow.engine.load;

import io.dsflow.engine.kv.KvConfig;

import java.util.List;
import java.util.Random;

/**
 * A synthetic serving load, after vLLM's {@code bench throughput} and {@code bench serve}: {@code requests} requests of
 * random prompt token ids and a fixed number of output tokens each (end-of-sequence ignored), all queued at once
 * ({@code rate} 0) or arriving as a Poisson process of {@code rate} requests a second.
 *
 * @param prompt tokens of each prompt, drawn per request
 * @param output tokens of each completion, drawn per request
 * @param seed   the prompts, lengths, arrivals and sampling seeds
 */
public record Load(int requests, Lengths prompt, Lengths output, double rate, KvConfig kv, long seed) {

    public Load {
        if (requests < 1) throw new IllegalArgumentException("requests must be >= 1, got " + requests);
        if (rate < 0 || !Double.isFinite(rate)) throw new IllegalArgumentException("rate must be >= 0, got " + rate);
    }

    /** One request of the load: when it arrives (after the first) and what it asks. */
    public record Request(long arrivalNanos, int[] prompt, int outputTokens) {
    }

    /**
     * The load's requests in arrival order, the same for a seed wherever they are made (the engine's load generator and
     * the job's): prompts of random token ids in [3, vocab), lengths and arrival times drawn from the seed.
     */
    public List<Request> requests(int vocab) {
        Random rnd = new Random(seed);
        double t = 0;
        Request[] out = new Request[requests];
        for (int i = 0; i < out.length; i++) {
            if (rate > 0) t += -Math.log(1 - rnd.nextDouble()) / rate;
            int[] ids = new int[prompt.draw(rnd)];
            for (int j = 0; j < ids.length; j++) ids[j] = 3 + rnd.nextInt(vocab - 3);
            out[i] = new Request((long) (t * 1e9), ids, output.draw(rnd));
        }
        return List.of(out);
    }

    /** The sampling seed of request {@code index}: seeded sampling at temperature 1, end-of-sequence ignored. */
    public long samplingSeed(int index) {
        return seed + index;
    }

    /** Lengths uniform in [min, max]. */
    public record Lengths(int min, int max) {
        public Lengths {
            if (min < 1 || max < min) {
                throw new IllegalArgumentException("lengths must be N or MIN-MAX with 1 <= MIN <= MAX, got " + min + "-"
                        + max);
            }
        }

        /** "1024" or "512-2048"; NumberFormatException or IllegalArgumentException when it is neither. */
        public static Lengths parse(String s) {
            int dash = s.indexOf('-');
            return dash < 0 ? new Lengths(Integer.parseInt(s.trim()), Integer.parseInt(s.trim()))
                    : new Lengths(Integer.parseInt(s.substring(0, dash).trim()),
                    Integer.parseInt(s.substring(dash + 1).trim()));
        }

        int draw(Random rnd) {
            return min + (max == min ? 0 : rnd.nextInt(max - min + 1));
        }

        @Override
        public String toString() {
            return min == max ? Integer.toString(min) : min + "-" + max;
        }
    }
}
