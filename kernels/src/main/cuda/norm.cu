// Normalisation fused with the residual add. For each row r of x: [rows][dim] f32,
//   if y != null: x[r] += y[r]            (the residual stream is updated in place)
//   out[r] = rmsnorm(x[r]) * w            (rms_norm), or (x - mean) / std * w + b   (layer_norm)
// w, b: [dim] bf16; out: [rows][dim] f32 (may equal x), or out_bf: [rows][dim] bf16 when not null (then out is
// unused). Statistics in f32 over the block.
// Grid: (rows), block: 1024 threads (a decode step normalises one short row: latency, not bandwidth, bounds it).
#include "common.cuh"

// the output in f32, or in bf16 where it only feeds a tensor-core product (out_bf != null)
__device__ __forceinline__ void store(float* out, bf16* out_bf, size_t i, float v) {
    if (out_bf) out_bf[i] = __float2bfloat16(v);
    else out[i] = v;
}

// Values per thread kept in registers between the statistics and the output (1024 threads: rows up to 8192 wide;
// wider rows take the second, re-reading loop).
#define NORM_REGS 8

extern "C" __global__ void add_rms_norm(float* x, const float* y, float* out, bf16* out_bf, const bf16* w, int rows,
                                        int dim, float eps) {
    __shared__ float scratch[32];
    int r = blockIdx.x;
    if (r >= rows) return;
    float* xr = x + (size_t)r * dim;
    const float* yr = y ? y + (size_t)r * dim : nullptr;
    float v[NORM_REGS], wv[NORM_REGS];
    float ss = 0.f;
#pragma unroll
    for (int u = 0; u < NORM_REGS; u++) {   // all loads of a thread in flight at once, the weights' too
        int i = threadIdx.x + u * blockDim.x;
        v[u] = i < dim ? xr[i] + (yr ? yr[i] : 0.f) : 0.f;
        wv[u] = i < dim ? __bfloat162float(w[i]) : 0.f;
    }
#pragma unroll
    for (int u = 0; u < NORM_REGS; u++) {
        int i = threadIdx.x + u * blockDim.x;
        if (yr && i < dim) xr[i] = v[u];
        ss += v[u] * v[u];
    }
    for (int i = threadIdx.x + NORM_REGS * blockDim.x; i < dim; i += blockDim.x) {
        float t = xr[i] + (yr ? yr[i] : 0.f);
        if (yr) xr[i] = t;
        ss += t * t;
    }
    float inv = rsqrtf(block_sum(ss, scratch) / dim + eps);
#pragma unroll
    for (int u = 0; u < NORM_REGS; u++) {
        int i = threadIdx.x + u * blockDim.x;
        if (i < dim) store(out, out_bf, (size_t)r * dim + i, v[u] * inv * wv[u]);
    }
    for (int i = threadIdx.x + NORM_REGS * blockDim.x; i < dim; i += blockDim.x) {
        store(out, out_bf, (size_t)r * dim + i, xr[i] * inv * __bfloat162float(w[i]));
    }
}

extern "C" __global__ void add_layer_norm(float* x, const float* y, float* out, bf16* out_bf, const bf16* w,
                                          const bf16* b, int rows, int dim, float eps) {
    __shared__ float scratch[32];
    int r = blockIdx.x;
    if (r >= rows) return;
    float* xr = x + (size_t)r * dim;
    float s = 0.f;
#pragma unroll 4
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = xr[i];
        if (y) {
            v += y[(size_t)r * dim + i];
            xr[i] = v;
        }
        s += v;
    }
    float mean = block_sum(s, scratch) / dim;
    float var = 0.f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float d = xr[i] - mean;
        var += d * d;
    }
    float inv = rsqrtf(block_sum(var, scratch) / dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        store(out, out_bf, (size_t)r * dim + i, (xr[i] - mean) * inv * __bfloat162float(w[i]) + __bfloat162float(b[i]));
    }
}
