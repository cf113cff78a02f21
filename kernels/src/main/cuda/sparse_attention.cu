// DoubleSparse++'s exact attention of the sparse decode rows of a layer (layouts: sparse_rows.cuh) over sinks, their
// selection (select.cu) and window, split and merged like the dense decode kernels (attention.cu's attention_merge
// finishes, with the sparse rows' batch rows as its rows_of). Device placement: the whole K/V store stays on the
// device, the window is its last W slots; host placement: the store is pinned host memory the device reads in place,
// sinks and window are read from the device ring.
//   q: rows of q_stride floats whose first H * D are the heads (after RoPE); kptr / vptr: this layer's stores by
//   segment, [cap][KVH][D] bf16; rkptr / rvptr: the rings, [S + W][KVH][D] bf16 (0: none); sp[p][SP_FIELDS]:
//   the rows' descriptors; selected: [P * H][max_k] slots; partials: [P * H][splits][D + 2] f32
#include "common.cuh"
#include "split_attention.cuh"
#include "pipelined_attention.cuh"
#include "sparse_rows.cuh"

// The slot a sparse row reads for t in [0, S + k + W): sinks [0, S), the selection sel, the window [n - W, n) of a row
//   of length n; with a ring (host placement) sinks and window are its slots, as split_attention.cuh's negative slots
__device__ __forceinline__ int sparse_slot(int t, int sinks, int k, int window, int n, const int* sel, bool ring) {
    if (t >= sinks && t < sinks + k) return sel[t - sinks];
    int p = t < sinks ? t : n - window + (t - sinks - k);
    return ring ? -1 - ring_slot(p, sinks, window) : p;
}

// sparse_attention_dD: attention of sparse row p, head h over its m = S + k + W slots: sinks [0, S), the selected
//   slots, the window [n - W, n) (n = row_len of its batch row); one warp per (p, h, split of `chunk` of the m),
//   partials [P * H][splits][D + 2] as the dense decode kernels write them (attention_merge finishes, with the
//   sparse rows' batch rows as its rows_of). rkptr / rvptr: this layer's ring tables (0: none, device placement).
//   Grid: (P * H, splits), block: 32.
template <int D>
__device__ void sparse_attention_body(float* partials, const float* q, const unsigned long long* kptr,
                                      const unsigned long long* vptr, const unsigned long long* rkptr,
                                      const unsigned long long* rvptr, const int* seg, const int* row_len,
                                      const int* sp, const int* selected, int H, int KVH, int splits, float scale,
                                      int q_stride, int chunk, int max_k) {
    int ph = blockIdx.x, s = blockIdx.y;
    int p = ph / H, h = ph % H, g = h / (H / KVH);
    const int* d = sp + p * SP_FIELDS;
    int row = d[SP_ROW], sinks = d[SP_SINKS], window = d[SP_WINDOW];
    int n = row_len[row], k = min(d[SP_K], d[SP_CAND]), m = sinks + k + window;
    const int* sel = selected + (size_t)ph * max_k;
    const bf16* kring = reinterpret_cast<const bf16*>(rkptr[seg[row]]);
    bool ring = kring != nullptr;
    warp_attend_slots<D>(partials + ((size_t)ph * splits + s) * (D + 2), q + (size_t)row * q_stride + h * D,
                         reinterpret_cast<const bf16*>(kptr[seg[row]]), reinterpret_cast<const bf16*>(vptr[seg[row]]),
                         kring, reinterpret_cast<const bf16*>(rvptr[seg[row]]), g, KVH, s * chunk,
                         min(m, (s + 1) * chunk), scale,
                         [=](int t) { return sparse_slot(t, sinks, k, window, n, sel, ring); });
}

