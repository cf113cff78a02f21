// Appends a segment's keys and values to a sequence's cache, rounding to bf16:
//   k, v: [rows][KVH * D] f32  ->  kc, vc: [cap][KVH * D] bf16 at slots start .. start + rows - 1.
// Grid: (rows), block: 256 over KVH * D.
#include "common.cuh"

extern "C" __global__ void kv_append(bf16* kc, bf16* vc, const float* k, const float* v, int rows, int kv_dim, int start) {
    int r = blockIdx.x;
    if (r >= rows) return;
    size_t dst = (size_t)(start + r) * kv_dim, src = (size_t)r * kv_dim;
    for (int i = threadIdx.x; i < kv_dim; i += blockDim.x) {
        kc[dst + i] = __float2bfloat16(k[src + i]);
        vc[dst + i] = __float2bfloat16(v[src + i]);
    }
}
