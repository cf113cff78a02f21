// host_gather: how fast can one GPU read scattered rows of a KV store kept in pinned host memory (host placement)?
// Rows of 256 bytes (one kv head's key or value row at D = 128, bf16), N of them chosen at random from a store of
// S bytes, gathered into device memory by a kernel through the store's device mapping (zero-copy reads), against:
//   - cudaMemcpy of 1 GB pinned host -> device (the host link's copy rate);
//   - the same rows read in order (no scatter);
//   - stores of 64 MB to 4 GB (the GPU's translation reach: random rows of a large store miss it);
//   - warm and cold GPU TLBs (2 GB of device memory streamed between runs, as a decode layer's weights do);
//   - cudaHostAlloc'd memory, and host memory from the virtual memory management API (cuMemCreate on the host NUMA
//     node, 2 MB granularity). (Anonymous memory advised to 2 MB huge pages and registered with cudaHostRegister
//     measured the same as cudaHostAlloc, on 2026-11-24: the GPU's mapping does not follow the host's page size.)
// Gather kernels: 16 lanes a row (16 x 16 B), one row a thread group (v1) or four rows in flight (v2).
// Build: nvcc -O3 -std=c++17 -arch=sm_90a -o host_gather host_gather.cu; run: ./host_gather
#include <cuda.h>
#include <cuda_runtime.h>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#define CHECK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { \
    fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e)); exit(1); } } while (0)

__global__ void gather_v1(uint4* dst, const uint4* src, const int* rows, int n) {
    long t = (long)blockIdx.x * blockDim.x + threadIdx.x;
    long r = t >> 4;
    int lane = t & 15;
    if (r < n) dst[r * 16 + lane] = src[(size_t)rows[r] * 16 + lane];
}

__global__ void gather_v2(uint4* dst, const uint4* src, const int* rows, int n) {
    long t = (long)blockIdx.x * blockDim.x + threadIdx.x;
    long r0 = (t >> 4) * 4;
    int lane = t & 15;
    uint4 v[4];
#pragma unroll
    for (int u = 0; u < 4; u++) if (r0 + u < n) v[u] = src[(size_t)rows[r0 + u] * 16 + lane];
#pragma unroll
    for (int u = 0; u < 4; u++) if (r0 + u < n) dst[(r0 + u) * 16 + lane] = v[u];
}

static char* flush_buffer;   // 2 GB of device memory streamed between timed runs: evicts L2 and the GPU's TLBs
static const size_t FLUSH_BYTES = 2UL << 30;

