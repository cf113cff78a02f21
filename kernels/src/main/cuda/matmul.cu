// Linear layers: y[m][n] = sum_k x[m][k] * W[n][k] + bias[n]
//   x: [M][K] f32, W: [N][K] bf16 (Hugging Face layout), bias: [N] bf16 or null, y: [M][N] f32.
// SwiGLU epilogue (the *_swiglu GEMVs, gemm_bf16 with act != null): W is the fused gate/up matrix with its rows
//   interleaved (row 2i = gate_i, row 2i + 1 = up_i), so each pair of adjacent outputs becomes one activation
//   act[m][i] = silu(y[m][2i]) * y[m][2i + 1], [M][N / 2], and y itself is never written.
// Residual epilogue (accumulate != 0, not with SwiGLU): y[m][n] += the product, so the output and down projections
//   add into the residual stream without a separate add.
// gemv_mM (decode, M = 1, 2, 4, 8 or 16 rows): bandwidth-bound; each warp computes C consecutive output columns
//   (C = 1 for M = 1 and 16, 2 for M = 2, 4 and 8), reading each W row once with 16-byte loads (8 bf16) when
//   K % 8 == 0 (else one element per lane) and sharing each x load among its C rows; the host loops over row groups
//   of 16 for larger batches. Grid: (ceil(N / (8 C))), block: 256 (8 warps).
//   RMSNorm prologue (norm_w != null, [K] bf16): the product of rmsnorm(x[m]) * norm_w instead of x[m]. Every warp
//   reads all of x[m] anyway, so it also sums its squares and scales its dot products by rsqrt(mean + eps) at the
//   end: the pre-norm of a decode step costs no launch of its own.
// gemm_bf16 (prefill, many rows): tensor cores, below.
#include "common.cuh"

// 16 bytes of weights, read once: not kept in L1 (ld.global.nc.L1::no_allocate), which then keeps x for the other
// warps and blocks of the multiprocessor (H100: the decode products 0.5-2% faster, dev/cuda/gemv_bench.cu)
__device__ __forceinline__ uint4 load_weights16(const bf16* p) {
    uint4 v;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}

template <int M, int C, bool SWIGLU, bool NORM>
__device__ __forceinline__ void gemv_body(float* y, const float* x, const bf16* W, const bf16* bias,
                                          const bf16* norm_w, float eps, int accumulate, int N, int K) {
    int n0 = ((blockIdx.x * blockDim.x + threadIdx.x) >> 5) * C;
    int lane = threadIdx.x & 31;
    if (n0 >= N) return;
    float acc[M][C], ss[M];
#pragma unroll
    for (int m = 0; m < M; m++) {
        ss[m] = 0.f;
#pragma unroll
        for (int j = 0; j < C; j++) acc[m][j] = 0.f;
    }
    if ((K & 7) == 0) {
#pragma unroll (M <= 2 ? 4 : 2)   // small batches: more weight loads in flight per lane
        for (int k = lane * 8; k < K; k += 256) {
            float wf[C][8], g[8];
#pragma unroll
            for (int j = 0; j < C; j++) {
                int n = min(n0 + j, N - 1);   // a missing column re-reads the last one and is not written
                bf16x8_to_float(load_weights16(W + (size_t)n * K + k), wf[j]);
            }
            if constexpr (NORM) bf16x8_to_float(*reinterpret_cast<const uint4*>(norm_w + k), g);
#pragma unroll
            for (int m = 0; m < M; m++) {
                float xs[8];
                load_f32x8(x + (size_t)m * K + k, xs);
                if constexpr (NORM) {
#pragma unroll
                    for (int e = 0; e < 8; e++) {
                        ss[m] += xs[e] * xs[e];
                        xs[e] *= g[e];
                    }
                }
#pragma unroll
                for (int j = 0; j < C; j++) {
                    acc[m][j] += xs[0] * wf[j][0] + xs[1] * wf[j][1] + xs[2] * wf[j][2] + xs[3] * wf[j][3]
                               + xs[4] * wf[j][4] + xs[5] * wf[j][5] + xs[6] * wf[j][6] + xs[7] * wf[j][7];
                }
            }
        }
    } else {
        for (int k = lane; k < K; k += 32) {
            float xs[M];
#pragma unroll
            for (int m = 0; m < M; m++) {
                xs[m] = x[(size_t)m * K + k];
                if constexpr (NORM) {
                    ss[m] += xs[m] * xs[m];
                    xs[m] *= __bfloat162float(norm_w[k]);
                }
            }
#pragma unroll
            for (int j = 0; j < C; j++) {
                float wv = __bfloat162float(W[(size_t)min(n0 + j, N - 1) * K + k]);
#pragma unroll
                for (int m = 0; m < M; m++) acc[m][j] += xs[m] * wv;
            }
        }
    }
    float inv[M];
#pragma unroll
    for (int m = 0; m < M; m++) inv[m] = NORM ? rsqrtf(warp_sum(ss[m]) / K + eps) : 1.f;
    if constexpr (SWIGLU) {   // C = 2: this warp's columns are (gate_i, up_i), i = n0 / 2
#pragma unroll
        for (int m = 0; m < M; m++) {
            float g = warp_sum(acc[m][0]) * inv[m] + (bias ? __bfloat162float(bias[n0]) : 0.f);
            float u = warp_sum(acc[m][1]) * inv[m] + (bias ? __bfloat162float(bias[n0 + 1]) : 0.f);
            if (lane == 0) y[(size_t)m * (N / 2) + n0 / 2] = silu_times(g, u);
        }
    } else {
#pragma unroll
        for (int j = 0; j < C; j++) {
            int n = n0 + j;
            float b = bias && n < N ? __bfloat162float(bias[n]) : 0.f;
#pragma unroll
            for (int m = 0; m < M; m++) {
                float s = warp_sum(acc[m][j]) * inv[m] + b;
                float* out = y + (size_t)m * N + n;
                if (lane == 0 && n < N) *out = accumulate ? *out + s : s;
            }
        }
    }
}

