// Split decode attention of the G query heads of kv head g over gathered rows, on tensor cores, with the rows staged
// in shared memory by asynchronous copies (cp.async) several chunks ahead of the arithmetic.
//   A block of G warps takes the slots slot_of(t), t in [begin, end), in chunks of PIPE_ROWS rows; while it computes
//   chunk c the copies of chunks c + 1 .. c + PIPE_STAGES - 1 are in flight. Each key and value row is read from memory
//   once for the group's heads.
//   part0: the split's partial of the group's first head; head h's at part0 + h * splits * (D + 2) (partials
//   [heads][splits][D + 2] f32: o[D], max m, sum l, as split_attention.cuh writes them); qrow: [G][D] f32.
//   Slots as split_attention.cuh's (a negative slot -1 - i: row i of the ring). Dynamic shared memory:
//   pipelined_shared_bytes(D, end - begin). Call with the whole block (32 * G threads). Built for 3 G <= 16, D a
//   multiple of 32.
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
// reached 64%, then the SMs' instruction issue was the limit (each warp converting and multiplying every key and value
// element for its own head); on tensor cores a chunk is 16 mma a warp, and the kernel reads at 67-68% of the copy
// (80% with 4096 rows a kv head; dev/cuda/README.md, p1 and p2).
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

// Dynamic shared memory of a group_attend_pipelined block for splits of `span` slots: the stages' key and value rows,
// the scratch, the split's slots
__host__ __device__ constexpr int pipelined_shared_bytes(int D, int span) {
    return PIPE_STAGES * 2 * pipe_rows_bytes(D) + pipe_scratch_bytes(D) + span * 4;
}

