// DoubleSparse++'s selection for the sparse decode rows of a layer (layouts: sparse_rows.cuh): the approximate score
// of every candidate from the label cache, then the top-k of the candidates.
//   q: rows of q_stride floats whose first H * D are the heads (after RoPE); lptr / chptr / sptr: this layer's label,
//   channel and scale tables by segment; sparse rows p < P of a layer, described by sp[p][SP_FIELDS] ints
//   (sparse_rows.cuh); scores: [P * H][max_cand] f32; selected: [P * H][max_k] slots
// Two ways to the selection, both ranking the same floats (LabelCache::score's) and picking by the same radix select:
//   ds, as Double Sparsity publishes it: sparse_scores writes every candidate's score, sparse_topk reads them back;
//   dspp: sparse_select, one block per (row, selection) that scores into shared memory and selects there (the scores
//   never reach global memory; a group's heads combined in registers for a shared selection).
#include "common.cuh"
#include "sparse_rows.cuh"
#include <cuda_fp16.h>
#include <cooperative_groups.h>

// q's label channels of a selection's heads (up to 8 heads of up to 64 channels) as the scorers read them. 16-bit
// labels score in floats: s += q_c * label_c channel after channel, each product rounded before its addition (no
// fused multiply-add). 8- and 4-bit labels score in integers: each head's channels quantised to int8 (scale max|q_c| /
// 127, q_c * (127 / max) rounded to the nearest, ties to even), the score (float) sum_c qi_c v_c (exact) * (q's scale *
// the label's). Both are kv/SparseKvCache#select's arithmetic, so ds, dspp and the CPU rank the same floats.
struct LabelQuery {
    float f[8 * 64];         // [heads][r] (a group's summed query in the first head's place: summed_query)
    signed char i[8 * 64];   // [heads][r]: f quantised (read for 8- and 4-bit labels)
    float scale[8];          // a head's quantisation scale, max|f| / 127
    int sum[8];              // sum of a head's i (4-bit labels are dotted as label + 8, then 8 sum taken off)
};

// s plus 8 of q's label channels times 8 fp16 labels of a candidate (one 16-byte read-only load: ld.global.nc, the
// labels reached through a pointer table would otherwise be read by generic loads)
__device__ __forceinline__ float label_chunk(float s, uint4 raw, const float* qc) {
    const __half2* h2 = reinterpret_cast<const __half2*>(&raw);
#pragma unroll
    for (int e = 0; e < 4; e++) {
        float2 f = __half22float2(h2[e]);
        s = __fadd_rn(s, __fmul_rn(qc[2 * e], f.x));
        s = __fadd_rn(s, __fmul_rn(qc[2 * e + 1], f.y));
    }
    return s;
}

// d plus 4 int8 labels (a word) dotted with 4 int8 query channels
__device__ __forceinline__ int label_dot8(int d, unsigned w, int q4) {
    return __dp4a((int)w, q4, d);
}

// d plus 16 int8 labels (a 16-byte load) dotted with 16 int8 query channels (q4: four words of them), word after word
__device__ __forceinline__ int label_dot8(int d, uint4 w, const int* q4) {
    d = label_dot8(label_dot8(d, w.x, q4[0]), w.y, q4[1]);
    return label_dot8(label_dot8(d, w.z, q4[2]), w.w, q4[3]);
}

// Label e (0 .. 7) of a 32-bit word of 4-bit labels (sparse_rows.cuh: bits 4e .. 4e + 3, two's complement)
__device__ __forceinline__ int label_nibble(unsigned w, int e) {
    return (int)(w << (28 - 4 * e)) >> 28;
}

// d plus 8 4-bit labels (a word) plus 8 each, dotted with 8 int8 query channels (qe: channels 0, 2, 4, 6 in its bytes,
// qo: 1, 3, 5, 7; nibble_query): the labels' even and odd nibbles as bytes in two logic operations, two dp4a
__device__ __forceinline__ int label_dot4(int d, unsigned w, int qe, int qo) {
    unsigned lo = (w & 0x0F0F0F0Fu) ^ 0x08080808u, hi = ((w >> 4) & 0x0F0F0F0Fu) ^ 0x08080808u;
    asm("dp4a.u32.s32 %0, %1, %2, %0;" : "+r"(d) : "r"(lo), "r"(qe));
    asm("dp4a.u32.s32 %0, %1, %2, %0;" : "+r"(d) : "r"(hi), "r"(qo));
    return d;
}

// The int8 channels 8 w .. 8 w + 7 of a head's quantised query (qi, 4-byte aligned) as label_dot4 takes them
__device__ __forceinline__ void nibble_query(const signed char* qi, int w, int* qe, int* qo) {
    int a = reinterpret_cast<const int*>(qi)[2 * w], b = reinterpret_cast<const int*>(qi)[2 * w + 1];
    *qe = (int)__byte_perm(a, b, 0x6420);
    *qo = (int)__byte_perm(a, b, 0x7531);
}

// An integer label score as a float: (float) d * (q's scale * the label's), each product rounded
__device__ __forceinline__ float label_int_score(int d, float q_scale, float label_scale) {
    return __fmul_rn((float)d, __fmul_rn(q_scale, label_scale));
}

// A layer's label cache as one sparse row reads it (sparse_rows.cuh's header): element offsets count labels, not bytes
// (4-bit rows: (r + 1) / 2 bytes, rows * of them a slot).
struct LabelCache {
    const void* values;
    const __half* scales;   // 8- and 4-bit only
    int stride, bits, cap, group, rows;   // stride: rows * r labels a slot; group: query heads a label row serves

    __device__ LabelCache(unsigned long long values_ptr, unsigned long long scales_ptr, int H, int r, int bits_,
                          int cap_, int group_)
        : values(reinterpret_cast<const void*>(values_ptr)), scales(reinterpret_cast<const __half*>(scales_ptr)),
          stride(H / group_ * r), bits(bits_), cap(cap_), group(group_), rows(H / group_) {}

