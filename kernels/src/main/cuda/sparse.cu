// DoubleSparse++ decode attention on the device (docs/algorithm.md; the CPU reference is kv/SparseKvCache): for a
// decode row p of a sparse layer, the approximate score of every candidate from the label cache, the top-k of the
// candidates, then exact attention over sinks + selected + window, split and merged like the dense decode kernels.
// Device placement: the whole K/V store stays on the device, the window is its last W slots.
//   qkv rows: [q: H x D | k: KVH x D | v] f32 after RoPE (kv_append_rope writes the rotated keys back)
//   labels of a segment's layer: [cap][H * r] fp16, label[slot][h * r + i] = k[g * D + channels[h * r + i]] (g: h's kv head)
//   channels of a segment's layer: [H * r] ints; lptr / chptr: this layer's pointer tables by segment (0: dense)
//   sparse rows p < P of a layer, described by sp[p][SP_FIELDS] ints: the batch row, its candidates count (slots
//   [sinks, sinks + cand)), its budget k, sinks S, window W, GQA selection mode (0 per head, 1 max, 2 mean), label
//   channels r; scores: [P * H][max_cand] f32; selected: [P * H][max_k] slots
#include "common.cuh"
#include "split_attention.cuh"
#include <cuda_fp16.h>

#define SP_FIELDS 7
enum { SP_ROW, SP_CAND, SP_K, SP_SINKS, SP_WINDOW, SP_MODE, SP_R };

// label_append: the label channels of every row's (rotated) key into its segment's label cache at its slot; seg_r:
//   [segments] label channels r of each segment's policy. Grid: (rows, H), block: the largest r.
extern "C" __global__ void label_append(const float* qkv, const unsigned long long* lptr,
                                        const unsigned long long* chptr, const int* seg, const int* slot,
                                        const int* seg_r, int H, int KVH, int D, int row_stride) {
    int row = blockIdx.x, h = blockIdx.y, i = threadIdx.x;
    __half* labels = reinterpret_cast<__half*>(lptr[seg[row]]);
    int r = seg_r[seg[row]];
    if (labels == nullptr || i >= r) return;
    const int* ch = reinterpret_cast<const int*>(chptr[seg[row]]);
    int g = h / (H / KVH);
    float k = qkv[(size_t)row * row_stride + (size_t)(H + g) * D + ch[h * r + i]];
    labels[(size_t)slot[row] * H * r + h * r + i] = __float2half_rn(k);
}

// sparse_scores: scores[p][h][c] = sum_i q[h][channels[h][i]] * label[sinks + c][h][i] for c < cand.
//   Grid: (P * H, ceil(max_cand / 256)), block: 256.
extern "C" __global__ void sparse_scores(float* scores, const float* q, const unsigned long long* lptr,
                                         const unsigned long long* chptr, const int* seg, const int* sp, int H, int D,
                                         int q_stride, int max_cand) {
    __shared__ float qc[64];
    int ph = blockIdx.x, p = ph / H, h = ph % H;
    const int* d = sp + p * SP_FIELDS;
    int row = d[SP_ROW], r = d[SP_R];
    const int* ch = reinterpret_cast<const int*>(chptr[seg[row]]);
    if (threadIdx.x < r) qc[threadIdx.x] = q[(size_t)row * q_stride + h * D + ch[h * r + threadIdx.x]];
    __syncthreads();
    int c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= d[SP_CAND]) return;
    const __half* lab = reinterpret_cast<const __half*>(lptr[seg[row]]) + (size_t)(d[SP_SINKS] + c) * H * r + h * r;
    float s = 0.f;
    if ((r & 7) == 0) {   // 16-byte loads: every label of the head in flight at once
        for (int i = 0; i < r; i += 8) {
            uint4 raw = *reinterpret_cast<const uint4*>(lab + i);
            const __half2* h2 = reinterpret_cast<const __half2*>(&raw);
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float2 f = __half22float2(h2[e]);
                s += qc[i + 2 * e] * f.x + qc[i + 2 * e + 1] * f.y;
            }
        }
    } else {
        for (int i = 0; i < r; i++) s += qc[i] * __half2float(lab[i]);
    }
    scores[(size_t)ph * max_cand + c] = s;
}

// exclusive prefix sum of v over the block's threads in thread order (buf: blockDim.x ints of shared memory)
__device__ int block_exclusive_scan(int v, int* buf) {
    buf[threadIdx.x] = v;
    __syncthreads();
    for (int o = 1; o < (int)blockDim.x; o <<= 1) {
        int add = threadIdx.x >= o ? buf[threadIdx.x - o] : 0;
        __syncthreads();
        buf[threadIdx.x] += add;
        __syncthreads();
    }
    int r = buf[threadIdx.x] - v;
    __syncthreads();
    return r;
}

