// calibration_add: Double Sparsity's calibration statistics of one layer (CalibrationStatistics on the host) over the
// rows [row0, row0 + rows) of a forward pass, added to that layer's accumulators:
//   qk[h][c] += sum_r |q_r[h][c] * k_r[h / (H / KVH)][c]|   (the float product, its absolute value, added in double,
//                                                              as CalibratingKvCache adds it on the CPU)
//   q[h][c]  += sum_r |q_r[h][c]|
//   k[g][c]  += sum_r |k_r[g][c]|
//   qkv: [.][qkv_stride] f32, each row [q: H x D | k: KVH x D | ...], read after kv_append_rope (kv_append.cuh) has
//        rotated q and k in place, so both are post-RoPE;
//   qk, q: [H][D] double; k: [KVH][D] double (this layer's slices of the [layers][.][D] accumulators).
// Grid: (H + KVH): block b < H is query head b, block H + g is kv head g. Block: LANES * D threads (LANES chosen by
// the launcher, CalibrationKernels) and 2 * LANES * D doubles of dynamic shared memory. Thread j * D + c sums channel
// c over rows j, j + LANES, ... in order; thread c then adds the lanes' sums in lane order and adds that once to the
// accumulator. So each accumulator element is written by one thread, and the result does not depend on how the
// blocks are scheduled (no atomics). The lanes are for memory-level parallelism: with only H + KVH blocks, one thread
// a channel walking a 2048-row prefill alone would keep too few loads in flight.
#include "common.cuh"

extern "C" __global__ void calibration_add(double* qk, double* q, double* k, const float* qkv, int row0, int rows,
                                           int H, int KVH, int D, int qkv_stride) {
    extern __shared__ double lane_sums[];   // [2][LANES][D]: |q k| (or |k|) and |q| of each lane
    int c = threadIdx.x % D, lane = threadIdx.x / D, lanes = blockDim.x / D, head = blockIdx.x;
    bool query = head < H;
    int g = query ? head / (H / KVH) : head - H;
    const float* key = qkv + (size_t)row0 * qkv_stride + (size_t)H * D + (size_t)g * D + c;
    const float* qry = qkv + (size_t)row0 * qkv_stride + (size_t)head * D + c;
    double first = 0, second = 0;   // query head: sum |q k|, sum |q|; kv head: sum |k|
    if (query) {
#pragma unroll 4
        for (int r = lane; r < rows; r += lanes) {
            float qc = qry[(size_t)r * qkv_stride], kc = key[(size_t)r * qkv_stride];
            first += (double)fabsf(qc * kc);
            second += (double)fabsf(qc);
        }
    } else {
#pragma unroll 4
        for (int r = lane; r < rows; r += lanes) first += (double)fabsf(key[(size_t)r * qkv_stride]);
    }
    lane_sums[lane * D + c] = first;
    lane_sums[(lanes + lane) * D + c] = second;
    __syncthreads();
    if (lane != 0) return;
    double a = 0, b = 0;
    for (int j = 0; j < lanes; j++) {
        a += lane_sums[j * D + c];
        b += lane_sums[(lanes + j) * D + c];
    }
    if (query) {
        qk[(size_t)head * D + c] += a;
        q[(size_t)head * D + c] += b;
    } else {
        k[(size_t)g * D + c] += a;
    }
}
