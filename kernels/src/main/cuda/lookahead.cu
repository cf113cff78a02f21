// DoubleSparse++ lookahead (docs/algorithm.md, placement): while layer l computes on the main stream, the side stream
// predicts layer l + 1's selection from layer l's input and, for stores in host memory, gathers the selected rows to a
// device stage, so that layer l + 1's attention reads them from device memory. The CPU reference is CpuBackend's
// predictNextQueries and SparseKvCache's selection with a predicted query.
//   x: [rows][hidden] f32, the residual stream, read in place at each look-ahead row's own row (the main stream's
//     output product of layer l, which changes it, waits for the side stream's prediction); sp: the look-ahead rows'
//     descriptors (sparse_rows.cuh), the gather's P rows first
//   wq: layer l + 1's [q: H x D | k | v][hidden] bf16 product matrix (only q rows read), q_bias: [H x D] bf16 or null
//   norm_w, norm_b: layer l + 1's attention norm [hidden] bf16 (norm_w null: post-norm, x as it is; norm_b: LayerNorm)
//   channels of layer l + 1: chptr[seg] -> [H * r] ints; q_pred: [rows][H * D] f32, written at the label channels only
//   selected: [P * H][max_k] store slots (a shared selection at the group's first head); stage_k, stage_v: [segments]
//     pointers to [max_k][KVH][D] bf16 device stages
#include "common.cuh"
#include "sparse_rows.cuh"

// predict_label_queries: q_pred[row][h * D + c] for each label channel c of head h: the channel of
//   RoPE(W_q norm(x_p) + b) at the row's position, from the two product rows RoPE pairs (c and c +- D / 2), in f32.
//   A block takes PREDICT_LABELS of a head's label channels (2 PREDICT_LABELS product rows, a warp each), so that a
//   batch of one still spreads the 8 MB of rows a layer (Llama 3.1 8B, r = 16) over a hundred multiprocessors.
//   Grid: (P, H * ceil(r / PREDICT_LABELS)), block: 256, dynamic shared memory: hidden floats (the normalised row).
#define PREDICT_LABELS 4
extern "C" __global__ void __launch_bounds__(256) predict_label_queries(
        float* q_pred, const float* x, const bf16* norm_w, const bf16* norm_b, float eps, const bf16* wq,
        const bf16* q_bias, const int* positions, const float* inv_freq, const unsigned long long* chptr,
        const int* seg, const int* sp, int H, int D, int hidden) {
    extern __shared__ float xn[];
    __shared__ float scratch[32], dots[2 * PREDICT_LABELS];
    int p = blockIdx.x, lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const int* d = sp + p * SP_FIELDS;
    int row = d[SP_ROW], r = d[SP_R], half = D / 2, parts = (r + PREDICT_LABELS - 1) / PREDICT_LABELS;
    int h = blockIdx.y / parts, i0 = blockIdx.y % parts * PREDICT_LABELS, n = min(PREDICT_LABELS, r - i0);
    if (h >= H) return;   // the grid is sized for the step's widest r
    const float* xr = x + (size_t)row * hidden;
    // 1. the sublayer's input: RMSNorm (or LayerNorm) with layer l + 1's weights, as add_rms_norm / add_layer_norm
    float mean = 0.f, inv = 1.f;
    if (norm_w != nullptr) {
        float s = 0.f;
        if (norm_b != nullptr) {
            for (int i = threadIdx.x; i < hidden; i += blockDim.x) s += xr[i];
            mean = block_sum(s, scratch) / hidden;
            s = 0.f;
        }
        for (int i = threadIdx.x; i < hidden; i += blockDim.x) s += (xr[i] - mean) * (xr[i] - mean);
        inv = rsqrtf(block_sum(s, scratch) / hidden + eps);
    }
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
        float v = xr[i];
        if (norm_w != nullptr) v = (v - mean) * inv * __bfloat162float(norm_w[i]) + (norm_b ? __bfloat162float(norm_b[i]) : 0.f);
        xn[i] = v;
    }
    __syncthreads();
    // 2. the block's 2n product rows: label channel i0 + t's row (j = t) and its RoPE partner's (j = n + t), a warp a row
    const int* ch = reinterpret_cast<const int*>(chptr[seg[row]]) + h * r + i0;
    for (int j = warp; j < 2 * n; j += warps) {
        int c = ch[j % n], out = j < n ? c : (c < half ? c + half : c - half);
        const bf16* w = wq + (size_t)(h * D + out) * hidden;
        float acc = 0.f;
        for (int i = lane * 8; i < hidden; i += 32 * 8) {   // hidden % 8 == 0: 16-byte loads
            float wf[8];
            bf16x8_to_float(*reinterpret_cast<const uint4*>(w + i), wf);
#pragma unroll
            for (int e = 0; e < 8; e++) acc += wf[e] * xn[i + e];
        }
        acc = warp_sum(acc);
        if (lane == 0) dots[j] = acc + (q_bias ? __bfloat162float(q_bias[h * D + out]) : 0.f);
    }
    __syncthreads();
    // 3. the rotation, as kv_append_rope's: (a, b) -> (a cos - b sin, b cos + a sin) for the pair (i, i + D / 2)
    if (threadIdx.x < n) {
        int c = ch[threadIdx.x];
        float v = dots[threadIdx.x];
        if (inv_freq != nullptr) {
            float s, co, other = dots[n + threadIdx.x];
            sincosf((float)positions[row] * inv_freq[c % half], &s, &co);
            v = c < half ? v * co - other * s : v * co + other * s;
        }
        q_pred[(size_t)row * H * D + h * D + c] = v;
    }
}

