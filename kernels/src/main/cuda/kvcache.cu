// Appends every row's key and value to its sequence's cache, rounding to bf16:
//   k, v: rows of src_stride floats (the fused q/k/v output), KVH * D used  ->  the cache [cap][KVH * D] bf16 of segment seg[r], at slot slot[r].
#include "common.cuh"

// kptr, vptr: device pointer tables of the segments' caches for this layer. Grid: (rows, ceil(KVH * D / 256)), block: 256.
extern "C" __global__ void kv_append_rows(const unsigned long long* kptr, const unsigned long long* vptr, const int* seg,
                                          const int* slot, const float* k, const float* v, int kv_dim, int src_stride) {
    int r = blockIdx.x;
    bf16* kc = reinterpret_cast<bf16*>(kptr[seg[r]]);
    bf16* vc = reinterpret_cast<bf16*>(vptr[seg[r]]);
    size_t dst = (size_t)slot[r] * kv_dim, src = (size_t)r * src_stride;
    int i = blockIdx.y * blockDim.x + threadIdx.x;
    if (i < kv_dim) {
        kc[dst + i] = __float2bfloat16(k[src + i]);
        vc[dst + i] = __float2bfloat16(v[src + i]);
    }
}
