// Check-then-time harness for dspp's fused selection (select.cu's sparse_select: label scores into shared memory, then
// the top-k there) at the shape of llama-3.1-8b's decode at batch 8 and 32K context: 8 rows, 32 query heads in 8 kv
// groups, r = 16 label channels, 32700 candidates, k = 1980; per query head or one selection a group (gqa=mean),
// 16- or 8-bit labels. Prints the time a launch and a checksum of the selections (equal across builds that must select
// the same, e.g. its load depths, -DSEL_LOADS).
// Every row has its own label cache (as each sequence does), so the labels come from device memory, not the L2.
// Build (in dev/cuda): nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a label_select_bench.cu -o lsb
//   (-DSELECT_CU='"path"' for another version of select.cu, one with sparse_select_cluster2)
//   (-DSEL_LOADS=N: 16-byte label loads a thread issues before its products, select.cu's score_candidates)
// Run: ./lsb [bits = 8 (16, 8 or 4)] [mode = 2] [rows = 8] [cluster = 1: one block a selection; 2 or 8:
//   sparse_select_cluster(2)]
//   [threads = 1024: of a single block; the side stream's are 512] [label group = 1: a label row a query head; 4: a kv
//   head (channels=qk-group, the group's heads sharing their channels)] [candidates = 32700] [k = 1980]
// (s20_two_launch_select.patch: a two-launch selection measured against these in session 20, not kept)
// cluster = 0: sparse_select without its guess (list_cap 0: the radix select over every candidate); 1 checks its
//   selections slot by slot against those and prints how many its guess's list served. (Session 22's carried-z guess,
//   cluster -1 / -2 with select_guess.cuh, measured in session 23 and removed: git show dd66dc1:dev/cuda/.)
#ifndef SELECT_CU
#define SELECT_CU "../../kernels/src/main/cuda/select.cu"
#endif
#include SELECT_CU
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <random>

// sparse_select's first half alone (the label query, the loads and scores into shared memory; no top-k): with
// sparse_select's time, how a selection's time divides between its scores and its top-k. It calls select.cu's own
// score_block_selection (session 26): for an older select.cu, build this harness as of that select.cu's commit.
extern "C" __global__ void __launch_bounds__(1024) select_scores_only(int* selected, const float* q,
                                                                      const unsigned long long* lptr,
                                                                      const unsigned long long* chptr,
                                                                      const unsigned long long* sptr, const int* seg,
                                                                      const int* sp, int H, int KVH, int D,
                                                                      int q_stride, int max_k) {
    extern __shared__ unsigned s[];
    __shared__ LabelQuery lq;
    BlockSelection sel;
    if (!score_block_selection(sel, s, lq, q, lptr, chptr, sptr, seg, sp, H, KVH, D, q_stride)) return;
    __syncthreads();
    if (threadIdx.x < 32) selected[(size_t)blockIdx.x * max_k + threadIdx.x] = (int)s[threadIdx.x * (sel.n / 32)];
}

