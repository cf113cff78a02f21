// Split decode attention of the G query heads of kv head g over gathered rows, on tensor cores, with the rows staged
// in shared memory by asynchronous copies (cp.async) several chunks ahead of the arithmetic.
//   The rows slot_of(t), t in [0, rows), are taken in chunks of PIPE_ROWS: block y of the splits of one (row, kv head)
//   owns chunks y, y + splits, ... but the last two a split, which the blocks claim from a counter (claim[0]; claim[1]
//   counts the blocks done, and the last one resets both), so blocks that stream faster take more and all end
//   together. A block is G consumer warps and one producer warp: the producer takes a chunk, reads its slots and
//   issues its key and value rows' copies into a free stage (PIPE_STAGES - 1 ahead), each stage's copies completing on
//   its mbarrier `full`; the consumers compute on a full stage and free it (`empty`).
//   Each key and value row is read from memory once for the group's heads.
//   part0: this block's partial of the group's first head; head h's at part0 + h * splits * (D + 2) (partials
//   [heads][splits][D + 2] f32: o[D], max m, sum l, as split_attention.cuh writes them; a block that got no chunk writes
//   weight 0); or, with one split and out (f32) or out_bf (bf16) given, the heads' outputs o / l themselves into
//   out[h * D + c] (the row's G heads of [H * D]): the merge of one split, bit for bit, without a merge launch.
//   qrow: [G][D] f32. Slots as split_attention.cuh's (a negative slot -1 - i: row i of the ring). Dynamic
//   shared memory: pipelined_shared_bytes(D). Call with the whole block (32 * (G + 1) threads). Built for 3 G <= 16, D
//   a multiple of 32.
// Per chunk, with mma.sync m16n8k16 (bf16 in, f32 accumulate):
//   S = Q K^T: A = [16][D], row p * G + h the part p of head h's query (q = hi + mid + lo, three bf16 parts: the
//     scores keep q's f32 precision, as the CPU's f32 q times bf16 k); B = the chunk's key rows; warp w takes rows
//     [8w, 8w + 8) of the chunk (G = 2: two such tiles), S to shared memory.
//   online softmax: warp h takes head h (lane r: row r of the chunk), sums its three parts' scores, rescales by the
//     running max; the weights p, again as three bf16 parts, become A = P [16][PIPE_ROWS] for
//   O += P V: B = the chunk's value rows (ldmatrix.trans); warp w takes channels [w D / G, (w + 1) D / G) of all 16
//     rows of O; at the end head h's output is the sum of its three rows.
// Why: on the H100 at batch 8 and 32K (2048 selected rows of 32K a kv head) group_attend_slots read the rows at 40%
// of the copy bandwidth while a kernel that only gathers them reads at 84% (dev/cuda/gather_bench.cu): its
// register-held loads keep one chunk in flight a warp. Staging by cp.async alone (the same arithmetic on CUDA cores)
// reached 64%, then the SMs' instruction issue was the limit; on tensor cores a chunk is 16 mma a warp (67-68% with
// each block's splits fixed). Fixed splits ended over 8 us of a 33 us launch (a trace of each block's phases), and
// claiming chunks in the consumers put the claim on every chunk's path: the producer warp takes it off
// (dev/cuda/README.md, sessions 7 and 9).
#pragma once
#include "common.cuh"
#include "split_attention.cuh"

#ifndef PIPE_ROWS
#define PIPE_ROWS 32
#endif
#ifndef PIPE_STAGES
#define PIPE_STAGES 3
#endif

// bytes of a stage's key (or value) rows, of the scratch shared by Q's parts (prologue) and S, P and the heads'
// corrections (each chunk)
__host__ __device__ constexpr int pipe_rows_bytes(int D) { return PIPE_ROWS * D * 2; }
__host__ __device__ constexpr int pipe_scratch_bytes(int D) {
    return 16 * D * 2 > 16 * PIPE_ROWS * 4 + 16 * (PIPE_ROWS + 8) * 2 + 16 * 4
               ? 16 * D * 2 : 16 * PIPE_ROWS * 4 + 16 * (PIPE_ROWS + 8) * 2 + 16 * 4;
}

// Dynamic shared memory of a group_attend_pipelined block: the stages' key and value rows, the scratch
__host__ __device__ constexpr int pipelined_shared_bytes(int D) {
    return PIPE_STAGES * 2 * pipe_rows_bytes(D) + pipe_scratch_bytes(D);
}