// C columns per warp: the x loads are shared by C weight rows; fewer rows and more columns keep the registers in check
#define GEMV(m, c) \
    extern "C" __global__ void gemv_m##m(float* y, const float* x, const bf16* W, const bf16* bias, \
                                         const bf16* norm_w, float eps, int accumulate, int N, int K) { \
        if (norm_w) gemv_body<m, c, false, true>(y, x, W, bias, norm_w, eps, accumulate, N, K); \
        else gemv_body<m, c, false, false>(y, x, W, bias, nullptr, 0.f, accumulate, N, K); } \
    extern "C" __global__ void gemv_m##m##_swiglu(float* act, const float* x, const bf16* W, const bf16* bias, \
                                                 const bf16* norm_w, float eps, int N, int K) { \
        if (norm_w) gemv_body<m, 2, true, true>(act, x, W, bias, norm_w, eps, 0, N, K); \
        else gemv_body<m, 2, true, false>(act, x, W, bias, nullptr, 0.f, 0, N, K); }
GEMV(1, 1)
GEMV(2, 2)
GEMV(4, 2)
GEMV(8, 2)
GEMV(16, 1)

// 8 floats as three bf16 parts, hi + mid + lo = x exactly (24 bits of mantissa): b[part][i] holds the pair
// (x[2i], x[2i + 1]), an mma B fragment's register. common.cuh's bf16_rest gives the same parts a value at a time; here
// each pair is converted by one instruction (cvt.rn.bf16x2.f32), which the GEMV's inner loop runs for every x value of
// every block (bf16_rest's form: half again as much PTX for gemv_tc).
__device__ __forceinline__ void split_bf16x3(const float* xs, unsigned (&b)[3][4]) {
#pragma unroll
    for (int e = 0; e < 8; e += 2) {
        float r0 = xs[e], r1 = xs[e + 1];
        __nv_bfloat162 h = __floats2bfloat162_rn(r0, r1);
        float2 hf = __bfloat1622float2(h);
        r0 -= hf.x;
        r1 -= hf.y;
        __nv_bfloat162 md = __floats2bfloat162_rn(r0, r1);
        float2 mf = __bfloat1622float2(md);
        __nv_bfloat162 lo = __floats2bfloat162_rn(r0 - mf.x, r1 - mf.y);
        b[0][e / 2] = *reinterpret_cast<unsigned*>(&h);
        b[1][e / 2] = *reinterpret_cast<unsigned*>(&md);
        b[2][e / 2] = *reinterpret_cast<unsigned*>(&lo);
    }
}

