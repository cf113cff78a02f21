// Sampling on the device; only the chosen ids cross to the host.
// argmax: out[r] = argmax_i logits[r][i] (lowest index on ties; a NaN never wins). logits: [rows][vocab] f32.
//   Grid: (rows, S), block: 256. Block (r, s) takes the s-th of S chunks of row r (16-byte loads, ARGMAX_LOADS in
//   flight a thread, where rows are whole float4s); with S = 1 it writes out[r], else its best (value, index) goes to
//   partial[r][s] and the last of the row's S blocks to finish (done[r] counts them, and it leaves done[r] 0) takes
//   the partials' best. partial: [rows][S] floats then [rows][S] ints; done: [rows] ints, zero before the first
//   launch. (A block a row read at about 10 GB/s: 54 us for 64 rows of 128,256 logits, H100.)
// sample_rows: temperature, then top-k, then top-p, then a draw, as io.dsflow.engine.sample.Sampler does it (below).
// gather_rows: dst[i][:] = src[index[i]][:] for i < count (the last row of each segment before the lm_head).
//   src, dst: [.][dim] f32. Grid: (count), block: 256.
#include "common.cuh"

#define ARGMAX_LOADS 4

// (v, i) into the running best (*bv, *bi): the larger value, the lower index on ties; a NaN never wins
__device__ __forceinline__ void take_better(float v, int i, float* bv, int* bi) {
    if (v > *bv || (v == *bv && i < *bi)) {
        *bv = v;
        *bi = i;
    }
}

// the warp's best (value, index) in every lane
__device__ __forceinline__ void warp_best(float* bv, int* bi) {
    for (int o = 16; o > 0; o >>= 1) {
        take_better(__shfl_xor_sync(0xffffffffu, *bv, o), __shfl_xor_sync(0xffffffffu, *bi, o), bv, bi);
    }
}

extern "C" __global__ void argmax(int* out, const float* logits, int vocab, float* partial, int* done) {
    __shared__ float best_v[32];
    __shared__ int best_i[32];
    __shared__ bool last;
    int r = blockIdx.x, s = blockIdx.y, S = gridDim.y;
    const float* row = logits + (size_t)r * vocab;
    int chunk = ((vocab + S - 1) / S + 3) & ~3, from = min(vocab, s * chunk), to = min(vocab, from + chunk);
    float bv = -INFINITY;
    int bi = 0x7fffffff;
    if ((vocab & 3) == 0 && ((unsigned long long)logits & 15) == 0) {   // whole float4s, four in flight a thread
        const float4* row4 = reinterpret_cast<const float4*>(row);
        int f4 = from / 4, t4 = to / 4;
        for (int i = f4 + threadIdx.x; i < t4; i += ARGMAX_LOADS * blockDim.x) {
            float4 v[ARGMAX_LOADS];
#pragma unroll
            for (int u = 0; u < ARGMAX_LOADS; u++) {
                int j = i + u * blockDim.x;
                if (j < t4) v[u] = row4[j];
            }
#pragma unroll
            for (int u = 0; u < ARGMAX_LOADS; u++) {
                int j = i + u * blockDim.x;
                if (j >= t4) continue;
                take_better(v[u].x, 4 * j, &bv, &bi);
                take_better(v[u].y, 4 * j + 1, &bv, &bi);
                take_better(v[u].z, 4 * j + 2, &bv, &bi);
                take_better(v[u].w, 4 * j + 3, &bv, &bi);
            }
        }
    } else {
        for (int i = from + threadIdx.x; i < to; i += blockDim.x) take_better(row[i], i, &bv, &bi);
    }
    warp_best(&bv, &bi);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) {
        best_v[warp] = bv;
        best_i[warp] = bi;
    }
    __syncthreads();
    if (warp != 0) return;
    int warps = blockDim.x >> 5;
    bv = lane < warps ? best_v[lane] : -INFINITY;
    bi = lane < warps ? best_i[lane] : 0x7fffffff;
    warp_best(&bv, &bi);
    if (S == 1) {
        if (lane == 0) out[r] = bi;
        return;
    }
    // the block's best to partial[r][s]; the row's last block to finish takes the S partials
    float* part_v = partial;
    int* part_i = reinterpret_cast<int*>(partial + (size_t)gridDim.x * S);
    if (lane == 0) {
        part_v[r * S + s] = bv;
        part_i[r * S + s] = bi;
        __threadfence();
        last = atomicAdd(done + r, 1) == S - 1;
        __threadfence();   // the other blocks' partials, seen through the counter, before any lane reads them
    }
    __syncwarp();
    if (!last) return;
    __threadfence();
    bv = -INFINITY;
    bi = 0x7fffffff;
    for (int k = lane; k < S; k += 32) take_better(__ldcg(part_v + r * S + k), __ldcg(part_i + r * S + k), &bv, &bi);
    warp_best(&bv, &bi);
    if (lane == 0) {
        out[r] = bi;
        done[r] = 0;
    }
}

extern "C" __global__ void gather_rows(float* dst, const float* src, const int* index, int count, int dim) {
    int i = blockIdx.x;
    if (i >= count) return;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) dst[(size_t)i * dim + c] = src[(size_t)index[i] * dim + c];
}

