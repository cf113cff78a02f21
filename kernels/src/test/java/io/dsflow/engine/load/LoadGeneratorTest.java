package io.dsflow.engine.load;

import io.dsflow.engine.Engine;
import io.dsflow.engine.TestModels;
import io.dsflow.engine.kv.KvConfig;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

class LoadGeneratorTest {

    @Test
    void everyRequestIsServedWithItsDrawnLengthAndEveryGapIsTimed() {
        Engine e = TestModels.engine("llama-tiny");
        Load load = new Load(23, new Load.Lengths(5, 70), new Load.Lengths(9, 9), 0, KvConfig.DENSE, 4);
        List<String> progress = new ArrayList<>();
        LoadReport r = LoadGenerator.run(e, load, 64, 5, progress::add);
        assertEquals(23, r.served());
        assertEquals(0, r.failed());
        assertEquals(23 * 9, r.outputTokens(), "end-of-sequence ignored: every completion has its length");
        assertEquals(23, r.ttftMs().length);
        assertEquals(23 * 8, r.itlMs().length);
        assertTrue(r.meanDecodeRows() <= 5, "at most 5 running");
        assertTrue(r.lastFirstTokenS() <= r.seconds());
        assertTrue(r.promptTokens() >= 23 * 5 && r.promptTokens() <= 23 * 70);
    }

    @Test
    void requestsArriveAtTheirRate() {
        Engine e = TestModels.engine("llama-tiny");
        Load load = new Load(6, new Load.Lengths(8, 8), new Load.Lengths(2, 2), 40, KvConfig.DENSE, 5);
        LoadReport r = LoadGenerator.run(e, load, 64, 16, s -> { });
        assertEquals(6, r.served());
        assertTrue(r.seconds() > 0.02, "six Poisson arrivals at 40/s take tens of milliseconds, not none");
    }

    @Test
    void percentilesAreNearestRank() {
        double[] v = {5, 1, 4, 2, 3};
        assertEquals(3, LoadReport.percentile(v, 50));
        assertEquals(5, LoadReport.percentile(v, 99));
        assertEquals(1, LoadReport.percentile(v, 1));
        assertTrue(Double.isNaN(LoadReport.percentile(new double[0], 50)));
    }
}
