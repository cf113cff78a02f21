package io.dsflow.engine.sample;

import org.junit.jupiter.api.Test;

import java.util.Arrays;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;

/** The sampler's token order (logit descending, lower id first on ties) against a plain sort of boxed ids. */
class SamplerOrderTest {
    @Test
    void firstInOrderEqualsASortOfAllIds() {
        Random r = new Random(3);
        for (int trial = 0; trial < 200; trial++) {
            int n = 1 + r.nextInt(3000);
            float[] logits = new float[n];
            for (int i = 0; i < n; i++) {
                // negative and positive values, zeros of both signs, many ties
                logits[i] = r.nextInt(4) == 0 ? (r.nextBoolean() ? 0f : -0f) : (float) (r.nextInt(40) - 20) / 4;
            }
            Integer[] all = new Integer[n];
            for (int i = 0; i < n; i++) all[i] = i;
            Arrays.sort(all, (a, b) -> logits[a] != logits[b] ? Float.compare(logits[b], logits[a]) : Integer.compare(a, b));
            for (int k : new int[]{1, Math.max(1, n / 10), n / 2 + 1, n}) {
                int[] want = new int[k];
                for (int i = 0; i < k; i++) want[i] = all[i];
                assertArrayEquals(want, Sampler.firstInOrder(logits, k), "n " + n + ", k " + k);
            }
        }
    }
}