// The 8 values of x at xrow (zeros where the row is past the batch's: !present) as split_bf16x3's parts; with NORM
// times the norm weights gw, their squares added to ss first (the row's sum for the prologue's rsqrt)
template <bool NORM>
__device__ __forceinline__ void x8_parts(const float* xrow, bool present, const float* gw, float& ss,
                                         unsigned (&b)[3][4]) {
    float xs[8];
    if (present) {
        load_f32x8(xrow, xs);
    } else {
#pragma unroll
        for (int e = 0; e < 8; e++) xs[e] = 0.f;
    }
    if constexpr (NORM) {
#pragma unroll
        for (int e = 0; e < 8; e++) {
            ss += xs[e] * xs[e];
            xs[e] *= gw[e];
        }
    }
    split_bf16x3(xs, b);
}

// gemv_tc (decode, 2-16 rows, K % 32 == 0): the same products on tensor cores, for batches where gemv_mM is bound by
//   its f32 x loads and FMAs rather than by W. W is the A operand (16 output columns x k16) and x the B operand
//   (k16 x 8 rows; NT = 2 tiles for 9-16 rows) of mma m16n8k16. The dot products do not care which k goes where, so
//   each lane loads 16 contiguous bytes (8 k) of a W row and of an x row and takes them as its fragment slots: no
//   shuffles, W read once with 16-byte loads. x is split into three bf16 parts (hi + mid + lo = x exactly: 24 bits of
//   mantissa), three products each, so the result keeps f32 precision. RMSNorm prologue and the epilogues as gemv_mM.
//   Block: 8 warps = GV_FG groups of 16 columns x GV_KS slices of K, the slices' partial products added in shared
//   memory. Grid: (ceil(N / (16 GV_FG))).
#ifndef GV_FG   // (dev/cuda/gemv_bench.cu builds other shapes)
#define GV_FG 1
#define GV_KS 8
#endif
#ifndef GV_UNROLL
#define GV_UNROLL 4
#endif
#define GV_WARPS (GV_FG * GV_KS)
// part: each warp's accumulators, ss_part: each warp's sums of squares per row (declared once by the kernel: the
// variants' own declarations would all be allocated)
typedef float GemvTcPart[GV_WARPS][2][32][4];
template <int NT, bool SWIGLU, bool NORM>
__device__ __forceinline__ void gemv_tc_body(GemvTcPart& part, float (&ss_part)[GV_WARPS][16], float* y,
                                             const float* x, const bf16* W, const bf16* bias, const bf16* norm_w,
                                             float eps, int accumulate, int M, int N, int K) {
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    int fg = warp / GV_KS, ks = warp % GV_KS;
    int f0 = (blockIdx.x * GV_FG + fg) * 16;
    int span = (K / 32 + GV_KS - 1) / GV_KS * 32, k_begin = ks * span, k_end = min(K, k_begin + span);
    const bf16* w_lo = W + (size_t)min(f0 + g, N - 1) * K + 8 * t;   // a missing column re-reads the last one
    const bf16* w_hi = W + (size_t)min(f0 + g + 8, N - 1) * K + 8 * t;
    float acc[NT][4], ss[NT];
#pragma unroll
    for (int j = 0; j < NT; j++) {
        ss[j] = 0.f;
#pragma unroll
        for (int e = 0; e < 4; e++) acc[j][e] = 0.f;
    }
    constexpr int unroll = GV_UNROLL;
#pragma unroll unroll
    for (int k = k_begin; k < k_end; k += 32) {
        uint4 a_lo = load_weights16(w_lo + k), a_hi = load_weights16(w_hi + k);
        float gw[8];
        if constexpr (NORM) bf16x8_to_float(*reinterpret_cast<const uint4*>(norm_w + k + 8 * t), gw);
#pragma unroll
        for (int j = 0; j < NT; j++) {
            int m = j * 8 + g;
            // x = hi + mid + lo, each bf16; k slots: step 0 takes 8t + 0..3, step 1 8t + 4..7 (as W's halves)
            unsigned b[3][4];
            x8_parts<NORM>(x + (size_t)m * K + k + 8 * t, m < M, gw, ss[j], b);
            unsigned a0[4] = {a_lo.x, a_hi.x, a_lo.y, a_hi.y}, a1[4] = {a_lo.z, a_hi.z, a_lo.w, a_hi.w};
#pragma unroll
            for (int part_ = 0; part_ < 3; part_++) {
                mma_bf16(acc[j], a0, b[part_][0], b[part_][1]);
                mma_bf16(acc[j], a1, b[part_][2], b[part_][3]);
            }
        }
    }
#pragma unroll
    for (int j = 0; j < NT; j++) {
#pragma unroll
        for (int e = 0; e < 4; e++) part[warp][j][lane][e] = acc[j][e];
        if constexpr (NORM) {   // row j * 8 + g: the four lanes t of g hold its slice's squares
            float v = ss[j] + __shfl_xor_sync(0xffffffffu, ss[j], 1);
            v += __shfl_xor_sync(0xffffffffu, v, 2);
            if (t == 0) ss_part[warp][j * 8 + g] = v;
        }
    }
    __syncthreads();
    // the block's [16 GV_FG columns][8 NT rows] results: thread i takes column pair / column i % (16 GV_FG), rows
    // accumulated over the K slices; c0, c1 at (column g, rows 2t, 2t + 1), c2, c3 at column g + 8
    constexpr int COLS = 16 * GV_FG, ROWS = 8 * NT;
    for (int i = threadIdx.x; i < COLS * ROWS; i += blockDim.x) {
        int m = i / COLS, col = i % COLS;
        if (SWIGLU && (col & 1)) continue;   // the even (gate) column's thread writes the pair
        if (m >= M) continue;
        auto value = [&](int c) {
            int grp = c / 16, cg = c % 16, j = m / 8, mr = m % 8;
            int ln = (cg % 8) * 4 + mr / 2, e = (cg >= 8 ? 2 : 0) + (mr & 1);
            float v = 0.f, sq = 0.f;
#pragma unroll
            for (int s = 0; s < GV_KS; s++) {
                v += part[grp * GV_KS + s][j][ln][e];
                if constexpr (NORM) sq += ss_part[grp * GV_KS + s][m];
            }
            if constexpr (NORM) v *= rsqrtf(sq / K + eps);
            int n = blockIdx.x * COLS + c;
            return v + (bias && n < N ? __bfloat162float(bias[n]) : 0.f);
        };
        int n = blockIdx.x * COLS + col;
        if (n >= N) continue;
        if constexpr (SWIGLU) {
            y[(size_t)m * (N / 2) + n / 2] = silu_times(value(col), value(col + 1));
        } else {
            float v = value(col);
            float* out = y + (size_t)m * N + n;
            *out = accumulate ? *out + v : v;
        }
    }
}

