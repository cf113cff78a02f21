// Check-then-time harness for the decode GEMVs (matmul.cu) at llama-3.1-8b's shapes: q/k/v (6144 x 4096, norm
// prologue, bias), output (4096 x 4096, residual epilogue), gate/up (28672 x 4096, norm, SwiGLU), down (4096 x 14336,
// residual) and lm head (128256 x 4096, norm). For each row count (1, 8, 16 by default) gemv_m1 (one row) or gemv_tc
// (2-16 rows), with -DWITH_SK also gemv_skS at each cluster size S whose staged x fits: every result against a
// double-precision CPU reference on a sample of columns (every row), then the time a launch as 20 launches captured
// in one CUDA graph (as the decode step runs them), cycling over copies of W so that no launch finds its weights in
// L2, and the bandwidth on W's bytes against a device-to-device copy of 1 GB measured first (bytes read + written).
// Build (in dev/cuda): nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a gemv_bench.cu -o gvb
// Variants: -DGV_FG=f -DGV_KS=k (gemv_tc's block of f x k warps), -DGV_UNROLL=u, -DWITH_SK (v16a, gemv_splitk.cuh).
// Environment: GVB_SHAPE=name (one shape), GVB_UNTIMED=1 (the checking launches only: for a profiler).
// Run: ./gvb [rows, comma separated = 1,8,16]
#include "../../kernels/src/main/cuda/matmul.cu"
#ifdef WITH_SK
#include "gemv_splitk.cuh"
#endif
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cmath>
#include <vector>
#include <string>

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
    fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); exit(1); } } while (0)

__global__ void fill_bf16(bf16* w, size_t n, unsigned seed, float scale) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        unsigned h = (unsigned)i * 2654435761u ^ seed;
        h ^= h >> 15; h *= 2246822519u; h ^= h >> 13; h *= 3266489917u; h ^= h >> 16;
        w[i] = __float2bfloat16(scale * ((float)(h >> 8) / (1 << 24) - 0.5f));
    }
}

struct Shape { const char* name; int N, K; bool norm, bias, swiglu, acc; };

static int smCount() { int v; CK(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, 0)); return v; }

// as CudaOps.gemvSk: bytes of shared memory a block of gemv_skS needs for a K range of kr and rows rows
#ifdef WITH_SK
static size_t skShared(int kr, int rows) {
    int mp = rows > 8 ? 16 : 8, units = kr / 8, rs = units % 8 == 0 ? units + 4 : units;
    return (size_t)3 * mp * rs * 16 + (size_t)SK_COLS * mp * 4 + mp * 4;
}
#endif

typedef void (*Kernel)(float*, const float*, const bf16*, const bf16*, const bf16*, float, int, int, int, int, int, int);