    // query head j of lq (its label channels) times the labels of head h at a slot (r of them): sum_i q_i * label_i
    __device__ __forceinline__ float score(const LabelQuery& lq, int j, int slot, int h, int r) const {
        if (group > 1) h /= group;   // its label row
        size_t at = (size_t)slot * stride + h * r;
        if (bits == 16) {
            const __half* lab = reinterpret_cast<const __half*>(values) + at;
            const float* qc = lq.f + j * r;
            float s = 0.f;
            if ((r & 7) == 0) {   // 16-byte loads: every label of the head in flight at once
                for (int i = 0; i < r; i += 8) s = label_chunk(s, __ldg(reinterpret_cast<const uint4*>(lab + i)), qc + i);
            } else {
                for (int i = 0; i < r; i++) s = __fadd_rn(s, __fmul_rn(qc[i], __half2float(lab[i])));
            }
            return s;
        }
        const signed char* qi = lq.i + j * r;
        float scale = __half2float(__ldg(scales + (size_t)h * cap + slot));
        int d = 0;
        if (bits == 8) {
            const signed char* lab = reinterpret_cast<const signed char*>(values) + at;
            if ((r & 15) == 0) {
                for (int i = 0; i < r; i += 16) {
                    d = label_dot8(d, __ldg(reinterpret_cast<const uint4*>(lab + i)),
                                   reinterpret_cast<const int*>(qi + i));
                }
            } else {
                for (int i = 0; i < r; i++) d += qi[i] * lab[i];
            }
        } else {   // 4-bit: a row of (r + 1) / 2 bytes
            const unsigned char* lab = reinterpret_cast<const unsigned char*>(values)
                                       + ((size_t)slot * rows + h) * ((r + 1) >> 1);
            if ((r & 7) == 0) {   // words of 8 labels
                for (int i = 0; i < r; i += 8) {
                    int qe, qo;
                    nibble_query(qi, i / 8, &qe, &qo);
                    d = label_dot4(d, __ldg(reinterpret_cast<const unsigned*>(lab) + i / 8), qe, qo);
                }
                d -= 8 * lq.sum[j];
            } else {
                for (int i = 0; i < r; i++) d += qi[i] * label_nibble(__ldg(lab + i / 2), i & 1);   // a byte's two
            }
        }
        return label_int_score(d, lq.scale[j], scale);
    }
};

// The label channels of q for the selection's heads h0 .. h0 + heads - 1: qc[j * r + i] = q[(h0 + j) * D +
// channels[(h0 + j) * r + i]] (qrow: the row's q, channels: the layer's [H * r] table)
__device__ void label_queries(float* qc, const float* qrow, const int* channels, int h0, int heads, int r, int D) {
    for (int i = threadIdx.x; i < heads * r; i += blockDim.x) {
        int h = h0 + i / r;
        qc[i] = qrow[h * D + channels[h * r + i % r]];
    }
}

// Whether a selection scores with its group's summed query: a shared mean selection (mode 2) whose heads share one
// label row (qk-group: labels.group == heads) does, qc[i] = ((qc[i] + qc[r + i]) + ...) + qc[(heads - 1) r + i] in
// place of its first head's channels, then scored as one head: the same sum as the heads' scores added (16-bit
// labels; quantised labels score the summed query's quantisation), in kv/SparseKvCache's order, with a quarter of the
// products for groups of four. Call with the whole block after label_queries and a barrier. (In place, so the score
// loops keep reading the shared array at fixed offsets: with the sum elsewhere and the query picked by pointer, the
// per-head rows' selection slowed from 151 to 178 us at batch 8, 32K on the H100.)
__device__ bool summed_query(float* qc, int label_group, int mode, int heads, int r) {
    if (mode != 2 || heads < 2 || label_group != heads) return false;
    for (int i = threadIdx.x; i < r; i += blockDim.x) {   // thread i alone reads and writes channel i
        float s = qc[i];
        for (int j = 1; j < heads; j++) s += qc[j * r + i];
        qc[i] = s;
    }
    __syncthreads();
    return true;
}

// lq.i, lq.scale and lq.sum of heads 0 .. heads - 1 (at most 8: the host routes larger groups to sparse_scores, which
// quantises one head) from lq.f (LabelQuery's quantisation, kv/LabelQueries), a warp a head (or loops)
__device__ void quantise_label_queries(LabelQuery& lq, int heads, int r) {
    int lane = threadIdx.x & 31;
    for (int j = threadIdx.x >> 5; j < heads; j += blockDim.x >> 5) {
        const float* f = lq.f + j * r;
        float m = 0.f;
        for (int i = lane; i < r; i += 32) m = fmaxf(m, fabsf(f[i]));
        m = warp_max(m);
        float inv = m > 0.f ? 127.f / m : 0.f;
        int sum = 0;
        for (int i = lane; i < r; i += 32) {
            int v = max(-127, min(127, __float2int_rn(__fmul_rn(f[i], inv))));   // NaN: 0; inv infinite: +-127
            lq.i[j * r + i] = (signed char)v;
            sum += v;
        }
        for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
        if (lane == 0) {
            lq.scale[j] = m / 127.f;
            lq.sum[j] = sum;
        }
    }
}

// A selection's LabelQuery from its row of q: label_queries, summed_query, and for labels of 8 and 4 bits the
// quantisation; returns whether the group's summed query stands in for its heads. Call with the whole block.
__device__ bool load_label_query(LabelQuery& lq, const float* qrow, const int* channels, int h0, int heads, int r,
                                 int D, int label_group, int mode, int bits) {
    label_queries(lq.f, qrow, channels, h0, heads, r, D);
    __syncthreads();
    bool summed = summed_query(lq.f, label_group, mode, heads, r);
    if (bits < 16) {
        quantise_label_queries(lq, summed ? 1 : heads, r);
        __syncthreads();
    }
    return summed;
}

// the group's heads' scores combined for a shared selection: mode 1 max, mode 2 sum (the mean's order)
__device__ __forceinline__ float combine_scores(int mode, float a, float b) {
    return mode == 1 ? fmaxf(a, b) : a + b;
}

// sparse_scores: scores[p][h][c] = sum_i q[h][channels[h][i]] * label[sinks + c][h][i] for c < cand; for a mean
//   selection over label rows a kv head, the group's first head gets the summed query's score (summed_query) and
//   the others 0, so that sparse_topk's sum of the group's rows is that score exactly.
//   Grid: (P * H, ceil(max_cand / 256)), block: 256.
extern "C" __global__ void sparse_scores(float* scores, const float* q, const unsigned long long* lptr,
                                         const unsigned long long* chptr, const unsigned long long* sptr,
                                         const int* seg, const int* sp, int H, int D, int q_stride, int max_cand) {
    __shared__ LabelQuery lq;
    int ph = blockIdx.x, p = ph / H, h = ph % H;
    const int* d = sp + p * SP_FIELDS;
    int row = d[SP_ROW], r = d[SP_R], lg = d[SP_LGROUP];
    bool summed = d[SP_MODE] == 2 && lg > 1;
    int h0 = summed ? h - h % lg : h, heads = summed ? lg : 1;
    load_label_query(lq, q + (size_t)row * q_stride, reinterpret_cast<const int*>(chptr[seg[row]]), h0, heads, r, D,
                     lg, d[SP_MODE], d[SP_BITS]);   // summed exactly when `summed`
    int c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= d[SP_CAND]) return;
    LabelCache labels(lptr[seg[row]], sptr[seg[row]], H, r, d[SP_BITS], d[SP_CAP], lg);
    scores[(size_t)ph * max_cand + c] = h != h0 ? 0.f : labels.score(lq, 0, d[SP_SINKS] + c, h0, r);
}

