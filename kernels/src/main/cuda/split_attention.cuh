// Split decode attention shared by the dense and the sparse kernels: one warp's share (warp_attend_slots), or a block's
// for a group of query heads (group_attend_slots).
// Slots: slot_of(t) >= 0 is a row of the cache [cap][KVH][D] bf16 (kc, vc); a negative one, -1 - i, is row i of the
// device ring [S + W][KVH][D] (kring, vring: host placement's sinks and window; the dense kernels pass none).
// One warp's share of a split decode attention: the softmax partial of
// one query head over the slots slot_of(t) for t in [begin, end) of its cache (kv head g):
//   part[0..D) = sum_t e^(s_t - m) v_t, part[D] = m = max_t s_t, part[D + 1] = sum_t e^(s_t - m), s_t = scale q.k_t
// Lanes own 32 slots at a time for the scores (16-byte key loads) and D / 32 channels each for the output, with
// four value rows in flight. An empty range writes l = 0. Call with the whole warp.
#pragma once
#include "common.cuh"

// kv head g's row of a slot (above: a cache row, or a ring row for a negative slot)
__device__ __forceinline__ const bf16* kv_row(const bf16* cache, const bf16* ring, int slot, int KVH, int g, int D) {
    return slot >= 0 ? cache + ((size_t)slot * KVH + g) * D : ring + ((size_t)(-1 - slot) * KVH + g) * D;
}

template <int D, typename SlotOf>
__device__ void warp_attend_slots(float* part, const float* qrow, const bf16* kc, const bf16* vc, const bf16* kring,
                                  const bf16* vring, int g, int KVH, int begin, int end, float scale, SlotOf slot_of) {
    constexpr int PER = D / 32;
    int lane = threadIdx.x & 31;
    __shared__ float qs[D];
    for (int c = lane; c < D; c += 32) qs[c] = qrow[c];
    __syncwarp();
    float m = -INFINITY, l = 0.f, o[PER];
#pragma unroll
    for (int i = 0; i < PER; i++) o[i] = 0.f;
    for (int j0 = begin; j0 < end; j0 += 32) {
        int j = j0 + lane;
        float score = -INFINITY;
        int slot = j < end ? slot_of(j) : 0;
        if (j < end) {
            const uint4* k = reinterpret_cast<const uint4*>(kv_row(kc, kring, slot, KVH, g, D));
            float acc = 0.f;
#pragma unroll
            for (int c8 = 0; c8 < D / 8; c8++) {
                float kf[8];
                bf16x8_to_float(k[c8], kf);
#pragma unroll
                for (int i = 0; i < 4; i++) acc += qs[c8 * 8 + 2 * i] * kf[2 * i] + qs[c8 * 8 + 2 * i + 1] * kf[2 * i + 1];
            }
            score = acc * scale;
        }
        float mnew = fmaxf(m, warp_max(score));
        float p = j < end ? __expf(score - mnew) : 0.f;
        float corr = __expf(m - mnew);
        l = l * corr + warp_sum(p);
#pragma unroll
        for (int i = 0; i < PER; i++) o[i] *= corr;
        int count = min(32, end - j0);
        int t = 0;
        for (; t + 4 <= count; t += 4) {   // four value rows in flight at once
            float vv[4][PER];
#pragma unroll
            for (int u = 0; u < 4; u++) {
                const bf16* v = kv_row(vc, vring, __shfl_sync(0xffffffffu, slot, t + u), KVH, g, D) + lane * PER;
#pragma unroll
                for (int i = 0; i < PER; i++) vv[u][i] = __bfloat162float(v[i]);
            }
#pragma unroll
            for (int u = 0; u < 4; u++) {
                float pt = __shfl_sync(0xffffffffu, p, t + u);
#pragma unroll
                for (int i = 0; i < PER; i++) o[i] += pt * vv[u][i];
            }
        }
        for (; t < count; t++) {
            float pt = __shfl_sync(0xffffffffu, p, t);
            const bf16* v = kv_row(vc, vring, __shfl_sync(0xffffffffu, slot, t), KVH, g, D) + lane * PER;
#pragma unroll
            for (int i = 0; i < PER; i++) o[i] += pt * __bfloat162float(v[i]);
        }
        m = mnew;
    }
    if (lane == 0) {
        part[D] = m;
        part[D + 1] = l;
    }
#pragma unroll
    for (int i = 0; i < PER; i++) part[lane * PER + i] = o[i];
}

