// Element-wise kernels. relu: x = max(x, 0) over n values (OPT's MLP; SwiGLU is fused into the own products,
// matmul.cu).
// Grid: (ceil(n / 256)), block: 256.
// The epilogues of a product cuBLAS computed (y [M][N] f32, CudaOps.linear): add_bias_rows, swiglu_rows.
#include "common.cuh"

// interleave_rows: dst row 2i = src row i, dst row 2i + 1 = src row rows + i, for src [2 rows][cols] bf16 (gate stacked
//   on up, as uploaded) -> the fused gate/up layout the SwiGLU epilogues read (matmul.cu). Grid: (2 rows), block: 256.
extern "C" __global__ void interleave_rows(bf16* dst, const bf16* src, int rows, long cols) {
    int r = blockIdx.x;
    int from = (r & 1) ? rows + r / 2 : r / 2;
    for (long c = threadIdx.x; c < cols; c += blockDim.x) dst[(size_t)r * cols + c] = src[(size_t)from * cols + c];
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

// out = bf16(x) over n values (rounding to nearest even): the operand of the tensor-core GEMM. Grid: (ceil(n / 1024)),
//   block: 256 (4 values a thread).
extern "C" __global__ void f32_to_bf16(bf16* out, const float* x, long n) {
    long i = ((long)blockIdx.x * blockDim.x + threadIdx.x) * 4;
    if (i + 4 <= n) {
        float4 v = *reinterpret_cast<const float4*>(x + i);
        __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(out + i);
        o[0] = __floats2bfloat162_rn(v.x, v.y);
        o[1] = __floats2bfloat162_rn(v.z, v.w);
    } else {
        for (; i < n; i++) out[i] = __float2bfloat16(x[i]);
    }
}

// y[m][n] += bias[n] over y [M][N] f32, bias [N] bf16. Grid: (ceil(M N / 256)), block: 256.
extern "C" __global__ void add_bias_rows(float* y, const bf16* bias, int M, int N) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < (long)M * N) y[i] += __bfloat162float(bias[i % N]);
}

// act[m][i] = silu(y[m][2i] + bias[2i]) * (y[m][2i + 1] + bias[2i + 1]) in bf16, over y [M][N] f32 (the row-interleaved
//   gate/up product, matmul.cu's layout), bias [N] bf16 or null, act [M][N / 2] bf16 (the down product's input).
//   Grid: (M * blocks_per_row), block: 256; a thread SWIGLU_PAIRS consecutive pairs of a row (two 16-byte loads, one
//   8-byte store where the row is in whole, aligned groups of them; a prefill's 4,096 x 14,336 pairs a layer then run
//   at the copy bandwidth instead of dividing 64-bit indices a pair), blocks_per_row = ceil(N / 2 / (256 * 4)).
#define SWIGLU_PAIRS 4
extern "C" __global__ void swiglu_rows(bf16* act, const float* y, const bf16* bias, int M, int N, int blocks_per_row) {
    int m = blockIdx.x / blocks_per_row, half = N / 2;
    int j0 = ((blockIdx.x % blocks_per_row) * blockDim.x + threadIdx.x) * SWIGLU_PAIRS;
    if (m >= M || j0 >= half) return;
    const float* yr = y + (size_t)m * N;
    bf16* ar = act + (size_t)m * half;
    bool whole = j0 + SWIGLU_PAIRS <= half && bias == nullptr && (half % SWIGLU_PAIRS) == 0
                 && (((unsigned long long)y | (unsigned long long)act) & 15) == 0;
    if (whole) {
        float4 a = *reinterpret_cast<const float4*>(yr + 2 * j0), b = *reinterpret_cast<const float4*>(yr + 2 * j0 + 4);
        __nv_bfloat162 lo = __floats2bfloat162_rn(silu_times(a.x, a.y), silu_times(a.z, a.w));
        __nv_bfloat162 hi = __floats2bfloat162_rn(silu_times(b.x, b.y), silu_times(b.z, b.w));
        *reinterpret_cast<uint2*>(ar + j0) = make_uint2(*reinterpret_cast<unsigned*>(&lo),
                                                        *reinterpret_cast<unsigned*>(&hi));
        return;
    }
    for (int j = j0; j < min(half, j0 + SWIGLU_PAIRS); j++) {
        float2 gu = *reinterpret_cast<const float2*>(yr + 2 * j);
        if (bias != nullptr) {
            gu.x += __bfloat162float(bias[2 * j]);
            gu.y += __bfloat162float(bias[2 * j + 1]);
        }
        ar[j] = __float2bfloat16(silu_times(gu.x, gu.y));
    }
}
