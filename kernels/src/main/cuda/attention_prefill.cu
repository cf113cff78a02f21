// Causal attention for the rows of a prefill (flash-attention style, tensor cores): a block takes a tile of up to 128
// consecutive rows of one sequence and one query head, and walks that sequence's cache 64 keys at a time with an
// online softmax (base 2), so scores never leave registers.
//   out: [rows][H * D] f32 (attention output of every row and head), or out_bf: the same in bf16 where not null (the
//     output product's operand on tensor cores; out is then unused)
//   q: rows of q_stride floats whose first H * D are the heads (after RoPE)
//   each sequence's cache: [cap][KVH][D] bf16 (token-major, the tile's own keys already appended); head h reads kv
//     head h / (H / KVH); row r attends slots [0, row_len[r])
//   tiles: [T][3] ints (segment, first row, row count <= 128), rows of a tile at consecutive positions; the host lists
//     the tiles with the most keys first, so the longest blocks start first and the grid's tail is short
// Per block (4 warps, each 32 rows as two 16-row mma tiles, so every key and value fragment read from shared memory
// feeds two products): Q (scaled by 1/sqrt(D) * log2 e) in fp16 stays in shared memory and is read as A fragments per
// 16 channels; for each key tile, K and V land in shared memory by cp.async (double-buffered: the next tile loads while
// this one computes), each thread turns the keys it loaded from bf16 into fp16 (exact for magnitudes up to 65504, past
// which a key would turn infinite: Llama-family keys run to hundreds), S = Q K^T in fp16 products (q's rounding an
// eighth of the keys' own: the scores carry about the keys' error alone, as the CPU's f32 q against bf16 keys does;
// q in bf16 doubled it and flipped a transformers golden's first token, llama-tiny case 2, top two 0.0042 apart; mma,
// 32 x 64 per warp), masked past each row's length only
// where the tile reaches past a row, then O += P V with P re-packed from the S accumulators as A fragments and V read
// by ldmatrix.trans. A warp whose rows all end before a key tile skips its products (the causal triangle's corner).
// Shared rows hold D bf16 (D / 8 chunks of 16 bytes); chunk c of row r sits at c ^ (r & 7) so that ldmatrix's 8 rows
// hit 8 distinct bank groups. Grid: (H, T), block: 128, dynamic shared memory (128 + 4 * 64) * D * 2 bytes (two blocks
// an SM at D = 128). Built for D = 32, 64 and 128.
#include "common.cuh"

constexpr int PREFILL_MT = 2;                     // 16-row mma tiles per warp
constexpr int PREFILL_ROWS = 4 * 16 * PREFILL_MT; // rows of a block's tile
constexpr int PREFILL_KEYS = 64;                  // keys of a K/V tile

