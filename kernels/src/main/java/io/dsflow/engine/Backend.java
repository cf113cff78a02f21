package io.dsflow.engine;

import io.dsflow.engine.kv.CalibrationStatistics;
import io.dsflow.engine.kv.ChannelConfig;
import io.dsflow.engine.kv.KvCache;
import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.kv.KvStore;
import io.dsflow.engine.kv.RingWindow;
import io.dsflow.engine.model.ModelConfig;
import io.dsflow.engine.sample.Sampler;
import io.dsflow.engine.sample.SamplingParams;

/**
 * Where the forward pass runs: the CPU (the specification) or a GPU. A backend owns the weights in its own layout and
 * makes the KV caches its forward pass can use.
 * <ul>
 *   <li>created with the weights loaded; {@link #close()} frees them (device memory, native handles);</li>
 *   <li>{@link #forward} is called by one thread at a time;</li>
 *   <li>its caches' memory, for admission: {@link #cacheBytes} against {@link #deviceCacheBudget} where the backend
 *       has memory of its own (else against the caller's budget), and {@link #hostCacheBytes} of pinned host memory.
 *       The CPU backend may model a GPU's split ({@link BackendName}: cpu:device-memory=SIZE) without being one, so
 *       whether steps are shaped for a GPU is {@link #gpu}'s answer, not the budget's.</li>
 * </ul>
 */
public interface Backend extends AutoCloseable {

    ModelConfig config();

    /** For the log: "cpu (2 threads)", "cuda:0 NVIDIA H100 ...". */
    String description();

    /** A new, empty cache for one sequence; {@code channels} is required for the sparse policies. */
    KvCache newCache(KvConfig config, ChannelConfig channels);

    /**
     * A new, empty dense cache for one calibration block: each token its forward pass prefills adds its channel
     * statistics (CalibrationStatistics: post-RoPE |q_c k_c| and |q_c| per query head, |k_c| per kv head, the token
     * counted) to {@code stats}, which must be of this backend's model; they are there once the forward pass returns.
     * Release it after its prefill.
     */
    KvCache newCalibrationCache(CalibrationStatistics stats);

    /**
     * Runs the model over every row of the batch: each row's key and value are appended to its segment's cache, and
     * the logits [vocab] of each segment's last row are returned, in segment order.
     */
    float[][] forward(Batch batch);

    /**
     * {@link #forward}, then the next token of each segment whose params are not null, sampled as {@link Sampler}
     * samples (-1 for the others): backends that can sample where the logits are override this, so that only the
     * ids leave the device. {@code steps[i]}: the completion step of segment i (the draw's (seed, step)).
     */
    default int[] forwardSampled(Batch batch, SamplingParams[] params, int[] steps) {
        float[][] logits = forward(batch);
        int[] ids = new int[logits.length];
        for (int i = 0; i < ids.length; i++) ids[i] = params[i] == null ? -1 : Sampler.sample(logits[i], params[i], steps[i]);
        return ids;
    }

    /**
     * Bytes a cache of {@code tokens} tokens takes on this backend under a policy (at least what it allocates): what a
     * caller budgets per conversation. The CPU's caches hold exactly this much heap once they hold that many tokens
     * ({@code CpuKvCache#heapBytes}): float32 keys and values with their slot positions for the room a store has for
     * them ({@link KvStore#capacityFor}), float32 labels of the sparse layers (and a float32 scale a label row for 8- and
     * 4-bit ones) for the same room, and the ring window.
     * Where the backend keeps part of a cache in pinned host memory, that part is {@link #hostCacheBytes}, not here.
     */
    default long cacheBytes(KvConfig kv, long tokens) {
        ModelConfig c = config();
        long room = KvStore.capacityFor(tokens, kv.capacity());
        long bytes = KvStore.heapBytes(c.numLayers(), c.kvDim(), room);
        if (kv.sparse()) {
            int labelledLayers = kv.sparseLayers(c.numLayers());
            long rows = (long) c.numHeads() / kv.labelGroup(c.numHeads(), c.numKvHeads());
            long labelRows = rows * kv.labelChannels(c.headDim());
            if (kv.labelBits() < 16) labelRows += rows;   // a scale a label row and token
            bytes += labelledLayers * labelRows * room * Float.BYTES;
            bytes += RingWindow.heapBytes(c.numLayers(), kv.window(), c.kvDim());
        }
        return bytes;
    }

    /**
     * Host bytes outside the JVM heap that a cache of {@code tokens} tokens pins (the CUDA backend's host placement), to
     * be reserved from the operator's managed memory; 0 where the backend keeps none.
     */
    default long hostCacheBytes(KvConfig kv, long tokens) {
        return 0;
    }

    /**
     * Readies the backend for caches of this configuration before the first one exists, so that {@link
     * #deviceCacheBudget} counts what they change: the CUDA backend moves its token embedding table to host memory for
     * host placement. Creating such a cache does the same; nothing here by default.
     */
    default void prepare(KvConfig kv) {
    }

    /**
     * Bytes this backend's own memory has for KV caches (a GPU's free memory less its working buffers; the CPU's
     * cpu:device-memory), or -1 when the caches live in the JVM's memory and the caller's budget (Flink managed
     * memory) applies.
     */
    default long deviceCacheBudget() {
        return -1;
    }

    /**
     * Whether the forward pass runs on a GPU: steps are then shaped for one (BatchScheduler's defaults: running
     * requests, prefill tokens a step, a partial chunk after a prompt's end). False for the CPU also where it models a
     * GPU's memory ({@link #deviceCacheBudget} not -1): its steps stay the CPU's.
     */
    default boolean gpu() {
        return false;
    }

    /**
     * Rows the device row caches (KvConfig#rowCache) were asked for since the last call and rows they missed (the
     * counters start again at zero); null where the backend keeps none (the CPU keeps every row where it reads it).
     */
    default RowCacheCounts takeRowCacheCounts() {
        return null;
    }

    @Override
    void close();
}
