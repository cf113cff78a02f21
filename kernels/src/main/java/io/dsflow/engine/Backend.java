package io.dsflow.engine;

import io.dsflow.engine.kv.ChannelConfig;
import io.dsflow.engine.kv.KvCache;
import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.model.ModelConfig;
import io.dsflow.engine.sample.Sampler;
import io.dsflow.engine.sample.SamplingParams;

/**
 * Where the forward pass runs: the CPU (the specification) or a GPU. A backend owns the weights in its own layout and
 * makes the KV caches its forward pass can use.
 * <ul>
 *   <li>created with the weights loaded; {@link #close()} frees them (device memory, native handles);</li>
 *   <li>{@link #forward} is called by one thread at a time.</li>
 * </ul>
 */
public interface Backend extends AutoCloseable {

    ModelConfig config();

    /** For the log: "cpu (2 threads)", "cuda:0 NVIDIA H100 ...". */
    String description();

    /** A new, empty cache for one sequence; {@code channels} is required for the sparse policies. */
    KvCache newCache(KvConfig config, ChannelConfig channels);

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

    @Override
    void close();
}
