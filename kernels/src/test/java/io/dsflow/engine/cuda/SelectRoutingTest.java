package io.dsflow.engine.cuda;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * Which selection kernel CudaOps.select launches at the decode shapes the bench measures (no GPU needed): the choices
 * measured fastest on the H100 (132 multiprocessors; dev/cuda/README.md, sessions 6, 12 and 20), gqa=max or mean
 * (shared, a selection a kv head: 8 a row) and per query head (32 a row).
 */
class SelectRoutingTest {
    static final int SMS = 132;

    static int shared(int rows, int maxCand) {
        return CudaOps.selectCluster(true, SMS, rows * 8, true, maxCand, false);
    }

    @Test
    void oneConversationSpreadsEachSelectionOverAClusterOfEight() {
        assertEquals(CudaOps.SELECT_CLUSTER, shared(1, 32768));
        assertEquals(CudaOps.SELECT_CLUSTER, shared(2, 4096));
        assertEquals(CudaOps.SELECT_CLUSTER, CudaOps.selectCluster(true, SMS, 32, false, 32768, false));
    }

    @Test
    void clustersOfTwoOnlyForOneWaveOfLongSelections() {
        assertEquals(2, shared(8, 32768));   // 64 selections: 128 blocks, one wave
        assertEquals(2, shared(4, 32768));
        assertEquals(1, shared(8, 4096));    // short: the cluster's barriers cost more than its second block saves
        assertEquals(1, shared(16, 16384));  // 128 selections: clusters of two would take two waves
        assertEquals(1, shared(64, 4096));
    }

    @Test
    void sideStreamAndOlderDevicesTakeSingleBlocks() {
        assertEquals(1, CudaOps.selectCluster(true, SMS, 64, true, 32768, true));
        assertEquals(1, CudaOps.selectCluster(false, 108, 8, true, 32768, false));
    }

    @Test
    void selectionsLongerThanABlockHoldsAlwaysTakeClusters() {
        assertEquals(CudaOps.SELECT_CLUSTER, shared(64, CudaOps.SELECT_MAX_CANDIDATES + 1024));
    }
}
