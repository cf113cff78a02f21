package io.dsflow.engine.kv;

import io.dsflow.engine.Engine;
import io.dsflow.engine.TestModels;
import org.junit.jupiter.api.Test;

import java.util.List;
import java.util.Map;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Issue 22, item 8: what the decode operator reserves from managed memory for a CPU cache of T tokens
 * ({@code Engine.estimateCacheBytes}) is what the cache allocates on the heap once it holds T tokens. Before, the
 * estimate counted T tokens while the stores doubled their room (a cache of 257 tokens held 512 slots), so a heap
 * sized to match managed memory could run out.
 */
class CpuCacheReservationTest {
    private static final Engine ENGINE = TestModels.engine("probe-retrieval");

    private static List<KvConfig> configs() {
        KvConfig dspp = KvConfig.defaults(KvPolicy.DSPP);
        return List.of(KvConfig.DENSE, dspp, KvConfig.defaults(KvPolicy.DS), dspp.with(Map.of("channels", "qk-group")),
                KvConfig.DENSE.with(Map.of("capacity", "300")), dspp.with(Map.of("capacity", "500")));
    }

    @Test
    void aCacheOfTTokensAllocatesExactlyTheBytesEstimatedForTTokens() {
        int layers = ENGINE.config().numLayers(), kvDim = ENGINE.config().kvDim();
        Random rnd = new Random(5);
        float[] k = new float[kvDim], v = new float[kvDim];
        for (KvConfig kv : configs()) {
            CpuKvCache cache = (CpuKvCache) ENGINE.newSequence(kv).cache();
            for (int t = 1; t <= 1300; t++) {
                for (int l = 0; l < layers; l++) {
                    for (int c = 0; c < kvDim; c++) {
                        k[c] = (float) rnd.nextGaussian();
                        v[c] = (float) rnd.nextGaussian();
                    }
                    cache.append(l, k, v);
                }
                long estimate = ENGINE.estimateCacheBytes(kv, t);
                KvStore store = cache instanceof SparseKvCache s ? s.store() : ((DenseKvCache) cache).store();
                long keysAndValues = (long) layers * Float.BYTES
                        * ((long) kvDim * store.keyChannel(0, 0).length + store.values(0).length);
                assertTrue(keysAndValues <= estimate, kv + ", " + t + " tokens: the keys and values alone take "
                        + keysAndValues + " B, " + estimate + " B estimated");
                assertEquals(estimate, cache.heapBytes(), kv + ", " + t + " tokens");
            }
            assertTrue(KvStore.capacityFor(1300) <= 1300 * 1.125 + KvStore.GRANULE,
                    "the room grows by an eighth at a time, not by doubling: " + KvStore.capacityFor(1300));
        }
    }

    @Test
    void aCopyHoldsTheRoomACacheOfItsLengthHas() {
        KvConfig kv = KvConfig.defaults(KvPolicy.DSPP);
        int layers = ENGINE.config().numLayers(), kvDim = ENGINE.config().kvDim();
        CpuKvCache cache = (CpuKvCache) ENGINE.newSequence(kv).cache();
        float[] k = new float[kvDim], v = new float[kvDim];
        for (int t = 0; t < 700; t++) for (int l = 0; l < layers; l++) cache.append(l, k, v);
        assertEquals(ENGINE.estimateCacheBytes(kv, 700), cache.copy().heapBytes());
    }
}