extern "C" __global__ void __launch_bounds__(GV_WARPS * 32) gemv_tc(float* y, const float* x, const bf16* W,
                                                                   const bf16* bias, const bf16* norm_w, float eps,
                                                                   int accumulate, int swiglu, int M, int N, int K) {
    // one kernel, its variants picked per launch (uniform branches): rows 2-8 take one mma tile, 9-16 two
    __shared__ GemvTcPart part;
    __shared__ float ss_part[GV_WARPS][16];
#define GEMV_TC(nt, sw) \
    if (norm_w) gemv_tc_body<nt, sw, true>(part, ss_part, y, x, W, bias, norm_w, eps, accumulate, M, N, K); \
    else gemv_tc_body<nt, sw, false>(part, ss_part, y, x, W, bias, nullptr, 0.f, accumulate, M, N, K);
    if (M > 8) {
        if (swiglu) { GEMV_TC(2, true) } else { GEMV_TC(2, false) }
    } else {
        if (swiglu) { GEMV_TC(1, true) } else { GEMV_TC(1, false) }
    }
#undef GEMV_TC
}

// gemm_bf16: y = x W^T + bias for many rows (prefill), on tensor cores: mma.sync m16n8k16 (bf16 x bf16 -> f32)
//   fed by ldmatrix from shared memory, which cp.async fills STAGES - 1 K-steps of GBK ahead.
//   xb: [M][K] bf16 (x rounded by f32_to_bf16, or written as bf16 by its producer), W: [N][K] bf16, y: [M][N] f32
//   (or, with act, the SwiGLU activations [M][N / 2] in bf16: the next GEMM's input as is); K % 8 == 0 (16-byte rows); M, N
//   arbitrary (rows and columns past the edge are loaded as zeros and not written).
//   Block tile 128 x BN (BN = 128); 8 warps as 2 (M) x 4 (N), each a 64 x BN/4 tile of 16 x 8 mma tiles.
//   Shared rows are GBK bf16 (16-byte chunks) stored swizzled (tile_offset) so that the 8 rows an ldmatrix reads fall
//   in 8 distinct bank groups. Dynamic shared memory: STAGES * (128 + BN) * GBK * 2 bytes.
//   Grid: (ceil(M / 128) * ceil(N / BN)) in a grouped order: 16 row tiles sweep the columns together, so the blocks in
//   flight share their W tiles in L2 instead of streaming all of W once per row tile. Block: 256.
#define GBM 128
#define GROUP_M 16

