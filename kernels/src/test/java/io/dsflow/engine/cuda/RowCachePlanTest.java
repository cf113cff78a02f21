package io.dsflow.engine.cuda;

import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.kv.KvPolicy;
import io.dsflow.engine.kv.SparseStepPolicy;
import org.junit.jupiter.api.Test;

import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The planner's use of device row caches (no GPU needed): a host-placed shared selection its cache serves reads the
 * device (not the host), is marked served and counted in its run; a step the cache cannot serve reads host memory and
 * its rows count as missed (the bench's link bytes and the operator's hit rate include them); a cache without one is
 * left as it was.
 */
class RowCachePlanTest {
    static final int LAYERS = StepPlanAgreementTest.LAYERS, KV_HEADS = StepPlanAgreementTest.KV_HEADS;

    /** A host-placed cache of {@code length} tokens with a row cache that serves or refuses every step. */
    record View(KvConfig sparse, int length, boolean rowCache, boolean serves) implements StepPlanner.PlannedCache {
        @Override
        public boolean onHost(int layer) {
            return layer >= sparse.denseLayers();
        }

        @Override
        public int labelChannels() {
            return 4;
        }

        @Override
        public int labelBits() {
            return sparse.labelBits();
        }

        @Override
        public int capacity() {
            return 1024;
        }

        @Override
        public int labelGroup() {
            return 1;
        }

        @Override
        public boolean servesRows(int layer, int rows) {
            return rowCache && serves;
        }

        @Override
        public boolean keepsRowCache() {
            return rowCache;
        }
    }

    @Test
    void servedRowsReadTheDeviceAndUnservedOnesCountAsMisses() {
        KvConfig host = KvConfig.defaults(KvPolicy.DSPP).with(Map.of("placement", "host", "dense-until", "0",
                "k-floor", "8"));
        KvConfig cached = host.with(Map.of("row-cache", "2"));
        StepPlanner planner = new StepPlanner(null, StepPlanAgreementTest.MODEL, null);
        List<View> caches = List.of(new View(cached, 600, true, true), new View(cached, 600, true, false),
                new View(host, 600, false, false));
        int[] one = {1, 1, 1}, rows = {0, 1, 2};
        StepPlanner.SelectionRuns runs = planner.selectionRuns(caches, one, rows, 3, rows);
        SparseStepPolicy.LayerStep[] steps = new SparseStepPolicy(cached, LAYERS).step(1, 601);
        long unserved = 0;
        int selecting = 0;
        for (int l = 0; l < LAYERS; l++) {
            if (!steps[l].selects()) continue;
            selecting++;
            unserved += (long) steps[l].kept() * KV_HEADS;
            assertTrue(runs.served()[l * 3], "layer " + l + ": the serving cache's row");
            assertFalse(runs.served()[l * 3 + 1] || runs.served()[l * 3 + 2], "layer " + l + ": the others' rows");
            assertEquals(1, runs.servedMain()[l], "layer " + l);
            for (int p = 0; p < runs.selectCount()[l]; p++) {
                int at = (l * 3 + p) * SparseRowDescriptor.FIELDS;
                int row = runs.descriptors()[at + SparseRowDescriptor.Field.ROW.ordinal()];
                // the served row reads its selected rows from the device; the others over the link
                assertEquals(row == 0 ? 0 : 1, runs.descriptors()[at + SparseRowDescriptor.Field.HOST.ordinal()],
                        "layer " + l + " row " + row);
            }
        }
        assertTrue(selecting > 0, "some layer selects");
        assertEquals(unserved, planner.takeUnservedRows());
        assertEquals(0, planner.takeUnservedRows());
    }
}
