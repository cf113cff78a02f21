// Normalisation fused with the residual add. For each row r of x: [rows][dim] f32,
//   if y != null: x[r] += y[r]            (the residual stream is updated in place)
//   out[r] = rmsnorm(x[r]) * w            (rms_norm), or (x - mean) / std * w + b   (layer_norm)
// w, b: [dim] bf16; out: [rows][dim] f32 (may equal x), or out_bf: [rows][dim] bf16 when not null (then out is
// unused). Statistics in f32 over the block.
// Grid: (rows); block: add_rms_norm NormKernels.rmsNormThreads(dim), add_layer_norm 1024 threads.
#include "common.cuh"

// the output in f32, or in bf16 where it only feeds a tensor-core product (out_bf != null)
__device__ __forceinline__ void store(float* out, bf16* out_bf, size_t i, float v) {
    if (out_bf) out_bf[i] = __float2bfloat16(v);
    else out[i] = v;
}

// add_rms_norm's values a thread keeps in registers between the statistics and the output: NORM_VECS float4 where
// the rows are in whole, aligned float4 (the block is NormKernels.rmsNormThreads(dim): dim / 16 threads in whole
// warps, so a row up to 16,384 wide stays in registers), else NORM_REGS floats; wider rows take a second, re-reading
// loop.
#define NORM_VECS 4
#define NORM_REGS 8

__device__ __forceinline__ float4 add4(float4 a, float4 b) {
    return make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
}
__device__ __forceinline__ float dot4(float4 a) { return a.x * a.x + a.y * a.y + a.z * a.z + a.w * a.w; }

// out[r][4 i4 ..] = v * inv * w[4 i4 ..] as four floats or four bf16 (one 8-byte store)
__device__ __forceinline__ void store4(float* out, bf16* out_bf, size_t at, float4 v, float inv, uint2 wraw) {
    float2 w01 = __bfloat1622float2(*reinterpret_cast<__nv_bfloat162*>(&wraw.x));
    float2 w23 = __bfloat1622float2(*reinterpret_cast<__nv_bfloat162*>(&wraw.y));
    float4 o = make_float4(v.x * inv * w01.x, v.y * inv * w01.y, v.z * inv * w23.x, v.w * inv * w23.y);
    if (out_bf) {
        __nv_bfloat162 lo = __floats2bfloat162_rn(o.x, o.y), hi = __floats2bfloat162_rn(o.z, o.w);
        uint2 packed = make_uint2(*reinterpret_cast<unsigned*>(&lo), *reinterpret_cast<unsigned*>(&hi));
        *reinterpret_cast<uint2*>(out_bf + at) = packed;
    } else {
        *reinterpret_cast<float4*>(out + at) = o;
    }
}

// add_rms_norm over rows in whole float4: 16-byte loads and stores, so that a prefill's thousands of rows run at the
// copy bandwidth (a block of 1,024 threads a 4,096-wide row kept a multiprocessor to two rows at a time)
__device__ void add_rms_norm_vec(float* x, const float* y, float* out, bf16* out_bf, const bf16* w, int r, int dim,
                                 float eps, float* scratch) {
    int n4 = dim / 4;
    float4* xr = reinterpret_cast<float4*>(x + (size_t)r * dim);
    const float4* yr = y ? reinterpret_cast<const float4*>(y + (size_t)r * dim) : nullptr;
    const uint2* w4 = reinterpret_cast<const uint2*>(w);
    float4 v[NORM_VECS];
    uint2 wv[NORM_VECS];
    float ss = 0.f;
#pragma unroll
    for (int u = 0; u < NORM_VECS; u++) {   // all loads of a thread in flight at once, the weights' too
        int i = threadIdx.x + u * blockDim.x;
        v[u] = i < n4 ? xr[i] : make_float4(0.f, 0.f, 0.f, 0.f);
        wv[u] = i < n4 ? w4[i] : make_uint2(0u, 0u);
        if (yr && i < n4) v[u] = add4(v[u], yr[i]);
    }
#pragma unroll
    for (int u = 0; u < NORM_VECS; u++) {
        int i = threadIdx.x + u * blockDim.x;
        if (yr && i < n4) xr[i] = v[u];
        ss += dot4(v[u]);
    }
    for (int i = threadIdx.x + NORM_VECS * blockDim.x; i < n4; i += blockDim.x) {
        float4 t = xr[i];
        if (yr) {
            t = add4(t, yr[i]);
            xr[i] = t;
        }
        ss += dot4(t);
    }
    float inv = rsqrtf(block_sum(ss, scratch) / dim + eps);
#pragma unroll
    for (int u = 0; u < NORM_VECS; u++) {
        int i = threadIdx.x + u * blockDim.x;
        if (i < n4) store4(out, out_bf, (size_t)r * dim + 4 * i, v[u], inv, wv[u]);
    }
    for (int i = threadIdx.x + NORM_VECS * blockDim.x; i < n4; i += blockDim.x) {
        store4(out, out_bf, (size_t)r * dim + 4 * i, xr[i], inv, w4[i]);
    }
}

extern "C" __global__ void add_rms_norm(float* x, const float* y, float* out, bf16* out_bf, const bf16* w, int rows,
                                        int dim, float eps) {
    __shared__ float scratch[32];
    int r = blockIdx.x;
    if (r >= rows) return;
    unsigned long long addresses = (unsigned long long)x | (unsigned long long)y | (unsigned long long)out
                                   | (unsigned long long)out_bf | (unsigned long long)w;
    if ((dim & 3) == 0 && (addresses & 15) == 0) {
        add_rms_norm_vec(x, y, out, out_bf, w, r, dim, eps, scratch);
        return;
    }
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