#define SPARSE_KERNEL(dim) extern "C" __global__ void sparse_attention_d##dim(float* partials, const float* q, \
        const unsigned long long* kp, const unsigned long long* vp, const unsigned long long* rkp, \
        const unsigned long long* rvp, const int* seg, const int* len, const int* sp, const int* selected, int H, int KVH, \
        int splits, float scale, int q_stride, int chunk, int max_k) { \
    sparse_attention_body<dim>(partials, q, kp, vp, rkp, rvp, seg, len, sp, selected, H, KVH, splits, scale, q_stride, \
                               chunk, max_k); }
SPARSE_KERNEL(32)
SPARSE_KERNEL(64)
SPARSE_KERNEL(128)

// sparse_attention_dD_gG: sparse_attention_dD in blocks of GQA_WARPS warps (group_attend_slots) that combine their
//   partials in shared memory, so the merge reads GQA_WARPS times fewer splits. shared = 0: the rows selecting per
//   query head (mode 0), G = 1, a block per (row, head, split); shared = 1: the rows whose kv head's group shares one
//   selection (modes 1, 2), G = H / KVH, a block per (row, kv head, split) reading each selected row once for the
//   group. Rows of the other kind return at once. sparse_attention_dD_gG_host: the same for the rows whose store is in
//   host memory (their key rows staged by whole rows, group_attend_slots' STAGED); each kernel returns at once for the
//   other placement's rows. Same partials as sparse_attention_dD, GQA_WARPS * chunk slots a split.
//   Grid: (P * H / G, splits), block: 32 * GQA_WARPS.
template <int D, int G, bool HOST, bool PIPELINED = false>
__device__ void sparse_group_body(float* partials, const float* q, const unsigned long long* kptr,
                                  const unsigned long long* vptr, const unsigned long long* rkptr,
                                  const unsigned long long* rvptr, const int* seg, const int* row_len, const int* sp,
                                  const int* selected, int H, int KVH, int splits, float scale, int q_stride, int chunk,
                                  int max_k, int shared, int* claims = nullptr, float* out = nullptr,
                                  bf16* out_bf = nullptr) {
    int units = H / G, p = blockIdx.x / units, h0 = (blockIdx.x % units) * G;
    const int* d = sp + p * SP_FIELDS;
    if ((d[SP_MODE] != 0) != (shared != 0) || (d[SP_HOST] != 0) != HOST) return;
    int row = d[SP_ROW], sinks = d[SP_SINKS], window = d[SP_WINDOW];
    int n = row_len[row], k = min(d[SP_K], d[SP_CAND]), m = sinks + k + window;
    const int* sel = selected + (size_t)(p * H + h0) * max_k;
    const bf16* kring = reinterpret_cast<const bf16*>(rkptr[seg[row]]);
    bool ring = kring != nullptr;
    float* part = partials + ((size_t)(p * H + h0) * splits + blockIdx.y) * (D + 2);
    const float* qrow = q + (size_t)row * q_stride + h0 * D;
    const bf16 *kc = reinterpret_cast<const bf16*>(kptr[seg[row]]), *vc = reinterpret_cast<const bf16*>(vptr[seg[row]]);
    const bf16* vring = reinterpret_cast<const bf16*>(rvptr[seg[row]]);
    auto slot_of = [=](int t) { return sparse_slot(t, sinks, k, window, n, sel, ring); };
    if constexpr (PIPELINED) {   // the row's m slots in chunks that its splits' blocks claim
        size_t at = (size_t)row * H * D + h0 * D;   // the group's heads in the row's output (one split)
        group_attend_pipelined<D, G>(part, qrow, kc, vc, kring, vring, h0 / (H / KVH), KVH, m, claims + 2 * blockIdx.x,
                                     splits, scale, slot_of, out ? out + at : nullptr, out_bf ? out_bf + at : nullptr);
    } else {
        group_attend_slots<D, G, false, HOST>(part, qrow, kc, vc, kring, vring, h0 / (H / KVH), KVH, m, blockIdx.y,
                                              splits, chunk, scale, slot_of);
    }
}