template <int D>
__device__ void prefill_body(float* out, bf16* out_bf, const float* q, const unsigned long long* kptr,
                             const unsigned long long* vptr, const int* tiles, const int* row_len, int H, int KVH,
                             float scale, int q_stride) {
    constexpr int CH = D / 8, MT = PREFILL_MT, BM = PREFILL_ROWS, BN = PREFILL_KEYS;
    // dynamic shared memory: Q [BM][D], then two buffers of K [BN][D] and V [BN][D] (tile t + 1 lands while t computes)
    extern __shared__ __align__(128) unsigned char smem[];
    constexpr unsigned Q_BYTES = BM * D * 2, KV_BYTES = BN * D * 2;
    unsigned q_smem = smem_addr(smem);
    int h = blockIdx.x, tile = blockIdx.y, g = h / (H / KVH);
    int seg = tiles[3 * tile], row0 = tiles[3 * tile + 1], count = tiles[3 * tile + 2];
    const bf16* kc = reinterpret_cast<const bf16*>(kptr[seg]);
    const bf16* vc = reinterpret_cast<const bf16*>(vptr[seg]);
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    int keys = row_len[row0 + count - 1];   // the last row sees the most

    auto load_tile = [&](int k0, int buf) {
        unsigned k_smem = q_smem + Q_BYTES + 2 * buf * KV_BYTES, v_smem = k_smem + KV_BYTES;
        for (int i = tid; i < BN * CH; i += 128) {
            int r = i / CH, c = i % CH, j = k0 + r;
            bool valid = j < keys;
            size_t at = ((size_t)(valid ? j : 0) * KVH + g) * D + c * 8;
            cp_async16(k_smem + swizzled_row_piece<D>(r, c), kc + at, valid);
            cp_async16(v_smem + swizzled_row_piece<D>(r, c), vc + at, valid);
        }
        asm volatile("cp.async.commit_group;\n");
    };
    load_tile(0, 0);   // the first keys load while Q is staged

    // Q tile in fp16, rows past the tile zeros
    float qscale = scale * 1.4426950408889634f;
    for (int i = tid; i < BM * CH; i += 128) {
        int r = i / CH, c = i % CH;
        uint4 packed = make_uint4(0u, 0u, 0u, 0u);
        if (r < count) {
            const float4* src = reinterpret_cast<const float4*>(q + (size_t)(row0 + r) * q_stride + h * D + c * 8);
            float4 a = src[0], b = src[1];
            packed = make_uint4(pack_f16(a.x * qscale, a.y * qscale), pack_f16(a.z * qscale, a.w * qscale),
                                pack_f16(b.x * qscale, b.y * qscale), pack_f16(b.z * qscale, b.w * qscale));
        }
        *reinterpret_cast<uint4*>(smem + swizzled_row_piece<D>(r, c)) = packed;
    }

    // this warp's rows: w0 .. w0 + 31; a thread holds rows lane / 4 and 8 below of each mma tile
    int w0 = warp * 16 * MT;
    int warp_keys = w0 < count ? row_len[row0 + min(w0 + 16 * MT, count) - 1] : 0;   // the most any of its rows sees
    int warp_min = row_len[row0] + w0;                                                 // the least
    // row w0 + i's length is first + i (consecutive positions); rows past the tile follow the same rule (their
    // output is never written)
    int first = row_len[row0] + w0 - (lane & 3) * 2;   // less this thread's first column, for the masks below
    float o[MT][D / 8][4];
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
        for (int n = 0; n < D / 8; n++) o[m][n][0] = o[m][n][1] = o[m][n][2] = o[m][n][3] = 0.f;
    float mx[MT][2], l[MT][2];
#pragma unroll
    for (int m = 0; m < MT; m++) mx[m][0] = mx[m][1] = -INFINITY, l[m][0] = l[m][1] = 0.f;

    for (int k0 = 0, buf = 0; k0 < keys; k0 += BN, buf ^= 1) {
        if (k0 + BN < keys) {
            load_tile(k0 + BN, buf ^ 1);
            asm volatile("cp.async.wait_group 1;\n");
        } else {
            asm volatile("cp.async.wait_group 0;\n");
        }
        unsigned k_smem = q_smem + Q_BYTES + 2 * buf * KV_BYTES, v_smem = k_smem + KV_BYTES;
        for (int i = tid; i < BN * CH; i += 128) {   // the keys this thread loaded, now landed: bf16 to fp16
            uint4* p = reinterpret_cast<uint4*>(smem + (k_smem - q_smem) + swizzled_row_piece<D>(i / CH, i % CH));
            uint4 v = *p;
            *p = make_uint4(bf16x2_to_f16x2(v.x), bf16x2_to_f16x2(v.y), bf16x2_to_f16x2(v.z), bf16x2_to_f16x2(v.w));
        }
        __syncthreads();   // tile k0 (and, the first time, Q) has landed and is converted for every thread
        if (k0 < warp_keys) {
            // S = Q K^T: 32 rows x 64 keys per warp, MT x 8 accumulator tiles of 16 x 8
            float s[MT][8][4];
#pragma unroll
            for (int m = 0; m < MT; m++)
#pragma unroll
                for (int n = 0; n < 8; n++) s[m][n][0] = s[m][n][1] = s[m][n][2] = s[m][n][3] = 0.f;
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++) {
                unsigned a[MT][4];
#pragma unroll
                for (int m = 0; m < MT; m++) {
                    ldmatrix_x4(q_smem + swizzled_row_piece<D>(w0 + m * 16 + (lane & 15), kk * 2 + (lane >> 4)),
                                a[m][0], a[m][1], a[m][2], a[m][3]);
                }
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    unsigned b0, b1, b2, b3;
                    int r = j * 16 + (lane & 7) + ((lane >> 4) << 3);
                    ldmatrix_x4(k_smem + swizzled_row_piece<D>(r, kk * 2 + ((lane >> 3) & 1)), b0, b1, b2, b3);
#pragma unroll
                    for (int m = 0; m < MT; m++) {
                        mma_f16(s[m][2 * j], a[m], b0, b1);
                        mma_f16(s[m][2 * j + 1], a[m], b2, b3);
                    }
                }
            }
            // mask keys past each row's length where the tile reaches past the warp's shortest row
            if (k0 + BN > warp_min) {
#pragma unroll
                for (int m = 0; m < MT; m++)
#pragma unroll
                    for (int n = 0; n < 8; n++) {
                        // key k0 + n * 8 + lane % 4 * 2 (+1) against row w0 + m * 16 + lane / 4 (+8)
                        int past = k0 + n * 8 - m * 16 - (lane >> 2) - first;   // >= 0: the key is past the row
                        if (past >= 0) s[m][n][0] = -INFINITY;
                        if (past + 1 >= 0) s[m][n][1] = -INFINITY;
                        if (past >= 8) s[m][n][2] = -INFINITY;
                        if (past + 1 >= 8) s[m][n][3] = -INFINITY;
                    }
            }
            // online softmax over the tile (a row's 64 scores live in one quad); a row whose keys all lie past its
            // length in this tile keeps its running max (tile max -inf)
#pragma unroll
            for (int m = 0; m < MT; m++) {
#pragma unroll
                for (int half = 0; half < 2; half++) {
                    float tmax = -INFINITY;
#pragma unroll
                    for (int n = 0; n < 8; n++) tmax = fmaxf(tmax, fmaxf(s[m][n][2 * half], s[m][n][2 * half + 1]));
                    tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
                    tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 2));
                    float now = fmaxf(mx[m][half], tmax);
                    float corr = now == -INFINITY ? 1.f : exp2f(mx[m][half] - now);
                    mx[m][half] = now;
                    float sum = 0.f;
#pragma unroll
                    for (int n = 0; n < 8; n++) {
                        s[m][n][2 * half] = exp2f(s[m][n][2 * half] - now);
                        s[m][n][2 * half + 1] = exp2f(s[m][n][2 * half + 1] - now);
                        sum += s[m][n][2 * half] + s[m][n][2 * half + 1];
                    }
                    l[m][half] = l[m][half] * corr + sum;   // per-thread partial sums: the quad adds up at the end
#pragma unroll
                    for (int n = 0; n < D / 8; n++) {
                        o[m][n][2 * half] *= corr;
                        o[m][n][2 * half + 1] *= corr;
                    }
                }
            }
            // O += P V: P's accumulator tiles 2t and 2t + 1 are the A fragment of keys 16t .. 16t + 15
