package io.dsflow.operators;

import io.dsflow.engine.kv.KvConfig;

import java.io.Serializable;

/**
 * How a decode operator runs: the model folder (on every TaskManager), the backend, the default KV policy (a request's
 * kv field overrides it), limits and the prefill chunk.
 */
public record DecodeSettings(String modelDir, String backend, KvConfig kv, Limits limits, int prefillChunk)
        implements Serializable {
}
