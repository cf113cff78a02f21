// CUDA injection library: every kernel's start, end, stream and name (graph nodes included) to $KTRACE_OUT as CSV.
#include <cupti.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
static FILE* out; static std::mutex mu;
static void CUPTIAPI request(uint8_t** buf, size_t* size, size_t* maxRecords) {
    *size = 8 << 20; *buf = (uint8_t*)aligned_alloc(8, *size); *maxRecords = 0;
}
static void CUPTIAPI complete(CUcontext, uint32_t, uint8_t* buf, size_t, size_t valid) {
    CUpti_Activity* rec = nullptr;
    std::lock_guard<std::mutex> g(mu);
    while (cuptiActivityGetNextRecord(buf, valid, &rec) == CUPTI_SUCCESS) {
        if (rec->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL || rec->kind == CUPTI_ACTIVITY_KIND_KERNEL) {
            auto* k = (CUpti_ActivityKernel10*)rec;
            fprintf(out, "%llu,%llu,%u,%s\n", (unsigned long long)k->start, (unsigned long long)k->end, k->streamId, k->name);
        } else if (rec->kind == CUPTI_ACTIVITY_KIND_DRIVER) {
            auto* a = (CUpti_ActivityAPI*)rec;
            const char* name = "?";
            cuptiGetCallbackName(CUPTI_CB_DOMAIN_DRIVER_API, a->cbid, &name);
            fprintf(out, "%llu,%llu,%u,@%s\n", (unsigned long long)a->start, (unsigned long long)a->end, a->threadId % 100000, name);
        }
    }
    free(buf);
}
static void flush() { cuptiActivityFlushAll(1); fflush(out); }
extern "C" int InitializeInjection(void) {
    const char* path = getenv("KTRACE_OUT");
    out = fopen(path ? path : "/tmp/ktrace.csv", "w");
    cuptiActivityRegisterCallbacks(request, complete);
    cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
    if (getenv("KTRACE_DRIVER")) cuptiActivityEnable(CUPTI_ACTIVITY_KIND_DRIVER);
    cuptiActivityFlushPeriod(300);
    atexit(flush);
    return 1;
}
