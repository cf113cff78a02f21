// Decode attention: every row of a forward pass that is not part of a prefill tile (attention_prefill.cu) attends
// over its sequence's cache, split over the context (flash-decoding), then the splits are merged.
//   q: rows of q_stride floats whose first H * D are the heads (after RoPE); each sequence's cache: [cap][KVH][D] bf16
//   (token-major; the rows' own keys are in it already); head h reads kv head h / (H / KVH).
//   rows_of: [P] the batch row of each decode row p; partials: [P * H][splits][D + 2] f32 (max m, sum l, o[D]).
// attention_rows_dD: one warp per (decode row, head, split of `chunk` slots, a multiple of 32 chosen by the host);
//   lanes own 32 slots at a time for the scores (16-byte key loads) and D / 32 contiguous channels each for the output.
// attention_gqa_dD_gG: one warp per (decode row, kv head, split) for the G query heads of the group (below).
// attention_pipelined_dD_gG: the same, the rows staged in shared memory by a producer warp (below).
// attention_merge: out[rows_of[p]][h * D + c] = sum_s o_s[c] e^(m_s - M) / sum_s l_s e^(m_s - M), in f32 or bf16.
//   Grid: P * H / (MERGE_WARPS / wpp) blocks, rounded up; block: 32 * MERGE_WARPS (below).
#include "common.cuh"
#include "split_attention.cuh"
#include "pipelined_attention.cuh"

// Row r of the batch belongs to segment seg[r], whose cache for
//   this layer is at kptr[seg[r]], vptr[seg[r]] (device pointer tables); it attends slots [0, row_len[r]).
//   Grid: (P * H, splits), block: 32; splits cover `chunk` slots each (empty ones write l = 0).

template <int D>
__device__ void rows_body(float* partials, const float* q, const unsigned long long* kptr, const unsigned long long* vptr,
                          const int* seg, const int* row_len, const int* rows_of, int H, int KVH, int splits,
                          float scale, int q_stride, int chunk) {
    int rh = blockIdx.x, s = blockIdx.y;
    int r = rows_of[rh / H], h = rh % H, g = h / (H / KVH);
    int n = row_len[r], begin = s * chunk, end = min(n, begin + chunk);
    warp_attend_slots<D>(partials + ((size_t)rh * splits + s) * (D + 2), q + (size_t)r * q_stride + h * D,
                         reinterpret_cast<const bf16*>(kptr[seg[r]]), reinterpret_cast<const bf16*>(vptr[seg[r]]), nullptr,
                         nullptr, g, KVH, begin, end, scale, [](int t) { return t; });
}

#define ROWS_KERNEL(d) extern "C" __global__ void attention_rows_d##d(float* p, const float* q, const unsigned long long* kp, \
        const unsigned long long* vp, const int* seg, const int* len, const int* rows_of, int H, int KVH, int splits, float scale, \
        int q_stride, int chunk) { rows_body<d>(p, q, kp, vp, seg, len, rows_of, H, KVH, splits, scale, q_stride, chunk); }
ROWS_KERNEL(32)
ROWS_KERNEL(64)
ROWS_KERNEL(96)
ROWS_KERNEL(128)
ROWS_KERNEL(256)

// attention_gqa_dD_gG: the same result as attention_rows_dD for the G query heads of a group at once, so each key and
//   value row is read once per kv head instead of G times. A block of GQA_WARPS warps takes (row, kv head, split);
//   its warps take `chunk` slots each and combine their partials in shared memory (fewer splits for the merge to
//   read). Same partials layout. Grid: (P * KVH, splits), block: 32 * GQA_WARPS, a split covering GQA_WARPS * chunk
//   slots. Built for the common (D, G); other shapes use attention_rows_dD.
template <int D, int G, bool PIPELINED = false>
__device__ void gqa_body(float* partials, const float* q, const unsigned long long* kptr, const unsigned long long* vptr,
                         const int* seg, const int* row_len, const int* rows_of, int H, int KVH, int splits,
                         float scale, int q_stride, int chunk, int* claims = nullptr, float* out = nullptr,
                         bf16* out_bf = nullptr) {
    int rg = blockIdx.x, s = blockIdx.y;
    int pr = rg / KVH, r = rows_of[pr], g = rg % KVH;
    float* part = partials + ((size_t)(pr * H + g * G) * splits + s) * (D + 2);
    const float* qrow = q + (size_t)r * q_stride + g * G * D;
    const bf16 *kc = reinterpret_cast<const bf16*>(kptr[seg[r]]), *vc = reinterpret_cast<const bf16*>(vptr[seg[r]]);
    auto slot_of = [](int t) { return t; };
    if constexpr (PIPELINED) {   // the row's slots in chunks that its splits' blocks claim (attention_pipelined)
        size_t at = (size_t)r * H * D + g * G * D;   // the group's heads in the row's output (one split)
        group_attend_pipelined<D, G>(part, qrow, kc, vc, nullptr, nullptr, g, KVH, row_len[r], claims + 2 * rg, splits,
                                     scale, slot_of, out ? out + at : nullptr, out_bf ? out_bf + at : nullptr);
    } else {
        group_attend_slots<D, G, true, false>(part, qrow, kc, vc, nullptr, nullptr, g, KVH, row_len[r], s, splits, chunk,
                                              scale, slot_of);
    }
}