#pragma unroll
            for (int t = 0; t < 4; t++) {
                unsigned pa[MT][4];
#pragma unroll
                for (int m = 0; m < MT; m++) {
                    pa[m][0] = pack_bf16(s[m][2 * t][0], s[m][2 * t][1]);
                    pa[m][1] = pack_bf16(s[m][2 * t][2], s[m][2 * t][3]);
                    pa[m][2] = pack_bf16(s[m][2 * t + 1][0], s[m][2 * t + 1][1]);
                    pa[m][3] = pack_bf16(s[m][2 * t + 1][2], s[m][2 * t + 1][3]);
                }
#pragma unroll
                for (int j = 0; j < D / 16; j++) {
                    unsigned b0, b1, b2, b3;
                    int r = t * 16 + (lane & 7) + (((lane >> 3) & 1) << 3);
                    ldmatrix_x4_trans(v_smem + swizzled_row_piece<D>(r, j * 2 + (lane >> 4)), b0, b1, b2, b3);
#pragma unroll
                    for (int m = 0; m < MT; m++) {
                        mma_bf16(o[m][2 * j], pa[m], b0, b1);
                        mma_bf16(o[m][2 * j + 1], pa[m], b2, b3);
                    }
                }
            }
        }
        __syncthreads();   // this buffer is read by every warp before the next iteration refills it
    }
#pragma unroll
    for (int m = 0; m < MT; m++) {
#pragma unroll
        for (int half = 0; half < 2; half++) {
            float sum = l[m][half];
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            sum += __shfl_xor_sync(0xffffffffu, sum, 2);
            int r = w0 + m * 16 + (lane >> 2) + 8 * half;
            if (r >= count) continue;
            size_t at = (size_t)(row0 + r) * H * D + h * D + (lane & 3) * 2;
#pragma unroll
            for (int n = 0; n < D / 8; n++) {
                float2 v = make_float2(o[m][n][2 * half] / sum, o[m][n][2 * half + 1] / sum);
                if (out_bf) *reinterpret_cast<__nv_bfloat162*>(out_bf + at + n * 8) = __float22bfloat162_rn(v);
                else *reinterpret_cast<float2*>(out + at + n * 8) = v;
            }
        }
    }
}

#define PREFILL_KERNEL(d) extern "C" __global__ void __launch_bounds__(128, 2) attention_prefill_d##d(float* out, \
        bf16* out_bf, const float* q, const unsigned long long* kp, const unsigned long long* vp, const int* tiles, \
        const int* len, int H, int KVH, float scale, int q_stride) { \
    prefill_body<d>(out, out_bf, q, kp, vp, tiles, len, H, KVH, scale, q_stride); \
}
PREFILL_KERNEL(32)
PREFILL_KERNEL(64)
PREFILL_KERNEL(128)