#define SPARSE_GROUP_VARIANT(dim, g, suffix, host) extern "C" __global__ void sparse_attention_d##dim##_g##g##suffix( \
        float* partials, const float* q, const unsigned long long* kp, const unsigned long long* vp, \
        const unsigned long long* rkp, const unsigned long long* rvp, const int* seg, const int* len, const int* sp, \
        const int* selected, int H, int KVH, int splits, float scale, int q_stride, int chunk, int max_k, int shared) { \
    sparse_group_body<dim, g, host>(partials, q, kp, vp, rkp, rvp, seg, len, sp, selected, H, KVH, splits, scale, \
                                    q_stride, chunk, max_k, shared); }
#define SPARSE_GROUP_KERNEL(dim, g) SPARSE_GROUP_VARIANT(dim, g, , false) SPARSE_GROUP_VARIANT(dim, g, _host, true)
SPARSE_GROUP_KERNEL(32, 1)
SPARSE_GROUP_KERNEL(32, 4)
SPARSE_GROUP_KERNEL(64, 1)
SPARSE_GROUP_KERNEL(64, 4)
SPARSE_GROUP_KERNEL(64, 8)
SPARSE_GROUP_KERNEL(128, 1)
SPARSE_GROUP_KERNEL(128, 2)
SPARSE_GROUP_KERNEL(128, 4)
SPARSE_GROUP_KERNEL(128, 8)

// sparse_attention_pipelined_dD_gG: the attention of the rows whose selected rows are on the device (a device store,
//   or a host-placed row's device stage with its ring of sinks and window), by group_attend_pipelined (the rows staged
//   in shared memory by asynchronous copies from a producer warp, the products on tensor cores): shared = 1, the rows
//   whose kv head's group shares one selection (modes 1, 2), G = H / KVH, a block of G + 1 warps per (row, kv head,
//   split); shared = 0, the rows selecting per query head (mode 0), G = 1 (not built: dev/cuda/sparse_attention_bench.cu
//   measures it against sparse_attention_dD_g1, which is faster with its four warps a block). A row's m slots go in
//   chunks to whichever of its splits' blocks claims them first (claims: [P * H / G][2] ints, zero before the first
//   launch; each launch leaves them zero), so the host can size the grid to what the device holds at once whatever
//   each layer's budget. Other rows return at once. Same partials as sparse_attention_dD; or, with one split and out
//   (f32) or out_bf (bf16) given, the outputs themselves at the rows' batch rows, as attention_merge would write them
//   (the host gives them only where every selecting row of the layer is of this kernel's kind). Grid: (P * H / G,
//   splits), block: 32 * (G + 1), dynamic shared memory pipelined_shared_bytes(D). The rows are decoded as for
//   sparse_attention_dD_gG (sparse_group_body, PIPELINED).
#define SPARSE_PIPELINED_KERNEL(dim, g) extern "C" __global__ void __launch_bounds__(32 * (g + 1)) \
        sparse_attention_pipelined_d##dim##_g##g(float* partials, const float* q, const unsigned long long* kp, \
        const unsigned long long* vp, const unsigned long long* rkp, const unsigned long long* rvp, const int* seg, \
        const int* len, const int* sp, const int* selected, int H, int KVH, int splits, float scale, int q_stride, \
        int max_k, int shared, int* claims, float* out, bf16* out_bf) { \
    sparse_group_body<dim, g, false, true>(partials, q, kp, vp, rkp, rvp, seg, len, sp, selected, H, KVH, splits, \
                                           scale, q_stride, 0, max_k, shared, claims, out, out_bf); }
SPARSE_PIPELINED_KERNEL(32, 4)
SPARSE_PIPELINED_KERNEL(64, 2)
SPARSE_PIPELINED_KERNEL(64, 4)
SPARSE_PIPELINED_KERNEL(128, 2)
SPARSE_PIPELINED_KERNEL(128, 4)
