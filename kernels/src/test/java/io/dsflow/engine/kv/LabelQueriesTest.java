package io.dsflow.engine.kv;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

/** The int8 query that meets 8- and 4-bit labels: its rounding and its edges, as select.cu's LabelQuery computes them. */
class LabelQueriesTest {
    @Test
    void channelsScaleToTheLargestAndRoundHalfToEven() {
        int[] qi = new int[5];
        float scale = LabelQueries.quantise(new float[]{127f, 2.5f, 3.5f, -2.5f, -127f}, qi);
        assertArrayEquals(new int[]{127, 2, 4, -2, -127}, qi);
        assertEquals(1f, scale);
    }

    @Test
    void aQueryOfZerosScoresZero() {
        int[] qi = new int[3];
        assertEquals(0f, LabelQueries.quantise(new float[]{0f, -0f, 0f}, qi));
        assertArrayEquals(new int[3], qi);
        assertEquals(0f, LabelQueries.score(0, 0f, 0.5f));
    }

    /** A maximum so small that 127 / max is infinite: the integers clamp to +-127 (the GPU's cvt saturates, then so). */
    @Test
    void aTinyQueryClampsToTheInt8Range() {
        int[] qi = new int[3];
        float scale = LabelQueries.quantise(new float[]{1e-38f, -5e-39f, 0f}, qi);
        assertArrayEquals(new int[]{127, -127, 0}, qi);
        assertEquals(1e-38f / 127f, scale);
    }

    /** A NaN channel counts as 0 and sets no maximum, as fmaxf and cvt.rni treat it on the GPU. */
    @Test
    void aNanChannelCountsAsZero() {
        int[] qi = new int[3];
        float scale = LabelQueries.quantise(new float[]{Float.NaN, 2f, -1f}, qi);
        assertArrayEquals(new int[]{0, 127, -64}, qi);   // -1 * 63.5 rounds to the even -64
        assertEquals(2f / 127f, scale);
    }

    @Test
    void aScoreIsTheDotTimesTheProductOfTheScales() {
        float q = 0.3f, label = 0.07f;
        assertEquals((float) 1234 * (q * label), LabelQueries.score(1234, q, label));
    }
}
