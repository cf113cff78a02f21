// kv_append_rope: RoPE on q and k and every row's key and value to its cache, for every row of a forward pass, in
// one launch (kv_append.cuh's shapes). Grid: (rows, Y); block: a multiple of D / 2 threads, each group of D / 2 taking
// heads (y * groups + grp) + k * groups * Y of the row, so a thread computes its pair's angle once for all its heads (a
// block a (row, head) made a 4,096-token prefill launch 196,608 blocks of 64 threads: 3.9 ms; a block a row made a
// decode step's 64 rows 64 blocks whose threads took 12 heads one after another: 9.6 us, H100). The host takes Y = 1
// for prefills and enough for a decode step's rows to fill the device.
#include "kv_append.cuh"

extern "C" __global__ void kv_append_rope(float* qkv, const int* positions, const float* inv_freq,
                                          const unsigned long long* kptr, const unsigned long long* vptr,
                                          const int* seg, const int* slot, int H, int KVH, int D, int row_stride) {
    int half = D / 2, groups = blockDim.x / half, grp = threadIdx.x / half, i = threadIdx.x % half, r = blockIdx.x;
    if (grp >= groups) return;
    float c, s, a, b;
    rope_angle(positions, inv_freq, r, i, D, &c, &s);
    for (int h = blockIdx.y * groups + grp; h < H + 2 * KVH; h += groups * gridDim.y) {
        kv_append_pair(qkv, c, s, inv_freq != nullptr, kptr, vptr, seg, slot, r, h, i, H, KVH, D, row_stride, &a, &b);
    }
}
