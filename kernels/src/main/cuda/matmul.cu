// Linear layers: y[m][n] = sum_k x[m][k] * W[n][k] + bias[n]
//   x: [M][K] f32, W: [N][K] bf16 (Hugging Face layout), bias: [N] bf16 or null, y: [M][N] f32.
// gemv_mM (decode, M = 1, 2, 4, 8 or 16 rows): bandwidth-bound; each warp computes C consecutive output columns
//   (C = 1 for M = 1 and 16, 2 for M = 2, 4 and 8), reading each W row once with 16-byte loads (8 bf16) when
//   K % 8 == 0 (else one element per lane) and sharing each x load among its C rows; the host loops over row groups
//   of 16 for larger batches. Grid: (ceil(N / (8 C))), block: 256 (8 warps).
// gemm_wmma (prefill, many rows): tensor cores through WMMA (bf16 x bf16 -> f32), 64 x 64 output tiles, K in steps
//   of 32 through shared memory; x is rounded to bf16 as it is staged. Grid: (ceil(N / 64), ceil(M / 64)), block: 128.
#include "common.cuh"
#include <mma.h>

template <int M, int C>
__device__ __forceinline__ void gemv_body(float* y, const float* x, const bf16* W, const bf16* bias, int N, int K) {
    int n0 = ((blockIdx.x * blockDim.x + threadIdx.x) >> 5) * C;
    int lane = threadIdx.x & 31;
    if (n0 >= N) return;
    float acc[M][C];
#pragma unroll
    for (int m = 0; m < M; m++)
#pragma unroll
        for (int j = 0; j < C; j++) acc[m][j] = 0.f;
    if ((K & 7) == 0) {
#pragma unroll 2
        for (int k = lane * 8; k < K; k += 256) {
            float wf[C][8];
#pragma unroll
            for (int j = 0; j < C; j++) {
                int n = min(n0 + j, N - 1);   // a missing column re-reads the last one and is not written
                uint4 raw = *reinterpret_cast<const uint4*>(W + (size_t)n * K + k);
                const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    float2 f = __bfloat1622float2(h[i]);
                    wf[j][2 * i] = f.x;
                    wf[j][2 * i + 1] = f.y;
                }
            }
#pragma unroll
            for (int m = 0; m < M; m++) {
                const float4* xv = reinterpret_cast<const float4*>(x + (size_t)m * K + k);
                float4 a = xv[0], b = xv[1];
#pragma unroll
                for (int j = 0; j < C; j++) {
                    acc[m][j] += a.x * wf[j][0] + a.y * wf[j][1] + a.z * wf[j][2] + a.w * wf[j][3]
                               + b.x * wf[j][4] + b.y * wf[j][5] + b.z * wf[j][6] + b.w * wf[j][7];
                }
            }
        }
    } else {
        for (int k = lane; k < K; k += 32) {
#pragma unroll
            for (int j = 0; j < C; j++) {
                float wv = __bfloat162float(W[(size_t)min(n0 + j, N - 1) * K + k]);
#pragma unroll
                for (int m = 0; m < M; m++) acc[m][j] += x[(size_t)m * K + k] * wv;
            }
        }
    }
#pragma unroll
    for (int j = 0; j < C; j++) {
        int n = n0 + j;
        float b = bias && n < N ? __bfloat162float(bias[n]) : 0.f;
#pragma unroll
        for (int m = 0; m < M; m++) {
            float s = warp_sum(acc[m][j]);
            if (lane == 0 && n < N) y[(size_t)m * N + n] = s + b;
        }
    }
}

// C columns per warp: the x loads are shared by C weight rows; fewer rows and more columns keep the registers in check
extern "C" __global__ void gemv_m1(float* y, const float* x, const bf16* W, const bf16* bias, int N, int K) { gemv_body<1, 1>(y, x, W, bias, N, K); }
extern "C" __global__ void gemv_m2(float* y, const float* x, const bf16* W, const bf16* bias, int N, int K) { gemv_body<2, 2>(y, x, W, bias, N, K); }
extern "C" __global__ void gemv_m4(float* y, const float* x, const bf16* W, const bf16* bias, int N, int K) { gemv_body<4, 2>(y, x, W, bias, N, K); }
extern "C" __global__ void gemv_m8(float* y, const float* x, const bf16* W, const bf16* bias, int N, int K) { gemv_body<8, 2>(y, x, W, bias, N, K); }
extern "C" __global__ void gemv_m16(float* y, const float* x, const bf16* W, const bf16* bias, int N, int K) { gemv_body<16, 1>(y, x, W, bias, N, K); }

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