// sample_rows: for each row r, with params[r] = {temperature, top_p, top_k (0: all), u in [0, 1)} (doubles; u comes from
// the host's (seed, step) generator, so a draw does not depend on the backend):
//   the tokens in order of logit (descending, lower index first on ties); keep the first top_k; p_i = e^((l_i - max) / T)
//   in double; the nucleus is the shortest prefix whose mass reaches top_p of the kept mass; the token is the first
//   whose prefix mass exceeds u times the nucleus mass.
// Nothing is sorted: a token's place in the order is its rank key c_i = (order_key(l_i) << 32) | ~i (larger = earlier),
// and each cut (top-k, top-p, the draw) is the largest rank key whose prefix (all c >= it) holds enough count or mass,
// found by bisection on the logit's key (32 block-wide sums) and, within a group of equal logits, on the index.
//   probs: [rows][vocab] double scratch. Grid: (rows), block: 1024.
// a token's rank key: larger = earlier in the order (logit descending, lower id first on ties)
__device__ __forceinline__ unsigned long long rank_key(float logit, int id) {
    return ((unsigned long long)order_key(logit) << 32) | (unsigned)~id;
}

// Sum of weights (1 each, or probs[i]) over the tokens whose logit key is >= lo (above == false: == lo) and, with
// idx_max >= 0, index <= idx_max.
__device__ double prefix_weight(const float* row, const double* probs, int vocab, unsigned lo, bool equal_only,
                                int idx_max, double* scratch) {
    double acc = 0;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        unsigned k = order_key(row[i]);
        bool in = equal_only ? (k == lo && (idx_max < 0 || i <= idx_max)) : k >= lo;
        if (in) acc += probs ? probs[i] : 1.0;
    }
    return block_sum_all(acc, scratch);
}

// The index of the first token in order whose prefix weight reaches target (strict: exceeds it).
__device__ int find_cut(const float* row, const double* probs, int vocab, double target, bool strict, double* scratch) {
    unsigned lo = 0, hi = 0xffffffffu;
    while (lo < hi) {   // largest key v with weight(key >= v) reaching the target
        unsigned mid = (unsigned)(lo + ((unsigned long long)hi - lo + 1) / 2);   // 64-bit: hi - lo + 1 may be 2^32
        double w = prefix_weight(row, probs, vocab, mid, false, -1, scratch);
        if (strict ? w > target : w >= target) lo = mid; else hi = mid - 1;
    }
    // within the tokens of key lo: the smallest index whose prefix (all of key > lo, then these by index) reaches it;
    // usually the key is one token's, whose index a sum over the block finds
    double ties = prefix_weight(row, nullptr, vocab, lo, true, -1, scratch);
    if (ties == 1.0) {
        double at = 0;
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) if (order_key(row[i]) == lo) at = i;
        return (int)block_sum_all(at, scratch);
    }
    double above = lo == 0xffffffffu ? 0.0 : prefix_weight(row, probs, vocab, lo + 1, false, -1, scratch);
    int a = 0, b = vocab - 1;
    while (a < b) {
        int mid = (a + b) / 2;
        double w = above + prefix_weight(row, probs, vocab, lo, true, mid, scratch);
        if (strict ? w > target : w >= target) b = mid; else a = mid + 1;
    }
    return a;
}

extern "C" __global__ void sample_rows(int* out, const float* logits, const double* params, double* probs_all,
                                       int vocab) {
    __shared__ double scratch[32];
    __shared__ float smax[32];
    const float* row = logits + (size_t)blockIdx.x * vocab;
    double* probs = probs_all + (size_t)blockIdx.x * vocab;
    const double* p = params + 4 * blockIdx.x;
    double temperature = p[0], top_p = p[1], u = p[3];
    int top_k = (int)p[2];
    float mx = -INFINITY;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) mx = fmaxf(mx, row[i]);
    mx = warp_max(mx);
    if ((threadIdx.x & 31) == 0) smax[threadIdx.x >> 5] = mx;
    __syncthreads();
    mx = -INFINITY;
    for (int w = 0; w < (int)(blockDim.x >> 5); w++) mx = fmaxf(mx, smax[w]);
    // 1. top-k: the rank key of the k-th token; the kept tokens are those at or before it
    unsigned long long kept_from = 0;
    if (top_k > 0 && top_k < vocab) {
        int i = find_cut(row, nullptr, vocab, (double)top_k, false, scratch);
        kept_from = rank_key(row[i], i);
    }
    // 2. probabilities of the kept tokens (0 for the rest)
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        unsigned long long c = rank_key(row[i], i);
        probs[i] = c >= kept_from ? exp(((double)row[i] - (double)mx) / temperature) : 0.0;
    }
    __syncthreads();
    double sum = prefix_weight(row, probs, vocab, 0, false, -1, scratch);
    // 3. top-p: the nucleus ends at the first token whose prefix mass reaches top_p of the kept mass
    if (top_p < 1.0) {
        int i = find_cut(row, probs, vocab, top_p * sum, false, scratch);
        unsigned long long nucleus_from = rank_key(row[i], i);
        __syncthreads();
        for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
            unsigned long long c = rank_key(row[j], j);
            if (c < nucleus_from) probs[j] = 0.0;
        }
        __syncthreads();
        sum = prefix_weight(row, probs, vocab, 0, false, -1, scratch);
    }
    // 4. the draw: the first token whose prefix mass exceeds u times the nucleus mass
    int token = find_cut(row, probs, vocab, u * sum, true, scratch);
    if (threadIdx.x == 0) out[blockIdx.x] = token;
}
