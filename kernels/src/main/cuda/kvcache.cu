// kv_append_rope: RoPE on q and k and every row's key and value to its cache, for every row of a forward pass, in
// one launch (kv_append.cuh's shapes). Grid: (rows, H + 2 KVH), block: D / 2 threads.
#include "kv_append.cuh"

extern "C" __global__ void kv_append_rope(float* qkv, const int* positions, const float* inv_freq,
                                          const unsigned long long* kptr, const unsigned long long* vptr,
                                          const int* seg, const int* slot, int H, int KVH, int D, int row_stride) {
    float a, b;
    kv_append_pair(qkv, positions, inv_freq, kptr, vptr, seg, slot, blockIdx.x, blockIdx.y, H, KVH, D, row_stride, &a,
                   &b);
}