// Top-k by radix select, in parts that one block (select_top_k) or a cluster of blocks (sparse_select_cluster)
// put together. Order: the larger score first, ties to the lower candidate, as kv/TopK does. Call each part with the
// whole block (a multiple of 32 threads, at most 1024).
//   1. The k-th largest key by radix select on the scores' order keys: four 256-bin histogram passes, highest byte
//      first; after the first, only the keys still matching the prefix count, and warps with none of them skip.
//   2. The picks in index order: each warp owns a contiguous range of candidates (read in coalesced chunks of 32) and
//      counts its keys above the k-th and its ties by ballot; a scan over the warps gives each its first output
//      position and how many ties it takes; a second sweep writes them.
//   (sparse_select first tries a guessed threshold that leaves a short list of candidates for these parts:
//   select_top_k_guessed.)

// A candidate's order key: from a score, or as stored (the fused kernels keep keys, not scores, in shared memory)
__device__ __forceinline__ unsigned key_of(const float* s, int c) { return order_key(s[c]); }
__device__ __forceinline__ unsigned key_of(const unsigned* s, int c) { return s[c]; }

// hist[digit] += how many of s[0, n) have (key & mask) == prefix and that digit at `shift`. Four keys a thread in
// flight at once: each key's chain (load, ballot, shuffle, add) is short, so independent ones hide each other's latency.
#define HIST_UNROLL 4
template <typename T>
__device__ void count_digits(int* hist, const T* s, int n, unsigned mask, unsigned prefix, int shift) {
    int lane = threadIdx.x & 31;
    for (int base = 0; base < n; base += HIST_UNROLL * blockDim.x) {
        unsigned key[HIST_UNROLL];
#pragma unroll
        for (int u = 0; u < HIST_UNROLL; u++) {
            int c = base + u * blockDim.x + threadIdx.x;
            key[u] = c < n ? key_of(s, c) : 0u;
        }
#pragma unroll
        for (int u = 0; u < HIST_UNROLL; u++) {
            int c = base + u * blockDim.x + threadIdx.x;
            bool counts = c < n && (key[u] & mask) == prefix;
            unsigned voters = __ballot_sync(0xffffffffu, counts);
            if (voters == 0) continue;
            // a warp's counting keys mostly share one digit in the first passes (scores fall in a few top bytes): one
            // add for the warp then (per-lane atomics on one bin would queue), else an add per lane. Grouping the lanes
            // by __match_any_sync instead measured 44.1 against 34.4 us for a 32K-key top-k by 1024 threads on the
            // H100 (dev/cuda/select_bench.cu).
            unsigned leader = __ffs(voters) - 1, digit = (key[u] >> shift) & 255;
            unsigned first = __shfl_sync(0xffffffffu, digit, leader);
            if (__all_sync(0xffffffffu, !counts || digit == first)) {
                if (lane == leader) atomicAdd(&hist[first], __popc(voters));
            } else if (counts) {
                atomicAdd(&hist[digit], 1);
            }
        }
    }
}

// By one warp: the digit at which the count from the top of hist reaches `need`; *prefix gets it at `shift`, *need
// what is still needed within it. Lane l reads digits 255 - 8l - j, j < 8.
__device__ void pick_digit(const int* hist, int need, unsigned prefix, int shift, unsigned* prefix_out, int* need_out) {
    int lane = threadIdx.x & 31, cnt[8], total = 0;
#pragma unroll
    for (int j = 0; j < 8; j++) {
        cnt[j] = hist[255 - 8 * lane - j];
        total += cnt[j];
    }
    int incl = total;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        int t = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += t;
    }
    unsigned reach = __ballot_sync(0xffffffffu, incl >= need);
    int at = reach ? __ffs(reach) - 1 : 31;
    if (lane == at) {
        int left = need - (incl - total), j = 0;
        while (j < 7 && cnt[j] < left) left -= cnt[j++];
        *prefix_out = prefix | ((unsigned)(255 - 8 * at - j) << shift);
        *need_out = left;
    }
}

// The range of s[0, n) this warp owns in the picking sweeps: [*from, *to), chunks of 32
__device__ __forceinline__ void warp_range(int n, int* from, int* to) {
    int warps = blockDim.x >> 5, per = (n + warps * 32 - 1) / (warps * 32) * 32;
    *from = (threadIdx.x >> 5) * per;
    *to = min(n, *from + per);
}

// The block's keys above lo and equal to it among s[0, n), per warp into warp_above / warp_ties (32 ints each of
// shared memory); returns the block's totals in *above, *ties (every thread).
template <typename T>
__device__ void count_picks(const T* s, int n, unsigned lo, int* warp_above, int* warp_ties, int* above, int* ties) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5, from, to;
    warp_range(n, &from, &to);
    int a = 0, t = 0;
    for (int c0 = from; c0 < to; c0 += 32) {
        int c = c0 + lane;
        unsigned key = c < to ? key_of(s, c) : 0u;
        a += __popc(__ballot_sync(0xffffffffu, c < to && key > lo));
        t += __popc(__ballot_sync(0xffffffffu, c < to && key == lo));
    }
    if (lane == 0) {
        warp_above[warp] = a;
        warp_ties[warp] = t;
    }
    __syncthreads();
    a = lane < warps ? warp_above[lane] : 0;
    t = lane < warps ? warp_ties[lane] : 0;
    *above = __reduce_add_sync(0xffffffffu, a);
    *ties = __reduce_add_sync(0xffffffffu, t);
}

