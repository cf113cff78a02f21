package io.dsflow.engine.cuda;

import io.dsflow.engine.kv.ChannelConfig;
import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.model.ModelConfig;

/**
 * Bench's fixtures: caches of a given context without a prefill, their slots filled with random values, which exercise
 * the same kernels and memory as real ones (a decode step's cost does not depend on the values).
 */
public final class CudaBenchCaches {
    /** Slots a {@link #ofLength} cache holds beyond its context before it grows (bench's steps fit in them). */
    public static final int SPARE_SLOTS = 64;

    private CudaBenchCaches() {
    }

    /**
     * A cache of {@code backend} whose first {@code tokens} slots hold random values: bench's prefilled context. A
     * sparse one labels random channels (a fixed permutation per layer and head) with random values.
     */
    public static CudaKvCache ofLength(CudaBackend backend, int tokens, KvConfig kv) {
        CudaRuntime gpu = backend.runtime();
        ModelConfig c = backend.config();
        gpu.makeCurrent();
        CudaKvCache cache;
        if (kv.sparse()) {
            cache = (CudaKvCache) backend.newCache(kv, randomChannels(c, kv));
            cache.reserve(tokens + SPARE_SLOTS);
        } else {
            cache = new CudaKvCache(gpu, c.numLayers(), c.kvDim(), tokens + SPARE_SLOTS);
        }
        cache.fillTo(tokens);
        long cap = cache.capacity();
        for (int l = 0; l < c.numLayers(); l++) {
            long n = cap * c.kvDim();
            ActivationKernels.fillRandomBf16(gpu, cache.keys(l), n, 7L * l, 1f);
            ActivationKernels.fillRandomBf16(gpu, cache.values(l), n, 7L * l + 3, 1f);
            if (cache.labels(l) != null) {   // random bf16 bit patterns read as fp16 (or int8 pairs, int4 quads): finite
                long bytes = cap * cache.labelRows() * kv.labelValueBytes(cache.labelChannels());
                ActivationKernels.fillRandomBf16(gpu, cache.labels(l), bytes / 2, 7L * l + 5, 1f);
            }
            if (cache.scales(l) != null) {
                ActivationKernels.fillRandomBf16(gpu, cache.scales(l), cap * cache.labelRows(), 7L * l + 6, 1f);
            }
            if (cache.ringKeys(l) != null) {
                long m = (long) (kv.sinks() + kv.window()) * c.kvDim();
                ActivationKernels.fillRandomBf16(gpu, cache.ringKeys(l), m, 7L * l + 1, 1f);
                ActivationKernels.fillRandomBf16(gpu, cache.ringValues(l), m, 7L * l + 2, 1f);
            }
        }
        return cache;
    }

    /** A fixed random order of the channels per layer and head (grouped per kv head where the policy asks). */
    private static ChannelConfig randomChannels(ModelConfig c, KvConfig kv) {
        ChannelConfig channels = ChannelConfig.random(c.numLayers(), c.numHeads(), c.headDim(), 17);
        return kv.labelGroup(c.numHeads(), c.numKvHeads()) > 1 ? channels.grouped(c.numKvHeads()) : channels;
    }
}
