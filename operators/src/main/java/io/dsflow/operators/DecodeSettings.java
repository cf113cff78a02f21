package io.dsflow.operators;

import io.dsflow.engine.BatchScheduler;
import io.dsflow.engine.kv.KvConfig;

import java.io.Serializable;

/**
 * How a decode operator runs: the model folder (on every TaskManager), the backend, the default KV policy (a request's
 * kv field overrides it), limits and the prefill chunk: the prompt tokens a step prefills over as many prompts as fit,
 * or {@link #AUTO}, sized for the backend the operator opens.
 */
public record DecodeSettings(String modelDir, String backend, KvConfig kv, Limits limits, int prefillChunk)
        implements Serializable {
    /** The prefill chunk sized for the backend ({@link BatchScheduler#defaultPrefillTokens}). */
    public static final int AUTO = 0;

    /** The prefill chunk on a backend whose caches are on a device or not: the configured one, or the scheduler's. */
    public int prefillChunkFor(boolean cachesOnDevice) {
        return prefillChunk != AUTO ? prefillChunk : BatchScheduler.defaultPrefillTokens(cachesOnDevice);
    }
}
