// Rotary positions, Hugging Face rotate-half layout, in place on x: [rows][row_stride] f32 whose first
// heads * head_dim values are the heads: (x_i, x_{i+d/2}) -> (x_i cos - x_{i+d/2} sin, x_{i+d/2} cos + x_i sin),
// angle = positions[r] * inv_freq[i] in f32 (inv_freq: [head_dim / 2], llama3 scaling applied on the host).
// Grid: (rows, heads), block: head_dim / 2 threads, one rotation pair each.
#include "common.cuh"

extern "C" __global__ void rope(float* x, const int* positions, const float* inv_freq, int rows, int heads,
                                int head_dim, int row_stride) {
    // q and k of the fused projection are rotated in one launch: heads counts both (their channels are adjacent)
    int r = blockIdx.x, h = blockIdx.y, i = threadIdx.x;
    int half = head_dim / 2;
    if (r >= rows || h >= heads || i >= half) return;
    float pos = (float) positions[r];
    {
        float angle = pos * inv_freq[i];
        float s, c;
        sincosf(angle, &s, &c);
        float* xh = x + (size_t)r * row_stride + h * head_dim;
        float a = xh[i], b = xh[i + half];
        xh[i] = a * c - b * s;
        xh[i + half] = b * c + a * s;
    }
}
