// Linear layers: y[m][n] = sum_k x[m][k] * W[n][k] + bias[n]
//   x: [M][K] f32, W: [N][K] bf16 (Hugging Face layout), bias: [N] bf16 or null, y: [M][N] f32.
// gemv_mN (decode, M = 1, 2, 4, 8 or 16 rows): bandwidth-bound; one warp per output column n reads W[n] once with
//   16-byte loads (8 bf16) when K % 8 == 0 (else one element per lane) and keeps M accumulators; the host loops over
//   row groups of 16 for larger batches. Grid: (ceil(N / 8)), block: 256 (8 warps).
// gemm_wmma (prefill, many rows): tensor cores through WMMA (bf16 x bf16 -> f32), 64 x 64 output tiles, K in steps
//   of 32 through shared memory; x is rounded to bf16 as it is staged. Grid: (ceil(N / 64), ceil(M / 64)), block: 128.
#include "common.cuh"
#include <mma.h>

template <int M>
__device__ __forceinline__ void gemv_body(float* y, const float* x, const bf16* W, const bf16* bias, int N, int K) {
    int n = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (n >= N) return;
    const bf16* w = W + (size_t)n * K;
    float acc[M];
#pragma unroll
    for (int m = 0; m < M; m++) acc[m] = 0.f;
    if ((K & 7) == 0) {
#pragma unroll 4
        for (int k = lane * 8; k < K; k += 256) {
            uint4 raw = *reinterpret_cast<const uint4*>(w + k);
            const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
            float wf[8];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                float2 f = __bfloat1622float2(h[i]);
                wf[2 * i] = f.x;
                wf[2 * i + 1] = f.y;
            }
#pragma unroll
            for (int m = 0; m < M; m++) {
                const float4* xv = reinterpret_cast<const float4*>(x + (size_t)m * K + k);
                float4 a = xv[0], b = xv[1];
                acc[m] += a.x * wf[0] + a.y * wf[1] + a.z * wf[2] + a.w * wf[3]
                        + b.x * wf[4] + b.y * wf[5] + b.z * wf[6] + b.w * wf[7];
            }
        }
    } else {
        for (int k = lane; k < K; k += 32) {
            float wv = __bfloat162float(w[k]);
#pragma unroll
            for (int m = 0; m < M; m++) acc[m] += x[(size_t)m * K + k] * wv;
        }
    }
    float b = bias ? __bfloat162float(bias[n]) : 0.f;
#pragma unroll
    for (int m = 0; m < M; m++) {
        float s = warp_sum(acc[m]);
        if (lane == 0) y[(size_t)m * N + n] = s + b;
    }
}

extern "C" __global__ void gemv_m1(float* y, const float* x, const bf16* W, const bf16* bias, int N, int K) { gemv_body<1>(y, x, W, bias, N, K); }
extern "C" __global__ void gemv_m2(float* y, const float* x, const bf16* W, const bf16* bias, int N, int K) { gemv_body<2>(y, x, W, bias, N, K); }
extern "C" __global__ void gemv_m4(float* y, const float* x, const bf16* W, const bf16* bias, int N, int K) { gemv_body<4>(y, x, W, bias, N, K); }
extern "C" __global__ void gemv_m8(float* y, const float* x, const bf16* W, const bf16* bias, int N, int K) { gemv_body<8>(y, x, W, bias, N, K); }
extern "C" __global__ void gemv_m16(float* y, const float* x, const bf16* W, const bf16* bias, int N, int K) { gemv_body<16>(y, x, W, bias, N, K); }

#define TILE 64
#define TK 32
#define LDS 48   // padded row of a staged tile: 96 bytes keeps every WMMA pointer 32-byte aligned

extern "C" __global__ void __launch_bounds__(128) gemm_wmma(float* y, const float* x, const bf16* W, const bf16* bias,
                                                            int M, int N, int K) {
    using namespace nvcuda;
    __shared__ __align__(32) bf16 As[TILE][LDS];
    __shared__ __align__(32) bf16 Bs[TILE][LDS];
    __shared__ __align__(32) float Cs[4][16 * 16];
    int m0 = blockIdx.y * TILE, n0 = blockIdx.x * TILE;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int wm = warp >> 1, wn = warp & 1;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 2; j++) wmma::fill_fragment(acc[i][j], 0.f);
    for (int k0 = 0; k0 < K; k0 += TK) {
        for (int i = threadIdx.x; i < TILE * TK; i += blockDim.x) {
            int r = i / TK, c = i % TK;
            int gm = m0 + r, gn = n0 + r, gk = k0 + c;
            As[r][c] = __float2bfloat16(gm < M && gk < K ? x[(size_t)gm * K + gk] : 0.f);
            Bs[r][c] = gn < N && gk < K ? W[(size_t)gn * K + gk] : __float2bfloat16(0.f);
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < TK; kk += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a[2];
            wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> b[2];
#pragma unroll
            for (int i = 0; i < 2; i++) wmma::load_matrix_sync(a[i], &As[wm * 32 + i * 16][kk], LDS);
#pragma unroll
            for (int j = 0; j < 2; j++) wmma::load_matrix_sync(b[j], &Bs[wn * 32 + j * 16][kk], LDS);
#pragma unroll
            for (int i = 0; i < 2; i++)
#pragma unroll
                for (int j = 0; j < 2; j++) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {
#pragma unroll
        for (int j = 0; j < 2; j++) {
            wmma::store_matrix_sync(Cs[warp], acc[i][j], 16, wmma::mem_row_major);
            __syncwarp();
            for (int e = lane; e < 256; e += 32) {
                int gm = m0 + wm * 32 + i * 16 + e / 16, gn = n0 + wn * 32 + j * 16 + e % 16;
                if (gm < M && gn < N) y[(size_t)gm * N + gn] = Cs[warp][e] + (bias ? __bfloat162float(bias[gn]) : 0.f);
            }
            __syncwarp();
        }
    }
}
