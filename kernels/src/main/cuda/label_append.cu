// The sparse caches' appends of a forward pass (layouts: sparse_rows.cuh): every row's label channels of its (rotated)
// key into its segment's label cache at its slot and, with host placement, its key and value into the segment's device
// ring of sinks and window.
//   label_append (ds, as Double Sparsity publishes it): a launch of its own after kv_append_rope (kvcache.cu);
//   kv_label_append_rope (dspp): kv_append_rope and label_append's writes in one launch.
//   seg_info: [segments][SEG_FIELDS] ints; lptr / chptr / sptr: this layer's label, channel and scale tables by
//   segment (0: dense); rkptr / rvptr: this layer's ring tables (0: none); last_rows: [segments] each segment's last
//   batch row.
#include "common.cuh"
#include "sparse_rows.cuh"
#include "kv_append.cuh"
#include <cuda_fp16.h>

// A label's integer q of k_c at a row's scale (8- and 4-bit labels): round half up of k_c / scale clamped to +-levels,
//   0 where the scale is 0, as kv/SparseKvCache#quantise
__device__ __forceinline__ int quantise_label(float kc, float scale, float levels) {
    return scale == 0.f ? 0 : (int)fminf(levels, fmaxf(-levels, floorf(kc / scale + 0.5f)));
}

// A slot's label row from a head's (rotated) key k ([D] f32, global or shared memory): label[t] = k[ch[t]] for t < r,
//   at row lrow of the slot's lrows (H / lg) rows: fp16 (16-bit), or an integer times the row's fp16 scale with the
//   scale into the segment's [lrows][cap] scales (8-bit: int8, scale = fp16(max |k_c| / 127), value = round half up of
//   k_c / scale clamped to +-127, as kv/SparseKvCache quantises; 4-bit: int4, max / 7 and +-7, two labels a byte,
//   sparse_rows.cuh's layout: thread b packs the row's byte b, labels 2b and 2b + 1, so every byte has one writer and
//   a row's bytes are its own). Call with the whole block (whole warps; red: 32 floats of shared memory for the
//   row's maximum).
__device__ void write_label_row(void* labels, unsigned long long scales_ptr, const int* info, int p, int lrow,
                                int lrows, const int* ch, const float* k, float* red) {
    int r = info[SEG_R], bits = info[SEG_BITS];
    size_t row_at = (size_t)p * lrows + lrow;   // the row's place among the layer's [cap][lrows] rows
    if (bits == 16) {
        for (int t = threadIdx.x; t < r; t += blockDim.x)
            reinterpret_cast<__half*>(labels)[row_at * r + t] = __float2half_rn(k[ch[t]]);
        return;
    }
    float m = 0.f;
    for (int t = threadIdx.x; t < r; t += blockDim.x) m = fmaxf(m, fabsf(k[ch[t]]));
    m = block_max_nonneg(m, red);
    float levels = bits == 8 ? 127.f : 7.f;
    __half sc = __float2half_rn(m / levels);
    float scale = __half2float(sc);
    if (bits == 8) {
        signed char* row = reinterpret_cast<signed char*>(labels) + row_at * r;
        for (int t = threadIdx.x; t < r; t += blockDim.x) row[t] = (signed char)quantise_label(k[ch[t]], scale, levels);
    } else {
        int rb = (r + 1) / 2;
        unsigned char* row = reinterpret_cast<unsigned char*>(labels) + row_at * rb;
        for (int b = threadIdx.x; b < rb; b += blockDim.x) {
            int lo = quantise_label(k[ch[2 * b]], scale, levels);
            int hi = 2 * b + 1 < r ? quantise_label(k[ch[2 * b + 1]], scale, levels) : 0;
            row[b] = (unsigned char)((lo & 15) | ((hi & 15) << 4));
        }
    }
    if (threadIdx.x == 0) reinterpret_cast<__half*>(scales_ptr)[(size_t)lrow * info[SEG_CAP] + p] = sc;
}

