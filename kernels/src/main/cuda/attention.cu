// Causal attention of a segment's rows over one sequence's cache, split over the context (flash-decoding).
//   q: [rows][H * D] f32 (after RoPE); kc, vc: [cap][KVH][D] bf16 (token-major cache; the segment's own keys are in
//   it already); row r attends slots [0, n_r) with n_r = length - rows + r + 1; head h reads kv head h / (H / KVH).
// attention_split: one warp per (row, head, split of CHUNK slots); lanes own 32 slots at a time for the scores and
//   D / 32 channels each for the output; writes an unnormalised partial (max m, sum l, o[D]).
//   Grid: (rows * H, splits), block: 32. partials: [rows * H][splits][D + 2] f32.
// attention_merge: out[r][h * D + c] = sum_s o_s[c] e^(m_s - M) / sum_s l_s e^(m_s - M).  Grid: (rows * H), block: D.
#include "common.cuh"

#define CHUNK 256

template <int D>
__device__ void split_body(float* partials, const float* q, const bf16* kc, const bf16* vc, int rows, int H, int KVH,
                           int length, int splits, float scale) {
    constexpr int PER = D / 32;
    int rh = blockIdx.x, s = blockIdx.y, lane = threadIdx.x;
    int r = rh / H, h = rh % H, g = h / (H / KVH);
    int n = length - rows + r + 1;
    int begin = s * CHUNK, end = min(n, begin + CHUNK);
    float* part = partials + ((size_t)rh * splits + s) * (D + 2);
    __shared__ float qs[D];
    const float* qr = q + (size_t)r * H * D + h * D;
    for (int c = lane; c < D; c += 32) qs[c] = qr[c];
    __syncwarp();
    float m = -INFINITY, l = 0.f, o[PER];
#pragma unroll
    for (int i = 0; i < PER; i++) o[i] = 0.f;
    for (int j0 = begin; j0 < end; j0 += 32) {
        int j = j0 + lane;
        float score = -INFINITY;
        if (j < end) {
            const bf16* k = kc + ((size_t)j * KVH + g) * D;
            float acc = 0.f;
#pragma unroll 8
            for (int c = 0; c < D; c++) acc += qs[c] * __bfloat162float(k[c]);
            score = acc * scale;
        }
        float mnew = fmaxf(m, warp_max(score));
        float p = j < end ? __expf(score - mnew) : 0.f;
        float corr = __expf(m - mnew);
        l = l * corr + warp_sum(p);
#pragma unroll
        for (int i = 0; i < PER; i++) o[i] *= corr;
        int count = min(32, end - j0);
        for (int t = 0; t < count; t++) {
            float pt = __shfl_sync(0xffffffffu, p, t);
            const bf16* v = vc + ((size_t)(j0 + t) * KVH + g) * D;
#pragma unroll
            for (int i = 0; i < PER; i++) o[i] += pt * __bfloat162float(v[lane + 32 * i]);
        }
        m = mnew;
    }
    if (lane == 0) {
        part[D] = m;
        part[D + 1] = l;
    }
#pragma unroll
    for (int i = 0; i < PER; i++) part[lane + 32 * i] = o[i];
}

extern "C" __global__ void attention_split_d32(float* p, const float* q, const bf16* k, const bf16* v, int rows, int H, int KVH, int length, int splits, float scale) { split_body<32>(p, q, k, v, rows, H, KVH, length, splits, scale); }
extern "C" __global__ void attention_split_d64(float* p, const float* q, const bf16* k, const bf16* v, int rows, int H, int KVH, int length, int splits, float scale) { split_body<64>(p, q, k, v, rows, H, KVH, length, splits, scale); }
extern "C" __global__ void attention_split_d96(float* p, const float* q, const bf16* k, const bf16* v, int rows, int H, int KVH, int length, int splits, float scale) { split_body<96>(p, q, k, v, rows, H, KVH, length, splits, scale); }
extern "C" __global__ void attention_split_d128(float* p, const float* q, const bf16* k, const bf16* v, int rows, int H, int KVH, int length, int splits, float scale) { split_body<128>(p, q, k, v, rows, H, KVH, length, splits, scale); }
extern "C" __global__ void attention_split_d256(float* p, const float* q, const bf16* k, const bf16* v, int rows, int H, int KVH, int length, int splits, float scale) { split_body<256>(p, q, k, v, rows, H, KVH, length, splits, scale); }

extern "C" __global__ void attention_merge(float* out, const float* partials, int rows, int H, int D, int splits) {
    int rh = blockIdx.x, c = threadIdx.x;
    if (c >= D) return;
    const float* base = partials + (size_t)rh * splits * (D + 2);
    float M = -INFINITY;
    for (int s = 0; s < splits; s++) {
        const float* p = base + (size_t)s * (D + 2);
        if (p[D + 1] > 0.f) M = fmaxf(M, p[D]);
    }
    float L = 0.f, o = 0.f;
    for (int s = 0; s < splits; s++) {
        const float* p = base + (size_t)s * (D + 2);
        if (p[D + 1] <= 0.f) continue;
        float w = __expf(p[D] - M);
        L += p[D + 1] * w;
        o += p[c] * w;
    }
    int r = rh / H, h = rh % H;
    out[(size_t)r * H * D + h * D + c] = o / L;
}
