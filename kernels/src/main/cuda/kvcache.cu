// kv_append_rope: RoPE on q and k and every row's key and value to its cache, for every row of a forward pass, in
// one launch (kv_append.cuh's shapes). Grid: rows; block: a multiple of D / 2 threads, each group of D / 2 taking
// heads grp, grp + groups, ... of the row, so a thread computes its pair's angle once for all the row's heads (a block
// a (row, head) made a 4,096-token prefill launch 196,608 blocks of 64 threads: 3.9 ms).
#include "kv_append.cuh"

extern "C" __global__ void kv_append_rope(float* qkv, const int* positions, const float* inv_freq,
                                          const unsigned long long* kptr, const unsigned long long* vptr,
                                          const int* seg, const int* slot, int H, int KVH, int D, int row_stride) {
    int half = D / 2, groups = blockDim.x / half, grp = threadIdx.x / half, i = threadIdx.x % half, r = blockIdx.x;
    if (grp >= groups) return;
    float c, s, a, b;
    rope_angle(positions, inv_freq, r, i, D, &c, &s);
    for (int h = grp; h < H + 2 * KVH; h += groups) {
        kv_append_pair(qkv, c, s, inv_freq != nullptr, kptr, vptr, seg, slot, r, h, i, H, KVH, D, row_stride, &a, &b);
    }
}
