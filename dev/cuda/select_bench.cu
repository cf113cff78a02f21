// Check-then-time harness for the one-block top-k of select.cu (select_top_k: four radix passes, count_picks,
// write_picks) on order keys already in shared memory, as sparse_select runs it after scoring: Gaussian scores,
// checked against a stable sort, then timed against a launch that only copies the keys.
// Build (in dev/cuda): nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a select_bench.cu -o select_bench
// Run: ./select_bench [n = 32768] [k = 1980] [blocks = 8] [threads = 1024]
#include "../../kernels/src/main/cuda/select.cu"
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <algorithm>
#include <random>

extern "C" __global__ void bench_select(const unsigned* keys, int n, int k, int* out) {
    extern __shared__ unsigned sk[];
    for (int c = threadIdx.x; c < n; c += blockDim.x) sk[c] = keys[(size_t)blockIdx.x * n + c];
    __syncthreads();
    select_top_k(out + (size_t)blockIdx.x * k, 1, k, sk, n, k, 0);
}

extern "C" __global__ void bench_copy_only(const unsigned* keys, int n, int k, int* out) {
    extern __shared__ unsigned sk[];
    for (int c = threadIdx.x; c < n; c += blockDim.x) sk[c] = keys[(size_t)blockIdx.x * n + c];
    __syncthreads();
    if (threadIdx.x == 0) out[(size_t)blockIdx.x * k] = sk[n - 1];
}

static unsigned host_key(float f) {
    unsigned u; f += 0.0f; memcpy(&u, &f, 4);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

int main(int argc, char** argv) {
    int n = argc > 1 ? atoi(argv[1]) : 32768, k = argc > 2 ? atoi(argv[2]) : 1980, blocks = argc > 3 ? atoi(argv[3]) : 8;
    int threads = argc > 4 ? atoi(argv[4]) : 1024;
    std::mt19937 rng(7);
    std::normal_distribution<float> g(0.f, 3.f);
    std::vector<unsigned> keys((size_t)n * blocks);
    for (auto& x : keys) x = host_key(g(rng));
    unsigned* dk; int* dout;
    cudaMalloc(&dk, keys.size() * 4); cudaMalloc(&dout, (size_t)blocks * k * 4);
    cudaMemcpy(dk, keys.data(), keys.size() * 4, cudaMemcpyHostToDevice);
    cudaFuncSetAttribute(bench_select, cudaFuncAttributeMaxDynamicSharedMemorySize, n * 4);
    cudaFuncSetAttribute(bench_copy_only, cudaFuncAttributeMaxDynamicSharedMemorySize, n * 4);
    bench_select<<<blocks, threads, n * 4>>>(dk, n, k, dout);
    std::vector<int> got((size_t)blocks * k);
    cudaMemcpy(got.data(), dout, got.size() * 4, cudaMemcpyDeviceToHost);
    int bad = 0;
    for (int b = 0; b < blocks; b++) {   // reference: stable order, larger key first, then lower index; output ascending
        std::vector<int> idx(n);
        for (int i = 0; i < n; i++) idx[i] = i;
        const unsigned* kb = keys.data() + (size_t)b * n;
        std::stable_sort(idx.begin(), idx.end(), [&](int a, int c) { return kb[a] > kb[c]; });
        std::vector<int> want(idx.begin(), idx.begin() + k);
        std::sort(want.begin(), want.end());
        for (int i = 0; i < k; i++) bad += want[i] != got[(size_t)b * k + i];
    }
    cudaEvent_t e0, e1; cudaEventCreate(&e0); cudaEventCreate(&e1);
    float ms_sel, ms_copy;
    int reps = 50;
    cudaEventRecord(e0);
    for (int r = 0; r < reps; r++) bench_select<<<blocks, threads, n * 4>>>(dk, n, k, dout);
    cudaEventRecord(e1); cudaEventSynchronize(e1); cudaEventElapsedTime(&ms_sel, e0, e1);
    cudaEventRecord(e0);
    for (int r = 0; r < reps; r++) bench_copy_only<<<blocks, threads, n * 4>>>(dk, n, k, dout);
    cudaEventRecord(e1); cudaEventSynchronize(e1); cudaEventElapsedTime(&ms_copy, e0, e1);
    printf("n %d k %d blocks %d threads %d: %s, %.1f us a launch (copy alone %.1f us)\n", n, k,
           blocks, threads, bad ? "WRONG" : "exact", 1e3 * ms_sel / reps, 1e3 * ms_copy / reps);
    return bad != 0;
}