static float time_gather(int version, uint4* dst, const uint4* src, const int* rows, int n, bool cold) {
    cudaEvent_t a, b;
    CHECK(cudaEventCreate(&a));
    CHECK(cudaEventCreate(&b));
    std::vector<float> ms;
    for (int rep = 0; rep < 7; rep++) {
        if (cold) CHECK(cudaMemset(flush_buffer, rep, FLUSH_BYTES));
        CHECK(cudaEventRecord(a));
        if (version == 1) gather_v1<<<(int)((16L * n + 255) / 256), 256>>>(dst, src, rows, n);
        else gather_v2<<<(int)((4L * n + 255) / 256), 256>>>(dst, src, rows, n);
        CHECK(cudaEventRecord(b));
        CHECK(cudaEventSynchronize(b));
        float t;
        CHECK(cudaEventElapsedTime(&t, a, b));
        ms.push_back(t);
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
}

// src: the store's device address; n random rows of it, then the same with a flushed TLB, then rows in order
static void run(const char* kind, const uint4* src, size_t bytes, uint4* dst, int* drows, int n) {
    size_t storeRows = bytes / 256;
    std::mt19937 rng(1);
    std::vector<int> rows(n);
    for (int i = 0; i < n; i++) rows[i] = (int)(rng() % storeRows);
    CHECK(cudaMemcpy(drows, rows.data(), n * 4, cudaMemcpyHostToDevice));
    for (int cold = 0; cold <= 1; cold++) {
        float ms = time_gather(2, dst, src, drows, n, cold);
        printf("%-22s %6.0f MB store  random rows, %s TLB: %7.3f ms  %6.1f GB/s\n", kind, bytes / 1e6,
               cold ? "cold" : "warm", ms, n * 256.0 / ms / 1e6);
    }
    for (int i = 0; i < n; i++) rows[i] = i % storeRows;
    CHECK(cudaMemcpy(drows, rows.data(), n * 4, cudaMemcpyHostToDevice));
    float ms = time_gather(2, dst, src, drows, n, true);
    printf("%-22s %6.0f MB store  rows in order, cold TLB: %7.3f ms  %6.1f GB/s\n", kind, bytes / 1e6, ms,
           n * 256.0 / ms / 1e6);
}

// The driver functions below, looked up through the runtime (no link against libcuda: build hosts have no driver)
template <typename F>
static F driver(const char* name) {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found;
    CHECK(cudaGetDriverEntryPointByVersion(name, &fn, 12000, cudaEnableDefault, &found));
    return reinterpret_cast<F>(fn);
}

// Pinned host memory through the virtual memory management API (cuMemCreate on the host NUMA node, mapped for the
// device at the allocation granularity: 2 MB pages in the GPU's page tables), or 0 where the driver refuses it
static CUdeviceptr vmm_host_alloc(size_t bytes, size_t* padded) {
    auto granularity = driver<CUresult (*)(size_t*, const CUmemAllocationProp*, CUmemAllocationGranularity_flags)>(
            "cuMemGetAllocationGranularity");
    auto create = driver<CUresult (*)(CUmemGenericAllocationHandle*, size_t, const CUmemAllocationProp*,
                                      unsigned long long)>("cuMemCreate");
    auto reserve = driver<CUresult (*)(CUdeviceptr*, size_t, size_t, CUdeviceptr, unsigned long long)>(
            "cuMemAddressReserve");
    auto map = driver<CUresult (*)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle, unsigned long long)>(
            "cuMemMap");
    auto access = driver<CUresult (*)(CUdeviceptr, size_t, const CUmemAccessDesc*, size_t)>("cuMemSetAccess");
    CUmemAllocationProp prop = {};
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_HOST_NUMA;
    prop.location.id = 0;
    size_t gran = 0;
    CUresult r = granularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED);
    if (r != CUDA_SUCCESS) { printf("cuMemGetAllocationGranularity (host NUMA) failed: %d\n", (int)r); return 0; }
    *padded = (bytes + gran - 1) / gran * gran;
    CUmemGenericAllocationHandle handle;
    r = create(&handle, *padded, &prop, 0);
    if (r != CUDA_SUCCESS) { printf("cuMemCreate (host NUMA) failed: %d\n", (int)r); return 0; }
    CUdeviceptr va;
    if ((r = reserve(&va, *padded, gran, 0, 0)) != CUDA_SUCCESS) { printf("reserve failed: %d\n", (int)r); return 0; }
    if ((r = map(va, *padded, 0, handle, 0)) != CUDA_SUCCESS) { printf("map failed: %d\n", (int)r); return 0; }
    CUmemAccessDesc acc = {};
    acc.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    acc.location.id = 0;
    acc.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    r = access(va, *padded, &acc, 1);
    if (r != CUDA_SUCCESS) { printf("cuMemSetAccess failed: %d\n", (int)r); return 0; }
    printf("VMM host allocation: granularity %zu bytes\n", gran);
    return va;
}

int main() {
    int n = 200000;   // 51 MB of rows: a 32K context's per-head selection over a few layers
    uint4* dst;
    int* drows;
    CHECK(cudaMalloc(&dst, (size_t)n * 256));
    CHECK(cudaMalloc(&drows, n * 4));
    CHECK(cudaMalloc(&flush_buffer, FLUSH_BYTES));
    {   // the link's copy rate
        size_t b = 1L << 30;
        char* h;
        void* d;
        CHECK(cudaHostAlloc((void**)&h, b, cudaHostAllocDefault));
        CHECK(cudaMalloc(&d, b));
        CHECK(cudaMemcpy(d, h, b, cudaMemcpyHostToDevice));
        cudaEvent_t a, e;
        cudaEventCreate(&a);
        cudaEventCreate(&e);
        cudaEventRecord(a);
        CHECK(cudaMemcpy(d, h, b, cudaMemcpyHostToDevice));
        cudaEventRecord(e);
        cudaEventSynchronize(e);
        float ms;
        cudaEventElapsedTime(&ms, a, e);
        printf("cudaMemcpy 1 GB pinned host -> device: %.1f GB/s\n", b / ms / 1e6);
        cudaFreeHost(h);
        cudaFree(d);
    }
    for (size_t bytes : {128UL << 20, 512UL << 20, 4UL << 30}) {
        char* h;
        CHECK(cudaHostAlloc((void**)&h, bytes, cudaHostAllocMapped | cudaHostAllocPortable));
        uint4* src;
        CHECK(cudaHostGetDevicePointer((void**)&src, h, 0));
        CHECK(cudaMemset(src, 1, bytes));
        run("cudaHostAlloc mapped", src, bytes, dst, drows, n);
        CHECK(cudaFreeHost(h));
        size_t padded;
        CUdeviceptr va = vmm_host_alloc(bytes, &padded);
        if (va == 0) continue;
        CHECK(cudaMemset((void*)va, 1, bytes));
        run("VMM host (cuMemCreate)", (const uint4*)va, bytes, dst, drows, n);
    }
    return 0;
}
