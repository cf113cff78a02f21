// Greedy sampling on the device: out[r] = argmax_i logits[r][i] (lowest index on ties).
//   logits: [rows][vocab] f32. Grid: (rows), block: 1024.
// gather_rows: dst[i][:] = src[index[i]][:] for i < count (the last row of each segment before the lm_head).
//   src, dst: [.][dim] f32. Grid: (count), block: 256.
#include "common.cuh"

extern "C" __global__ void argmax(int* out, const float* logits, int vocab) {
    __shared__ float best_v[32];
    __shared__ int best_i[32];
    const float* row = logits + (size_t)blockIdx.x * vocab;
    float bv = -INFINITY;
    int bi = 0x7fffffff;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        float v = row[i];
        if (v > bv || (v == bv && i < bi)) { bv = v; bi = i; }
    }
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ov > bv || (ov == bv && oi < bi)) { bv = ov; bi = oi; }
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) { best_v[warp] = bv; best_i[warp] = bi; }
    __syncthreads();
    if (warp == 0) {
        int warps = blockDim.x >> 5;
        bv = lane < warps ? best_v[lane] : -INFINITY;
        bi = lane < warps ? best_i[lane] : 0x7fffffff;
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (ov > bv || (ov == bv && oi < bi)) { bv = ov; bi = oi; }
        }
        if (lane == 0) out[blockIdx.x] = bi;
    }
}

extern "C" __global__ void gather_rows(float* dst, const float* src, const int* index, int count, int dim) {
    int i = blockIdx.x;
    if (i >= count) return;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) dst[(size_t)i * dim + c] = src[(size_t)index[i] * dim + c];
}
