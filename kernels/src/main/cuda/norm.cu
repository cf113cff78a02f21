// Normalisation fused with the residual add. For each row r of x: [rows][dim] f32,
//   if y != null: x[r] += y[r]            (the residual stream is updated in place)
//   out[r] = rmsnorm(x[r]) * w            (rms_norm), or (x - mean) / std * w + b   (layer_norm)
// w, b: [dim] bf16; out: [rows][dim] f32 (may equal x). Statistics in f32 over the block.
// Grid: (rows), block: 1024 threads (a decode step normalises one short row: latency, not bandwidth, bounds it).
#include "common.cuh"

extern "C" __global__ void add_rms_norm(float* x, const float* y, float* out, const bf16* w, int rows, int dim,
                                        float eps) {
    __shared__ float scratch[32];
    int r = blockIdx.x;
    if (r >= rows) return;
    float* xr = x + (size_t)r * dim;
    float ss = 0.f;
#pragma unroll 4
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = xr[i];
        if (y) {
            v += y[(size_t)r * dim + i];
            xr[i] = v;
        }
        ss += v * v;
    }
    float inv = rsqrtf(block_sum(ss, scratch) / dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) out[(size_t)r * dim + i] = xr[i] * inv * __bfloat162float(w[i]);
}

extern "C" __global__ void add_layer_norm(float* x, const float* y, float* out, const bf16* w, const bf16* b,
                                          int rows, int dim, float eps) {
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
        out[(size_t)r * dim + i] = (xr[i] - mean) * inv * __bfloat162float(w[i]) + __bfloat162float(b[i]);
    }
}