#define GQA_KERNEL(d, g) extern "C" __global__ void attention_gqa_d##d##_g##g(float* p, const float* q, \
        const unsigned long long* kp, const unsigned long long* vp, const int* seg, const int* len, const int* rows_of, int H, \
        int KVH, int splits, float scale, int q_stride, int chunk) { \
    gqa_body<d, g>(p, q, kp, vp, seg, len, rows_of, H, KVH, splits, scale, q_stride, chunk); }
GQA_KERNEL(32, 2)
GQA_KERNEL(32, 4)
GQA_KERNEL(64, 2)
GQA_KERNEL(64, 4)
GQA_KERNEL(64, 8)
GQA_KERNEL(128, 2)
GQA_KERNEL(128, 4)
GQA_KERNEL(128, 7)
GQA_KERNEL(128, 8)

// attention_pipelined_dD_gG: attention_gqa's result by group_attend_pipelined (pipelined_attention.cuh, as dspp's
//   selected rows): a block of G consumer warps and a producer warp per (row, kv head, split) streams the row's slots
//   [0, row_len) in chunks staged by asynchronous copies, which its splits share through claims[2 (p KVH + g)] (zero
//   before the first launch, each launch leaves them zero), so the host sizes the grid to what the device holds at
//   once, whatever the rows' lengths. Caches in device memory only (cp.async). Same partials layout.
//   Grid: (P * KVH, splits), block: 32 (G + 1), dynamic shared memory pipelined_shared_bytes(D). Built for G = 2, 4
//   (3 G <= 16) at D = 32, 64, 128: (32, 2) is the tiny test models' shape, so their golden decodes run it. The rows
//   are decoded as for attention_gqa_dD_gG (gqa_body, PIPELINED). With one split and out or out_bf given, the
//   outputs go there as attention_merge would write them (no merge launch: at 64 rows and more a wave of blocks holds
//   every (row, kv head) with one split, and the merge of 64 rows took 5 us a layer).
// Why: attention_gqa's warps hold one chunk's loads in registers; at batch 8 and 4K (H100) it read the caches at
//   about half the copy bandwidth, where the pipelined kernel reads selected rows at 72-85%.
#define PIPELINED_KERNEL(d, g) extern "C" __global__ void __launch_bounds__(32 * (g + 1)) \
        attention_pipelined_d##d##_g##g(float* p, const float* q, const unsigned long long* kp, \
        const unsigned long long* vp, const int* seg, const int* len, const int* rows_of, int H, int KVH, int splits, \
        float scale, int q_stride, int* claims, float* out, bf16* out_bf) { \
    gqa_body<d, g, true>(p, q, kp, vp, seg, len, rows_of, H, KVH, splits, scale, q_stride, 0, claims, out, out_bf); }
PIPELINED_KERNEL(32, 2)
PIPELINED_KERNEL(32, 4)
PIPELINED_KERNEL(64, 2)
PIPELINED_KERNEL(64, 4)
PIPELINED_KERNEL(128, 2)
PIPELINED_KERNEL(128, 4)

// a lane's channels lane, lane + 32, ... (below D) of a merged head, o / l, at out[at + c] (f32) or out_bf (bf16)
template <int PER>
__device__ __forceinline__ void store_merged(float* out, bf16* out_bf, size_t at, const float* o, float l, int D,
                                             int lane) {
#pragma unroll
    for (int i = 0; i < PER; i++) {
        int c = lane + 32 * i;
        if (c >= D) continue;
        if (out_bf) out_bf[at + c] = __float2bfloat16(o[i] / l);
        else out[at + c] = o[i] / l;
    }
}