// n consecutive bf16 values (n * 2 bytes aligned) as floats, in as few loads as their alignment allows
template <int N>
__device__ __forceinline__ void load_bf16(float* dst, const bf16* src) {
    if constexpr (N % 8 == 0) {
#pragma unroll
        for (int c = 0; c < N; c += 8) bf16x8_to_float(*reinterpret_cast<const uint4*>(src + c), dst + c);
    } else {
#pragma unroll
        for (int i = 0; i < N; i += 2) {
            float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(src + i));
            dst[i] = f.x;
            dst[i + 1] = f.y;
        }
    }
}

// A block of GQA_WARPS warps' share of a split decode attention for the G query heads of kv head g (which read the same
// key and value rows): split s of the slots slot_of(t), t in [0, n); each warp takes `chunk` of them (the split covers
// GQA_WARPS chunks) and the warps' partials are combined in shared memory into the split's. part0: the partial of the
// group's first head at split s (partials [heads][splits][D + 2], so head h's is part0 + h * splits * (D + 2)); qrow:
// the G heads' queries, G * D floats. DIRECT: slot_of is the identity (dense decode), its rows read without the slot
// exchange. STAGED (gathered rows in host memory: host placement's selection): a chunk's 32 key rows are first staged
// in shared memory by loads that read whole rows (D / 8 lanes a row, 16 bytes each), because a lane reading its own
// row's 16-byte pieces has each load instruction touch 32 rows, a request over the host link per piece (measured on
// the H100: 1.3-1.6x the tokens/s of host-placed decode; on device memory it gained nothing and its registers cost
// occupancy). Call with the whole block (32 * GQA_WARPS threads).
#define GQA_WARPS 4
template <int D, int G, bool DIRECT, bool STAGED, typename SlotOf>
__device__ void group_attend_slots(float* part0, const float* qrow, const bf16* kc, const bf16* vc, const bf16* kring,
                                   const bf16* vring, int g, int KVH, int n, int s, int splits, int chunk, float scale,
                                   SlotOf slot_of) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int begin = (s * GQA_WARPS + warp) * chunk, end = min(n, begin + chunk);
    // shared memory: the staged key rows (gathered rows only; each row padded by 16 bytes so that the lanes' reads of
    // their rows fall in distinct banks), reused after the loop for the warps' partial outputs
    constexpr int KROW = D + 8, KS_BYTES = STAGED ? GQA_WARPS * 32 * KROW * 2 : 0, WO_BYTES = GQA_WARPS * G * D * 4;
    __shared__ __align__(16) unsigned char pool[KS_BYTES > WO_BYTES ? KS_BYTES : WO_BYTES];
    bf16 (*ks)[KROW] = reinterpret_cast<bf16 (*)[KROW]>(pool) + warp * 32;
    static_assert(!STAGED || (!DIRECT && 32 % (D / 8) == 0), "staged rows: gathered, whole 16-byte pieces a warp");
    __shared__ float qs[G][D];
    for (int i = threadIdx.x; i < G * D; i += blockDim.x) qs[i / D][i % D] = qrow[i];
    __syncthreads();
    // values: half-warps take alternate rows, lane owns channels [c0, c0 + D / 16) of each (16-byte loads at D = 128)
    constexpr int VPER = D / 16;
    int half = lane >> 4, c0 = (lane & 15) * VPER;
    float m[G], l[G], o[G][VPER];