// write_label_row for `count` label rows at once, rows first_head / lg, (first_head + lg) / lg, ... (their channels
//   ch + (first_head + j lg) * r): `lanes` threads a row (a power of two within a warp, at least r), each a label, the
//   row's maximum over its lanes by shuffles; the same labels, scales and bytes as write_label_row row after row (the
//   maximum's order does not change it). count * lanes <= blockDim.x; call with whole warps (every lane shuffles).
__device__ void write_label_rows(void* labels, unsigned long long scales_ptr, const int* info, int p, int first_head,
                                 int lg, int lrows, int count, int lanes, const int* ch, const float* k) {
    int r = info[SEG_R], bits = info[SEG_BITS];
    int j = threadIdx.x / lanes, t = threadIdx.x % lanes, head = first_head + j * lg;
    bool mine = j < count && t < r;
    size_t row_at = (size_t)p * lrows + head / lg;
    float v = mine ? k[ch[head * r + t]] : 0.f;
    if (bits == 16) {
        if (mine) reinterpret_cast<__half*>(labels)[row_at * r + t] = __float2half_rn(v);
        return;
    }
    float m = fmaxf(0.f, fabsf(v));   // a NaN channel counts as 0, as block_max_nonneg's start at 0 makes it
    for (int o = lanes / 2; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    float levels = bits == 8 ? 127.f : 7.f;
    __half sc = __float2half_rn(m / levels);
    int qv = mine ? quantise_label(v, __half2float(sc), levels) : 0;
    int next = __shfl_down_sync(0xffffffffu, qv, 1);   // the odd label of a 4-bit byte (0 past r: t + 1 >= r)
    if (j < count && t == 0) reinterpret_cast<__half*>(scales_ptr)[(size_t)(head / lg) * info[SEG_CAP] + p] = sc;
    if (!mine) return;
    if (bits == 8) {
        reinterpret_cast<signed char*>(labels)[row_at * r + t] = (signed char)qv;
    } else if ((t & 1) == 0) {
        int hi = t + 1 < r ? next : 0;
        reinterpret_cast<unsigned char*>(labels)[row_at * ((r + 1) / 2) + t / 2] =
            (unsigned char)((qv & 15) | ((hi & 15) << 4));
    }
}

// The device ring slot (host placement) that row `row`'s key and value go to: slot p < S to ring slot p, else to
//   S + (p - S) mod W, written only by the last W rows of a segment in this step (several rows of a prefill would race
//   for a ring slot; last_rows: [segments] each segment's last batch row); -1: none (no ring, or not such a row).
__device__ __forceinline__ int ring_target(const unsigned long long* rkptr, int sg, const int* info, const int* slot,
                                           const int* last_rows, int row) {
    if (rkptr[sg] == 0) return -1;
    int sinks = info[SEG_SINKS], window = info[SEG_WINDOW], p = slot[row];
    if (p >= sinks && (window == 0 || p < slot[last_rows[sg]] + 1 - window)) return -1;
    return ring_slot(p, sinks, window);
}

// label_append (ds: Double Sparsity's label gather, a launch of its own): the label channels of every row's
//   (rotated) key into its segment's label cache at its slot (write_label_row); with host placement also its key and
//   value into the segment's device ring of sinks and window (rkptr / rvptr: this layer's ring tables, 0: none;
//   ring_target). seg_info: [segments][SEG_FIELDS]. Grid: (rows, H), block: the largest r rounded up to 32.
extern "C" __global__ void label_append(const float* qkv, const unsigned long long* lptr,
                                        const unsigned long long* chptr, const unsigned long long* sptr,
                                        const unsigned long long* rkptr, const unsigned long long* rvptr,
                                        const int* seg, const int* slot, const int* last_rows, const int* seg_info,
                                        int H, int KVH, int D, int row_stride) {
    __shared__ float red[32];
    int row = blockIdx.x, h = blockIdx.y, sg = seg[row];
    void* labels = reinterpret_cast<void*>(lptr[sg]);
    if (labels == nullptr) return;
    const int* info = seg_info + sg * SEG_FIELDS;
    const float* x = qkv + (size_t)row * row_stride;
    int r = info[SEG_R], lg = info[SEG_LGROUP];
    if (h % lg == 0) {   // the first head of those sharing a label row writes it (row h / lg of H / lg)
        write_label_row(labels, sptr[sg], info, slot[row], h / lg, H / lg,
                        reinterpret_cast<const int*>(chptr[sg]) + h * r, x + (H + h / (H / KVH)) * D, red);
    }
    int ring = h < KVH ? ring_target(rkptr, sg, info, slot, last_rows, row) : -1;
    if (ring < 0) return;
    bf16* rk = reinterpret_cast<bf16*>(rkptr[sg]);
    bf16* rv = reinterpret_cast<bf16*>(rvptr[sg]);
    for (int c = threadIdx.x; c < D; c += blockDim.x) {   // the same bf16 rounding as kv_append_rope's store
        rk[((size_t)ring * KVH + h) * D + c] = __float2bfloat16(x[(H + h) * D + c]);
        rv[((size_t)ring * KVH + h) * D + c] = __float2bfloat16(x[(H + KVH + h) * D + c]);
    }
}

// kv_label_append_rope (dspp: a token's appends in one launch): kv_append_rope (kv_append.cuh) and, for rows of
//   sparse segments (lptr[seg] != 0), label_append's writes: a key block writes the label rows of its kv head's query
//   heads (G / lg rows) from its rotated key in shared memory, key and value blocks their ring slots. Same labels,
//   scales, ring and stores as kv_append_rope then label_append, bit for bit.
//   Grid: (rows, H + 2 KVH), block: max(32, D / 2) threads (whole warps for the 8- and 4-bit rows' maximum),
//   D <= 256.
extern "C" __global__ void kv_label_append_rope(float* qkv, const int* positions, const float* inv_freq,
                                                const unsigned long long* kptr, const unsigned long long* vptr,
                                                const unsigned long long* lptr, const unsigned long long* chptr,
                                                const unsigned long long* sptr, const unsigned long long* rkptr,
                                                const unsigned long long* rvptr, const int* seg, const int* slot,
                                                const int* last_rows, const int* seg_info, int H, int KVH, int D,
                                                int row_stride) {
    __shared__ float key[256], red[32];
    int row = blockIdx.x, h = blockIdx.y, i = threadIdx.x, half = D / 2;
    float a, b, c, s;
    rope_angle(positions, inv_freq, row, i, D, &c, &s);
    bool pair = kv_append_pair(qkv, c, s, inv_freq != nullptr, kptr, vptr, seg, slot, row, h, i, H, KVH, D, row_stride,
                               &a, &b);
    int sg = seg[row];
    if (h < H || lptr[sg] == 0) return;   // q heads; dense segments and layers
    const int* info = seg_info + sg * SEG_FIELDS;
    bool is_key = h < H + KVH;
    int g = is_key ? h - H : h - H - KVH;
    int ring = ring_target(rkptr, sg, info, slot, last_rows, row);
    if (ring >= 0 && pair) {
        bf16* dst = reinterpret_cast<bf16*>(is_key ? rkptr[sg] : rvptr[sg]) + ((size_t)ring * KVH + g) * D;
        dst[i] = __float2bfloat16(a);
        dst[i + half] = __float2bfloat16(b);
    }
    if (!is_key) return;
    if (pair) {
        key[i] = a;
        key[i + half] = b;
    }
    __syncthreads();
    int r = info[SEG_R], lg = info[SEG_LGROUP], G = H / KVH, count = (G + lg - 1) / lg;
    const int* ch = reinterpret_cast<const int*>(chptr[sg]);
    int lanes = r <= 8 ? 8 : r <= 16 ? 16 : 32;
    if (r <= 32 && count * lanes <= (int)blockDim.x) {   // the kv head's label rows at once (the dspp default: 4 x 16)
        write_label_rows(reinterpret_cast<void*>(lptr[sg]), sptr[sg], info, slot[row], g * G, lg, H / lg, count, lanes,
                         ch, key);
        return;
    }
    for (int hh = g * G; hh < (g + 1) * G; hh += lg) {   // the first head of each of the kv head's label rows
        write_label_row(reinterpret_cast<void*>(lptr[sg]), sptr[sg], info, slot[row], hh / lg, H / lg, ch + hh * r,
                        key, red);
    }
}