// attention_merge: a (row p, head h) pair's splits merged by `wpp` warps (1 or MERGE_WARPS) of a block of MERGE_WARPS
// warps (so a block merges MERGE_WARPS / wpp pairs): warp w of a pair takes splits w, w + wpp, ...; each lane owns
// channels lane, lane + 32, ... (coalesced 128-byte loads of a split's o). Each warp sums relative to its own splits'
// maximum; the pair's warps are then combined in shared memory, rescaled by e^(M_w - M). out (f32) or out_bf (bf16,
// when not null: the output product's operand, so no conversion follows) at [rows_of[p]][h * D + c]; D <= MERGE_MAX_D.
// One warp a pair where there are enough pairs to fill the device (a block of 4 D threads a pair took 15 us a layer at
// 64 rows x 32 heads and one split on the H100: four waves of 512-thread blocks that each merged one pair).
#define MERGE_WARPS 4
#define MERGE_MAX_D 256
extern "C" __global__ void attention_merge(float* out, bf16* out_bf, const float* partials, const int* rows_of,
                                           int pairs, int H, int D, int splits, int wpp) {
    constexpr int PER = MERGE_MAX_D / 32;
    __shared__ float wo[MERGE_WARPS][MERGE_MAX_D], wm[MERGE_WARPS], wl[MERGE_WARPS];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, w = warp % wpp;
    int rh = blockIdx.x * (MERGE_WARPS / wpp) + warp / wpp;
    bool live = rh < pairs;
    const float* base = partials + (size_t)(live ? rh : 0) * splits * (D + 2);
    if (splits == 1) {   // o / l, read at once (the general path's weight e^(m - m) is 1): one round trip, not three
        if (!live) return;
        float o[PER], l = base[D + 1];
#pragma unroll
        for (int i = 0; i < PER; i++) o[i] = lane + 32 * i < D ? base[lane + 32 * i] : 0.f;
        store_merged<PER>(out, out_bf, (size_t)rows_of[rh / H] * H * D + (rh % H) * D, o, l, D, lane);
        return;
    }
    // this warp's splits' maximum, over the splits that saw a slot (l > 0)
    float m = -INFINITY;
    for (int s = w + wpp * lane; live && s < splits; s += 32 * wpp) {
        const float* part = base + (size_t)s * (D + 2);
        if (part[D + 1] > 0.f) m = fmaxf(m, part[D]);
    }
    m = warp_max(m);
    float l = 0.f, o[PER];
#pragma unroll
    for (int i = 0; i < PER; i++) o[i] = 0.f;
    for (int j0 = w; live && j0 < splits; j0 += 32 * wpp) {
        int s = j0 + wpp * lane;
        float weight = 0.f;
        if (s < splits) {
            const float* part = base + (size_t)s * (D + 2);
            weight = part[D + 1] > 0.f ? __expf(part[D] - m) : 0.f;
            l += part[D + 1] * weight;
        }
        int count = min(32, (splits - j0 + wpp - 1) / wpp);
#pragma unroll 4
        for (int t = 0; t < count; t++) {
            float wt = __shfl_sync(0xffffffffu, weight, t);
            const float* part = base + (size_t)(j0 + wpp * t) * (D + 2);
#pragma unroll
            for (int i = 0; i < PER; i++) {
                int c = lane + 32 * i;
                if (c < D) o[i] += part[c] * wt;
            }
        }
    }
    l = warp_sum(l);
    if (wpp > 1) {   // the pair's warps combined: every warp's (m, l, o) to shared memory, warp 0 of the pair sums
        if (lane == 0) {
            wm[warp] = m;
            wl[warp] = l;
        }
#pragma unroll
        for (int i = 0; i < PER; i++) if (lane + 32 * i < D) wo[warp][lane + 32 * i] = o[i];
        __syncthreads();
        if (w != 0) return;
        float M = -INFINITY;
        for (int v = 0; v < wpp; v++) if (wl[warp + v] > 0.f) M = fmaxf(M, wm[warp + v]);
        l = 0.f;
#pragma unroll
        for (int i = 0; i < PER; i++) o[i] = 0.f;
        for (int v = 0; v < wpp; v++) {
            float e = wl[warp + v] > 0.f ? __expf(wm[warp + v] - M) : 0.f;
            l += wl[warp + v] * e;
#pragma unroll
            for (int i = 0; i < PER; i++) if (lane + 32 * i < D) o[i] += wo[warp + v][lane + 32 * i] * e;
        }
    }
    if (live) store_merged<PER>(out, out_bf, (size_t)rows_of[rh / H] * H * D + (rh % H) * D, o, l, D, lane);
}