int main(int argc, char** argv) {
    int bits = argc > 1 ? atoi(argv[1]) : 8, mode = argc > 2 ? atoi(argv[2]) : 2, P = argc > 3 ? atoi(argv[3]) : 8;
    int cluster = argc > 4 ? atoi(argv[4]) : 1, threads = argc > 5 ? atoi(argv[5]) : 1024;
    int lgroup = argc > 6 ? atoi(argv[6]) : 1;   // query heads a label row serves (4: channels=qk-group)
    int n = argc > 7 ? atoi(argv[7]) : 32700, k = argc > 8 ? atoi(argv[8]) : 1980;
    const int H = 32, KVH = 8, D = 128, r = 16, sinks = 4, window = 64;
    const int cap = n + sinks + window + 4, maxCand = (n + 255) / 256 * 256, maxK = (k + 31) / 32 * 32;
    const int qStride = (H + 2 * KVH) * D;
    std::mt19937 rng(3);
    std::normal_distribution<float> g(0.f, 1.f);
    std::vector<float> q((size_t)P * qStride);
    for (auto& x : q) x = g(rng);
    std::vector<int> channels(H * r);
    for (int i = 0; i < H * r; i++) channels[i] = (i / r) % lgroup == 0 ? rng() % D : channels[i - (i / r) % lgroup * r];
    size_t labelCount = (size_t)cap * (H / lgroup) * r;
    std::vector<unsigned char> labels(labelCount * bits / 8);   // 4-bit: two a byte (r even)
    std::vector<__half> scales((size_t)(H / lgroup) * cap);
    if (bits == 16) {
        __half* l = reinterpret_cast<__half*>(labels.data());
        for (size_t i = 0; i < labelCount; i++) l[i] = __float2half(g(rng));
    } else {
        for (auto& b : labels) b = (unsigned char)(rng() & 255);
        for (auto& s : scales) s = __float2half(0.01f + 0.02f * (rng() % 100) / 100.f);
    }
    // a copy of the labels and scales for each row
    std::vector<unsigned long long> lptr(P), sptr(P);
    for (int p = 0; p < P; p++) {
        void *dl, *ds;
        cudaMalloc(&dl, labels.size()); cudaMalloc(&ds, scales.size() * 2);
        cudaMemcpy(dl, labels.data(), labels.size(), cudaMemcpyHostToDevice);
        cudaMemcpy(ds, scales.data(), scales.size() * 2, cudaMemcpyHostToDevice);
        lptr[p] = (unsigned long long)dl;
        sptr[p] = (unsigned long long)ds;
    }
    int *dch; float* dq;
    cudaMalloc(&dch, channels.size() * 4); cudaMalloc(&dq, q.size() * 4);
    cudaMemcpy(dch, channels.data(), channels.size() * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(dq, q.data(), q.size() * 4, cudaMemcpyHostToDevice);
    std::vector<unsigned long long> chptr(P, (unsigned long long)dch);
    std::vector<int> seg(P), sp((size_t)P * SP_FIELDS, 0);
    for (int p = 0; p < P; p++) {
        seg[p] = p;
        int* d = &sp[(size_t)p * SP_FIELDS];
        d[SP_ROW] = p; d[SP_CAND] = n; d[SP_K] = k; d[SP_SINKS] = sinks; d[SP_WINDOW] = window; d[SP_MODE] = mode;
        d[SP_R] = r; d[SP_BITS] = bits; d[SP_CAP] = cap; d[SP_LGROUP] = lgroup;
    }
    unsigned long long *dlp, *dsp_, *dchp; int *dseg, *dsp, *dsel;
    cudaMalloc(&dlp, P * 8); cudaMalloc(&dsp_, P * 8); cudaMalloc(&dchp, P * 8); cudaMalloc(&dseg, P * 4);
    cudaMalloc(&dsp, sp.size() * 4); cudaMalloc(&dsel, (size_t)P * H * maxK * 4);
    cudaMemcpy(dlp, lptr.data(), P * 8, cudaMemcpyHostToDevice);
    cudaMemcpy(dsp_, sptr.data(), P * 8, cudaMemcpyHostToDevice);
    cudaMemcpy(dchp, chptr.data(), P * 8, cudaMemcpyHostToDevice);
    cudaMemcpy(dseg, seg.data(), P * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(dsp, sp.data(), sp.size() * 4, cudaMemcpyHostToDevice);
    cudaMemset(dsel, 0, (size_t)P * H * maxK * 4);
    int cl = cluster > 1 ? cluster : 1, ctile = ((maxCand + cl - 1) / cl + 31) / 32 * 32;
    cudaFuncSetAttribute(sparse_select_cluster, cudaFuncAttributeMaxDynamicSharedMemorySize, 4 * ctile);
    cudaFuncSetAttribute(sparse_select_cluster2, cudaFuncAttributeMaxDynamicSharedMemorySize, 4 * ctile);
    // sparse_select's list (select_top_k_guessed): cluster 1 with one as SelectKernels sizes it, 0 without (no guess)
    int selectList = cluster == 1 ? std::min(std::min(4 * maxK, maxCand), (227 * 1024 - 4096 - 4 * maxCand) / 8) : 0;
    int selectShared = 4 * maxCand + 8 * selectList, *dpaths;
    cudaMalloc(&dpaths, 8); cudaMemset(dpaths, 0, 8);
    cudaFuncSetAttribute(sparse_select, cudaFuncAttributeMaxDynamicSharedMemorySize, selectShared);
    std::vector<int> reference;
    bool first = true, checked = cluster == 1;
    if (checked) {   // sparse_select's selections without a guess
        sparse_select<<<P * H, threads, 4 * maxCand>>>(dsel, dq, dlp, dchp, dsp_, dseg, dsp, H, KVH, D, qStride, maxK,
                                                       maxCand, 0, nullptr);
        reference.resize((size_t)P * H * maxK);
        cudaMemcpy(reference.data(), dsel, reference.size() * 4, cudaMemcpyDeviceToHost);
        cudaMemset(dsel, 0, (size_t)P * H * maxK * 4);
    }
    auto launch = [&] {
        if (cluster <= 1) {
            sparse_select<<<P * H, threads, selectShared>>>(dsel, dq, dlp, dchp, dsp_, dseg, dsp, H, KVH, D, qStride, maxK,
                                                           maxCand, selectList, first ? dpaths : nullptr);
        } else if (cluster == 8) {
            sparse_select_cluster<<<P * H * 8, 256, 4 * ctile>>>(dsel, dq, dlp, dchp, dsp_, dseg, dsp, H, KVH, D, qStride,
                                                                maxK, ctile);
        } else {
            sparse_select_cluster2<<<P * H * 2, 1024, 4 * ctile>>>(dsel, dq, dlp, dchp, dsp_, dseg, dsp, H, KVH, D, qStride,
                                                                  maxK, ctile);
        }
    };
    launch();
    first = false;
    cudaError_t err = cudaDeviceSynchronize();
    if (err != cudaSuccess) { printf("error %s\n", cudaGetErrorString(err)); return 1; }
    std::vector<int> sel((size_t)P * H * maxK);
    cudaMemcpy(sel.data(), dsel, sel.size() * 4, cudaMemcpyDeviceToHost);
    unsigned long long sum = 0;
    for (int i = 0; i < P * H; i++) for (int j = 0; j < k; j++) sum = sum * 1000003ull + sel[(size_t)i * maxK + j];
    if (checked) {
        size_t differ = 0;
        for (int i = 0; i < P * H; i++) {
            // a shared selection is written from its group's first head
            if (mode != 0 && i % (H / KVH) != 0) continue;
            for (int j = 0; j < k; j++) differ += sel[(size_t)i * maxK + j] != reference[(size_t)i * maxK + j];
        }
        int paths[2];
        cudaMemcpy(paths, dpaths, 8, cudaMemcpyDeviceToHost);
        printf("guess (normal quantile, list of %d): %zu slots differ from the radix select's; the first launch: "
               "%d selections from a list, %d fell back\n", selectList, differ, paths[0], paths[1]);
    }
    cudaEvent_t e0, e1; cudaEventCreate(&e0); cudaEventCreate(&e1);
    int reps = 20;
    cudaEventRecord(e0);
    for (int i = 0; i < reps; i++) launch();
    cudaEventRecord(e1); cudaEventSynchronize(e1);
    float ms; cudaEventElapsedTime(&ms, e0, e1);
    double bytes = (double)P * (H / lgroup) * n * r * bits / 8 + (bits < 16 ? (double)P * (H / lgroup) * n * 2 : 0);
    printf("sparse_select (cluster %d, %d threads) %d-bit labels, a row for %d heads, mode %d, %d rows x %d candidates, k %d: "
           "%.1f us a launch, %.2f TB/s of labels, checksum %016llx\n", cluster,
           cluster <= 1 ? threads : cluster == 2 ? 1024 : 256, bits, lgroup, mode, P, n, k, 1e3 * ms / reps,
           bytes / (ms / reps * 1e-3) / 1e12, sum);
    if (cluster <= 1) {
        cudaFuncSetAttribute(select_scores_only, cudaFuncAttributeMaxDynamicSharedMemorySize, selectShared);
        cudaEventRecord(e0);
        for (int i = 0; i < reps; i++) {
            select_scores_only<<<P * H, threads, selectShared>>>(dsel, dq, dlp, dchp, dsp_, dseg, dsp, H, KVH, D, qStride,
                                                                 maxK);
        }
        cudaEventRecord(e1); cudaEventSynchronize(e1);
        cudaEventElapsedTime(&ms, e0, e1);
        printf("  its scores alone (no top-k): %.1f us a launch, %.2f TB/s of labels\n", 1e3 * ms / reps,
               bytes / (ms / reps * 1e-3) / 1e12);
    }
    return 0;
}
