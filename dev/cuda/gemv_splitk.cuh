// Experiment v16a (dev/cuda/README.md): gemv_tc's products with x staged in shared memory and K split over a
// cluster; measured slower than gemv_tc at every shape (gemv_bench.cu), kept to be measured again. Included by
// gemv_bench.cu after matmul.cu.
#include <cooperative_groups.h>
// gemv_skS (decode, 1-16 rows, K % 32 == 0, sm_90; S = 1, 2, 4, 8): gemv_tc's products with x staged once a block in
//   shared memory and K split over a cluster of S blocks. gemv_tc's warps split K and each reads its slice of x from
//   L2: at 8 rows as many bytes of x as of W. Here the 8 warps of a block share one staged copy (x / 16 of W's bytes
//   at 8 rows), so the loads in flight are W's.
//   Block (tile c, cluster rank r): warp w computes the 16 columns 128 c + 16 w + [0, 16) over K's range
//   [r KR, (r + 1) KR); the block first issues its warps' first SK_PF W loads, then stages x's rows for its range as
//   three bf16 parts (x = hi + mid + lo, normalised first when norm_w: each row's sum of squares kept per range) in
//   xs [3][8 NT][rs] 16-byte units (rs: a row's units padded so that a warp's fragment loads hit distinct banks).
//   The ranks' partial products [128][8 NT] are added through distributed shared memory in rank order (every
//   result the same from run to run): rank r reduces, finishes (norm scale, bias, epilogue) and writes the columns
//   [r 128 / S, (r + 1) 128 / S) of the tile.
//   Grid: (ceil(N / 128) S), cluster (S), block 256, dynamic shared memory gemvSkSharedBytes (CudaOps).
#define SK_COLS 128
#ifndef SK_PF
#define SK_PF 8
#endif
// SK_PF: W loads in flight a lane, iterations of 32 k (two 16-byte loads each)
template <int NT, int S, bool SWIGLU, bool NORM>
__device__ __forceinline__ void gemv_sk_body(unsigned char* smem, float* y, const float* x, const bf16* W,
                                             const bf16* bias, const bf16* norm_w, float eps, int accumulate, int M,
                                             int N, int K, int KR) {
    namespace cg = cooperative_groups;
    constexpr int MP = 8 * NT, CPR = SK_COLS / S;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    int rank = blockIdx.x % S, tile = blockIdx.x / S;
    int k0 = rank * KR, kn = max(0, min(K - k0, KR)), iters = kn / 32;
    int units = KR / 8, rs = units % 8 == 0 ? units + 4 : units;
    uint4* xs = reinterpret_cast<uint4*>(smem);
    float* red = reinterpret_cast<float*>(smem + (size_t)3 * MP * rs * 16);   // [SK_COLS][MP] partial products
    float* ssr = red + SK_COLS * MP;                                             // [MP] sums of squares of the range
    int f0 = tile * SK_COLS + warp * 16;
    const bf16* w_lo = W + (size_t)min(f0 + g, N - 1) * K + k0 + 8 * t;   // a missing column re-reads the last one
    const bf16* w_hi = W + (size_t)min(f0 + g + 8, N - 1) * K + k0 + 8 * t;
    uint4 wa[SK_PF], wb[SK_PF];
#pragma unroll
    for (int i = 0; i < SK_PF; i++) {
        if (i < iters) {
            wa[i] = *reinterpret_cast<const uint4*>(w_lo + 32 * i);
            wb[i] = *reinterpret_cast<const uint4*>(w_hi + 32 * i);
        }
    }
    // stage x: warp w the rows w (and w + 8), a lane 8 k at a time
    for (int m = warp; m < MP; m += 8) {
        float ss = 0.f;
        for (int u = lane; u < kn / 8; u += 32) {
            float gw[8];
            if constexpr (NORM) bf16x8_to_float(*reinterpret_cast<const uint4*>(norm_w + k0 + 8 * u), gw);
            unsigned b[3][4];
            x8_parts<NORM>(x + (size_t)m * K + k0 + 8 * u, m < M, gw, ss, b);
#pragma unroll
            for (int p = 0; p < 3; p++) xs[(p * MP + m) * rs + u] = make_uint4(b[p][0], b[p][1], b[p][2], b[p][3]);
        }
        if constexpr (NORM) {
            ss = warp_sum(ss);
            if (lane == 0) ssr[m] = ss;
        }
    }
    __syncthreads();
    float acc[NT][4];
#pragma unroll
    for (int j = 0; j < NT; j++) {
#pragma unroll
        for (int e = 0; e < 4; e++) acc[j][e] = 0.f;
    }
    for (int it = 0; it < iters; it += SK_PF) {
#pragma unroll
        for (int i = 0; i < SK_PF; i++) {
            int at = it + i;
            if (at < iters) {
                uint4 a_lo = wa[i], a_hi = wb[i];
                if (at + SK_PF < iters) {
                    wa[i] = *reinterpret_cast<const uint4*>(w_lo + 32 * (at + SK_PF));
                    wb[i] = *reinterpret_cast<const uint4*>(w_hi + 32 * (at + SK_PF));
                }
                unsigned a0[4] = {a_lo.x, a_hi.x, a_lo.y, a_hi.y}, a1[4] = {a_lo.z, a_hi.z, a_lo.w, a_hi.w};
#pragma unroll
                for (int j = 0; j < NT; j++) {
#pragma unroll
                    for (int p = 0; p < 3; p++) {
                        uint4 b = xs[(p * MP + j * 8 + g) * rs + 4 * at + t];
                        mma_bf16(acc[j], a0, b.x, b.y);
                        mma_bf16(acc[j], a1, b.z, b.w);
                    }
                }
            }
        }
    }
    // c0, c1 at (column g, rows 2t, 2t + 1), c2, c3 at column g + 8
#pragma unroll
    for (int j = 0; j < NT; j++) {
        int c = warp * 16 + g, m = j * 8 + 2 * t;
        red[c * MP + m] = acc[j][0];
        red[c * MP + m + 1] = acc[j][1];
        red[(c + 8) * MP + m] = acc[j][2];
        red[(c + 8) * MP + m + 1] = acc[j][3];
    }
    if constexpr (S > 1) cg::this_cluster().sync(); else __syncthreads();
    for (int i = threadIdx.x; i < CPR * MP; i += blockDim.x) {
        int m = i / CPR, c = rank * CPR + i % CPR, n = tile * SK_COLS + c;
        if (m >= M || n >= N || (SWIGLU && (c & 1))) continue;   // the even (gate) column's thread writes the pair
        auto value = [&](int cc) {
            float v = 0.f, sq = 0.f;
#pragma unroll
            for (int s = 0; s < S; s++) {
                const float* rr = S > 1 ? cg::this_cluster().map_shared_rank(red, s) : red;
                v += rr[cc * MP + m];
                if constexpr (NORM) sq += (S > 1 ? cg::this_cluster().map_shared_rank(ssr, s) : ssr)[m];
            }
            if constexpr (NORM) v *= rsqrtf(sq / K + eps);
            int nn = tile * SK_COLS + cc;
            return v + (bias && nn < N ? __bfloat162float(bias[nn]) : 0.f);
        };
        if constexpr (SWIGLU) {
            y[(size_t)m * (N / 2) + n / 2] = silu_times(value(c), value(c + 1));
        } else {
            float v = value(c);
            float* out = y + (size_t)m * N + n;
            *out = accumulate ? *out + v : v;
        }
    }
    if constexpr (S > 1) cg::this_cluster().sync();   // the other ranks read this block's shared memory until here
}

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900
#define SK_CLUSTER_DIMS(n) __cluster_dims__(n, 1, 1)
#else
#define SK_CLUSTER_DIMS(n)
#endif
#define GEMV_SK_KERNEL(s) \
    extern "C" __global__ void SK_CLUSTER_DIMS(s) __launch_bounds__(256) gemv_sk##s(float* y, const float* x, \
            const bf16* W, const bf16* bias, const bf16* norm_w, float eps, int accumulate, int swiglu, int M, int N, \
            int K, int KR) { \
        extern __shared__ __align__(16) unsigned char sk_smem[]; \
        GEMV_SK_DISPATCH(s) \
    }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
#define GEMV_SK_DISPATCH(s) __trap();   // built for sm_90 only: the host launches gemv_tc elsewhere
#else
#define GEMV_SK_VARIANT(s, nt, sw) \
    if (norm_w) gemv_sk_body<nt, s, sw, true>(sk_smem, y, x, W, bias, norm_w, eps, accumulate, M, N, K, KR); \
    else gemv_sk_body<nt, s, sw, false>(sk_smem, y, x, W, bias, nullptr, 0.f, accumulate, M, N, K, KR);
#define GEMV_SK_DISPATCH(s) \
    if (M > 8) { \
        if (swiglu) { GEMV_SK_VARIANT(s, 2, true) } else { GEMV_SK_VARIANT(s, 2, false) } \
    } else { \
        if (swiglu) { GEMV_SK_VARIANT(s, 1, true) } else { GEMV_SK_VARIANT(s, 1, false) } \
    }
#endif
GEMV_SK_KERNEL(1)
GEMV_SK_KERNEL(2)
GEMV_SK_KERNEL(4)
GEMV_SK_KERNEL(8)

