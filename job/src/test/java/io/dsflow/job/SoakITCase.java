package io.dsflow.job;

import org.junit.jupiter.api.Test;

import java.time.Duration;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The one-minute version of `dsflow soak`: 200 concurrent conversations, nothing lost, and the heap the run keeps
 * within what the KV caches' budget allows.
 */
class SoakITCase {
    @Test
    void oneMinuteOfTwoHundredConversationsLosesNothingAndKeepsTheHeapWithinTheCacheBudget() throws Exception {
        Soak.Report r = Soak.run(Conversations.MODEL.toString(), "cpu", 200, Duration.ofMinutes(1), 8, 3, System.out);
        System.out.println(r.summary());
        assertEquals(0, r.lost(), "every request got its final record");
        assertEquals(0, r.outOfOrder(), "chunks in index order, none duplicated");
        assertEquals(0, r.errors(), "no error records");
        assertTrue(r.finals() >= 200, "each conversation served at least once: " + r.finals());
        Soak.Heap heap = r.heap();
        assertTrue(heap.liveAtStartBytes() > 0, "the live heap was measured once the job served");
        assertTrue(heap.withinAllowance(), String.format("the run kept %.0f MB of heap; the caches' budget allows"
                + " %.0f MB", heap.growthBytes() / 1e6, heap.allowanceBytes() / 1e6));
    }
}
