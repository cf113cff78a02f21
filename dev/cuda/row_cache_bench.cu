// Check-then-time harness for row_cache.cu (issue 26's device cache of selected rows): S decode steps of P rows, each
// row's shared selection of k slots a kv head drawn so that a share of it repeats the step before's, served by
// row_cache_serve from a host store in mapped pinned memory; every step checked against a CPU model of kv/RowCache's
// ring (the places each selected row lands in, the owners, the hand, the rows copied), then the steps timed.
// Build (in dev/cuda): nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a row_cache_bench.cu -o rcb
// Run: ./rcb [rows P = 8] [k = 2048] [places C = 4096] [context = 32768] [reuse = 0.6] [steps = 20]; also k == C
//   (./rcb 8 2048 2048), every row reused (./rcb 8 2048 4096 32768 1.0) and a small ring that wraps often
//   (./rcb 2 100 101 1000 0.5 200)
#include "row_cache.cu"
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <random>
#include <algorithm>
#include <set>

int main(int argc, char** argv) {
    int P = argc > 1 ? atoi(argv[1]) : 8, k = argc > 2 ? atoi(argv[2]) : 2048, C = argc > 3 ? atoi(argv[3]) : 4096;
    int cap = argc > 4 ? atoi(argv[4]) : 32768, steps = argc > 6 ? atoi(argv[6]) : 20;
    double reuse = argc > 5 ? atof(argv[5]) : 0.6;
    const int H = 32, KVH = 8, D = 128, maxK = (k + 31) / 32 * 32;
    if (P < 1 || C < 1 || cap <= 68 || k > cap - 68 || C > ROW_CACHE_MAX_PLACES || k > ROW_CACHE_MAX_K || k > C) {
        printf("bad sizes: rows >= 1, 1 <= places <= %d, k <= places, k <= %d, k <= context - 68\n",
               ROW_CACHE_MAX_PLACES, ROW_CACHE_MAX_K);
        return 2;
    }
    size_t rowElems = (size_t)cap * KVH * D;
    // host stores (mapped pinned): a hash of (row, element, key or value), so a row read from the wrong store, slot or
    // head, or a value written as a key, shows
    std::vector<unsigned long long> hk(P), hv(P), ck(P), cv(P), po(P), ow(P), hd(P);
    std::vector<unsigned short*> hostK(P), hostV(P);
    for (int p = 0; p < P; p++) {
        if (cudaHostAlloc((void**)&hostK[p], rowElems * 2, cudaHostAllocMapped) != cudaSuccess
            || cudaHostAlloc((void**)&hostV[p], rowElems * 2, cudaHostAllocMapped) != cudaSuccess) {
            printf("cannot pin %.2f GB of host stores\n", 4.0 * rowElems * P / 1e9);
            return 2;
        }
        auto mix = [](unsigned x) { x ^= x >> 15; x *= 0x2C1B3C6Du; x ^= x >> 12; x *= 0x297A2D39u; return x >> 16; };
        for (size_t e = 0; e < rowElems; e++) {
            hostK[p][e] = (unsigned short)mix((unsigned)e * 0x9E3779B1u ^ (unsigned)p * 0x85EBCA77u);
            hostV[p][e] = (unsigned short)mix((unsigned)e * 0x9E3779B1u ^ (unsigned)p * 0x85EBCA77u ^ 0x5bd1e995u);
        }
        void *dk, *dv;
        cudaHostGetDevicePointer(&dk, hostK[p], 0);
        cudaHostGetDevicePointer(&dv, hostV[p], 0);
        hk[p] = (unsigned long long)dk;
        hv[p] = (unsigned long long)dv;
        void *a, *b, *c, *o, *h;
        cudaMalloc(&a, (size_t)C * KVH * D * 2); cudaMalloc(&b, (size_t)C * KVH * D * 2);
        cudaMalloc(&c, (size_t)KVH * cap * 4); cudaMalloc(&o, (size_t)KVH * C * 4); cudaMalloc(&h, KVH * 4);
        cudaMemset(c, 0xff, (size_t)KVH * cap * 4); cudaMemset(o, 0xff, (size_t)KVH * C * 4); cudaMemset(h, 0, KVH * 4);
        ck[p] = (unsigned long long)a; cv[p] = (unsigned long long)b; po[p] = (unsigned long long)c;
        ow[p] = (unsigned long long)o; hd[p] = (unsigned long long)h;
    }
    auto upload = [](const std::vector<unsigned long long>& v) {
        void* d; cudaMalloc(&d, v.size() * 8); cudaMemcpy(d, v.data(), v.size() * 8, cudaMemcpyHostToDevice);
        return (unsigned long long*)d;
    };
    unsigned long long *dhk = upload(hk), *dhv = upload(hv), *dck = upload(ck), *dcv = upload(cv), *dpo = upload(po),
                       *dow = upload(ow), *dhd = upload(hd), *dstats;
    cudaMalloc(&dstats, 16); cudaMemset(dstats, 0, 16);
    std::vector<int> seg(P), sp((size_t)P * SP_FIELDS, 0);
    for (int p = 0; p < P; p++) {
        seg[p] = p;
        int* d = &sp[(size_t)p * SP_FIELDS];
        d[SP_ROW] = p; d[SP_CAND] = cap - 68; d[SP_K] = k; d[SP_SINKS] = 4; d[SP_WINDOW] = 64; d[SP_MODE] = 1;
        d[SP_CAP] = cap; d[SP_HOST] = 1;
    }
    int *dseg, *dsp, *dsel;
    cudaMalloc(&dseg, P * 4); cudaMalloc(&dsp, sp.size() * 4); cudaMalloc(&dsel, (size_t)P * H * maxK * 4);
    cudaMemcpy(dseg, seg.data(), P * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(dsp, sp.data(), sp.size() * 4, cudaMemcpyHostToDevice);
    // the CPU model: kv/RowCache's ring per (row, kv head)
    struct Ring { std::vector<int> owner, placeOf; int hand = 0; };
    std::vector<Ring> ring(P * KVH);
    for (auto& r : ring) { r.owner.assign(C, -1); r.placeOf.assign(cap, -1); }
    std::mt19937 rng(11);
    std::vector<std::vector<int>> last(P * KVH);
    auto draw = [&](int pg) {   // k distinct slots in [4, cap - 64), a `reuse` share of them from the last step's
        std::set<int> pick;
        std::vector<int>& prev = last[pg];
        std::shuffle(prev.begin(), prev.end(), rng);
        for (size_t i = 0; i < prev.size() && pick.size() < (size_t)(reuse * k); i++) pick.insert(prev[i]);
        while (pick.size() < (size_t)k) pick.insert(4 + rng() % (cap - 68));
        std::vector<int> v(pick.begin(), pick.end());
        last[pg] = v;
        return v;
    };
    std::vector<int> sel((size_t)P * H * maxK, 0);
    int bad = 0;
    unsigned long long asked = 0, missed = 0;
    for (int step = 0; step < steps && !bad; step++) {
        std::vector<std::vector<int>> want(P * KVH);
        for (int p = 0; p < P; p++) for (int g = 0; g < KVH; g++) {
            std::vector<int> s = draw(p * KVH + g);
            std::copy(s.begin(), s.end(), sel.begin() + (size_t)(p * H + g * (H / KVH)) * maxK);
            Ring& r = ring[p * KVH + g];   // RowCache.serve
            std::vector<char> a(C, 0);
            std::vector<int> places(k);
            for (int i = 0; i < k; i++) {
                if (r.placeOf[s[i]] >= 0) {
                    a[r.placeOf[s[i]]] = 1;
                    places[i] = r.placeOf[s[i]];
                }
            }
            for (int i = 0; i < k; i++) {
                if (r.placeOf[s[i]] >= 0 && a[r.placeOf[s[i]]]) { places[i] = r.placeOf[s[i]]; continue; }
                while (a[r.hand]) r.hand = (r.hand + 1) % C;
                if (r.owner[r.hand] >= 0) r.placeOf[r.owner[r.hand]] = -1;
                r.owner[r.hand] = s[i]; r.placeOf[s[i]] = r.hand; a[r.hand] = 1; places[i] = r.hand;
                r.hand = (r.hand + 1) % C;
                missed++;
            }
            asked += k;
            want[p * KVH + g] = places;
        }
        cudaMemcpy(dsel, sel.data(), sel.size() * 4, cudaMemcpyHostToDevice);
        row_cache_serve<<<P * KVH, ROW_CACHE_THREADS>>>(dsel, dhk, dhv, dck, dcv, dpo, dow, dhd, dseg, dsp, H, KVH, D,
                                                         maxK, C, dstats);
        cudaError_t err = cudaDeviceSynchronize();
        if (err != cudaSuccess) { printf("error %s\n", cudaGetErrorString(err)); return 1; }
        std::vector<int> got(sel.size());
        cudaMemcpy(got.data(), dsel, got.size() * 4, cudaMemcpyDeviceToHost);
        for (int p = 0; p < P && bad < 10; p++) {
            std::vector<int> owner((size_t)KVH * C), hand(KVH);
            cudaMemcpy(owner.data(), (void*)ow[p], owner.size() * 4, cudaMemcpyDeviceToHost);
            cudaMemcpy(hand.data(), (void*)hd[p], KVH * 4, cudaMemcpyDeviceToHost);
            std::vector<unsigned short> cacheK((size_t)C * KVH * D), cacheV(cacheK.size());
            cudaMemcpy(cacheK.data(), (void*)ck[p], cacheK.size() * 2, cudaMemcpyDeviceToHost);
            cudaMemcpy(cacheV.data(), (void*)cv[p], cacheV.size() * 2, cudaMemcpyDeviceToHost);
            for (int g = 0; g < KVH; g++) {
                Ring& r = ring[p * KVH + g];
                const std::vector<int>& w = want[p * KVH + g];
                const int* gs = &got[(size_t)(p * H + g * (H / KVH)) * maxK];
                const int* asked_slots = &sel[(size_t)(p * H + g * (H / KVH)) * maxK];
                for (int i = 0; i < k; i++) {
                    if (gs[i] != w[i]) {
                        if (bad++ < 10) {
                            printf("step %d row %d head %d entry %d: place %d, want %d\n", step, p, g, i, gs[i], w[i]);
                        }
                    }
                    else {
                        size_t at = ((size_t)w[i] * KVH + g) * D, from = ((size_t)asked_slots[i] * KVH + g) * D;
                        if ((memcmp(&cacheK[at], &hostK[p][from], D * 2) || memcmp(&cacheV[at], &hostV[p][from], D * 2))
                            && bad++ < 10) {
                            printf("step %d row %d head %d: the row at place %d is not slot %d's\n", step, p, g, w[i],
                                   asked_slots[i]);
                        }
                    }
                }
                if (hand[g] != r.hand && bad++ < 10) {
                    printf("step %d row %d head %d: hand %d, want %d\n", step, p, g, hand[g], r.hand);
                }
                for (int c = 0; c < C; c++) {
                    if (owner[(size_t)g * C + c] != r.owner[c]) {
                        if (bad++ < 10) printf("step %d row %d head %d: owner differs at place %d\n", step, p, g, c);
                        break;
                    }
                }
            }
        }
    }
    unsigned long long st[2];
    cudaMemcpy(st, dstats, 16, cudaMemcpyDeviceToHost);
    if (st[0] != asked || st[1] != missed) {
        printf("stats %llu / %llu, want %llu / %llu\n", st[0], st[1], asked, missed);
        bad++;
    }
    // time: more steps (no checks), each step's selection drawn on the host and copied first (not timed)
    cudaEvent_t e0, e1; cudaEventCreate(&e0); cudaEventCreate(&e1);
    float total = 0;
    unsigned long long missedBefore = st[1];
    int reps = 10;
    for (int rep = 0; rep < reps; rep++) {
        for (int p = 0; p < P; p++) for (int g = 0; g < KVH; g++) {
            std::vector<int> s = draw(p * KVH + g);
            std::copy(s.begin(), s.end(), sel.begin() + (size_t)(p * H + g * (H / KVH)) * maxK);
        }
        cudaMemcpy(dsel, sel.data(), sel.size() * 4, cudaMemcpyHostToDevice);
        cudaEventRecord(e0);
        row_cache_serve<<<P * KVH, ROW_CACHE_THREADS>>>(dsel, dhk, dhv, dck, dcv, dpo, dow, dhd, dseg, dsp, H, KVH, D,
                                                         maxK, C, dstats);
        cudaEventRecord(e1); cudaEventSynchronize(e1);
        float ms; cudaEventElapsedTime(&ms, e0, e1); total += ms;
    }
    if (cudaGetLastError() != cudaSuccess) { printf("a timed launch failed\n"); return 1; }
    cudaMemcpy(st, dstats, 16, cudaMemcpyDeviceToHost);
    double missBytes = (double)(st[1] - missedBefore) * 2 * D * 2 / reps;
    double hitRate = 1.0 - (double)(st[1] - missedBefore) / ((double)reps * P * KVH * k);
    printf("row_cache_serve, %d rows x %d kv heads, k %d, %d places, reuse %.2f: %s; %.1f us a layer, %.2f MB of "
           "misses (%.1f GB/s over the link), hit rate %.3f\n", P, KVH, k, C, reuse, bad ? "WRONG" : "exact",
           1e3 * total / reps, missBytes / 1e6, missBytes / (total / reps * 1e-3) / 1e9, hitRate);
    return bad != 0;
}
