// Check-then-time harness for the attention of dspp's selected rows (sparse_attention.cu) at the shape of llama-3.1-8b's decode
// at batch 8 and 32K context with gqa=mean: 8 rows, 32 query heads in 8 kv groups of 4, D = 128, each row's own store
// of 32768 slots, 4 sinks + k selected + 64 window slots a kv head (one selection shared by the group), device
// placement. Compares sparse_attention_d128_g4 (group_attend_slots, 128-slot splits) with
// sparse_attention_pipelined_d128_g4 (group_attend_pipelined) at several grid sizes: each result after
// attention_merge against a double-precision CPU reference of every (row, head), then the time a launch (attention
// alone, and with the merge) and the bandwidth on the rows it must read (sinks + selected + window, K and V, once per
// kv head): launched one after another on a stream, and as 200 launches captured in one CUDA graph (as the decode
// step runs it: a graph's launches start closer to each other), against a device-to-device copy of 1 GB measured
// first (bytes read + written, as bench measures it).
// Build (in dev/cuda): nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a sparse_attention_bench.cu -o sab
//   (-DPIPE_STAGES=N for another pipeline depth; -DSPARSE_ATTENTION_CU='"path"' for another version of sparse_attention.cu)
// Run: ./sab [k = 2048] [rows = 8] [max_k = 4096: the bucketed budget the grid is sized for] [mode = 2: shared
//   selections (gqa=mean), 0: a selection a query head (sparse_attention_d128_g1 against pipelined_d128_g1)]
//   [slots = 32700: a row's store is slots + 68 long; 4028 with k = 188 and 64 rows: dspp at 64 x 4096]
#ifndef SPARSE_ATTENTION_CU
#define SPARSE_ATTENTION_CU "../../kernels/src/main/cuda/sparse_attention.cu"
#endif
#include SPARSE_ATTENTION_CU
#include "../../kernels/src/main/cuda/attention.cu"
SPARSE_PIPELINED_KERNEL(128, 1)   // per-head selections: measured here, not shipped (slower than sparse_attention_d128_g1)
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <vector>
#include <random>
#include <algorithm>