// gather_selected_rows: for look-ahead rows whose group shares a selection and whose store is in host memory, the
//   selected rows' keys and values of each kv head g into the row's device stage, stage[j][g] = store[selected[j]][g],
//   then selected[j] = j, so the attention reads the stage as a store of k rows. A warp copies GATHER_ROWS rows at
//   once (D / 4 16-byte pieces each, keys then values), all in flight before the first store: host reads take a
//   link round trip each. The blocks stride over the work items (a (row, kv head) and a run of its rows).
//   Grid: (any), block: 256.
#define GATHER_ROWS 8
extern "C" __global__ void __launch_bounds__(256) gather_selected_rows(
        int* selected, const unsigned long long* kptr, const unsigned long long* vptr, const unsigned long long* stage_k,
        const unsigned long long* stage_v, const int* seg, const int* sp, int P, int H, int KVH, int D, int max_k) {
    int lane = threadIdx.x & 31, warps = blockDim.x >> 5, per_item = warps * GATHER_ROWS;
    int chunks = (max_k + per_item - 1) / per_item;
    int pieces = D / 8, per_row = 2 * pieces;   // 16-byte pieces of a key row, of a key and value row
    for (int item = blockIdx.x; item < P * KVH * chunks; item += gridDim.x) {
        int p = item / chunks / KVH, g = item / chunks % KVH;
        const int* d = sp + p * SP_FIELDS;
        int k = min(d[SP_K], d[SP_CAND]), s = seg[d[SP_ROW]];
        int j0 = item % chunks * per_item + (threadIdx.x >> 5) * GATHER_ROWS;
        if (j0 >= k) continue;
        int* sel = selected + (size_t)(p * H + g * (H / KVH)) * max_k;
        const uint4* keys = reinterpret_cast<const uint4*>(kptr[s]);
        const uint4* values = reinterpret_cast<const uint4*>(vptr[s]);
        uint4* sk = reinterpret_cast<uint4*>(stage_k[s]);
        uint4* sv = reinterpret_cast<uint4*>(stage_v[s]);
        int slots[GATHER_ROWS];
#pragma unroll
        for (int u = 0; u < GATHER_ROWS; u++) slots[u] = j0 + u < k ? sel[j0 + u] : -1;
        for (int e0 = 0; e0 < per_row; e0 += 32) {
            int e = e0 + lane;
            uint4 v[GATHER_ROWS];
#pragma unroll
            for (int u = 0; u < GATHER_ROWS; u++) {
                if (slots[u] >= 0 && e < per_row) {
                    size_t at = ((size_t)slots[u] * KVH + g) * pieces + e % pieces;
                    v[u] = e < pieces ? keys[at] : values[at];
                }
            }
#pragma unroll
            for (int u = 0; u < GATHER_ROWS; u++) {
                if (slots[u] >= 0 && e < per_row) {
                    size_t at = ((size_t)(j0 + u) * KVH + g) * pieces + e % pieces;
                    if (e < pieces) sk[at] = v[u];
                    else sv[at] = v[u];
                }
            }
        }
        __syncwarp();   // every lane has read the slots before they are rewritten
        if (lane < GATHER_ROWS && j0 + lane < k) sel[j0 + lane] = j0 + lane;
    }
}
