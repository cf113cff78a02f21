package io.dsflow.engine;

import io.dsflow.engine.cuda.CudaRuntime;
import io.dsflow.engine.kv.DenseKvCache;
import io.dsflow.engine.kv.KvBytes;
import io.dsflow.engine.kv.KvCache;
import io.dsflow.engine.model.ModelConfig;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/** A backend given a cache that another backend made refuses it with a clear error, and the cache is left as it was. */
class ForeignCacheTest {

    /** A cache of no backend of this build (as a GPU cache is to the CPU backend). */
    private static final class ElsewhereCache implements KvCache {
        @Override
        public int length() {
            return 0;
        }

        @Override
        public KvCache copy() {
            return this;
        }

        @Override
        public KvBytes bytes() {
            return new KvBytes(0, 0, 0, 0);
        }
    }

    @Test
    void theCpuBackendRefusesAnotherBackendsCache() {
        Engine e = TestModels.engine("llama-tiny");
        DsflowException x = assertThrows(DsflowException.class,
                () -> e.backend().forward(new Batch().add(new ElsewhereCache(), new int[]{5, 6}, 0)));
        assertTrue(x.getMessage().contains("the cpu backend cannot run a ElsewhereCache: a cache made by another backend"),
                x.getMessage());
    }

    @Test
    void theCudaBackendRefusesACpuCache() {
        assumeTrue(CudaRuntime.available(), "no CUDA: " + CudaRuntime.unavailableReason());
        try (Engine e = Engine.load(TestModels.dir("llama-tiny"), "cuda")) {
            ModelConfig c = e.config();
            DenseKvCache cpuCache = new DenseKvCache(c.numLayers(), c.numKvHeads(), c.headDim());
            DsflowException x = assertThrows(DsflowException.class,
                    () -> e.backend().forward(new Batch().add(cpuCache, new int[]{5, 6}, 0)));
            assertTrue(x.getMessage().contains("the cuda backend cannot run a DenseKvCache: a cache made by another "
                    + "backend"), x.getMessage());
            assertEquals(0, cpuCache.length(), "nothing appended to the refused cache");
        }
    }
}
