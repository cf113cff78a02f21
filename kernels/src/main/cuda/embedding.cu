// Token embedding: out[r][i] = table[tokens[r]][i] (+ pos_table[positions[r] + pos_offset][i], OPT's learned
// positions). table: [vocab][dim] bf16; pos_table: [max_pos + offset][dim] bf16 or null; out: [rows][dim] f32.
// Grid: (rows), block: 256 threads striding over dim. The table may be in pinned host memory (host placement): a
// row is read in 16-byte pieces, all of a thread's pieces before its stores, so a row costs about one round trip over
// the host link rather than one a piece.
#include "common.cuh"

extern "C" __global__ void embed(float* __restrict__ out, const bf16* __restrict__ table, const int* tokens, int rows,
                                 int dim, const bf16* __restrict__ pos_table, const int* positions, int pos_offset) {
    int r = blockIdx.x;
    if (r >= rows) return;
    const bf16* row = table + (size_t)tokens[r] * dim;
    const bf16* pos = pos_table ? pos_table + (size_t)(positions[r] + pos_offset) * dim : nullptr;
    float* o = out + (size_t)r * dim;
    if (dim % 8 == 0 && dim <= 8 * 4 * blockDim.x) {   // up to 4 pieces a thread, in registers
        uint4 piece[4];
        int pieces = dim / 8;
#pragma unroll
        for (int u = 0; u < 4; u++) {
            int p = threadIdx.x + u * blockDim.x;
            if (p < pieces) piece[u] = reinterpret_cast<const uint4*>(row)[p];
        }
#pragma unroll
        for (int u = 0; u < 4; u++) {
            int p = threadIdx.x + u * blockDim.x;
            if (p >= pieces) continue;
            const bf16* v = reinterpret_cast<const bf16*>(&piece[u]);
            for (int e = 0; e < 8; e++) {
                float x = __bfloat162float(v[e]);
                if (pos) x += __bfloat162float(pos[p * 8 + e]);
                o[p * 8 + e] = x;
            }
        }
        return;
    }
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = __bfloat162float(row[i]);
        if (pos) v += __bfloat162float(pos[i]);
        o[i] = v;
    }
}
