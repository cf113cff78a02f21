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

    /** A turn by {@code delta} positions with its cosines and sines worked out once, for many vectors. */
    Turn by(long delta) {
        int half = headDim / 2;
        float[] cos = new float[half], sin = new float[half];
        for (int i = 0; i < half; i++) {   // as CpuOps.rope computes them
            float angle = CpuOps.ropeAngle(Math.toIntExact(delta), invFreq[i]);
            cos[i] = (float) Math.cos(angle);
            sin[i] = (float) Math.sin(angle);
        }
        return new Turn(cos, sin);
    }

    /** One turn's cosines and sines ([headDim / 2] each), as {@link #turn} applies them. */
    record Turn(float[] cos, float[] sin) {
        /** Turns the head of x at [at, at + headDim). */
        void apply(float[] x, int at) {
            for (int i = 0; i < cos.length; i++) CpuOps.rotatePair(x, at + i, cos.length, cos[i], sin[i]);
        }
    }
}