// byte offset of 16-byte chunk c of row r in a swizzled tile of BK-wide rows (BK = 32: 64-byte rows, paired up;
// BK = 64: 128-byte rows, c ^ (r & 7))
template <int BK>
__device__ __forceinline__ unsigned tile_offset(int r, int c) {
    if constexpr (BK == 32) return r * 64 + ((c ^ ((r >> 1) & 3)) << 4);
    else return r * 128 + ((c ^ (r & 7)) << 4);
}

template <int BN, int STAGES, int GBK>
__device__ __forceinline__ void gemm_body(float* y, bf16* act, const bf16* xb, const bf16* W, const bf16* bias,
                                          int accumulate, int M, int N, int K) {
    constexpr int NT = BN / 32;   // mma tiles of 8 columns per warp
    extern __shared__ __align__(128) unsigned char smem[];
    unsigned a_smem = smem_addr(smem), b_smem = a_smem + STAGES * GBM * GBK * 2;
    int tiles_m = (M + GBM - 1) / GBM, tiles_n = (N + BN - 1) / BN;
    int t = blockIdx.x, per_group = GROUP_M * tiles_n, first_m = (t / per_group) * GROUP_M;
    int group_rows = min(tiles_m - first_m, GROUP_M);
    int m0 = (first_m + (t % per_group) % group_rows) * GBM, n0 = ((t % per_group) / group_rows) * BN;
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    int wm = warp >> 2, wn = warp & 3;
    int ksteps = (K + GBK - 1) / GBK;

    // each thread copies chunk tid % CPR of rows tid / CPR + (256 / CPR) i of A and of B per K-step
    constexpr int CPR = GBK / 8, RPP = 256 / CPR;   // chunks a row, rows a pass
    auto load = [&](int stage, int kstep) {
        int c = tid % CPR, k = kstep * GBK + c * 8;
        bool kin = k < K;
#pragma unroll
        for (int h = 0; h < GBM / RPP; h++) {
            int r = tid / CPR + h * RPP, gm = m0 + r;
            bool ok = kin && gm < M;
            cp_async16(a_smem + (stage * GBM * GBK * 2) + tile_offset<GBK>(r, c), xb + (size_t)(ok ? gm : 0) * K + (ok ? k : 0), ok);
        }
#pragma unroll
        for (int h = 0; h < BN / RPP; h++) {
            int r = tid / CPR + h * RPP, gn = n0 + r;
            bool ok = kin && gn < N;
            cp_async16(b_smem + (stage * BN * GBK * 2) + tile_offset<GBK>(r, c), W + (size_t)(ok ? gn : 0) * K + (ok ? k : 0), ok);
        }
    };

    float acc[4][NT][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.f;

#pragma unroll
    for (int s = 0; s < STAGES - 1; s++) {
        if (s < ksteps) load(s, s);
        asm volatile("cp.async.commit_group;\n");
    }
    for (int ks = 0; ks < ksteps; ks++) {
        asm volatile("cp.async.wait_group %0;\n" ::"n"(STAGES - 2));
        __syncthreads();   // step ks has landed for every thread, and step ks - 1's stage is free to refill
        int next = ks + STAGES - 1;
        if (next < ksteps) load(next % STAGES, next);
        asm volatile("cp.async.commit_group;\n");
        unsigned a_base = a_smem + (ks % STAGES) * GBM * GBK * 2, b_base = b_smem + (ks % STAGES) * BN * GBK * 2;
#pragma unroll
        for (int kk = 0; kk < GBK / 16; kk++) {
            unsigned a[4][4], b[NT][2];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                int r = wm * 64 + i * 16 + (lane & 15);
                ldmatrix_x4(a_base + tile_offset<GBK>(r, kk * 2 + (lane >> 4)), a[i][0], a[i][1], a[i][2], a[i][3]);
            }
#pragma unroll
            for (int j = 0; j < NT / 2; j++) {
                int r = wn * (BN / 4) + j * 16 + (lane & 7) + ((lane >> 4) << 3);
                ldmatrix_x4(b_base + tile_offset<GBK>(r, kk * 2 + ((lane >> 3) & 1)), b[2 * j][0], b[2 * j][1],
                            b[2 * j + 1][0], b[2 * j + 1][1]);
            }
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < NT; j++) mma_bf16(acc[i][j], a[i], b[j][0], b[j][1]);
        }
    }
    asm volatile("cp.async.wait_group 0;\n");

    // accumulator layout of m16n8: c0, c1 at (row lane / 4, columns 2 (lane % 4) + 0, 1); c2, c3 eight rows below
