// Token embedding: out[r][i] = table[tokens[r]][i] (+ pos_table[positions[r] + pos_offset][i], OPT's learned
// positions). table: [vocab][dim] bf16; pos_table: [max_pos + offset][dim] bf16 or null; out: [rows][dim] f32.
// Grid: (rows), block: 256 threads striding over dim.
#include "common.cuh"

extern "C" __global__ void embed(float* out, const bf16* table, const int* tokens, int rows, int dim,
                                 const bf16* pos_table, const int* positions, int pos_offset) {
    int r = blockIdx.x;
    if (r >= rows) return;
    const bf16* row = table + (size_t)tokens[r] * dim;
    const bf16* pos = pos_table ? pos_table + (size_t)(positions[r] + pos_offset) * dim : nullptr;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = __bfloat162float(row[i]);
        if (pos) v += __bfloat162float(pos[i]);
        out[(size_t)r * dim + i] = v;
    }
}
