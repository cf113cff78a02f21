// The device cache of a sequence's selected key/value rows (issue 26), for host-placed stores: a step's selection is
// served from a ring of C places a (sequence, layer, kv head) in device memory, and only the rows it misses cross the
// host link. The policy is kv/RowCache's (the CPU's model and specification): hits are the rows present; the misses,
// in the order the selection lists them, take the places at or past the hand that this step does not read, in ring
// order, evicting what they held; the hand moves past the last one. In parallel: the step's places are flagged, a
// prefix sum over the misses gives each its rank, one over the free places in ring order from the hand gives each
// place its rank, and the rank-m miss takes the rank-m place.
//   selected: [P * H][max_k] store slots of row p's shared selection at its group's first head (kv head g: row
//     p * H + g * (H / KVH)), rewritten to places so that the attention reads the cache as a store of C rows
//   store_k, store_v: [segments] pointers to the host store [cap][KVH][D] bf16 (mapped pinned memory)
//   cache_k, cache_v: [segments] pointers to the device cache [C][KVH][D] bf16
//   place_of: [segments] pointers to [KVH][cap] ints (the place of a store slot's row, -1: not held)
//   owner: [segments] pointers to [KVH][C] ints (the store slot at a place, -1: empty); hand: [segments] -> [KVH] ints
//   rows p < P of the step: sp[p][SP_FIELDS] (sparse_rows.cuh: SP_ROW, SP_K, SP_CAND, SP_CAP), seg[row] its segment;
//   places: C; stats: [2] unsigned long long, rows asked and rows missed, added to
//   At most one sparse row a segment in a launch (a decode step's); k <= C, k <= ROW_CACHE_MAX_K, C <=
//   ROW_CACHE_MAX_PLACES (else the kernel traps); a selection's slots distinct (top-k's are).
// Grid: (P * KVH), block: ROW_CACHE_THREADS; static shared memory: 40 KB (flags a place, ranks a selected row).
#include "../../kernels/src/main/cuda/common.cuh"
#include "../../kernels/src/main/cuda/sparse_rows.cuh"

#define ROW_CACHE_THREADS 256
#define ROW_CACHE_MAX_PLACES 16384
#define ROW_CACHE_MAX_K 4096
#define ROW_CACHE_ROWS 8   // rows a warp copies at once (host reads take a link round trip each)

// Exclusive prefix sum of one int a thread over the block (ROW_CACHE_THREADS threads); *total gets the sum.
__device__ int block_exclusive_scan(int v, int* total) {
    __shared__ int warp_sums[ROW_CACHE_THREADS / 32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, incl = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        int t = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += t;
    }
    if (lane == 31) warp_sums[warp] = incl;
    __syncthreads();
    int before = 0, all = 0;
    for (int w = 0; w < ROW_CACHE_THREADS / 32; w++) {
        int s = warp_sums[w];
        if (w < warp) before += s;
        all += s;
    }
    __syncthreads();   // warp_sums is read by all before the next scan writes it
    *total = all;
    return before + incl - v;
}

