package io.dsflow.engine.cpu;

import io.dsflow.engine.Backend;
import io.dsflow.engine.Engine;
import io.dsflow.engine.TestModels;
import io.dsflow.engine.kv.CpuKvCache;
import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.kv.KvPolicy;
import io.dsflow.engine.kv.KvStore;
import io.dsflow.engine.model.ModelConfig;
import org.junit.jupiter.api.Test;

import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The CPU backend with a GPU's memory budget (cpu:device-memory=SIZE): the same caches and the same bytes as the CPU
 * backend, counted where the CUDA backend keeps them; steps stay the CPU's.
 */
class CpuBackendDeviceMemoryTest {
    private static final Engine PLAIN = TestModels.engine("probe-retrieval");
    private static final Engine MODELLED = Engine.load(TestModels.dir("probe-retrieval"), "cpu:device-memory=3MiB");

    private static List<KvConfig> configs() {
        KvConfig dspp = KvConfig.defaults(KvPolicy.DSPP), host = dspp.with(Map.of("placement", "host"));
        return List.of(KvConfig.DENSE, dspp, KvConfig.defaults(KvPolicy.DS), host,
                KvConfig.defaults(KvPolicy.DS).with(Map.of("placement", "host", "dense-layers", "0")),
                host.with(Map.of("capacity", "500")), host.with(Map.of("dense-layers", "9")));
    }

    @Test
    void theBudgetIsTheDeviceMemoryGivenAndOnlyThePlainCpuHasNone() {
        Backend modelled = MODELLED.backend(), plain = PLAIN.backend();
        assertEquals(3L << 20, modelled.deviceCacheBudget());
        assertEquals(-1, plain.deviceCacheBudget());
        assertFalse(modelled.gpu(), "its steps stay the CPU's");
        assertFalse(plain.gpu());
        assertTrue(modelled.description().startsWith("cpu (") && modelled.description().contains("3.0 MiB"),
                modelled.description());
        assertTrue(modelled instanceof CpuBackend, "the forward pass is the CPU's");
    }

    @Test
    void hostPlacementCountsTheSparseLayersKeysAndValuesApartAndTheSumIsTheHeap() {
        ModelConfig c = PLAIN.config();
        for (KvConfig kv : configs()) {
            for (long tokens : new long[]{1, 32, 33, 97, 128, 500, 1300}) {
                long heap = PLAIN.estimateCacheBytes(kv, tokens);
                long device = MODELLED.estimateCacheBytes(kv, tokens);
                long host = MODELLED.backend().hostCacheBytes(kv, tokens);
                String at = kv + ", " + tokens + " tokens";
                assertEquals(0, PLAIN.backend().hostCacheBytes(kv, tokens), at + ": the plain CPU counts its heap");
                assertEquals(heap, device + host, at + ": the same bytes, split");
                if (kv.placement() == KvConfig.Placement.HOST) {
                    int sparseLayers = c.numLayers() - Math.min(kv.denseLayers(), c.numLayers());
                    assertEquals(KvStore.heapBytes(sparseLayers, c.kvDim(), KvStore.capacityFor(tokens, kv.capacity())),
                            host, at);
                    assertTrue(device > 0, at + ": labels and window stay on the device");
                } else {
                    assertEquals(0, host, at + ": placement device keeps the whole cache on the device");
                }
            }
        }
    }

    @Test
    void theCacheIsTheCpusOnTheHeapWhateverTheAccounting() {
        KvConfig host = KvConfig.defaults(KvPolicy.DSPP).with(Map.of("placement", "host"));
        CpuKvCache cache = (CpuKvCache) MODELLED.newSequence(host).cache();
        int layers = MODELLED.config().numLayers(), kvDim = MODELLED.config().kvDim();
        float[] k = new float[kvDim], v = new float[kvDim];
        for (int t = 0; t < 100; t++) for (int l = 0; l < layers; l++) cache.append(l, k, v);
        assertEquals(PLAIN.estimateCacheBytes(host, 100), cache.heapBytes());
        assertEquals(cache.heapBytes(), MODELLED.estimateCacheBytes(host, 100)
                + MODELLED.backend().hostCacheBytes(host, 100));
    }
}
