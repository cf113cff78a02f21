package io.dsflow.operators;

import io.dsflow.engine.Backend;
import io.dsflow.engine.Batch;
import io.dsflow.engine.RowCacheCounts;
import io.dsflow.engine.kv.CalibrationStatistics;
import io.dsflow.engine.kv.ChannelConfig;
import io.dsflow.engine.kv.KvCache;
import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.model.ModelConfig;
import org.junit.jupiter.api.Test;

import java.util.ArrayDeque;
import java.util.Deque;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The decode subtask's tally of its device row caches: the backend's counters summed at most once a second of steps
 * (each read waits for the device), the hit rate over everything asked; a backend without row caches (the CPU) is
 * asked once and then left alone.
 */
class RowCacheMeterTest {
    /** A backend whose row caches report the queued counts, one set a read. */
    private static final class Counting implements Backend {
        final Deque<RowCacheCounts> counts = new ArrayDeque<>();
        int reads;
        boolean keepsNone;

        @Override
        public RowCacheCounts takeRowCacheCounts() {
            reads++;
            return keepsNone ? null : counts.isEmpty() ? RowCacheCounts.NONE : counts.poll();
        }

        @Override
        public ModelConfig config() {
            throw new UnsupportedOperationException();
        }

        @Override
        public String description() {
            return "counting";
        }

        @Override
        public KvCache newCache(KvConfig config, ChannelConfig channels) {
            throw new UnsupportedOperationException();
        }

        @Override
        public KvCache newCalibrationCache(CalibrationStatistics stats) {
            throw new UnsupportedOperationException();
        }

        @Override
        public float[][] forward(Batch batch) {
            throw new UnsupportedOperationException();
        }

        @Override
        public void close() {
        }
    }

    @Test
    void sumsTheBackendsCountsAtMostOnceASecond() {
        Counting backend = new Counting();
        backend.counts.add(new RowCacheCounts(1000, 400));
        backend.counts.add(new RowCacheCounts(3000, 600));
        RowCacheMeter meter = new RowCacheMeter(backend);
        assertTrue(Double.isNaN(meter.totals().hitRate()));
        long t = 5_000_000_000L;
        meter.afterStep(t);
        meter.afterStep(t + RowCacheMeter.READ_NANOS / 2);   // too soon: not read
        assertEquals(1, backend.reads);
        assertEquals(new RowCacheCounts(1000, 400), meter.totals());
        meter.afterStep(t + RowCacheMeter.READ_NANOS);
        assertEquals(new RowCacheCounts(4000, 1000), meter.totals());
        assertEquals(0.75, meter.totals().hitRate(), 1e-12);
        meter.afterStep(t + 2 * RowCacheMeter.READ_NANOS);   // nothing asked since: unchanged
        assertEquals(new RowCacheCounts(4000, 1000), meter.totals());
    }

    @Test
    void aBackendWithoutRowCachesIsAskedOnce() {
        Counting cpu = new Counting();
        cpu.keepsNone = true;
        RowCacheMeter meter = new RowCacheMeter(cpu);
        for (int i = 0; i < 5; i++) meter.afterStep(i * 2 * RowCacheMeter.READ_NANOS);
        assertEquals(1, cpu.reads);
        assertEquals(RowCacheCounts.NONE, meter.totals());
    }
}
