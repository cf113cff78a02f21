// One warp's share of a split decode attention (shared by the dense and the sparse kernels): the softmax partial of
// one query head over the slots slot_of(t) for t in [begin, end) of a cache [cap][KVH][D] bf16 (kv head g):
//   part[0..D) = sum_t e^(s_t - m) v_t, part[D] = m = max_t s_t, part[D + 1] = sum_t e^(s_t - m), s_t = scale q.k_t
// Lanes own 32 slots at a time for the scores (16-byte key loads) and D / 32 channels each for the output, with
// four value rows in flight. An empty range writes l = 0. Call with the whole warp.
#pragma once
#include "common.cuh"

template <int D, typename SlotOf>
__device__ void warp_attend_slots(float* part, const float* qrow, const bf16* kc, const bf16* vc, int g, int KVH,
                                  int begin, int end, float scale, SlotOf slot_of) {
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
            const uint4* k = reinterpret_cast<const uint4*>(kc + ((size_t)slot * KVH + g) * D);
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
                const bf16* v = vc + ((size_t)__shfl_sync(0xffffffffu, slot, t + u) * KVH + g) * D + lane * PER;
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
            const bf16* v = vc + ((size_t)__shfl_sync(0xffffffffu, slot, t) * KVH + g) * D + lane * PER;
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
