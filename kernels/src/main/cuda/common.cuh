// Shared helpers of the dsflow kernels. Notation for shapes: [rows][dim] row-major; bf16 = __nv_bfloat16.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

typedef __nv_bfloat16 bf16;

// SwiGLU of one gate/up pair: silu(gate) * up
__device__ __forceinline__ float silu_times(float gate, float up) {
    return gate / (1.f + __expf(-gate)) * up;
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum (MAX: maximum, of non-negative values: 0 is its identity) over a block of up to 1024 threads; every thread gets
// the result. scratch: 32 floats of shared memory.
template <bool MAX>
__device__ __forceinline__ float block_reduce(float v, float* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = MAX ? warp_max(v) : warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    int warps = (blockDim.x + 31) >> 5;
    v = lane < warps ? scratch[lane] : 0.f;
    return MAX ? warp_max(v) : warp_sum(v);
}

__device__ __forceinline__ float block_sum(float v, float* scratch) { return block_reduce<false>(v, scratch); }

// whole warps only (label rows: the fused append's block is max(32, D / 2) threads)
__device__ __forceinline__ float block_max_nonneg(float v, float* scratch) { return block_reduce<true>(v, scratch); }

// 8 bf16 values (one 16-byte load) as floats
__device__ __forceinline__ void bf16x8_to_float(uint4 raw, float* out) {   // by value: one 16-byte load
    const __nv_bfloat162* h2 = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 f = __bfloat1622float2(h2[i]);
        out[2 * i] = f.x;
        out[2 * i + 1] = f.y;
    }
}

// 8 consecutive floats (32-byte aligned) in two 16-byte loads
__device__ __forceinline__ void load_f32x8(const float* src, float* out) {
    float4 a = reinterpret_cast<const float4*>(src)[0], b = reinterpret_cast<const float4*>(src)[1];
    out[0] = a.x; out[1] = a.y; out[2] = a.z; out[3] = a.w;
    out[4] = b.x; out[5] = b.y; out[6] = b.z; out[7] = b.w;
}

// A float's place in ascending order as an unsigned key (larger float, larger key); -0 + 0 = +0 makes the two zeros
// tie, as Java's == has them. Selection kernels (sampling, top-k) order scores by it.
__device__ __forceinline__ unsigned order_key(float f) {
    unsigned u = __float_as_uint(f + 0.0f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Sum over a block (any warp count); every thread gets the same result, summed in the same order. scratch: 32 values.
template <typename T>
__device__ __forceinline__ T block_sum_all(T v, T* scratch) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = v;
    __syncthreads();
    T t = 0;
    for (int w = 0; w < (int)(blockDim.x >> 5); w++) t += scratch[w];
    return t;
}

// Tensor-core building blocks (sm_80+): asynchronous 16-byte copies to shared memory, ldmatrix, mma.sync m16n8k16.
__device__ __forceinline__ unsigned smem_addr(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void cp_async16(unsigned dst, const void* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0));
}

__device__ __forceinline__ void ldmatrix_x4_trans(unsigned addr, unsigned& r0, unsigned& r1, unsigned& r2, unsigned& r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}

__device__ __forceinline__ void ldmatrix_x2_trans(unsigned addr, unsigned& r0, unsigned& r1) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n" : "=r"(r0), "=r"(r1) : "r"(addr));
}

__device__ __forceinline__ void ldmatrix_x4(unsigned addr, unsigned& r0, unsigned& r1, unsigned& r2, unsigned& r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}

__device__ __forceinline__ void mma_bf16(float* c, const unsigned* a, unsigned b0, unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// The same product on fp16 operands: 3 more mantissa bits than bf16, for operands whose range fp16 holds
__device__ __forceinline__ void mma_f16(float* c, const unsigned* a, unsigned b0, unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ unsigned pack_f16(float lo, float hi) {
    __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&v);
}

// Two bf16 as two fp16 (exact for magnitudes fp16 holds at full precision, 6.1e-5 to 65504)
__device__ __forceinline__ unsigned bf16x2_to_f16x2(unsigned v) {
    return pack_f16(__uint_as_float(v << 16), __uint_as_float(v & 0xffff0000u));
}

__device__ __forceinline__ unsigned pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&v);
}

// Byte offset of 16-byte piece c of row r in shared rows of D bf16: piece c ^ (r & 7), so that ldmatrix's 8 rows of one
// piece column fall in 8 distinct bank groups; 64-byte rows (D = 32) pair up rows instead: c ^ ((r >> 1) & 3), as
// gemm_bf16's tiles. The attention kernels' staged key, value and query rows (attention_prefill.cu,
// pipelined_attention.cuh).
template <int D>
__device__ __forceinline__ unsigned swizzled_row_piece(int r, int c) {
    return (r * D + ((D >= 64 ? c ^ (r & 7) : c ^ ((r >> 1) & 3)) << 3)) * 2;
}

// x less its first `taken` bf16 parts (part 0 = bf16(x), part i = bf16 of what parts 0..i-1 leave): with taken = 0, 1,
// 2 and each result rounded to bf16, x = hi + mid + lo to f32 precision, so a bf16 tensor-core product keeps an f32
// operand's precision.
__device__ __forceinline__ float bf16_rest(float x, int taken) {
    for (int k = 0; k < taken; k++) x -= __bfloat162float(__float2bfloat16_rn(x));
    return x;
}
