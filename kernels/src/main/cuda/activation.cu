// MLP activations. relu: x = max(x, 0) over n values. Grid: (ceil(n / 256)), block: 256.
#include "common.cuh"

// swiglu_fused: out[r][i] = silu(gu[r][i]) * gu[r][inter + i], gu: [rows][2 * inter] (the fused gate/up output),
//   out: [rows][inter]. Grid: (ceil(rows * inter / 256)), block: 256.
extern "C" __global__ void swiglu_fused(float* out, const float* gu, int rows, int inter) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)rows * inter) return;
    long r = i / inter, c = i % inter;
    float g = gu[r * 2 * inter + c];
    out[i] = g / (1.f + __expf(-g)) * gu[r * 2 * inter + inter + c];
}

extern "C" __global__ void relu(float* x, long n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = fmaxf(x[i], 0.f);
}

// x += y over n values (the residual add where no norm follows). Grid: (ceil(n / 256)), block: 256.
extern "C" __global__ void residual_add(float* x, const float* y, long n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += y[i];
}

// Random bf16 values uniform in [-scale, scale) from a hash of (seed, index): synthetic weights made on the device.
extern "C" __global__ void fill_random_bf16(bf16* out, long n, unsigned long long seed, float scale) {
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        unsigned long long z = seed + (unsigned long long)i * 0x9E3779B97F4A7C15ull;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        float u = (float)(z >> 40) * (1.0f / 16777216.0f);
        out[i] = __float2bfloat16((2.f * u - 1.f) * scale);
    }
}
