// Causal attention for the rows of a prefill (flash-attention style, tensor cores): a block takes a tile of up to 64
// consecutive rows of one sequence and one query head, and walks that sequence's cache 64 keys at a time with an
// online softmax (base 2), so scores never leave registers.
//   out: [rows][H * D] f32 (attention output of every row and head)
//   q: rows of q_stride floats whose first H * D are the heads (after RoPE)
//   each sequence's cache: [cap][KVH][D] bf16 (token-major, the tile's own keys already appended); head h reads kv
//     head h / (H / KVH); row r attends slots [0, row_len[r])
//   tiles: [T][3] ints (segment, first row, row count <= 64), rows of a tile at consecutive positions
// Per block: Q (scaled by 1/sqrt(D) * log2 e, as two bf16 parts) in registers as mma A fragments; for each key tile,
// K and V land in shared memory by cp.async (double-buffered: the next tile loads while this one computes), S = Q K^T (mma, 16 x 64 per warp), masked past each row's length, then
// O += P V with P re-packed from the S accumulators as A fragments and V read by ldmatrix.trans.
// Shared rows hold D bf16 (D / 8 chunks of 16 bytes); chunk c of row r sits at c ^ (r & 7) so that ldmatrix's 8 rows
// hit 8 distinct bank groups. Grid: (T, H), block: 128 (4 warps x 16 rows), dynamic shared memory 5 * 64 * D * 2 bytes.
// Built for D = 32, 64 and 128.
#include "common.cuh"