// Writes the block's picks among s[0, n) (candidate index_base + c) as slots to `heads` rows from out (row stride
// max_k), from output position `at` on, taking the first `tie_allow` of its ties; count_picks filled warp_above /
// warp_ties.
template <typename T>
__device__ void write_picks(int* out, int heads, int max_k, const T* s, int n, int index_base, unsigned lo,
                            int at, int tie_allow, int sinks, const int* warp_above, const int* warp_ties) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5, from, to;
    warp_range(n, &from, &to);
    // lane v: warp v's ties taken and picks; exclusive scans over the warps give this warp's start
    int t = lane < warps ? warp_ties[lane] : 0, tincl = t;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        int u = __shfl_up_sync(0xffffffffu, tincl, o);
        if (lane >= o) tincl += u;
    }
    int taken = max(0, min(t, tie_allow - (tincl - t)));
    int picks = (lane < warps ? warp_above[lane] : 0) + taken, pincl = picks;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        int u = __shfl_up_sync(0xffffffffu, pincl, o);
        if (lane >= o) pincl += u;
    }
    at += __shfl_sync(0xffffffffu, pincl - picks, warp);
    int tie_left = __shfl_sync(0xffffffffu, taken, warp);
    unsigned before = (1u << lane) - 1;
    for (int c0 = from; c0 < to; c0 += 32) {
        int c = c0 + lane;
        unsigned key = c < to ? key_of(s, c) : 0u;
        bool tie = c < to && key == lo;
        unsigned tie_mask = __ballot_sync(0xffffffffu, tie);
        bool take = (c < to && key > lo) || (tie && __popc(tie_mask & before) < tie_left);
        unsigned take_mask = __ballot_sync(0xffffffffu, take);
        if (take) {
            int pos = at + __popc(take_mask & before);
            for (int j = 0; j < heads; j++) out[(size_t)j * max_k + pos] = sinks + index_base + c;
        }
        at += __popc(take_mask);
        tie_left -= min(tie_left, __popc(tie_mask));
    }
}

// The k largest of s[0, n) (global or shared memory) by one block, written as slots (sinks + c) in ascending order to
//   `heads` selection rows from out (row stride max_k).
template <typename T>
__device__ void select_top_k(int* out, int heads, int max_k, const T* s, int n, int k, int sinks) {
    __shared__ int hist[256], warp_above[32], warp_ties[32];
    __shared__ unsigned prefix_s;
    __shared__ int need_s;
    unsigned prefix = 0, mask = 0;
    int need = k;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int b = threadIdx.x; b < 256; b += blockDim.x) hist[b] = 0;
        __syncthreads();
        count_digits(hist, s, n, mask, prefix, shift);
        __syncthreads();
        if (threadIdx.x < 32) pick_digit(hist, need, prefix, shift, &prefix_s, &need_s);
        __syncthreads();
        prefix = prefix_s;
        need = need_s;
        mask |= 255u << shift;
    }
    // prefix: the k-th largest key; need: how many of the keys equal to it the selection takes (the first by index)
    int above, ties;
    count_picks(s, n, prefix, warp_above, warp_ties, &above, &ties);
    write_picks(out, heads, max_k, s, n, 0, prefix, 0, need, sinks, warp_above, warp_ties);
}

