// Causal attention of every row of a forward pass over its sequence's cache, split over the context
// (flash-decoding), then merged.
//   q: rows of q_stride floats whose first H * D are the heads (after RoPE); each sequence's cache: [cap][KVH][D] bf16 (token-major; the rows' own keys are
//   in it already); head h reads kv head h / (H / KVH).
// attention_rows_dD: one warp per (row, head, split of CHUNK2 slots); lanes own 32 slots at a time for the scores
//   (16-byte key loads) and D / 32 contiguous channels each for the output; writes an unnormalised partial
//   (max m, sum l, o[D]). partials: [rows * H][splits][D + 2] f32.
// attention_merge: out[r][h * D + c] = sum_s o_s[c] e^(m_s - M) / sum_s l_s e^(m_s - M).  Grid: (rows * H), block: D.
#include "common.cuh"

// Row r of the batch belongs to segment seg[r], whose cache for
//   this layer is at kptr[seg[r]], vptr[seg[r]] (device pointer tables); it attends slots [0, row_len[r]).
//   Grid: (rows * H, splits), block: 32; splits cover CHUNK2 slots each (empty ones write l = 0).
#define CHUNK2 128

template <int D>
__device__ void rows_body(float* partials, const float* q, const unsigned long long* kptr, const unsigned long long* vptr,
                          const int* seg, const int* row_len, int H, int KVH, int splits, float scale, int q_stride) {
    constexpr int PER = D / 32;
    int rh = blockIdx.x, s = blockIdx.y, lane = threadIdx.x;
    int r = rh / H, h = rh % H, g = h / (H / KVH);
    const bf16* kc = reinterpret_cast<const bf16*>(kptr[seg[r]]);
    const bf16* vc = reinterpret_cast<const bf16*>(vptr[seg[r]]);
    int n = row_len[r];
    int begin = s * CHUNK2, end = min(n, begin + CHUNK2);
    float* part = partials + ((size_t)rh * splits + s) * (D + 2);
    __shared__ float qs[D];
    const float* qr = q + (size_t)r * q_stride + h * D;
    for (int c = lane; c < D; c += 32) qs[c] = qr[c];
    __syncwarp();
    float m = -INFINITY, l = 0.f, o[PER];
#pragma unroll
    for (int i = 0; i < PER; i++) o[i] = 0.f;
    for (int j0 = begin; j0 < end; j0 += 32) {
        int j = j0 + lane;
        float score = -INFINITY;
        if (j < end) {
            const uint4* k = reinterpret_cast<const uint4*>(kc + ((size_t)j * KVH + g) * D);
            float acc = 0.f;
#pragma unroll
            for (int c8 = 0; c8 < D / 8; c8++) {
                uint4 raw = k[c8];
                const __nv_bfloat162* h2 = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    float2 f = __bfloat1622float2(h2[i]);
                    acc += qs[c8 * 8 + 2 * i] * f.x + qs[c8 * 8 + 2 * i + 1] * f.y;
                }
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
        for (int t = 0; t < count; t++) {
            float pt = __shfl_sync(0xffffffffu, p, t);
            const bf16* v = vc + ((size_t)(j0 + t) * KVH + g) * D + lane * PER;
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

#define ROWS_KERNEL(d) extern "C" __global__ void attention_rows_d##d(float* p, const float* q, const unsigned long long* kp, \
        const unsigned long long* vp, const int* seg, const int* len, int H, int KVH, int splits, float scale, int q_stride) { \
    rows_body<d>(p, q, kp, vp, seg, len, H, KVH, splits, scale, q_stride); }
ROWS_KERNEL(32)
ROWS_KERNEL(64)
ROWS_KERNEL(96)
ROWS_KERNEL(128)
ROWS_KERNEL(256)

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
