package io.dsflow.operators;

import io.dsflow.engine.kv.KvConfig;

import java.io.Serializable;

/**
 * How a decode operator runs: the model folder (on every TaskManager), the backend, the default KV policy (a request's
 * kv field overrides it), limits and the prefill chunk: the prompt tokens a step prefills over as many prompts as fit,
 * or {@link #AUTO}, sized for the backend the operator opens.
 */
public record DecodeSettings(String modelDir, String backend, KvConfig kv, Limits limits, int prefillChunk)
        implements Serializable {
    /** The prefill chunk sized for the backend: {@link #GPU_PREFILL_CHUNK} on a GPU, {@link #CPU_PREFILL_CHUNK} else. */
    public static final int AUTO = 0;
    /**
     * Thousands on a GPU, where a step's products reach their rate with thousands of rows; a few hundred on the CPU,
     * where a step of 256 prompt tokens already takes a few hundred milliseconds that every decoding request waits.
     */
    public static final int GPU_PREFILL_CHUNK = 8192, CPU_PREFILL_CHUNK = 256;

    /** The prefill chunk for a backend whose caches are on a device ({@code gpu}) or not. */
    public int prefillChunkFor(boolean gpu) {
        return prefillChunk != AUTO ? prefillChunk : gpu ? GPU_PREFILL_CHUNK : CPU_PREFILL_CHUNK;
    }
}