int main(int argc, char** argv) {
    std::vector<int> rowCounts = {1, 8, 16};
    if (argc > 1) {
        rowCounts.clear();
        for (char* tok = strtok(argv[1], ","); tok; tok = strtok(nullptr, ",")) rowCounts.push_back(atoi(tok));
    }
    Shape shapes[] = {{"qkv", 6144, 4096, true, true, false, false}, {"output", 4096, 4096, false, false, false, true},
                      {"gate/up", 28672, 4096, true, false, true, false}, {"down", 4096, 14336, false, false, false, true},
                      {"lm head", 128256, 4096, true, false, false, false}};
    int sms = smCount();
    // copy bandwidth
    size_t copyBytes = 1ull << 30;
    void *ca, *cb;
    CK(cudaMalloc(&ca, copyBytes)); CK(cudaMalloc(&cb, copyBytes));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
    float best = 1e9f;
    for (int r = 0; r < 5; r++) {
        CK(cudaEventRecord(e0));
        CK(cudaMemcpyAsync(cb, ca, copyBytes, cudaMemcpyDeviceToDevice));
        CK(cudaEventRecord(e1)); CK(cudaEventSynchronize(e1));
        float ms; CK(cudaEventElapsedTime(&ms, e0, e1)); best = fminf(best, ms);
    }
    double copyTBs = 2.0 * copyBytes / (best * 1e-3) / 1e12;
    printf("device-to-device copy: %.2f TB/s (bytes read + written), %d multiprocessors\n", copyTBs, sms);
    CK(cudaFree(ca)); CK(cudaFree(cb));
#ifdef WITH_SK
    Kernel sk[4] = {gemv_sk1, gemv_sk2, gemv_sk4, gemv_sk8};
    for (int s = 0; s < 4; s++) CK(cudaFuncSetAttribute(sk[s], cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024));
#endif
    printf("%-8s %4s %-10s %6s %9s %7s %8s %7s %10s\n", "shape", "rows", "kernel", "blocks", "graph us", "TB/s",
           "of copy", "smem KB", "max |err|");
    const char* only = getenv("GVB_SHAPE");     // one shape by name (for a profiler)
    bool timed = getenv("GVB_UNTIMED") == nullptr;  // the checking launch only (for a profiler)
    for (const Shape& sh : shapes) {
        if (only && strcmp(only, sh.name) != 0) continue;
        size_t wElems = (size_t)sh.N * sh.K, wBytes = wElems * 2;
        int copies = (int)std::max<size_t>(2, (600ull << 20) / wBytes + 1);
        bf16 *W, *normW, *bias;
        CK(cudaMalloc(&W, wBytes * copies));
        fill_bf16<<<4096, 256>>>(W, wElems * copies, 7u, 0.25f);
        CK(cudaMalloc(&normW, sh.K * 2)); CK(cudaMalloc(&bias, sh.N * 2));
        fill_bf16<<<64, 256>>>(normW, sh.K, 11u, 2.f);
        fill_bf16<<<64, 256>>>(bias, sh.N, 13u, 1.f);
        CK(cudaDeviceSynchronize());
        std::vector<bf16> hn(sh.K), hb(sh.N);
        CK(cudaMemcpy(hn.data(), normW, sh.K * 2, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(hb.data(), bias, sh.N * 2, cudaMemcpyDeviceToHost));
        // sample columns: every 97th and the last; gate/up pairs whole
        std::vector<int> cols;
        for (int n = 0; n < sh.N; n += 97) cols.push_back(sh.swiglu ? n & ~1 : n);
        cols.push_back(sh.swiglu ? sh.N - 2 : sh.N - 1);
        std::vector<std::vector<float>> wRows(cols.size(), std::vector<float>(sh.K)), wRows2(cols.size());
        std::vector<bf16> tmp(sh.K);
        for (size_t i = 0; i < cols.size(); i++) {
            CK(cudaMemcpy(tmp.data(), W + (size_t)cols[i] * sh.K, sh.K * 2, cudaMemcpyDeviceToHost));
            for (int k = 0; k < sh.K; k++) wRows[i][k] = __bfloat162float(tmp[k]);
            if (sh.swiglu) {
                wRows2[i].resize(sh.K);
                CK(cudaMemcpy(tmp.data(), W + (size_t)(cols[i] + 1) * sh.K, sh.K * 2, cudaMemcpyDeviceToHost));
                for (int k = 0; k < sh.K; k++) wRows2[i][k] = __bfloat162float(tmp[k]);
            }
        }
        for (int M : rowCounts) {
            int width = sh.swiglu ? sh.N / 2 : sh.N;
            std::vector<float> hx((size_t)M * sh.K), hy0((size_t)M * width);
            unsigned long long st = 88172645463325252ull + M;
            auto uni = [&st]() { st ^= st << 13; st ^= st >> 7; st ^= st << 17; return (float)(st >> 40) / (1 << 24) - 0.5f; };
            for (auto& v : hx) v = 4.f * uni();
            for (auto& v : hy0) v = uni();
            float *x, *y;
            CK(cudaMalloc(&x, hx.size() * 4)); CK(cudaMalloc(&y, hy0.size() * 4));
            CK(cudaMemcpy(x, hx.data(), hx.size() * 4, cudaMemcpyHostToDevice));
            // reference
            std::vector<double> ref((size_t)M * cols.size());
            for (int m = 0; m < M; m++) {
                double ss = 0;
                for (int k = 0; k < sh.K; k++) ss += (double)hx[(size_t)m * sh.K + k] * hx[(size_t)m * sh.K + k];
                double inv = sh.norm ? 1.0 / sqrt(ss / sh.K + 1e-5) : 1.0;
                auto dot = [&](const std::vector<float>& w, int n) {
                    double d = 0;
                    for (int k = 0; k < sh.K; k++) {
                        double xv = hx[(size_t)m * sh.K + k] * (sh.norm ? inv * __bfloat162float(hn[k]) : 1.0);
                        d += xv * w[k];
                    }
                    return d + (sh.bias ? __bfloat162float(hb[n]) : 0.0);
                };
                for (size_t i = 0; i < cols.size(); i++) {
                    double v;
                    if (sh.swiglu) {
                        double gt = dot(wRows[i], cols[i]), up = dot(wRows2[i], cols[i] + 1);
                        v = gt / (1 + exp(-gt)) * up;
                    } else {
                        v = dot(wRows[i], cols[i]) + (sh.acc ? hy0[(size_t)m * width + cols[i]] : 0.0);
                    }
                    ref[(size_t)m * cols.size() + i] = v;
                }
            }
            struct Run { std::string name; int blocks; size_t smem; int s; };
            std::vector<Run> runs;
            if (M == 1) runs.push_back({"gemv_m1", (sh.N + 7) / 8, 0, -1});
            else runs.push_back({"gemv_tc", (sh.N + 16 * GV_FG - 1) / (16 * GV_FG), 0, 0});
#ifdef WITH_SK
            int tiles = (sh.N + SK_COLS - 1) / SK_COLS;
            for (int si = 0; si < 4; si++) {
                int S = 1 << si, kr = (sh.K / 32 + S - 1) / S * 32;
                size_t smem = skShared(kr, M);
                if (smem > 200 * 1024) continue;
                runs.push_back({"gemv_sk" + std::to_string(S), tiles * S, smem, S});
            }
#endif
            for (const Run& run : runs) {
                auto launch = [&](const bf16* w, cudaStream_t stream) {
                    const bf16* nw = sh.norm ? normW : nullptr;
                    const bf16* b = sh.bias ? bias : nullptr;
                    int a = sh.acc ? 1 : 0, sw = sh.swiglu ? 1 : 0;
                    if (run.s < 0) {
                        if (sh.swiglu) gemv_m1_swiglu<<<run.blocks, 256, 0, stream>>>(y, x, w, b, nw, 1e-5f, sh.N, sh.K);
                        else gemv_m1<<<run.blocks, 256, 0, stream>>>(y, x, w, b, nw, 1e-5f, a, sh.N, sh.K);
                    } else if (run.s == 0) {
                        gemv_tc<<<run.blocks, GV_WARPS * 32, 0, stream>>>(y, x, w, b, nw, 1e-5f, a, sw, M, sh.N, sh.K);
                    } else {
#ifdef WITH_SK
                        int S = run.s, kr = (sh.K / 32 + S - 1) / S * 32;
                        sk[__builtin_ctz(S)]<<<run.blocks, 256, run.smem, stream>>>(y, x, w, b, nw, 1e-5f, a, sw, M,
                                                                                     sh.N, sh.K, kr);
#endif
                    }
                };
                CK(cudaMemcpy(y, hy0.data(), hy0.size() * 4, cudaMemcpyHostToDevice));
                launch(W, 0);
                CK(cudaGetLastError());
                CK(cudaDeviceSynchronize());
                std::vector<float> hy(hy0.size());
                CK(cudaMemcpy(hy.data(), y, hy.size() * 4, cudaMemcpyDeviceToHost));
                double err = 0;
                for (int m = 0; m < M; m++)
                    for (size_t i = 0; i < cols.size(); i++) {
                        int c = sh.swiglu ? cols[i] / 2 : cols[i];
                        err = fmax(err, fabs(hy[(size_t)m * width + c] - ref[(size_t)m * cols.size() + i]));
                    }
                if (!timed) {
                    printf("%-8s %4d %-10s %6d %9s %7s %8s %7.1f %10.2e\n", sh.name, M, run.name.c_str(), run.blocks,
                           "-", "-", "-", run.smem / 1024.0, err);
                    continue;
                }
                // time: 20 launches in a graph over the copies
                cudaStream_t stream;
                CK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
                cudaGraph_t graph;
                cudaGraphExec_t exec;
                const int reps = 20;
                CK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
                for (int r = 0; r < reps; r++) launch(W + (size_t)(r % copies) * wElems, stream);
                CK(cudaStreamEndCapture(stream, &graph));
                CK(cudaGraphInstantiate(&exec, graph, 0));
                float bestMs = 1e9f;
                for (int r = 0; r < 6; r++) {
                    CK(cudaEventRecord(e0, stream));
                    CK(cudaGraphLaunch(exec, stream));
                    CK(cudaEventRecord(e1, stream));
                    CK(cudaEventSynchronize(e1));
                    float ms; CK(cudaEventElapsedTime(&ms, e0, e1));
                    if (r > 0) bestMs = fminf(bestMs, ms);
                }
                double us = bestMs * 1e3 / reps, tbs = wBytes / (us * 1e-6) / 1e12;
                printf("%-8s %4d %-10s %6d %9.1f %7.2f %7.0f%% %7.1f %10.2e\n", sh.name, M, run.name.c_str(),
                       run.blocks, us, tbs, 100 * tbs / copyTBs, run.smem / 1024.0, err);
                CK(cudaGraphExecDestroy(exec)); CK(cudaGraphDestroy(graph)); CK(cudaStreamDestroy(stream));
            }
            CK(cudaFree(x)); CK(cudaFree(y));
        }
        CK(cudaFree(W)); CK(cudaFree(normW)); CK(cudaFree(bias));
    }
    return 0;
}