extern "C" __global__ void __launch_bounds__(ROW_CACHE_THREADS) row_cache_serve(
        int* selected, const unsigned long long* store_k, const unsigned long long* store_v,
        const unsigned long long* cache_k, const unsigned long long* cache_v, const unsigned long long* place_of_ptr,
        const unsigned long long* owner_ptr, const unsigned long long* hand_ptr, const int* seg, const int* sp, int H,
        int KVH, int D, int max_k, int C, unsigned long long* stats) {
    __shared__ unsigned char asked[ROW_CACHE_MAX_PLACES];   // places this step reads
    __shared__ int rank_place[ROW_CACHE_MAX_K];              // the place of the rank-m free place, m < misses
    __shared__ short miss_rank[ROW_CACHE_MAX_K];             // a selection entry's rank among the misses, -1: a hit
    int p = blockIdx.x / KVH, g = blockIdx.x % KVH;
    const int* d = sp + p * SP_FIELDS;
    int k = min(d[SP_K], d[SP_CAND]), s = seg[d[SP_ROW]], cap = d[SP_CAP];
    int* sel = selected + (size_t)(p * H + g * (H / KVH)) * max_k;
    int* place_of = reinterpret_cast<int*>(place_of_ptr[s]) + (size_t)g * cap;
    int* owner = reinterpret_cast<int*>(owner_ptr[s]) + (size_t)g * C;
    int* hand_at = reinterpret_cast<int*>(hand_ptr[s]) + g;
    if (k > C || k > ROW_CACHE_MAX_K || C > ROW_CACHE_MAX_PLACES || blockDim.x != ROW_CACHE_THREADS) __trap();
    k = max(k, 0);
    int hand = *hand_at;
    for (int c = threadIdx.x; c < C; c += blockDim.x) asked[c] = 0;
    __syncthreads();
    // 1. hits: flag their places; each thread a contiguous run of the selection (for the misses' ranks in order)
    int per = (k + blockDim.x - 1) / blockDim.x, i0 = min(k, threadIdx.x * per), i1 = min(k, i0 + per), mine = 0;
    for (int i = i0; i < i1; i++) {
        int c = place_of[sel[i]];
        if (c >= 0) asked[c] = 1;
        else mine++;
    }
    int misses, rank = block_exclusive_scan(mine, &misses);   // (its barrier also orders the flags)
    for (int i = i0; i < i1; i++) {
        int c = place_of[sel[i]];
        miss_rank[i] = (short)(c >= 0 ? -1 : rank++);
    }
    // 2. free places in ring order from the hand: a contiguous run of ring positions a thread
    int cper = (C + blockDim.x - 1) / blockDim.x, r0 = min(C, threadIdx.x * cper), r1 = min(C, r0 + cper), free = 0;
    for (int r = r0; r < r1; r++) free += !asked[(hand + r) % C];
    int free_total, frank = block_exclusive_scan(free, &free_total);
    for (int r = r0; r < r1 && frank < misses; r++) {
        int c = (hand + r) % C;
        if (!asked[c]) rank_place[frank++] = c;
    }
    __syncthreads();
    // 3. the selection rewritten to places; each miss takes its place: the old row's entry cleared, the new one's set
    for (int i = threadIdx.x; i < k; i += blockDim.x) {
        int slot = sel[i], m = miss_rank[i];
        if (m < 0) {
            sel[i] = place_of[slot];   // a hit's entry: no miss of this step changes it (an evicted row is not asked)
            continue;
        }
        int c = rank_place[m], old = owner[c];
        if (old >= 0) place_of[old] = -1;   // old is held and slot is not: never the same entry
        place_of[slot] = c;
        owner[c] = slot;
        sel[i] = c;
    }
    __syncthreads();   // the owners of step 3 are in place before the copies read them
    // 4. the missed rows over the link: a warp ROW_CACHE_ROWS misses at a time, D / 8 16-byte pieces of the key then of
    //    the value a row, all loads in flight before the first store
    int lane = threadIdx.x & 31, warps = blockDim.x >> 5, pieces = D / 8, per_row = 2 * pieces;
    const uint4* hk = reinterpret_cast<const uint4*>(store_k[s]);
    const uint4* hv = reinterpret_cast<const uint4*>(store_v[s]);
    uint4* ck = reinterpret_cast<uint4*>(cache_k[s]);
    uint4* cv = reinterpret_cast<uint4*>(cache_v[s]);
    for (int m0 = (threadIdx.x >> 5) * ROW_CACHE_ROWS; m0 < misses; m0 += warps * ROW_CACHE_ROWS) {
        int slot[ROW_CACHE_ROWS], place[ROW_CACHE_ROWS];
#pragma unroll
        for (int u = 0; u < ROW_CACHE_ROWS; u++) {
            place[u] = m0 + u < misses ? rank_place[m0 + u] : -1;
            slot[u] = place[u] >= 0 ? owner[place[u]] : -1;
        }
        for (int e0 = 0; e0 < per_row; e0 += 32) {
            int e = e0 + lane;
            uint4 v[ROW_CACHE_ROWS];
#pragma unroll
            for (int u = 0; u < ROW_CACHE_ROWS; u++) {
                if (slot[u] >= 0 && e < per_row) {
                    size_t at = ((size_t)slot[u] * KVH + g) * pieces + e % pieces;
                    v[u] = e < pieces ? hk[at] : hv[at];
                }
            }
#pragma unroll
            for (int u = 0; u < ROW_CACHE_ROWS; u++) {
                if (slot[u] >= 0 && e < per_row) {
                    size_t at = ((size_t)place[u] * KVH + g) * pieces + e % pieces;
                    if (e < pieces) ck[at] = v[u];
                    else cv[at] = v[u];
                }
            }
        }
    }
    // 5. the hand past the last miss's place
    if (threadIdx.x == 0) {
        if (misses > 0) *hand_at = (rank_place[misses - 1] + 1) % C;
        atomicAdd(&stats[0], (unsigned long long)k);
        atomicAdd(&stats[1], (unsigned long long)misses);
    }
}