template <int D>
__device__ void prefill_body(float* out, const float* q, const unsigned long long* kptr,
                             const unsigned long long* vptr, const int* tiles, const int* row_len, int H, int KVH,
                             float scale, int q_stride) {
    constexpr int CH = D / 8;   // 16-byte chunks per row
    // dynamic shared memory: Q [64][D], then two buffers of K [64][D] and V [64][D] (tile t + 1 lands while t computes)
    extern __shared__ __align__(128) unsigned char smem[];
    constexpr unsigned TILE_BYTES = 64 * D * 2;
    unsigned q_smem = smem_addr(smem);
    bf16* Qs = reinterpret_cast<bf16*>(smem);
    bf16* Ks = reinterpret_cast<bf16*>(smem + TILE_BYTES);   // buffer 0's keys: also stages Q's low part
    int tile = blockIdx.x, h = blockIdx.y, g = h / (H / KVH);
    int seg = tiles[3 * tile], row0 = tiles[3 * tile + 1], count = tiles[3 * tile + 2];
    const bf16* kc = reinterpret_cast<const bf16*>(kptr[seg]);
    const bf16* vc = reinterpret_cast<const bf16*>(vptr[seg]);
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    int keys = row_len[row0 + count - 1];   // the last row sees the most

    // Q tile as a sum of two bf16 parts (hi + lo: about 16 bits of mantissa, so the scores carry the error of the
    // bf16 keys alone), staged through shared memory (lo in the key buffer, free until the first key tile), then to
    // A fragments; rows past the tile are zeros
    float qscale = scale * 1.4426950408889634f;
    for (int i = tid; i < 64 * CH; i += 128) {
        int r = i / CH, c = i % CH;
        unsigned hi[4] = {0u, 0u, 0u, 0u}, lo[4] = {0u, 0u, 0u, 0u};
        if (r < count) {
            const float4* src = reinterpret_cast<const float4*>(q + (size_t)(row0 + r) * q_stride + h * D + c * 8);
            float4 a = src[0], b = src[1];
            float v[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float x0 = v[2 * e] * qscale, x1 = v[2 * e + 1] * qscale;
                hi[e] = pack_bf16(bf16_rest(x0, 0), bf16_rest(x1, 0));
                lo[e] = pack_bf16(bf16_rest(x0, 1), bf16_rest(x1, 1));
            }
        }
        *reinterpret_cast<uint4*>(reinterpret_cast<char*>(Qs) + swizzled_row_piece<D>(r, c)) = make_uint4(hi[0], hi[1], hi[2], hi[3]);
        *reinterpret_cast<uint4*>(reinterpret_cast<char*>(Ks) + swizzled_row_piece<D>(r, c)) = make_uint4(lo[0], lo[1], lo[2], lo[3]);
    }
    __syncthreads();
    unsigned qhi[D / 16][4], qlo[D / 16][4];
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
        int r = warp * 16 + (lane & 15);
        unsigned off = swizzled_row_piece<D>(r, kk * 2 + (lane >> 4));
        ldmatrix_x4(smem_addr(Qs) + off, qhi[kk][0], qhi[kk][1], qhi[kk][2], qhi[kk][3]);
        ldmatrix_x4(smem_addr(Ks) + off, qlo[kk][0], qlo[kk][1], qlo[kk][2], qlo[kk][3]);
    }
    // this thread's two rows (lane / 4 and 8 below) and how far each may look
    int ra = warp * 16 + (lane >> 2), rb = ra + 8;
    int len_a = ra < count ? row_len[row0 + ra] : 1, len_b = rb < count ? row_len[row0 + rb] : 1;

    float o[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.f, l_b = 0.f;

    auto load_tile = [&](int k0, int buf) {
        unsigned k_smem = q_smem + TILE_BYTES * (1 + 2 * buf), v_smem = k_smem + TILE_BYTES;
        for (int i = tid; i < 64 * CH; i += 128) {
            int r = i / CH, c = i % CH, j = k0 + r;
            bool valid = j < keys;
            size_t at = ((size_t)(valid ? j : 0) * KVH + g) * D + c * 8;
            cp_async16(k_smem + swizzled_row_piece<D>(r, c), kc + at, valid);
            cp_async16(v_smem + swizzled_row_piece<D>(r, c), vc + at, valid);
        }
        asm volatile("cp.async.commit_group;\n");
    };
    __syncthreads();   // every warp has its Q fragments: buffer 0 may be refilled
    load_tile(0, 0);
    for (int k0 = 0, buf = 0; k0 < keys; k0 += 64, buf ^= 1) {
        if (k0 + 64 < keys) {
            load_tile(k0 + 64, buf ^ 1);
            asm volatile("cp.async.wait_group 1;\n");
        } else {
            asm volatile("cp.async.wait_group 0;\n");
        }
        __syncthreads();   // tile k0 has landed for every thread
        unsigned k_smem = q_smem + TILE_BYTES * (1 + 2 * buf), v_smem = k_smem + TILE_BYTES;

        // S = Q K^T: 16 rows x 64 keys per warp, 8 accumulator tiles of 16 x 8
        float s[8][4];
#pragma unroll
        for (int n = 0; n < 8; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
#pragma unroll
            for (int j = 0; j < 4; j++) {
                unsigned b0, b1, b2, b3;
                int r = j * 16 + (lane & 7) + ((lane >> 4) << 3);
                ldmatrix_x4(k_smem + swizzled_row_piece<D>(r, kk * 2 + ((lane >> 3) & 1)), b0, b1, b2, b3);
                mma_bf16(s[2 * j], qhi[kk], b0, b1);
                mma_bf16(s[2 * j + 1], qhi[kk], b2, b3);
                mma_bf16(s[2 * j], qlo[kk], b0, b1);
                mma_bf16(s[2 * j + 1], qlo[kk], b2, b3);
            }
        }
        // mask keys past each row's length; online softmax over the tile (a row's 64 scores live in one quad)
        float tmax_a = -INFINITY, tmax_b = -INFINITY;
#pragma unroll
        for (int n = 0; n < 8; n++) {
            int col = k0 + n * 8 + (lane & 3) * 2;
            if (col >= len_a) s[n][0] = -INFINITY;
            if (col + 1 >= len_a) s[n][1] = -INFINITY;
            if (col >= len_b) s[n][2] = -INFINITY;
            if (col + 1 >= len_b) s[n][3] = -INFINITY;
            tmax_a = fmaxf(tmax_a, fmaxf(s[n][0], s[n][1]));
            tmax_b = fmaxf(tmax_b, fmaxf(s[n][2], s[n][3]));
        }
#pragma unroll
        for (int x = 1; x < 4; x <<= 1) {
            tmax_a = fmaxf(tmax_a, __shfl_xor_sync(0xffffffffu, tmax_a, x));
            tmax_b = fmaxf(tmax_b, __shfl_xor_sync(0xffffffffu, tmax_b, x));
        }
        // a row whose keys all lie past its length in this tile keeps its running max (tile max -inf)
        float new_a = fmaxf(m_a, tmax_a), new_b = fmaxf(m_b, tmax_b);
        float corr_a = new_a == -INFINITY ? 1.f : exp2f(m_a - new_a);
        float corr_b = new_b == -INFINITY ? 1.f : exp2f(m_b - new_b);
        m_a = new_a;
        m_b = new_b;
        float sum_a = 0.f, sum_b = 0.f;
#pragma unroll
        for (int n = 0; n < 8; n++) {
            s[n][0] = exp2f(s[n][0] - m_a);
            s[n][1] = exp2f(s[n][1] - m_a);
            s[n][2] = exp2f(s[n][2] - m_b);
            s[n][3] = exp2f(s[n][3] - m_b);
            sum_a += s[n][0] + s[n][1];
            sum_b += s[n][2] + s[n][3];
        }
        l_a = l_a * corr_a + sum_a;   // per-thread partial sums: the quad is summed once at the end
        l_b = l_b * corr_b + sum_b;
#pragma unroll
        for (int n = 0; n < D / 8; n++) {
            o[n][0] *= corr_a;
            o[n][1] *= corr_a;
            o[n][2] *= corr_b;
            o[n][3] *= corr_b;
        }
        // O += P V: P's accumulator tiles 2t and 2t + 1 are the A fragment of keys 16t .. 16t + 15
#pragma unroll
        for (int t = 0; t < 4; t++) {
            unsigned pa[4] = {pack_bf16(s[2 * t][0], s[2 * t][1]), pack_bf16(s[2 * t][2], s[2 * t][3]),
                              pack_bf16(s[2 * t + 1][0], s[2 * t + 1][1]), pack_bf16(s[2 * t + 1][2], s[2 * t + 1][3])};
#pragma unroll
            for (int j = 0; j < D / 16; j++) {
                unsigned b0, b1, b2, b3;
                int r = t * 16 + (lane & 7) + (((lane >> 3) & 1) << 3);
                ldmatrix_x4_trans(v_smem + swizzled_row_piece<D>(r, j * 2 + (lane >> 4)), b0, b1, b2, b3);
                mma_bf16(o[2 * j], pa, b0, b1);
                mma_bf16(o[2 * j + 1], pa, b2, b3);
            }
        }
        __syncthreads();   // this buffer is read by every warp before the next iteration refills it
    }
#pragma unroll
    for (int x = 1; x < 4; x <<= 1) {
        l_a += __shfl_xor_sync(0xffffffffu, l_a, x);
        l_b += __shfl_xor_sync(0xffffffffu, l_b, x);
    }
#pragma unroll
    for (int n = 0; n < D / 8; n++) {
        int c = h * D + n * 8 + (lane & 3) * 2;
        if (ra < count) {
            *reinterpret_cast<float2*>(out + (size_t)(row0 + ra) * H * D + c) = make_float2(o[n][0] / l_a, o[n][1] / l_a);
        }
        if (rb < count) {
            *reinterpret_cast<float2*>(out + (size_t)(row0 + rb) * H * D + c) = make_float2(o[n][2] / l_b, o[n][3] / l_b);
        }
    }
}

#define PREFILL_KERNEL(d) extern "C" __global__ void __launch_bounds__(128) attention_prefill_d##d(float* out, \
        const float* q, const unsigned long long* kp, const unsigned long long* vp, const int* tiles, const int* len, \
        int H, int KVH, float scale, int q_stride) { prefill_body<d>(out, q, kp, vp, tiles, len, H, KVH, scale, q_stride); }
PREFILL_KERNEL(32)
PREFILL_KERNEL(64)
PREFILL_KERNEL(128)
