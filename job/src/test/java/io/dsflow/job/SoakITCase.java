package io.dsflow.job;

import org.junit.jupiter.api.Test;

import java.time.Duration;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The one-minute version of `dsflow soak`: 200 concurrent conversations, nothing lost. */
class SoakITCase {
    @Test
    void oneMinuteOfTwoHundredConversationsLosesNothing() throws Exception {
        Soak.Report r = Soak.run(Conversations.MODEL.toString(), "cpu", 200, Duration.ofMinutes(1), 8, 3, System.out);
        System.out.println(r.summary());
        assertEquals(0, r.lost(), "every request got its final record");
        assertEquals(0, r.outOfOrder(), "chunks in index order, none duplicated");
        assertEquals(0, r.errors(), "no error records");
        assertTrue(r.finals() >= 200, "each conversation served at least once: " + r.finals());
        assertTrue(r.maxHeapBytes() < Runtime.getRuntime().maxMemory(), "heap within bounds");
    }
}
