package io.dsflow.engine.kv;

import io.dsflow.engine.cpu.CpuOps;

/**
 * A rotary model's position embedding as a bounded cache needs it to keep positions within the cache ({@link KvStore}):
 * the inverse frequencies RoPE turns each channel pair by, and the positions the model has ({@code
 * max_position_embeddings}), which no rotary position reaches.
 *
 * @param invFreq      [headDim / 2] angle per position of each channel pair (rotate-half layout)
 * @param headDim      channels of a head
 * @param maxPositions the model's max_position_embeddings
 */
public record Rotary(float[] invFreq, int headDim, int maxPositions) {

    /** Turns each of {@code heads} heads of x ([heads * headDim]) by {@code delta} positions (negative: back). */
    public void turn(float[] x, int heads, long delta) {
        CpuOps.rope(x, heads, headDim, Math.toIntExact(delta), invFreq);
    }
}
