package io.dsflow.job;

import io.dsflow.engine.load.Load;
import io.dsflow.engine.load.LoadReport;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Issue 23, acceptance 4 on the CPU: the load generator's load through Kafka and the Flink job completes every
 * request exactly once, at-least-once and exactly-once, with the engine's batches read back from the decode operator.
 */
class JobLoadITCase {
    @Test
    void aLoadThroughTheJobCompletesEveryRequestOnceUnderEitherDelivery() throws Exception {
        Load load = new Load(12, new Load.Lengths(20, 60), new Load.Lengths(4, 9), 0, JobLoad.kvConfig("dense"), 5);
        long expectedTokens = load.requests(512).stream().mapToLong(Load.Request::outputTokens).sum();
        for (boolean exactlyOnce : new boolean[]{false, true}) {
            JobLoad.Report r = JobLoad.run(Conversations.MODEL.toString(), "cpu", load, "dense", 4, 0, exactlyOnce,
                    System.out::println);
            r.print(System.out);
            String delivery = exactlyOnce ? "exactly-once" : "at-least-once";
            assertTrue(r.deliveredExactlyOnce(), delivery + ": every index once, one final each, no error");
            LoadReport l = r.load();
            assertEquals(12, l.served(), delivery);
            assertEquals(expectedTokens, l.outputTokens(), delivery + ": each completion at its drawn length");
            assertEquals(12, l.ttftMs().length, delivery);
            assertTrue(l.steps() > 0 && l.meanDecodeRows() > 0 && l.meanDecodeRows() <= 4,
                    delivery + ": the operator's steps read back, at most max-running (4) rows: " + l.meanDecodeRows());
            assertTrue(l.meanStepTokens() >= l.meanDecodeRows(), delivery + ": tokens a step count the prefill too");
        }
    }
}
