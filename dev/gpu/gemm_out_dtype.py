"""Does cuBLAS's bf16 x bf16 product run slower when it writes f32 (as dsflow's Cublas.gemm does) than when it writes
bf16 (as torch.matmul does)? cublasGemmEx through ctypes on torch's tensors, Llama-3.1-8B prefill shapes, each timed
over 32 layers' worth of calls; torch.matmul beside it. Usage: python3 gemm_out_dtype.py [rows, default 4096]
"""
import ctypes, glob, os, sys, torch
n = int(sys.argv[1]) if len(sys.argv) > 1 else 4096
found = sorted(f for d in sys.path + ["/usr/local/cuda/lib64"] for f in glob.glob(d + "/nvidia/cu*/lib/libcublas.so*")
               + glob.glob(d + "/libcublas.so*"))
print("cuBLAS:", found[-1])
lib_dir = os.path.dirname(found[-1])
ctypes.CDLL(sorted(glob.glob(os.path.join(lib_dir, "libcublasLt.so*")))[-1], mode=ctypes.RTLD_GLOBAL)
cb = ctypes.CDLL(found[-1])
h = ctypes.c_void_p()
assert cb.cublasCreate_v2(ctypes.byref(h)) == 0
ws = torch.empty(32 << 20, dtype=torch.uint8, device="cuda")
cb.cublasSetStream_v2(h, ctypes.c_void_p(torch.cuda.current_stream().cuda_stream))
cb.cublasSetWorkspace_v2(h, ctypes.c_void_p(ws.data_ptr()), ctypes.c_size_t(ws.numel()))
R_16BF, R_32F, COMPUTE_32F, OP_N, OP_T = 14, 0, 68, 0, 1
one, zero = ctypes.c_float(1.0), ctypes.c_float(0.0)
shapes = {"q/k/v": (6144, 4096), "output": (4096, 4096), "gate/up": (28672, 4096), "down": (4096, 14336)}

def timed(fn, reps=32):
    fn(); torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(reps): fn()
    e.record(); torch.cuda.synchronize()
    return s.elapsed_time(e) / reps

for name, (o, k) in shapes.items():
    x = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(o, k, device="cuda", dtype=torch.bfloat16) * 0.02
    row = [name]
    for ctype, dt in ((R_32F, torch.float32), (R_16BF, torch.bfloat16)):
        c = torch.empty(n, o, device="cuda", dtype=dt)
        def gemm():   # c^T = w x^T in column-major terms, as Cublas.gemm
            r = cb.cublasGemmEx(h, OP_T, OP_N, o, n, k, ctypes.byref(one), ctypes.c_void_p(w.data_ptr()), R_16BF, k,
                                ctypes.c_void_p(x.data_ptr()), R_16BF, k, ctypes.byref(zero), ctypes.c_void_p(c.data_ptr()),
                                ctype, o, COMPUTE_32F, -1)
            assert r == 0, r
        row.append(timed(gemm))
    row.append(timed(lambda: x @ w.t()))
    tf = 2.0 * n * o * k / 1e9
    print("%-8s gemmEx f32 out %.3f ms (%.0f TFLOP/s)  bf16 out %.3f ms (%.0f)  torch.matmul %.3f ms (%.0f)" % (
        row[0], row[1], tf / row[1], row[2], tf / row[2], row[3], tf / row[3]))