int main(int argc, char** argv) {
    int k = argc > 1 ? atoi(argv[1]) : 2048, P = argc > 2 ? atoi(argv[2]) : 8, maxK = argc > 3 ? atoi(argv[3]) : 4096;
    int mode = argc > 4 ? atoi(argv[4]) : 2, n = argc > 5 ? atoi(argv[5]) : 32700, cap = n + 68;
    const int H = 32, KVH = 8, G = mode == 0 ? 1 : H / KVH, GQA = H / KVH, D = 128, sinks = 4, window = 64;
    const int qStride = (H + 2 * KVH) * D, m = sinks + k + window;
    const float scale = 1.f / sqrtf((float)D);
    std::mt19937 rng(11);
    std::normal_distribution<float> gauss(0.f, 1.f);
    // the stores: [cap][KVH][D] bf16 a row, keys and values
    size_t storeElems = (size_t)cap * KVH * D;
    std::vector<std::vector<bf16>> hk(P), hv(P);
    std::vector<unsigned long long> kp(P), vp(P);
    for (int p = 0; p < P; p++) {
        hk[p].resize(storeElems);
        hv[p].resize(storeElems);
        unsigned long long x = 88172645463325252ull + p;   // xorshift: a gigabyte of values in seconds
        auto uniform = [&x]() { x ^= x << 13; x ^= x >> 7; x ^= x << 17; return (float)(x >> 40) / (1 << 24) - 0.5f; };
        for (size_t i = 0; i < storeElems; i++) {
            hk[p][i] = __float2bfloat16(3.f * uniform());
            hv[p][i] = __float2bfloat16(3.f * uniform());
        }
        void *dk, *dv;
        cudaMalloc(&dk, storeElems * 2); cudaMalloc(&dv, storeElems * 2);
        cudaMemcpy(dk, hk[p].data(), storeElems * 2, cudaMemcpyHostToDevice);
        cudaMemcpy(dv, hv[p].data(), storeElems * 2, cudaMemcpyHostToDevice);
        kp[p] = (unsigned long long)dk;
        vp[p] = (unsigned long long)dv;
    }
    std::vector<float> q((size_t)P * qStride);
    for (auto& x : q) x = 2.f * gauss(rng);   // peaked softmaxes, as trained models' are
    // selections: k sorted slots among the candidates [sinks, n - window), one a (row, kv head) at its first head's
    // place, or one a (row, head)
    std::vector<int> selected((size_t)P * H * maxK, 0);
    for (int p = 0; p < P; p++)
        for (int g = 0; g < H / G; g++) {
            std::vector<int> all(n - sinks - window);
            for (size_t i = 0; i < all.size(); i++) all[i] = sinks + (int)i;
            std::shuffle(all.begin(), all.end(), rng);
            std::sort(all.begin(), all.begin() + k);
            std::copy(all.begin(), all.begin() + k, selected.begin() + (size_t)(p * H + g * G) * maxK);
        }
    std::vector<int> seg(P), len(P, n), rowsOf(P), sp((size_t)P * SP_FIELDS, 0);
    for (int p = 0; p < P; p++) {
        seg[p] = p;
        rowsOf[p] = p;
        int* d = &sp[(size_t)p * SP_FIELDS];
        d[SP_ROW] = p; d[SP_CAND] = n - sinks - window; d[SP_K] = k; d[SP_SINKS] = sinks; d[SP_WINDOW] = window;
        d[SP_MODE] = mode; d[SP_R] = 16; d[SP_BITS] = 8; d[SP_CAP] = cap; d[SP_HOST] = 0; d[SP_LGROUP] = 1;
    }
    auto upload = [](const void* src, size_t bytes) { void* d; cudaMalloc(&d, bytes); cudaMemcpy(d, src, bytes, cudaMemcpyHostToDevice); return d; };
    float* dq = (float*)upload(q.data(), q.size() * 4);
    int* dsel = (int*)upload(selected.data(), selected.size() * 4);
    int* dseg = (int*)upload(seg.data(), P * 4);
    int* dlen = (int*)upload(len.data(), P * 4);
    int* drows = (int*)upload(rowsOf.data(), P * 4);
    int* dsp = (int*)upload(sp.data(), sp.size() * 4);
    auto* dkp = (unsigned long long*)upload(kp.data(), P * 8);
    auto* dvp = (unsigned long long*)upload(vp.data(), P * 8);
    std::vector<unsigned long long> zeros(P, 0);
    auto* dring = (unsigned long long*)upload(zeros.data(), P * 8);
    // the CPU reference: out[p][h][c] in double
    std::vector<double> ref((size_t)P * H * D);
    for (int p = 0; p < P; p++)
        for (int h = 0; h < H; h++) {
            int g = h / GQA;
            std::vector<int> slots;
            for (int t = 0; t < sinks; t++) slots.push_back(t);
            int first = mode == 0 ? h : g * GQA;   // the head whose place holds this head's selection
            for (int i = 0; i < k; i++) slots.push_back(selected[(size_t)(p * H + first) * maxK + i]);
            for (int t = n - window; t < n; t++) slots.push_back(t);
            std::vector<double> s(slots.size());
            double mx = -1e300;
            for (size_t i = 0; i < slots.size(); i++) {
                double acc = 0;
                const bf16* kr = &hk[p][((size_t)slots[i] * KVH + g) * D];
                for (int c = 0; c < D; c++) acc += (double)q[(size_t)p * qStride + h * D + c] * __bfloat162float(kr[c]);
                s[i] = acc * scale;
                mx = std::max(mx, s[i]);
            }
            double sum = 0;
            for (auto& x : s) sum += (x = exp(x - mx));
            for (int c = 0; c < D; c++) {
                double o = 0;
                for (size_t i = 0; i < slots.size(); i++) o += s[i] * __bfloat162float(hv[p][((size_t)slots[i] * KVH + g) * D + c]);
                ref[((size_t)p * H + h) * D + c] = o / sum;
            }
        }
    int maxSplits = 2048;
    float *partials, *out;
    int* claims;   // the pipelined kernel's chunk counters, zero before its first launch (each launch leaves them so)
    cudaMalloc(&claims, (size_t)P * H * 2 * 4);
    cudaMemset(claims, 0, (size_t)P * H * 2 * 4);
    cudaMalloc(&partials, (size_t)P * H * maxSplits * (D + 2) * 4);
    cudaMalloc(&out, (size_t)P * H * D * 4);
    cudaEvent_t e0, e1; cudaEventCreate(&e0); cudaEventCreate(&e1);
    double bytes = (double)P * (H / G) * m * D * 2 * 2;
    std::vector<float> got((size_t)P * H * D);
    printf("rows %d, k %d of %d candidates, grid for max_k %d, pipeline stages %d of %d rows: %.1f MB of rows to read\n", P, k,
           n - sinks - window, maxK, PIPE_STAGES, PIPE_ROWS, bytes / 1e6);
    double copy;
    {
        size_t cn = (size_t)1 << 30;
        void *src, *dst;
        cudaMalloc(&src, cn); cudaMalloc(&dst, cn);
        for (int i = 0; i < 3; i++) cudaMemcpy(dst, src, cn, cudaMemcpyDeviceToDevice);
        std::vector<float> t(10);
        for (auto& x : t) {
            cudaEventRecord(e0);
            cudaMemcpyAsync(dst, src, cn, cudaMemcpyDeviceToDevice);
            cudaEventRecord(e1); cudaEventSynchronize(e1);
            cudaEventElapsedTime(&x, e0, e1);
        }
        std::sort(t.begin(), t.end());
        copy = 2.0 * cn / (t[t.size() / 2] * 1e-3);
        cudaFree(src); cudaFree(dst);
    }
    printf("device-to-device copy: %.2f TB/s (bytes read + written)\n", copy / 1e12);
    printf("%-34s %6s %8s %8s %9s %8s %8s %9s %8s %10s\n", "kernel", "splits", "us", "TB/s", "graph us", "TB/s",
           "of copy", "+merge us", "blocks", "max |err|");
    // the pipelined kernel's grid: a row's slots divided over `splits` blocks a (row, kv head), from what the device
    // holds at once (resident = blocks an SM x SMs) to several times that; splits 0: the shipped group kernel
    int sms, perSm;
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
    for (auto f : {sparse_attention_pipelined_d128_g4, sparse_attention_pipelined_d128_g1})
        cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, pipelined_shared_bytes(D));
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&perSm, mode ? sparse_attention_pipelined_d128_g4
                                                               : sparse_attention_pipelined_d128_g1, 32 * (G + 1),
                                                  pipelined_shared_bytes(D));
    int resident = sms * perSm;
    printf("pipelined: %d blocks an SM, %d resident\n", perSm, resident);
    std::vector<int> choices = {0};
    for (double f : {0.5, 1.0, 2.0, 3.0, 4.0}) choices.push_back(std::max(1, (int)(f * resident / (P * H / G))));
    for (int s : {9, 17, 33}) choices.push_back(s);
    for (int choice : choices) {
        bool pipelined = choice > 0;
        int splits = pipelined ? choice : (sinks + window + maxK + 127) / 128;
        int shared = pipelined ? pipelined_shared_bytes(D) : 0;
        auto attend = [&](cudaStream_t stream) {
            int units = P * H / G, on = mode != 0;
            if (!pipelined) {
                (mode ? sparse_attention_d128_g4 : sparse_attention_d128_g1)<<<dim3(units, splits), 128, 0, stream>>>(
                        partials, dq, dkp, dvp, dring, dring, dseg, dlen, dsp, dsel, H, KVH, splits, scale, qStride, 32,
                        maxK, on);
            } else {
                (mode ? sparse_attention_pipelined_d128_g4 : sparse_attention_pipelined_d128_g1)<<<dim3(units, splits),
                        32 * (G + 1), shared, stream>>>(partials, dq, dkp, dvp, dring, dring, dseg, dlen, dsp, dsel, H,
                        KVH, splits, scale, qStride, maxK, on, claims, nullptr, nullptr);
            }
        };
        // as AttentionKernels.attentionMerge launches it: a block's warps share a pair's splits where pairs are few
        int sms = 0;
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
        int wpp = splits >= MERGE_WARPS && P * H < MERGE_WARPS * sms ? MERGE_WARPS : 1, ppb = MERGE_WARPS / wpp;
        auto merge = [&]() {
            attention_merge<<<(P * H + ppb - 1) / ppb, 32 * MERGE_WARPS>>>(out, nullptr, partials, drows, P * H, H, D,
                                                                           splits, wpp);
        };
        cudaMemset(out, 0, (size_t)P * H * D * 4);
        attend(0);
        merge();
        cudaError_t err = cudaDeviceSynchronize();
        if (err != cudaSuccess) { printf("splits %d: %s\n", splits, cudaGetErrorString(err)); return 1; }
        cudaMemcpy(got.data(), out, got.size() * 4, cudaMemcpyDeviceToHost);
        double maxErr = 0;
        for (size_t i = 0; i < got.size(); i++) maxErr = std::max(maxErr, fabs(got[i] - ref[i]));
        int reps = 200;
        float ms[2];
        for (int withMerge = 0; withMerge < 2; withMerge++) {
            cudaEventRecord(e0);
            for (int i = 0; i < reps; i++) {
                attend(0);
                if (withMerge) merge();
            }
            cudaEventRecord(e1); cudaEventSynchronize(e1);
            cudaEventElapsedTime(&ms[withMerge], e0, e1);
        }
        double us = 1e3 * ms[0] / reps;
        float graphMs;
        {
            cudaStream_t cs;
            cudaStreamCreate(&cs);
            cudaGraph_t graph;
            cudaGraphExec_t exec;
            cudaStreamBeginCapture(cs, cudaStreamCaptureModeRelaxed);
            for (int i = 0; i < reps; i++) attend(cs);
            cudaStreamEndCapture(cs, &graph);
            cudaGraphInstantiate(&exec, graph, 0);
            cudaGraphLaunch(exec, cs);
            cudaStreamSynchronize(cs);
            cudaEventRecord(e0, cs);
            cudaGraphLaunch(exec, cs);
            cudaEventRecord(e1, cs);
            cudaEventSynchronize(e1);
            cudaEventElapsedTime(&graphMs, e0, e1);
            cudaGraphExecDestroy(exec);
            cudaGraphDestroy(graph);
            cudaStreamDestroy(cs);
        }
        double graphUs = 1e3 * graphMs / reps;
        char name[64];
        snprintf(name, sizeof name, !pipelined ? "sparse_attention_d128_g4" : "pipelined_d128_g4 (%d slots)", (m + splits - 1) / splits);
        printf("%-34s %6d %8.1f %8.2f %9.1f %8.2f %7.0f%% %9.1f %8d %10.2e\n", name, splits, us,
               bytes / (us * 1e-6) / 1e12, graphUs, bytes / (graphUs * 1e-6) / 1e12,
               100 * bytes / (graphUs * 1e-6) / copy, 1e3 * ms[1] / reps, P * H / G * splits, maxErr);
    }
    return 0;
}