// A score from its order key (order_key's inverse, but for the zeros' sign)
__device__ __forceinline__ float key_score(unsigned key) {
    return __uint_as_float((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
}

// The candidates a guessed threshold aims to keep, in multiples of k: the guess is the scores' mean + z sd with z the
// normal quantile of 1 - GUESS_TAIL k / n. On the probes' trained attention (CPU, gqa=max, 1,440 selections a model
// and length) it left between k and 4k candidates above it in 97.2-99.4% of selections (1.5 k: 92.6-96.7%).
#define GUESS_TAIL 2.0f

// select_top_k's picks from a short list where a guess allows: the scores' mean and spread (one pass over the keys)
// give a threshold expected to leave about GUESS_TAIL k candidates above it (most score distributions are near normal
// in their bulk). Where between k and list_cap keys reach it they are listed in candidate order (one counting and one
// listing sweep) and select_top_k runs over the list alone; else over all n (the guess's cost then is the two sweeps).
// Exact either way: k or more keys at or above the guess put the k-th largest at or above it, so the list holds every
// pick and every tie of the k-th key, in candidate order (ties still go to the lower candidate).
//   list: 2 list_cap words of shared memory (the listed candidates, then their keys); paths: null, or [2] ints counting
//   the selections served from a list ([0]) and those that fell back after a guess ([1]).
__device__ void select_top_k_guessed(int* out, int heads, int max_k, const unsigned* s, int n, int k, int sinks,
                                     unsigned* list, int list_cap, int* paths) {
    __shared__ float red[32];
    __shared__ int warp_above[32], warp_ties[32];
    float tail = GUESS_TAIL * k / n;
    if (k <= 0 || k > list_cap || !(tail < 0.5f)) {   // no list could hold it, or too many would pass a guess
        select_top_k(out, heads, max_k, s, n, k, sinks);
        return;
    }
    float sum = 0.f, sq = 0.f;
    for (int c = threadIdx.x; c < n; c += blockDim.x) {
        float v = key_score(s[c]);
        sum += v;
        sq += v * v;
    }
    sum = block_sum(sum, red);
    sq = block_sum(sq, red);
    float mean = sum / n, sd = sqrtf(fmaxf(sq / n - mean * mean, 0.f));
    unsigned guess = order_key(mean + normcdfinvf(1.f - tail) * sd);
    int above = 0, ties = 0;
    if (guess > 0u) count_picks(s, n, guess - 1u, warp_above, warp_ties, &above, &ties);   // keys >= guess
    if (above < k || above > list_cap) {
        if (paths != nullptr && threadIdx.x == 0) atomicAdd(&paths[1], 1);
        select_top_k(out, heads, max_k, s, n, k, sinks);
        return;
    }
    unsigned* list_keys = list + list_cap;
    write_picks(reinterpret_cast<int*>(list), 1, 0, s, n, 0, guess - 1u, 0, 0, 0, warp_above, warp_ties);
    __syncthreads();
    for (int i = threadIdx.x; i < above; i += blockDim.x) list_keys[i] = s[list[i]];
    __syncthreads();
    select_top_k(out, 1, max_k, list_keys, above, k, 0);   // places in the list, ascending
    __syncthreads();
    for (int i = threadIdx.x; i < k; i += blockDim.x) {
        int slot = sinks + (int)list[out[i]];
        for (int j = 0; j < heads; j++) out[(size_t)j * max_k + i] = slot;
    }
    if (paths != nullptr && threadIdx.x == 0) atomicAdd(&paths[0], 1);
}

// sparse_topk: the k = min(budget[p], cand[p]) largest scores of a (row, head) as select_top_k picks them. mode 0:
//   per query head; 1 / 2: one selection per kv head from the group's max / sum of scores, by the block of the
//   group's first head (combined into its scores row), written for each head of the group. Grid: (P * H), block: 1024.
extern "C" __global__ void sparse_topk(int* selected, float* scores, const int* sp, int H, int KVH, int max_cand,
                                       int max_k) {
    int G = H / KVH, p = blockIdx.x / H, h0 = blockIdx.x % H;
    const int* d = sp + p * SP_FIELDS;
    int mode = d[SP_MODE];
    if (mode != 0 && h0 % G != 0) return;
    int n = d[SP_CAND];
    float* s = scores + (size_t)(p * H + h0) * max_cand;
    if (mode != 0) {
        for (int c = threadIdx.x; c < n; c += blockDim.x) {
            float v = s[c];
            for (int j = 1; j < G; j++) v = combine_scores(mode, v, scores[(size_t)(p * H + h0 + j) * max_cand + c]);
            s[c] = v;
        }
        __syncthreads();
    }
    select_top_k(selected + (size_t)(p * H + h0) * max_k, mode == 0 ? 1 : G, max_k, s, n, min(d[SP_K], n),
                 d[SP_SINKS]);
}

// The selection's scores, as order keys, into keys[0, n): the candidates are slots first, first + 1, ... of the label
//   cache; head h0 + j's score LabelCache::score's, the heads' combined (mode), j in order. R (labels a head) a
//   multiple of 8 for 16-bit labels, of 16 for 8-bit ones, 16 or a multiple of 32 for 4-bit ones (a head's 8 bytes at
//   r = 16 in one 8-byte load). All label loads (and scales) of a step are issued before its products, so enough bytes
//   are in flight for one block to stream the labels of a long context: HEADS > 0 (a selection of that many heads) a
//   step scores SEL_LOADS / HEADS candidates (at least one) with all their heads' labels, contiguous in a slot;
//   HEADS = 0 (any count, `heads`) a step scores SEL_LOADS candidates of one head, head after head. Head h's labels
//   are its label row's, h / labels.group (a group's mean selection over rows a kv head scores once, with the summed
//   query: summed_query). A variant loading a row shared by the step's heads once (for max selections over rows a kv
//   head) took sparse_select from 64 registers and 148 bytes of spills to 1776 bytes, and the per-head rows' selection
//   from 151 to 179 us (batch 8, 32K, H100): not kept.
#ifndef SEL_LOADS
#define SEL_LOADS 4
#endif
template <int R, int BITS, int HEADS>
__device__ void score_candidates(unsigned* keys, const LabelCache& labels, int first, int h0, const LabelQuery& lq,
                                 int heads, int mode, int n) {
    constexpr int ROW_BYTES = R * BITS / 8;   // a head's labels
    constexpr bool NARROW = ROW_BYTES < 16;   // 4-bit, R = 16: one 8-byte load a head (in a uint4's x and y)
    constexpr int LOADS = NARROW ? 1 : ROW_BYTES / 16, PER = R / LOADS;   // loads a head, labels a load
    constexpr int U = HEADS == 0 ? SEL_LOADS : (SEL_LOADS / HEADS > 0 ? SEL_LOADS / HEADS : 1);   // candidates a step
    constexpr int HS = HEADS == 0 ? 1 : HEADS;   // heads a step
    constexpr int WORDS = BITS == 4 ? R / 8 : 1;   // 4-bit: words of 8 labels a head
    static_assert(R % 8 == 0 && (NARROW ? ROW_BYTES == 8 : ROW_BYTES % 16 == 0), "a head's labels in whole loads");
    // head h0 + j's label row: h0 + j, or (labels.group > 1: the selection's heads lie in one group) h0 / group; as a
    // multiply-add rather than a division per load (which cost about 3 of 178 us at batch 8, 32K)
    int row0 = labels.group == 1 ? h0 : h0 / labels.group, row_step = labels.group == 1 ? 1 : 0;
    const char* values = reinterpret_cast<const char*>(labels.values);
    // 4-bit labels, a head count it unrolls: the heads' quantised channels in registers, as label_dot4 takes them
    // (shared memory could hold the keys' stores' aliases, so the compiler would read them again each candidate)
    int qe[HS][WORDS], qo[HS][WORDS];
    if constexpr (BITS == 4 && HEADS > 0) {
#pragma unroll
        for (int j = 0; j < HS; j++) {
#pragma unroll
            for (int w = 0; w < WORDS; w++) nibble_query(lq.i + j * R, w, &qe[j][w], &qo[j][w]);
        }
    }
    for (int c0 = threadIdx.x; c0 < n; c0 += U * blockDim.x) {
        float v[U];
        for (int j0 = 0; j0 < (HEADS == 0 ? heads : HEADS); j0 += HS) {
            uint4 raw[U][HS][LOADS];
            float scale[U][HS];
#pragma unroll
            for (int u = 0; u < U; u++) {
                int slot = first + min(c0 + u * (int)blockDim.x, n - 1);   // past the end: re-read the last one
#pragma unroll
                for (int j = 0; j < HS; j++) {
                    int row = row0 + (j0 + j) * row_step;
                    // the head's first byte: its first label's (R * BITS / 8 a whole number of bytes)
                    const char* lab = values + ((size_t)slot * labels.stride + row * R) * BITS / 8;
                    if constexpr (NARROW) {
                        uint2 w = __ldg(reinterpret_cast<const uint2*>(lab));
                        raw[u][j][0] = make_uint4(w.x, w.y, 0u, 0u);
                    } else {
#pragma unroll
                        for (int i = 0; i < LOADS; i++) raw[u][j][i] = __ldg(reinterpret_cast<const uint4*>(lab) + i);
                    }
                    const __half* sc = labels.scales + (size_t)row * labels.cap + slot;
                    scale[u][j] = BITS < 16 ? __half2float(__ldg(sc)) : 1.f;
                }
            }
#pragma unroll
            for (int u = 0; u < U; u++) {
#pragma unroll
                for (int j = 0; j < HS; j++) {
                    int h = j0 + j;   // the head in lq
                    float t;
                    if constexpr (BITS == 16) {
                        t = 0.f;
#pragma unroll
                        for (int i = 0; i < LOADS; i++) t = label_chunk(t, raw[u][j][i], lq.f + h * R + i * PER);
                    } else if constexpr (BITS == 8) {
                        int d = 0;
                        const int* q4 = reinterpret_cast<const int*>(lq.i + h * R);
#pragma unroll
                        for (int i = 0; i < LOADS; i++) d = label_dot8(d, raw[u][j][i], q4 + 4 * i);
                        t = label_int_score(d, lq.scale[h], scale[u][j]);
                    } else {
                        int d = -8 * lq.sum[h];
#pragma unroll
                        for (int w = 0; w < WORDS; w++) {
                            const uint4& r4 = raw[u][j][w / 4];
                            unsigned word = (w & 3) == 0 ? r4.x : (w & 3) == 1 ? r4.y : (w & 3) == 2 ? r4.z : r4.w;
                            int e, o;
                            if constexpr (HEADS > 0) {
                                e = qe[j][w];
                                o = qo[j][w];
                            } else {
                                nibble_query(lq.i + h * R, w, &e, &o);
                            }
                            d = label_dot4(d, word, e, o);
                        }
                        t = label_int_score(d, lq.scale[h], scale[u][j]);
                    }
                    v[u] = h == 0 ? t : combine_scores(mode, v[u], t);
                }
            }
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            int c = c0 + u * blockDim.x;
            if (c < n) keys[c] = order_key(v[u]);
        }
    }
}

// score_candidates for a selection of HEADS heads whose label rows are consecutive in a slot (rows h0 .. h0 + HEADS -
//   1: a label row a query head), so that a slot's HEADS * R * BITS / 8 bytes are one contiguous piece: LPS lanes
//   read it together in 16-byte loads, HPL heads' rows a lane, and each warp load covers 32 / LPS slots. (A lane per
//   slot, as score_candidates reads, makes each warp load touch 32 slots 256 bytes apart: 32 L1 wavefronts for 256
//   bytes. At 64 rows x 4,028 candidates and 4-bit labels the scores ran at 1.61 TB/s, about half the copy (H100).)
//   Each lane scores its heads as score_candidates does (the same products in the same order); the slot's first lane
//   gathers the HEADS scores by shuffles and combines them in head order, so the keys are score_candidates' bit for
//   bit. Loops run on a warp's first slot so that its lanes stay converged for the shuffles.
template <int R, int BITS, int HEADS>
__device__ void score_candidates_coalesced(unsigned* keys, const LabelCache& labels, int first, int h0,
                                           const LabelQuery& lq, int mode, int n) {
    constexpr int ROW_BYTES = R * BITS / 8;
    constexpr int HPL = ROW_BYTES >= 16 ? 1 : 16 / ROW_BYTES, LPS = HEADS / HPL;   // heads a lane, lanes a slot
    constexpr int LOADS = HPL * ROW_BYTES / 16;   // 16-byte loads a lane
    constexpr int U = SEL_LOADS / LOADS > 0 ? SEL_LOADS / LOADS : 1;   // slots a lane has in flight
    constexpr int WORDS = BITS == 4 ? R / 8 : BITS == 8 ? R / 4 : 1;   // 32-bit words of a head's labels
    static_assert(HEADS % HPL == 0 && 32 % LPS == 0 && (HPL * ROW_BYTES) % 16 == 0, "whole loads, whole slots a warp");
    int lane = threadIdx.x & 31, part = lane % LPS, hl = part * HPL;   // this lane's first head of the selection
    const char* values = reinterpret_cast<const char*>(labels.values) + (size_t)(h0 + hl) * ROW_BYTES;
    const __half* scales = labels.scales + (size_t)(h0 + hl) * labels.cap;
    // this lane's heads' quantised channels in registers, as label_dot8 / label_dot4 take them
    int qw[HPL][BITS == 4 ? 2 * WORDS : WORDS];
    float qscale[HPL];
    int qsum[HPL];
#pragma unroll
    for (int j = 0; j < HPL; j++) {
        qscale[j] = BITS < 16 ? lq.scale[hl + j] : 1.f;
        qsum[j] = BITS == 4 ? lq.sum[hl + j] : 0;
#pragma unroll
        for (int w = 0; w < WORDS; w++) {
            if constexpr (BITS == 4) nibble_query(lq.i + (hl + j) * R, w, &qw[j][2 * w], &qw[j][2 * w + 1]);
            else if constexpr (BITS == 8) qw[j][w] = reinterpret_cast<const int*>(lq.i + (hl + j) * R)[w];
        }
    }
    int per_block = blockDim.x / LPS, leader = lane - part;
    for (int c0 = (int)(threadIdx.x - lane) / LPS; c0 < n; c0 += U * per_block) {
        int c = c0 + lane / LPS;
        uint4 raw[U][LOADS];
        float scale[U][HPL];
#pragma unroll
        for (int u = 0; u < U; u++) {
            int slot = first + min(c + u * per_block, n - 1);   // past the end: re-read the last one
            const uint4* lab = reinterpret_cast<const uint4*>(values + (size_t)slot * labels.stride * BITS / 8);
#pragma unroll
            for (int i = 0; i < LOADS; i++) raw[u][i] = __ldg(lab + i);
#pragma unroll
            for (int j = 0; j < HPL; j++) {
                scale[u][j] = BITS < 16 ? __half2float(__ldg(scales + (size_t)j * labels.cap + slot)) : 1.f;
            }
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            const unsigned* word = reinterpret_cast<const unsigned*>(raw[u]);
            float t[HPL];
#pragma unroll
            for (int j = 0; j < HPL; j++) {
                if constexpr (BITS == 16) {
                    t[j] = 0.f;
#pragma unroll
                    for (int i = 0; i < R / 8; i++) {
                        t[j] = label_chunk(t[j], raw[u][j * R / 8 + i], lq.f + (hl + j) * R + i * 8);
                    }
                } else if constexpr (BITS == 8) {
                    int d = 0;
#pragma unroll
                    for (int w = 0; w < WORDS; w++) d = label_dot8(d, word[j * WORDS + w], qw[j][w]);
                    t[j] = label_int_score(d, qscale[j], scale[u][j]);
                } else {
                    int d = -8 * qsum[j];
#pragma unroll
                    for (int w = 0; w < WORDS; w++) {
                        d = label_dot4(d, word[j * WORDS + w], qw[j][2 * w], qw[j][2 * w + 1]);
                    }
                    t[j] = label_int_score(d, qscale[j], scale[u][j]);
                }
            }
            float v = 0.f;
#pragma unroll
            for (int h = 0; h < HEADS; h++) {   // head h's score from the lane holding it, combined in head order
                float th = __shfl_sync(0xffffffffu, t[h % HPL], leader + h / HPL);
                v = h == 0 ? th : combine_scores(mode, v, th);
            }
            int cu = c + u * per_block;
            if (part == 0 && cu < n) keys[cu] = order_key(v);
        }
    }
}

// score_candidates for a label width it unrolls: one head, a group of four (llama-3's GQA: coalesced where the group's
// label rows are consecutive in a slot and its pieces 16-byte aligned), or any count
template <int R, int BITS>
__device__ void score_group(unsigned* keys, const LabelCache& labels, int first, int h0, const LabelQuery& lq,
                            int heads, int mode, int n) {
    constexpr int ROW_BYTES = R * BITS / 8;
    if (heads == 1) {
        score_candidates<R, BITS, 1>(keys, labels, first, h0, lq, 1, mode, n);
    } else if (heads == 4 && labels.group == 1 && (labels.stride * BITS / 8) % 16 == 0 && (h0 * ROW_BYTES) % 16 == 0) {
        score_candidates_coalesced<R, BITS, 4>(keys, labels, first, h0, lq, mode, n);
    } else if (heads == 4) {
        score_candidates<R, BITS, 4>(keys, labels, first, h0, lq, 4, mode, n);
    } else {
        score_candidates<R, BITS, 0>(keys, labels, first, h0, lq, heads, mode, n);
    }
}

// score_candidates for the label widths it unrolls, else one candidate at a time through LabelCache::score
__device__ void score_selection(unsigned* keys, const LabelCache& labels, int first, int h0, const LabelQuery& lq,
                                int heads, int mode, int r, int n) {
    if (labels.bits == 16 && r == 16) {
        score_group<16, 16>(keys, labels, first, h0, lq, heads, mode, n);
    } else if (labels.bits == 16 && r == 8) {
        score_group<8, 16>(keys, labels, first, h0, lq, heads, mode, n);
    } else if (labels.bits == 8 && r == 16) {
        score_group<16, 8>(keys, labels, first, h0, lq, heads, mode, n);
    } else if (labels.bits == 8 && r == 32) {
        score_group<32, 8>(keys, labels, first, h0, lq, heads, mode, n);
    } else if (labels.bits == 4 && r == 16) {
        score_group<16, 4>(keys, labels, first, h0, lq, heads, mode, n);
    } else if (labels.bits == 4 && r == 32) {
        score_group<32, 4>(keys, labels, first, h0, lq, heads, mode, n);
    } else {
        for (int c = threadIdx.x; c < n; c += blockDim.x) {
            float v = labels.score(lq, 0, first + c, h0, r);
            for (int j = 1; j < heads; j++) v = combine_scores(mode, v, labels.score(lq, j, first + c, h0 + j, r));
            keys[c] = order_key(v);
        }
    }
}

// The selection of block blockIdx.x of a grid of P * H (row p, head h0) scored: its candidates' order keys into
//   keys[0, n), and its descriptor, heads and candidates into sel. False for a block with nothing to do: a shared
//   selection (mode != 0) is its group's first head's. sparse_select's first part (dev/cuda/label_select_bench.cu
//   times it alone).
struct BlockSelection {
    const int* d;   // the selection's descriptor (SP_FIELDS ints)
    int heads, n;
};

__device__ __forceinline__ bool score_block_selection(BlockSelection& sel, unsigned* keys, LabelQuery& lq,
                                                      const float* q, const unsigned long long* lptr,
                                                      const unsigned long long* chptr, const unsigned long long* sptr,
                                                      const int* seg, const int* sp, int H, int KVH, int D,
                                                      int q_stride) {
    int G = H / KVH, p = blockIdx.x / H, h0 = blockIdx.x % H;
    const int* d = sp + p * SP_FIELDS;
    int mode = d[SP_MODE], row = d[SP_ROW], r = d[SP_R], n = d[SP_CAND];
    if (mode != 0 && h0 % G != 0) return false;
    int heads = mode == 0 ? 1 : G;
    LabelCache labels(lptr[seg[row]], sptr[seg[row]], H, r, d[SP_BITS], d[SP_CAP], d[SP_LGROUP]);
    bool summed = load_label_query(lq, q + (size_t)row * q_stride, reinterpret_cast<const int*>(chptr[seg[row]]), h0,
                                   heads, r, D, labels.group, mode, labels.bits);
    score_selection(keys, labels, d[SP_SINKS], h0, lq, summed ? 1 : heads, mode, r, n);
    sel = {d, heads, n};
    return true;
}

// sparse_select (dspp): sparse_scores and sparse_topk in one block per (row, head; mode != 0: the group's first
//   head), the candidates' order keys in dynamic shared memory, then the top-k from a guessed threshold's list where
//   one holds it (select_top_k_guessed). Dynamic shared memory: [max_cand] keys, then the list's 2 list_cap words (the
//   host keeps both within a block's; list_cap 0: no guess). paths: null, or select_top_k_guessed's two counters.
//   Grid: (P * H), block: 256, 512 or 1024 threads (CudaOps.selectThreads: the fewest waves of blocks).
extern "C" __global__ void __launch_bounds__(1024) sparse_select(int* selected, const float* q,
                                                                 const unsigned long long* lptr,
                                                                 const unsigned long long* chptr,
                                                                 const unsigned long long* sptr, const int* seg,
                                                                 const int* sp, int H, int KVH, int D, int q_stride,
                                                                 int max_k, int max_cand, int list_cap, int* paths) {
    extern __shared__ unsigned s[];   // the candidates' order keys, then the list
    __shared__ LabelQuery lq;   // the selection's heads (up to 8) x r (up to 64) label channels of q
    BlockSelection sel;
    if (!score_block_selection(sel, s, lq, q, lptr, chptr, sptr, seg, sp, H, KVH, D, q_stride)) return;
    __syncthreads();
    select_top_k_guessed(selected + (size_t)blockIdx.x * max_k, sel.heads, max_k, s, sel.n, min(sel.d[SP_K], sel.n),
                         sel.d[SP_SINKS], s + max_cand, list_cap, paths);
}

// sparse_select_cluster (dspp on sm_90): sparse_select spread over a cluster of CLUSTER blocks per selection, so that
//   selections fewer than the multiprocessors stream their labels with CLUSTER blocks each instead of one. Block rank b
//   scores the candidates [b * tile, (b + 1) * tile) into its shared memory; in each radix pass the blocks add their
//   histograms into the first block's (distributed shared memory), which picks the digit; each block's first output
//   position and share of the ties come from the counts of the blocks before it (tiles are in index order).
//   Two shapes: sparse_select_cluster, 8 blocks of 256 threads (a batch of one: a cluster's fixed costs, its barriers
//   and the radix passes' scans, grow with the warps of its blocks; 8 blocks of 1024 threads measured twice as slow),
//   and sparse_select_cluster2, 2 blocks of 1024 threads (as many selections as multiprocessors or fewer: one block a
//   selection leaves the other multiprocessors idle, and one block scores a selection's labels at about 19 GB/s).
//   Grid: (P * H * CLUSTER), dynamic shared memory: tile keys, tile = max_cand / CLUSTER rounded up to 32.
template <int CLUSTER>
__device__ void select_cluster_body(int* selected, const float* q, const unsigned long long* lptr,
                                    const unsigned long long* chptr, const unsigned long long* sptr, const int* seg,
                                    const int* sp, int H, int KVH, int D, int q_stride, int max_k, int tile) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    namespace cg = cooperative_groups;
    cg::cluster_group cluster = cg::this_cluster();
    extern __shared__ unsigned tile_keys[];   // the tile's candidates' order keys
    unsigned* s = tile_keys;
    __shared__ LabelQuery lq;
    __shared__ int hist[256], warp_above[32], warp_ties[32];
    // read in the first block only: the cluster's histograms (two, one cleared while the other fills), the picked
    // prefix and need, and each block's counts of picks
    __shared__ int cl_hist[2][256], cl_above[CLUSTER], cl_ties[CLUSTER];
    __shared__ unsigned cl_prefix;
    __shared__ int cl_need;
    int rank = (int)cluster.block_rank(), sel = blockIdx.x / CLUSTER;
    int G = H / KVH, p = sel / H, h0 = sel % H;
    const int* d = sp + p * SP_FIELDS;
    int mode = d[SP_MODE], row = d[SP_ROW], r = d[SP_R], n = d[SP_CAND], k = min(d[SP_K], n);
    if (mode != 0 && h0 % G != 0) return;   // the whole cluster: its blocks share sel
    int heads = mode == 0 ? 1 : G;
    if (rank == 0) {
        for (int b = threadIdx.x; b < 512; b += blockDim.x) cl_hist[b >> 8][b & 255] = 0;
    }
    LabelCache labels(lptr[seg[row]], sptr[seg[row]], H, r, d[SP_BITS], d[SP_CAP], d[SP_LGROUP]);
    bool summed = load_label_query(lq, q + (size_t)row * q_stride, reinterpret_cast<const int*>(chptr[seg[row]]), h0,
                                   heads, r, D, labels.group, mode, labels.bits);   // its barriers order the clearing
    // 1. this block's tile of scores
    int from = rank * tile, m = max(0, min(n - from, tile));
    score_selection(s, labels, d[SP_SINKS] + from, h0, lq, summed ? 1 : heads, mode, r, m);
    cluster.sync();   // scores in place, the first block's histograms cleared
    // 2. radix passes over the cluster
    unsigned* root_prefix = cluster.map_shared_rank(&cl_prefix, 0);
    int* root_need = cluster.map_shared_rank(&cl_need, 0);
    unsigned prefix = 0, mask = 0;
    int need = k;
    for (int shift = 24, pass = 0; shift >= 0; shift -= 8, pass++) {
        for (int b = threadIdx.x; b < 256; b += blockDim.x) hist[b] = 0;
        __syncthreads();
        count_digits(hist, s, m, mask, prefix, shift);
        __syncthreads();
        int* root_hist = cluster.map_shared_rank(cl_hist[pass & 1], 0);
        for (int b = threadIdx.x; b < 256; b += blockDim.x) {
            if (hist[b]) atomicAdd(&root_hist[b], hist[b]);
        }
        cluster.sync();   // every block's counts are in
        if (rank == 0) {   // warp 0 picks, the others clear the next pass's histogram
            if (threadIdx.x < 32) pick_digit(cl_hist[pass & 1], need, prefix, shift, &cl_prefix, &cl_need);
            for (int b = (int)threadIdx.x - 32; b >= 0 && b < 256; b += blockDim.x - 32) cl_hist[(pass + 1) & 1][b] = 0;
        }
        cluster.sync();   // the digit is picked
        prefix = *root_prefix;
        need = *root_need;
        mask |= 255u << shift;
    }
    // 3. picks: prefix is the k-th largest key, need how many of its ties are taken (the first by index)
    int above, ties;
    count_picks(s, m, prefix, warp_above, warp_ties, &above, &ties);
    int* root_above = cluster.map_shared_rank(cl_above, 0);
    int* root_ties = cluster.map_shared_rank(cl_ties, 0);
    if (threadIdx.x == 0) {
        root_above[rank] = above;
        root_ties[rank] = ties;
    }
    cluster.sync();
    int at = 0, ties_before = 0;
    for (int b = 0; b < rank; b++) {
        int t = root_ties[b];
        at += root_above[b] + max(0, min(t, need - ties_before));
        ties_before += t;
    }
    cluster.sync();   // the first block's shared memory is read by all: it stays until here
    write_picks(selected + (size_t)(p * H + h0) * max_k, heads, max_k, s, m, from, prefix, at,
                max(0, need - ties_before), d[SP_SINKS], warp_above, warp_ties);
#else
    __trap();   // built for sm_90 only: the host launches sparse_select elsewhere
#endif
}

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900
#define SEL_CLUSTER_DIMS(n) __cluster_dims__(n, 1, 1)
#else
#define SEL_CLUSTER_DIMS(n)
#endif
#define SELECT_CLUSTER_KERNEL(name, n, threads) extern "C" __global__ void SEL_CLUSTER_DIMS(n) \
        __launch_bounds__(threads) name(int* selected, const float* q, const unsigned long long* lptr, \
        const unsigned long long* chptr, const unsigned long long* sptr, const int* seg, const int* sp, int H, int KVH, \
        int D, int q_stride, int max_k, int tile) { \
    select_cluster_body<n>(selected, q, lptr, chptr, sptr, seg, sp, H, KVH, D, q_stride, max_k, tile); }
SELECT_CLUSTER_KERNEL(sparse_select_cluster, 8, 256)
SELECT_CLUSTER_KERNEL(sparse_select_cluster2, 2, 1024)
