// The read bandwidth a decode step's sparse attention can expect: the key and value rows (kv head g of slot s: 256
// contiguous bytes at D = 128, bf16) of a selection of `k` slots among `cap` per (sequence, kv head), read by whole
// rows (16 lanes a row, 16-byte loads, 8 loads a lane in flight), against the same bytes read as contiguous rows.
// The shape of llama-3.1-8b at batch 8 and 32K (dspp gqa=mean: 2048 selected of 32768 slots a kv head, 8 kv heads).
// Build (in dev/cuda): nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a gather_bench.cu -o gather_bench
// Run: ./gather_bench [k = 2048] [batch = 8]
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <random>
#include <algorithm>
#include <cuda_runtime.h>

constexpr int KVH = 8, D = 128, ROW = D * 2;   // bytes a row

// rows[seq][g][i]: the slot of selected row i; a warp reads 16 rows (2 a load instruction, 8 in flight a lane) of K
// and of V and sums what it read over the warp (so no load is dead), one float a warp out
__global__ void gather_rows(float* out, const uint4* kc, const uint4* vc, const int* rows, int k, int cap) {
    int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    int per = k / 16;   // warps a (sequence, kv head)
    int sg = warp / per, part = warp % per, seq = sg / KVH, g = sg % KVH;
    const int* sel = rows + (size_t)sg * k + part * 16;
    float acc = 0.f;
    uint4 r[16];
#pragma unroll
    for (int u = 0; u < 8; u++) {
        int slot = sel[2 * u + (lane >> 4)];
        size_t at = (((size_t)seq * cap + slot) * KVH + g) * (ROW / 16) + (lane & 15);
        r[u] = kc[at];
        r[8 + u] = vc[at];
    }
#pragma unroll
    for (int u = 0; u < 16; u++) acc += __uint_as_float(r[u].x ^ r[u].y ^ r[u].z ^ r[u].w);
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);   // every lane's loads count
    if (lane == 0) out[warp] = acc;
}

int main(int argc, char** argv) {
    int k = argc > 1 ? atoi(argv[1]) : 2048, batch = argc > 2 ? atoi(argv[2]) : 8, cap = 32768;
    size_t store = (size_t)batch * cap * KVH * ROW;
    uint4 *kc, *vc; float* out; int *rows, *seqrows;
    cudaMalloc(&kc, store); cudaMalloc(&vc, store);
    cudaMemset(kc, 1, store); cudaMemset(vc, 2, store);
    std::mt19937 rng(5);
    std::vector<int> sel((size_t)batch * KVH * k), seq((size_t)batch * KVH * k);
    for (int sg = 0; sg < batch * KVH; sg++) {
        std::vector<int> all(cap);
        for (int i = 0; i < cap; i++) all[i] = i;
        std::shuffle(all.begin(), all.end(), rng);
        std::sort(all.begin(), all.begin() + k);   // a selection is written in slot order
        for (int i = 0; i < k; i++) {
            sel[(size_t)sg * k + i] = all[i];
            seq[(size_t)sg * k + i] = cap - k + i;   // the same count of rows, contiguous (the last k slots)
        }
    }
    cudaMalloc(&rows, sel.size() * 4); cudaMalloc(&seqrows, seq.size() * 4);
    cudaMemcpy(rows, sel.data(), sel.size() * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(seqrows, seq.data(), seq.size() * 4, cudaMemcpyHostToDevice);
    int warps = batch * KVH * (k / 16), threads = 256;
    cudaMalloc(&out, warps * 4);
    cudaEvent_t e0, e1; cudaEventCreate(&e0); cudaEventCreate(&e1);
    double bytes = 2.0 * batch * KVH * k * ROW;
    for (int pass = 0; pass < 2; pass++) {
        const int* r = pass == 0 ? rows : seqrows;
        gather_rows<<<warps * 32 / threads, threads>>>(out, kc, vc, r, k, cap);
        int reps = 50;
        cudaEventRecord(e0);
        for (int i = 0; i < reps; i++) gather_rows<<<warps * 32 / threads, threads>>>(out, kc, vc, r, k, cap);
        cudaEventRecord(e1); cudaEventSynchronize(e1);
        float ms; cudaEventElapsedTime(&ms, e0, e1);
        printf("%s rows: %d of %d a kv head, batch %d: %.1f MB in %.1f us, %.2f TB/s\n", pass == 0 ? "selected" : "contiguous",
               k, cap, batch, bytes / 1e6, 1e3 * ms / reps, bytes / (ms / reps * 1e-3) / 1e12);
    }
    return 0;
}