template <int D, int G, typename SlotOf>
__device__ void group_attend_pipelined(float* part0, const float* qrow, const bf16* kc, const bf16* vc,
                                       const bf16* kring, const bf16* vring, int g, int KVH, int begin, int end,
                                       int splits, float scale, SlotOf slot_of) {
    constexpr int PIECES = D / 8, THREADS = 32 * G, CH = PIPE_ROWS, AP = CH + 8;
    constexpr int OT = D / 8 / G;   // O's 8-channel tiles a warp
    static_assert(D % 32 == 0 && 3 * G <= 16 && CH == 32 && (CH / 8) % G == 0 && (OT % 2 == 0 || OT == 1),
                  "shapes built");
    extern __shared__ __align__(128) unsigned char pipe_shared[];
    unsigned kbase = smem_addr(pipe_shared), vbase = kbase + PIPE_STAGES * pipe_rows_bytes(D);
    unsigned char* scratch = pipe_shared + PIPE_STAGES * 2 * pipe_rows_bytes(D);
    float (*ss)[CH] = reinterpret_cast<float (*)[CH]>(scratch);                  // S: [16][CH]
    bf16 (*ap)[AP] = reinterpret_cast<bf16 (*)[AP]>(scratch + 16 * CH * 4);       // P: [16][CH + 8]
    float* corr_of = reinterpret_cast<float*>(scratch + 16 * CH * 4 + 16 * AP * 2);   // [G]
    int* slots = reinterpret_cast<int*>(scratch + pipe_scratch_bytes(D));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int n = max(0, end - begin), chunks = (n + CH - 1) / CH;
    float* part = part0 + (size_t)warp * splits * (D + 2);
    if (n == 0) {   // an empty split: weight 0 for the merge
        for (int c = lane; c < D; c += 32) part[c] = 0.f;
        if (lane == 0) {
            part[D] = -INFINITY;
            part[D + 1] = 0.f;
        }
        return;
    }
    // the split's slots, then the copies of the first chunks, then (while they fly) Q's three parts into the scratch
    // (rows p * G + h; rows 3G.. zero) and from there to A fragments
    for (int t = threadIdx.x; t < n; t += THREADS) slots[t] = slot_of(begin + t);
    __syncthreads();
    // chunk c's key and value rows into stage c % PIPE_STAGES: 16-byte pieces, consecutive threads along a row; the
    // rows past the split are zero-filled (their weights are 0)
    auto issue = [&](int c) {
        int st = c % PIPE_STAGES, t0 = c * CH;
        for (int i = threadIdx.x; i < CH * PIECES; i += THREADS) {
            int r = i / PIECES, piece = i % PIECES;
            bool valid = t0 + r < n;
            int slot = slots[valid ? t0 + r : 0];
            unsigned at = st * pipe_rows_bytes(D) + swizzled_row_piece<D>(r, piece);
            cp_async16(kbase + at, kv_row(kc, kring, slot, KVH, g, D) + piece * 8, valid);
            cp_async16(vbase + at, kv_row(vc, vring, slot, KVH, g, D) + piece * 8, valid);
        }
    };
    for (int c = 0; c < PIPE_STAGES - 1; c++) {
        if (c < chunks) issue(c);
        asm volatile("cp.async.commit_group;\n");
    }
    for (int i = threadIdx.x; i < 16 * PIECES; i += THREADS) {
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
    __syncthreads();
    unsigned aq[D / 16][4];
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++)
        ldmatrix_x4(smem_addr(scratch) + swizzled_row_piece<D>(lane & 15, kk * 2 + (lane >> 4)), aq[kk][0], aq[kk][1],
                    aq[kk][2], aq[kk][3]);
    __syncthreads();   // the scratch is S and P's from here
    for (int i = threadIdx.x; i < (16 - 3 * G) * AP; i += THREADS) ap[3 * G + i / AP][i % AP] = __float2bfloat16(0.f);
    float m = -INFINITY, l = 0.f, o[OT][4];
#pragma unroll
    for (int t = 0; t < OT; t++) o[t][0] = o[t][1] = o[t][2] = o[t][3] = 0.f;
    for (int c = 0; c < chunks; c++) {
        asm volatile("cp.async.wait_group %0;\n" ::"n"(PIPE_STAGES - 2));
        __syncthreads();   // chunk c is in every thread's view; chunk c - 1's stage, S and P are free
        unsigned ks = kbase + (c % PIPE_STAGES) * pipe_rows_bytes(D), vs = vbase + (c % PIPE_STAGES) * pipe_rows_bytes(D);
        // S = Q K^T, warp w: the chunk's rows [8 nt, 8 nt + 8) for nt = w, w + G, ...
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
        __syncthreads();
        // online softmax, warp h = head h, lane = row of the chunk
        {
            int h = warp;
            bool valid = c * CH + lane < n;
            float score = valid ? (ss[h][lane] + ss[G + h][lane] + ss[2 * G + h][lane]) * scale : -INFINITY;
            float mnew = fmaxf(m, warp_max(score));
            float p = valid ? __expf(score - mnew) : 0.f, corr = __expf(m - mnew);
            l = l * corr + warp_sum(p);
            m = mnew;
#pragma unroll
            for (int part = 0; part < 3; part++) ap[part * G + h][lane] = __float2bfloat16_rn(bf16_rest(p, part));
            if (lane == 0) corr_of[h] = corr;
        }
        __syncthreads();
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
        if (c + PIPE_STAGES - 1 < chunks) issue(c + PIPE_STAGES - 1);
        asm volatile("cp.async.commit_group;\n");
    }
    // O's 16 rows into shared memory (the stages, now idle), then head h's output = the sum of its three parts' rows
    asm volatile("cp.async.wait_group 0;\n");
    __syncthreads();
    float (*of)[D + 4] = reinterpret_cast<float (*)[D + 4]>(pipe_shared);
    {
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
    int h = warp;
    for (int c = lane; c < D; c += 32) part[c] = of[h][c] + of[G + h][c] + of[2 * G + h][c];
    if (lane == 0) {
        part[D] = m;
        part[D + 1] = l;
    }
}