// mbarriers in shared memory (sm_80+)
__device__ __forceinline__ void mbar_init(unsigned bar, int count) {
    asm volatile("mbarrier.init.shared.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(unsigned bar) {
    asm volatile("{\n .reg .b64 state;\n mbarrier.arrive.shared.b64 state, [%0];\n}\n" ::"r"(bar) : "memory");
}
// arrives once this thread's asynchronous copies issued so far have landed (the barrier's count includes it)
__device__ __forceinline__ void mbar_arrive_on_copies(unsigned bar) {
    asm volatile("cp.async.mbarrier.arrive.noinc.shared.b64 [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_wait(unsigned bar, unsigned parity) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900   // try_wait suspends the thread for a while; test_wait spins
    asm volatile("{\n .reg .pred done;\n MBAR_WAIT_%=:\n mbarrier.try_wait.parity.shared.b64 done, [%0], %1;\n"
                 " @!done bra MBAR_WAIT_%=;\n}\n" ::"r"(bar), "r"(parity) : "memory");
#else
    asm volatile("{\n .reg .pred done;\n MBAR_WAIT_%=:\n mbarrier.test_wait.parity.shared.b64 done, [%0], %1;\n"
                 " @!done bra MBAR_WAIT_%=;\n}\n" ::"r"(bar), "r"(parity) : "memory");
#endif
}
// the consumer warps' barrier (the producer warp does not take part)
__device__ __forceinline__ void consumers_sync(int threads) {
    asm volatile("bar.sync 1, %0;\n" ::"r"(threads) : "memory");
}

template <int D, int G, typename SlotOf>
__device__ void group_attend_pipelined(float* part0, const float* qrow, const bf16* kc, const bf16* vc,
                                       const bf16* kring, const bf16* vring, int g, int KVH, int rows, int* claim,
                                       int splits, float scale, SlotOf slot_of, float* out = nullptr,
                                       bf16* out_bf = nullptr) {
    constexpr int PIECES = D / 8, CONSUMERS = 32 * G, CH = PIPE_ROWS, AP = CH + 8, S = PIPE_STAGES;
    constexpr int OT = D / 8 / G;   // O's 8-channel tiles a warp
    static_assert(D % 32 == 0 && 3 * G <= 16 && CH == 32 && (CH / 8) % G == 0 && (OT % 2 == 0 || OT == 1)
                  && 32 % PIECES == 0, "shapes built");
    extern __shared__ __align__(128) unsigned char pipe_shared[];
    __shared__ __align__(8) unsigned long long bars[2 * S];   // full[S], empty[S]
    __shared__ int chunk_of[S];                               // the chunk a stage holds (-1: none left)
    unsigned kbase = smem_addr(pipe_shared), vbase = kbase + S * pipe_rows_bytes(D);
    unsigned full = smem_addr(bars), empty = full + 8 * S;
    unsigned char* scratch = pipe_shared + S * 2 * pipe_rows_bytes(D);
    float (*ss)[CH] = reinterpret_cast<float (*)[CH]>(scratch);                  // S: [16][CH]
    bf16 (*ap)[AP] = reinterpret_cast<bf16 (*)[AP]>(scratch + 16 * CH * 4);       // P: [16][CH + 8]
    float* corr_of = reinterpret_cast<float*>(scratch + 16 * CH * 4 + 16 * AP * 2);   // [G]
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n = rows, chunks = (n + CH - 1) / CH;
    if (threadIdx.x == 0) {
        for (int st = 0; st < S; st++) {
            mbar_init(full + 8 * st, 32);   // the producer's lanes
            mbar_init(empty + 8 * st, G);   // a lane of each consumer warp
        }
    }
    __syncthreads();
    float m = -INFINITY, l = 0.f, o[OT][4];
#pragma unroll
    for (int t = 0; t < OT; t++) o[t][0] = o[t][1] = o[t][2] = o[t][3] = 0.f;
    if (warp == G) {
        // the producer: a chunk's slots (lane r: row r), then its copies. Block y of the splits owns chunks y,
        // y + splits, ... below `owned` (the bulk, without waiting on a claim); the last two chunks a split go to
        // whichever block claims them first (the counter), so blocks that stream faster take more and all end together.
        // The next chunk and its slots are read while the current chunk's copies fly.
        int owned = max(0, chunks - 2 * splits), k = 0;
        auto next_chunk = [&]() {
            int own = blockIdx.y + k * splits;
            if (own < owned) {
                k++;
                return own;
            }
            return owned + __shfl_sync(0xffffffffu, lane == 0 ? atomicAdd(claim, 1) : 0, 0);
        };
        auto slot_in = [&](int chunk) {   // lane r's: row r of the chunk (0 past the last row)
            return chunk < chunks && chunk * CH + lane < n ? slot_of(chunk * CH + lane) : 0;
        };
        int c = next_chunk(), slot = slot_in(c);
        for (int f = 0;; f++) {
            int st = f % S;
            if (f >= S) mbar_wait(empty + 8 * st, (f / S - 1) & 1);
            if (lane == 0) {
                chunk_of[st] = c < chunks ? c : -1;
                __threadfence_block();   // before the stage's arrival
            }
            __syncwarp();
            if (c >= chunks) {
                mbar_arrive(full + 8 * st);   // wakes the consumers to chunk_of = -1
                break;
            }
            int t0 = c * CH;
#pragma unroll 4
            for (int i = lane; i < CH * PIECES; i += 32) {
                int r = i / PIECES, piece = i % PIECES, s = __shfl_sync(0xffffffffu, slot, r);
                unsigned at = st * pipe_rows_bytes(D) + swizzled_row_piece<D>(r, piece);
                bool valid = t0 + r < n;   // the rows past the last are zero-filled (weight 0)
                cp_async16(kbase + at, kv_row(kc, kring, s, KVH, g, D) + piece * 8, valid);
                cp_async16(vbase + at, kv_row(vc, vring, s, KVH, g, D) + piece * 8, valid);
            }
            mbar_arrive_on_copies(full + 8 * st);
            c = next_chunk();
            slot = slot_in(c);
        }
    } else {
        // the consumers: Q's three parts into the scratch (rows p * G + h; rows 3G.. zero) and from there to A
        // fragments, while the first copies fly
        for (int i = threadIdx.x; i < 16 * PIECES; i += CONSUMERS) {
            int r = i / PIECES, c = i % PIECES, h = r % G, p = r / G;
            unsigned w[4] = {0u, 0u, 0u, 0u};
            if (p < 3) {
                const float4* src = reinterpret_cast<const float4*>(qrow + h * D + c * 8);
                float4 a = src[0], b = src[1];
                float v[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    w[e] = pack_bf16(bf16_rest(v[2 * e], p), bf16_rest(v[2 * e + 1], p));
                }
            }
            *reinterpret_cast<uint4*>(scratch + swizzled_row_piece<D>(r, c)) = make_uint4(w[0], w[1], w[2], w[3]);
        }
        consumers_sync(CONSUMERS);
        unsigned aq[D / 16][4];
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++)
            ldmatrix_x4(smem_addr(scratch) + swizzled_row_piece<D>(lane & 15, kk * 2 + (lane >> 4)), aq[kk][0], aq[kk][1],
                        aq[kk][2], aq[kk][3]);
        consumers_sync(CONSUMERS);   // the scratch is S and P's from here
        for (int i = threadIdx.x; i < (16 - 3 * G) * AP; i += CONSUMERS) ap[3 * G + i / AP][i % AP] = __float2bfloat16(0.f);
        for (int c = 0;; c++) {
            int st = c % S;
            mbar_wait(full + 8 * st, (c / S) & 1);   // the stage's rows have landed
            int chunk = chunk_of[st];
            if (chunk < 0) break;
            unsigned ks = kbase + st * pipe_rows_bytes(D), vs = vbase + st * pipe_rows_bytes(D);
            // S = Q K^T, warp w: the chunk's rows [8 nt, 8 nt + 8) for nt = w, w + G, ... (the previous chunk's S was
            // read before the last barrier)
#pragma unroll
            for (int nt = warp; nt < CH / 8; nt += G) {
                float s[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
                for (int kk = 0; kk < D / 16; kk += 2) {
                    unsigned b0, b1, b2, b3;
                    ldmatrix_x4(ks + swizzled_row_piece<D>(nt * 8 + (lane & 7), kk * 2 + (lane >> 3)), b0, b1, b2, b3);
                    mma_bf16(s, aq[kk], b0, b1);
                    mma_bf16(s, aq[kk + 1], b2, b3);
                }
                int row = lane >> 2, col = nt * 8 + (lane & 3) * 2;
                ss[row][col] = s[0];
                ss[row][col + 1] = s[1];
                ss[row + 8][col] = s[2];
                ss[row + 8][col + 1] = s[3];
            }
            consumers_sync(CONSUMERS);   // S is whole; every warp is past the previous chunk's P V
            // online softmax, warp h = head h, lane = row of the chunk
            {
                int h = warp;
                bool valid = chunk * CH + lane < n;
                float score = valid ? (ss[h][lane] + ss[G + h][lane] + ss[2 * G + h][lane]) * scale : -INFINITY;
                float mnew = fmaxf(m, warp_max(score));
                float p = valid ? __expf(score - mnew) : 0.f, corr = __expf(m - mnew);
                l = l * corr + warp_sum(p);
                m = mnew;
#pragma unroll
                for (int part = 0; part < 3; part++) ap[part * G + h][lane] = __float2bfloat16_rn(bf16_rest(p, part));
                if (lane == 0) corr_of[h] = corr;
            }
            consumers_sync(CONSUMERS);
            // O = O * corr + P V over warp w's channel tiles; rows lane / 4 and lane / 4 + 8 are both head (lane / 4) % G
            float corr = corr_of[(lane >> 2) % G];
#pragma unroll
            for (int t = 0; t < OT; t++)
#pragma unroll
                for (int e = 0; e < 4; e++) o[t][e] *= corr;
#pragma unroll
            for (int kk = 0; kk < CH / 16; kk++) {
                unsigned a[4];
                ldmatrix_x4(smem_addr(&ap[lane & 15][kk * 16 + (lane >> 4) * 8]), a[0], a[1], a[2], a[3]);
                int r = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
                if constexpr (OT == 1) {   // one 8-channel tile a warp (D = 32, G = 4)
                    unsigned b0, b1;
                    ldmatrix_x2_trans(vs + swizzled_row_piece<D>(r, warp), b0, b1);
                    mma_bf16(o[0], a, b0, b1);
                } else {
#pragma unroll
                    for (int t = 0; t < OT; t += 2) {
                        unsigned b0, b1, b2, b3;
                        ldmatrix_x4_trans(vs + swizzled_row_piece<D>(r, warp * OT + t + (lane >> 4)), b0, b1, b2, b3);
                        mma_bf16(o[t], a, b0, b1);
                        mma_bf16(o[t + 1], a, b2, b3);
                    }
                }
            }
            __syncwarp();
            if (lane == 0) mbar_arrive(empty + 8 * st);   // this warp is done with the stage
        }
    }
    // O's 16 rows into shared memory (the stages, now idle), then head h's output = the sum of its three parts' rows
    __syncthreads();
    float (*of)[D + 4] = reinterpret_cast<float (*)[D + 4]>(pipe_shared);
    if (warp < G) {
        int row = lane >> 2;
#pragma unroll
        for (int t = 0; t < OT; t++) {
            int col = (warp * OT + t) * 8 + (lane & 3) * 2;
            of[row][col] = o[t][0];
            of[row][col + 1] = o[t][1];
            of[row + 8][col] = o[t][2];
            of[row + 8][col + 1] = o[t][3];
        }
    }
    __syncthreads();
    if (warp < G && splits == 1 && (out != nullptr || out_bf != nullptr)) {
        int h = warp;
        for (int c = lane; c < D; c += 32) {
            float o = (of[h][c] + of[G + h][c] + of[2 * G + h][c]) / l;
            if (out_bf != nullptr) out_bf[h * D + c] = __float2bfloat16(o);
            else out[h * D + c] = o;
        }
    } else if (warp < G) {
        int h = warp;
        float* part = part0 + (size_t)h * splits * (D + 2);
        for (int c = lane; c < D; c += 32) part[c] = of[h][c] + of[G + h][c] + of[2 * G + h][c];
        if (lane == 0) {
            part[D] = m;
            part[D + 1] = l;
        }
    } else if (lane == 0) {   // the last block of the (row, kv head) to finish resets its counter for the next launch
        __threadfence();
        if (atomicAdd(claim + 1, 1) == splits - 1) {
            claim[0] = 0;
            claim[1] = 0;
        }
    }
}