#pragma unroll
    for (int j = 0; j < NT; j++) {
        int n = n0 + wn * (BN / 4) + j * 8 + (lane & 3) * 2;
        float b0 = bias && n < N ? __bfloat162float(bias[n]) : 0.f;
        float b1 = bias && n + 1 < N ? __bfloat162float(bias[n + 1]) : 0.f;
#pragma unroll
        for (int i = 0; i < 4; i++) {
#pragma unroll
            for (int h = 0; h < 2; h++) {
                int m = m0 + wm * 64 + i * 16 + (lane >> 2) + h * 8;
                if (m >= M) continue;
                float* out = y + (size_t)m * N + n;
                float v0 = acc[i][j][2 * h] + b0, v1 = acc[i][j][2 * h + 1] + b1;
                if (act) {   // n is even: (gate_i, up_i) with i = n / 2
                    if (n < N) act[(size_t)m * (N / 2) + n / 2] = __float2bfloat16(silu_times(v0, v1));
                    continue;
                }
                if (n + 1 < N && (N & 1) == 0) {
                    float2* o2 = reinterpret_cast<float2*>(out);
                    if (accumulate) {
                        float2 r = *o2;
                        v0 = r.x + v0;
                        v1 = r.y + v1;
                    }
                    *o2 = make_float2(v0, v1);
                } else {
                    if (n < N) out[0] = accumulate ? out[0] + v0 : v0;
                    if (n + 1 < N) out[1] = accumulate ? out[1] + v1 : v1;
                }
            }
        }
    }
}

// 128 x 128 tiles, K-steps of 64, 3 stages (96 KB of shared memory, two blocks an SM). Measured slower on the H100
// (dev/cuda/README.md, v9-v11): K-steps of 32 with 4 stages (-10%), 128 x 256 tiles with 3 stages.
extern "C" __global__ void __launch_bounds__(256) gemm_bf16(float* y, bf16* act, const bf16* xb, const bf16* W,
                                                            const bf16* bias, int accumulate, int M, int N, int K) {
    gemm_body<128, 3, 64>(y, act, xb, W, bias, accumulate, M, N, K);
}
