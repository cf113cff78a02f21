// Experiment (session 22, measured in session 23; select.cu's sparse_select now guesses without carried state,
// select_top_k_guessed): sparse_select whose top-k starts from a guessed threshold. The scores'
// mean and spread are summed after the scoring; the guess is mean + z sd, z carried from the selection's previous step
// (on the CPU, z of the previous step's 1.25 k-th score left between k and 2k candidates above the guess in 84-88% of
// the probe's selections: docs/results/bench-h100-2026-12-07-s22.txt). Where k to list_cap keys reach the guess, they
// are listed in candidate order and the radix select runs over the list only; else the full select_top_k. Exact either
// way: every key of the top k is at least the k-th largest, so a list holding k or more keys at or above the guess
// holds the top k, in the same order of ties (the list is in candidate order).
//   z_in: [P * H] (a selection's z, read at p * H + h0), or null: the full select
//   z_out: [P * H] or null: the z of this step's (5k/4)-th largest score, for the next step (a second radix select)
//   fallbacks: how many selections took the full select (one int, added to)
// Dynamic shared memory: 4 max_cand + 8 list_cap bytes (the keys, the list's candidates and their keys).
// Included by label_select_bench.cu after select.cu.

// the kk-th largest key of s[0, n) by select_top_k's radix passes (1 <= kk <= n)
__device__ unsigned kth_key(const unsigned* s, int n, int kk) {
    __shared__ int hist[256];
    __shared__ unsigned prefix_s;
    __shared__ int need_s;
    unsigned prefix = 0, mask = 0;
    int need = kk;
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
    return prefix;
}

extern "C" __global__ void __launch_bounds__(1024) sparse_select_guess(int* selected, const float* q,
        const unsigned long long* lptr, const unsigned long long* chptr, const unsigned long long* sptr,
        const int* seg, const int* sp, int H, int KVH, int D, int q_stride, int max_k, int max_cand, int list_cap,
        const float* z_in, float* z_out, int* fallbacks) {
    extern __shared__ unsigned s[];   // [max_cand] keys, then [list_cap] listed candidates, then their keys
    __shared__ float qc[8 * 64];
    __shared__ float red[32];
    __shared__ int warp_above[32], warp_ties[32];
    int G = H / KVH, p = blockIdx.x / H, h0 = blockIdx.x % H;
    const int* d = sp + p * SP_FIELDS;
    int mode = d[SP_MODE], row = d[SP_ROW], r = d[SP_R], n = d[SP_CAND];
    if (mode != 0 && h0 % G != 0) return;
    int heads = mode == 0 ? 1 : G;
    label_queries(qc, q + (size_t)row * q_stride, reinterpret_cast<const int*>(chptr[seg[row]]), h0, heads, r, D);
    __syncthreads();
    LabelCache labels(lptr[seg[row]], sptr[seg[row]], H, r, d[SP_BITS], d[SP_CAP], d[SP_LGROUP]);
    bool summed = summed_query(qc, labels.group, mode, heads, r);
    score_selection(s, labels, d[SP_SINKS], h0, qc, summed ? 1 : heads, mode, r, n);
    __syncthreads();
    int k = min(d[SP_K], n), sinks = d[SP_SINKS], sel = p * H + h0;
    int* out = selected + (size_t)sel * max_k;
    float sum = 0.f, sq = 0.f;
    for (int c = threadIdx.x; c < n; c += blockDim.x) {
        float v = key_score(s[c]);
        sum += v;
        sq += v * v;
    }
    sum = block_sum(sum, red);
    sq = block_sum(sq, red);
    float mean = sum / n, sd = sqrtf(fmaxf(sq / n - mean * mean, 1e-30f));
    bool listed = false;
    if (z_in != nullptr && k < n) {
        unsigned guess = order_key(mean + z_in[sel] * sd);
        int above = 0, ties;
        if (guess > 0u) count_picks(s, n, guess - 1u, warp_above, warp_ties, &above, &ties);
        if (above >= k && above <= list_cap) {
            unsigned* list = s + max_cand;
            unsigned* list_keys = list + list_cap;
            // the listed candidates in candidate order (write_picks with no ties taken: the keys > guess - 1)
            write_picks(reinterpret_cast<int*>(list), 1, 0, s, n, 0, guess - 1u, 0, 0, 0, warp_above, warp_ties);
            __syncthreads();
            for (int i = threadIdx.x; i < above; i += blockDim.x) list_keys[i] = s[list[i]];
            __syncthreads();
            select_top_k(out, heads, max_k, list_keys, above, k, 0);   // positions in the list
            __syncthreads();
            for (int i = threadIdx.x; i < k; i += blockDim.x) {
                int slot = sinks + (int)list[out[i]];
                for (int j = 0; j < heads; j++) out[(size_t)j * max_k + i] = slot;
            }
            listed = true;
        }
    }
    if (!listed) {
        if (threadIdx.x == 0 && z_in != nullptr) atomicAdd(fallbacks, 1);
        select_top_k(out, heads, max_k, s, n, k, sinks);
    }
    if (z_out != nullptr && k < n) {
        __syncthreads();
        unsigned t = kth_key(s, n, min(n, (5 * k + 3) / 4));
        if (threadIdx.x == 0) z_out[sel] = (key_score(t) - mean) / sd;
    }
}

