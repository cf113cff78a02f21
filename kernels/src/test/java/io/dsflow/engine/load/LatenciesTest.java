package io.dsflow.engine.load;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** TTFT from each request's send, ITL between a request's consecutive tokens, the last first token's time. */
class LatenciesTest {
    @Test
    void firstTokensGiveTtftsLaterOnesTheGapsWithinTheirOwnRequest() {
        Latencies l = new Latencies(3);
        l.sent(0, 1_000_000);
        l.sent(1, 2_000_000);
        l.sent(2, 2_000_000);
        l.token(0, true, 5_000_000);     // ttft 4 ms
        l.token(1, true, 8_000_000);     // ttft 6 ms
        l.token(0, false, 9_000_000);    // itl 4 ms (from request 0's token at 5 ms, not request 1's at 8)
        l.token(0, false, 9_500_000);    // itl 0.5 ms
        assertTrue(l.hasFirstToken(0));
        assertFalse(l.hasFirstToken(2), "request 2 never got a token");
        assertArrayEquals(new double[]{4, 6}, l.ttftMs(), 1e-9);
        assertArrayEquals(new double[]{4, 0.5}, l.itlMs(), 1e-9);
        assertEquals(0.007, l.lastFirstTokenSeconds(1_000_000), 1e-12);
        assertEquals(0, new Latencies(1).lastFirstTokenSeconds(0), "no first token yet");
    }
}