// sparse_topk: the k = min(budget[p], cand[p]) largest scores of a (row, head), ties to the lower candidate, as
//   kv/TopK does; written as slots in ascending order. mode 0: per query head; 1 / 2: one selection per kv head from
//   the group's max / sum of scores, by the block of the group's first head, written for each head of the group.
//   The k-th largest is found by radix select on the scores' order keys (four histogram passes). Grid: (P * H),
//   block: 1024.
extern "C" __global__ void sparse_topk(int* selected, float* scores, const int* sp, int H, int KVH, int max_cand,
                                       int max_k) {
    __shared__ int offsets[1024];
    int G = H / KVH, p = blockIdx.x / H, h0 = blockIdx.x % H;
    const int* d = sp + p * SP_FIELDS;
    int mode = d[SP_MODE], sinks = d[SP_SINKS];
    if (mode != 0 && h0 % G != 0) return;
    int n = d[SP_CAND], k = min(d[SP_K], n);
    float* s = scores + (size_t)(p * H + h0) * max_cand;
    if (mode != 0) {   // the group's scores combined into its first head's row
        for (int c = threadIdx.x; c < n; c += blockDim.x) {
            float v = s[c];
            for (int j = 1; j < G; j++) {
                float o = scores[(size_t)(p * H + h0 + j) * max_cand + c];
                v = mode == 1 ? fmaxf(v, o) : v + o;
            }
            s[c] = v;
        }
        __syncthreads();
    }
    // the k-th largest key, by radix select over its four bytes (a 256-bin histogram per pass, highest byte first):
    // lo ends as that key and ties_taken as how many of the keys equal to it the selection takes
    __shared__ int hist[256];
    __shared__ unsigned prefix_s;
    __shared__ int need_s;
    unsigned prefix = 0, mask = 0;
    int need = k;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int b = threadIdx.x; b < 256; b += blockDim.x) hist[b] = 0;
        __syncthreads();
        for (int base = 0; base < n; base += blockDim.x) {
            // lanes with the same digit add once (scores cluster in a few top bytes: per-lane atomics would queue)
            int c = base + threadIdx.x;
            unsigned key = c < n ? order_key(s[c]) : 0u;
            unsigned digit = c < n && (key & mask) == prefix ? (key >> shift) & 255 : 256u;
            unsigned peers = __match_any_sync(0xffffffffu, digit);
            if (digit < 256 && (threadIdx.x & 31) == __ffs(peers) - 1) atomicAdd(&hist[digit], __popc(peers));
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            int d = 255;
            while (d > 0 && hist[d] < need) need -= hist[d--];
            prefix_s = prefix | ((unsigned)d << shift);
            need_s = need;
        }
        __syncthreads();
        prefix = prefix_s;
        need = need_s;
        mask |= 255u << shift;
        __syncthreads();
    }
    unsigned lo = prefix;
    int ties_taken = need;
    // each thread takes a contiguous range of candidates, so a prefix sum over threads keeps index order
    int per = (n + blockDim.x - 1) / blockDim.x, from = threadIdx.x * per, to = min(n, from + per);
    int mine = 0, ties = 0;
    for (int c = from; c < to; c++) {
        unsigned key = order_key(s[c]);
        mine += key > lo;
        ties += key == lo;
    }
    // exclusive prefix sums of ties, then of the picks (ties limited to the first ties_taken by index)
    int ties_before = block_exclusive_scan(ties, offsets);
    int my_ties = max(0, min(ties, ties_taken - ties_before));
    int at = block_exclusive_scan(mine + my_ties, offsets);
    int heads = mode == 0 ? 1 : G;
    int tie_left = my_ties;
    for (int c = from; c < to; c++) {
        unsigned key = order_key(s[c]);
        bool take = key > lo || (key == lo && tie_left > 0);
        if (key == lo && take) tie_left--;
        if (!take) continue;
        for (int j = 0; j < heads; j++) selected[(size_t)(p * H + h0 + j) * max_k + at] = sinks + c;
        at++;
    }
}

// sparse_attention_dD: attention of sparse row p, head h over its m = S + k + W slots: sinks [0, S), the selected
//   slots, the window [n - W, n) (n = row_len of its batch row); one warp per (p, h, split of `chunk` of the m),
//   partials [P * H][splits][D + 2] as the dense decode kernels write them (attention_merge finishes, with the
//   sparse rows' batch rows as its rows_of).
//   Grid: (P * H, splits), block: 32.
template <int D>
__device__ void sparse_attention_body(float* partials, const float* q, const unsigned long long* kptr,
                                      const unsigned long long* vptr, const int* seg, const int* row_len,
                                      const int* sp, const int* selected, int H, int KVH, int splits, float scale,
                                      int q_stride, int chunk, int max_k) {
    int ph = blockIdx.x, s = blockIdx.y;
    int p = ph / H, h = ph % H, g = h / (H / KVH);
    const int* d = sp + p * SP_FIELDS;
    int row = d[SP_ROW], sinks = d[SP_SINKS], window = d[SP_WINDOW];
    int n = row_len[row], k = min(d[SP_K], d[SP_CAND]), m = sinks + k + window;
    const int* sel = selected + (size_t)ph * max_k;
    warp_attend_slots<D>(partials + ((size_t)ph * splits + s) * (D + 2), q + (size_t)row * q_stride + h * D,
                         reinterpret_cast<const bf16*>(kptr[seg[row]]), reinterpret_cast<const bf16*>(vptr[seg[row]]),
                         g, KVH, s * chunk, min(m, (s + 1) * chunk), scale, [=](int t) {
                             return t < sinks ? t : t < sinks + k ? sel[t - sinks] : n - window + (t - sinks - k);
                         });
}

#define SPARSE_KERNEL(dim) extern "C" __global__ void sparse_attention_d##dim(float* partials, const float* q, \
        const unsigned long long* kp, const unsigned long long* vp, const int* seg, const int* len, const int* sp, \
        const int* selected, int H, int KVH, int splits, float scale, int q_stride, int chunk, int max_k) { \
    sparse_attention_body<dim>(partials, q, kp, vp, seg, len, sp, selected, H, KVH, splits, scale, q_stride, chunk, \
                               max_k); }
SPARSE_KERNEL(32)
SPARSE_KERNEL(64)
SPARSE_KERNEL(128)