#pragma unroll
    for (int h = 0; h < G; h++) {
        m[h] = -INFINITY;
        l[h] = 0.f;
#pragma unroll
        for (int i = 0; i < VPER; i++) o[h][i] = 0.f;
    }
    for (int j0 = begin; j0 < end; j0 += 32) {
        int j = j0 + lane;
        int slot = DIRECT ? j : (j < end ? slot_of(j) : 0);
        int count = min(32, end - j0);
        if constexpr (DIRECT) {
            // the chunk's value rows into the L2 while its keys are read and scored: dense decode at batch 8 and 32K
            // took 83.6 instead of 93.3 us a layer (H100); the sparse kernels' scattered rows gained nothing (63.1
            // against 61.4 us), so they do not
            if (j < end) {
                const char* v = reinterpret_cast<const char*>(vc + ((size_t)slot * KVH + g) * D);
#pragma unroll
                for (int b = 0; b < D * 2; b += 128) asm volatile("prefetch.global.L2 [%0];" ::"l"(v + b));
            }
        }
        if constexpr (STAGED) {   // stage the chunk's key rows: all loads first, then the stores
            constexpr int PIECES = D / 8, ROWS = 32 / PIECES, LOADS = 32 / ROWS;
            int piece = lane % PIECES;
            uint4 raw[LOADS];
#pragma unroll
            for (int u = 0; u < LOADS; u++) {
                int r = u * ROWS + lane / PIECES, sl = __shfl_sync(0xffffffffu, slot, r);
                if (r < count) raw[u] = reinterpret_cast<const uint4*>(kv_row(kc, kring, sl, KVH, g, D))[piece];
            }
            __syncwarp();   // the previous chunk's rows are read
#pragma unroll
            for (int u = 0; u < LOADS; u++) {
                int r = u * ROWS + lane / PIECES;
                if (r < count) *reinterpret_cast<uint4*>(&ks[r][piece * 8]) = raw[u];
            }
            __syncwarp();
        }
        float sc[G];
#pragma unroll
        for (int h = 0; h < G; h++) sc[h] = 0.f;
        if (j < end) {
            const uint4* k = reinterpret_cast<const uint4*>(STAGED ? &ks[lane][0] : DIRECT ? kc + ((size_t)slot * KVH + g) * D
                                                                                          : kv_row(kc, kring, slot, KVH, g, D));
#pragma unroll
            for (int c8 = 0; c8 < D / 8; c8++) {
                float kf[8];
                bf16x8_to_float(k[c8], kf);
#pragma unroll
                for (int h = 0; h < G; h++)
#pragma unroll
                    for (int i = 0; i < 8; i++) sc[h] += qs[h][c8 * 8 + i] * kf[i];
            }
        }
        float p[G];
#pragma unroll
        for (int h = 0; h < G; h++) {
            float score = j < end ? sc[h] * scale : -INFINITY;
            float mnew = fmaxf(m[h], warp_max(score));
            p[h] = j < end ? __expf(score - mnew) : 0.f;
            float corr = __expf(m[h] - mnew);
            l[h] = l[h] * corr + warp_sum(p[h]);
#pragma unroll
            for (int i = 0; i < VPER; i++) o[h][i] *= corr;
            m[h] = mnew;
        }
        // 4 rows a half-warp in flight: all loads first, then the products (p of a missing row is 0, its load skipped)
        for (int t0 = 0; t0 < count; t0 += 8) {
            float vf[4][VPER];
#pragma unroll
            for (int u = 0; u < 4; u++) {
                int t = t0 + 2 * u + half;
                int row = DIRECT ? j0 + t : __shfl_sync(0xffffffffu, slot, min(t, 31));
                if (t < count) {
                    load_bf16<VPER>(vf[u], (DIRECT ? vc + ((size_t)row * KVH + g) * D : kv_row(vc, vring, row, KVH, g, D)) + c0);
                } else {
#pragma unroll
                    for (int i = 0; i < VPER; i++) vf[u][i] = 0.f;
                }
            }
#pragma unroll
            for (int u = 0; u < 4; u++) {
                int t = min(t0 + 2 * u + half, 31);
#pragma unroll
                for (int h = 0; h < G; h++) {
                    float pt = __shfl_sync(0xffffffffu, p[h], t);
#pragma unroll
                    for (int i = 0; i < VPER; i++) o[h][i] += pt * vf[u][i];
                }
            }
        }
    }
    // the warps' partials combined in shared memory into the block's: max M, sum L, o, each rescaled by e^(m_w - M)
    __shared__ float wm[GQA_WARPS][G], wl[GQA_WARPS][G];
    float (*wo)[G][D] = reinterpret_cast<float (*)[G][D]>(pool);
    if constexpr (STAGED) __syncthreads();   // every warp is done with its staged rows
#pragma unroll
    for (int h = 0; h < G; h++) {
        if (lane == 0) {
            wm[warp][h] = m[h];
            wl[warp][h] = l[h];
        }
#pragma unroll
        for (int i = 0; i < VPER; i++) {
            float v = o[h][i] + __shfl_xor_sync(0xffffffffu, o[h][i], 16);   // the two halves' rows
            if (half == 0) wo[warp][h][c0 + i] = v;
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < G * D; i += blockDim.x) {
        int h = i / D, c = i % D;
        float M = -INFINITY;
#pragma unroll
        for (int w = 0; w < GQA_WARPS; w++) M = fmaxf(M, wm[w][h]);
        float L = 0.f, O = 0.f;
#pragma unroll
        for (int w = 0; w < GQA_WARPS; w++) {
            float e = wl[w][h] > 0.f ? __expf(wm[w][h] - M) : 0.f;
            L += wl[w][h] * e;
            O += wo[w][h][c] * e;
        }
        float* part = part0 + (size_t)h * splits * (D + 2);
        part[c] = O;
        if (c == 0) {
            part[D] = M;
            part[D + 1] = L;
        }
    }
}
