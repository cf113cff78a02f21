package io.dsflow.engine.cuda;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * Which selection kernel CudaOps.select launches, and with how many threads a block, at the decode shapes the bench
 * measures (no GPU needed): the choices measured fastest on the H100 (132 multiprocessors; dev/cuda/README.md,
 * sessions 6, 12, 20 and 22), gqa=max or mean (shared, a selection a kv head: 8 a row) and per query head (32 a row).
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

    /**
     * The H100's occupancy of sparse_select: 64 registers a thread of 65,536 a multiprocessor, and 228 KB of shared
     * memory a multiprocessor for the candidates' keys, the static arrays (4,304 bytes) and the 1 KB the driver
     * reserves a block (the guess's list takes only what that occupancy leaves: SelectKernels.guessListCapacity).
     */
    static int threads(int rows, int maxCand, boolean side) {
        return CudaOps.selectThreads(SMS, rows * 8, side,
                t -> Math.min(65536 / (64 * t), 228 * 1024 / (4 * maxCand + 4304 + 1024)));
    }

    @Test
    void singleBlocksTakeTheMostThreadsThatFitTheSelectionsInTheFewestWaves() {
        assertEquals(1024, threads(16, 16384, false));   // 128 selections: one wave of 1,024
        assertEquals(512, threads(32, 8192, false));     // 256: one wave of 512, two of 1,024
        assertEquals(256, threads(64, 4096, false));     // 512: one wave of 256
        assertEquals(256, threads(128, 2048, false));    // 1,024: two waves of 256, four of 512
        assertEquals(1024, threads(1, 4096, false));
        assertEquals(1024, threads(32, 32768, false));   // the keys leave one block whatever its threads
    }

    @Test
    void theSideStreamLeavesHalfAMultiprocessor() {
        assertEquals(CudaOps.SELECT_SIDE_THREADS, threads(8, 32768, true));
        assertEquals(256, threads(64, 4096, true));
    }

    @Test
    void selectionsLongerThanABlockHoldsAlwaysTakeClusters() {
        assertEquals(CudaOps.SELECT_CLUSTER, shared(64, CudaOps.SELECT_MAX_CANDIDATES + 1024));
    }
}
