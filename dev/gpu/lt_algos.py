"""Decode products of 64-256 rows: how near the copy bandwidth does cuBLAS get, by cublasGemmEx (what Cublas.gemm
calls: bf16 x bf16 -> f32, f32 compute) and by cuBLASLt with each of its heuristic's algorithms (the first is what
cuBLASLt would pick; the others are what an autotune at start-up could pick)? Llama-3.1-8B's decode shapes, weights
rotated over 8 copies so that no call finds its weights in the L2. Usage: python3 lt_algos.py [rows...] (64 128 256)
Prints, per shape and rows: ms a call and the weights' GB/s as a share of the copy bandwidth measured here.
"""
import ctypes, glob, os, sys, torch

rows_list = [int(a) for a in sys.argv[1:]] or [64, 128, 256]
found = sorted(f for d in sys.path + ["/usr/local/cuda/lib64"] for f in glob.glob(d + "/nvidia/cu*/lib/libcublas.so*")
               + glob.glob(d + "/libcublas.so*"))
lib_dir = os.path.dirname(found[-1])
lt = ctypes.CDLL(sorted(glob.glob(os.path.join(lib_dir, "libcublasLt.so*")))[-1], mode=ctypes.RTLD_GLOBAL)
cb = ctypes.CDLL(found[-1])
print("cuBLAS:", found[-1])

R_32F, R_16BF, COMPUTE_32F, OP_N, OP_T = 0, 14, 68, 0, 1
DESC_TRANSA, DESC_TRANSB, PREF_MAX_WS = 3, 4, 1
WS = 32 << 20
ws = torch.empty(WS, dtype=torch.uint8, device="cuda")
stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
h = ctypes.c_void_p()
assert cb.cublasCreate_v2(ctypes.byref(h)) == 0
cb.cublasSetStream_v2(h, stream)
cb.cublasSetWorkspace_v2(h, ctypes.c_void_p(ws.data_ptr()), ctypes.c_size_t(WS))
lh = ctypes.c_void_p()
assert lt.cublasLtCreate(ctypes.byref(lh)) == 0
one, zero = ctypes.c_float(1.0), ctypes.c_float(0.0)


class Heuristic(ctypes.Structure):
    _fields_ = [("algo", ctypes.c_uint64 * 8), ("workspace", ctypes.c_size_t), ("state", ctypes.c_int),
                ("waves", ctypes.c_float), ("reserved", ctypes.c_int * 4)]


def layout(dtype, r, c, ld):
    d = ctypes.c_void_p()
    assert lt.cublasLtMatrixLayoutCreate(ctypes.byref(d), dtype, ctypes.c_uint64(r), ctypes.c_uint64(c),
                                         ctypes.c_int64(ld)) == 0
    return d


def timed(fn, reps=48):
    for _ in range(4): fn()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(reps): fn()
    e.record(); torch.cuda.synchronize()
    return s.elapsed_time(e) / reps


src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
dst = torch.empty_like(src)
copy = 2 * src.numel() / (timed(lambda: dst.copy_(src), 16) / 1e3) / 1e12
print("copy %.2f TB/s (bytes read + written)" % copy)
del src, dst

shapes = {"q/k/v": (6144, 4096), "output": (4096, 4096), "gate/up": (28672, 4096), "down": (4096, 14336)}
COPIES = 8
for name, (o, k) in shapes.items():
    ws_ = [torch.randn(o, k, device="cuda", dtype=torch.bfloat16) * 0.02 for _ in range(COPIES)]
    for m in rows_list:
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        c = torch.empty(m, o, device="cuda", dtype=torch.float32)
        i = [0]

        def gemm_ex():   # c^T = w x^T in column-major terms, as Cublas.gemm
            w = ws_[i[0] % COPIES]; i[0] += 1
            r = cb.cublasGemmEx(h, OP_T, OP_N, o, m, k, ctypes.byref(one), ctypes.c_void_p(w.data_ptr()), R_16BF, k,
                                ctypes.c_void_p(x.data_ptr()), R_16BF, k, ctypes.byref(zero),
                                ctypes.c_void_p(c.data_ptr()), R_32F, o, COMPUTE_32F, -1)
            assert r == 0, r

        t_ex = timed(gemm_ex)
        desc = ctypes.c_void_p()
        assert lt.cublasLtMatmulDescCreate(ctypes.byref(desc), COMPUTE_32F, R_32F) == 0
        ta, tb = ctypes.c_int32(OP_T), ctypes.c_int32(OP_N)
        lt.cublasLtMatmulDescSetAttribute(desc, DESC_TRANSA, ctypes.byref(ta), ctypes.c_size_t(4))
        lt.cublasLtMatmulDescSetAttribute(desc, DESC_TRANSB, ctypes.byref(tb), ctypes.c_size_t(4))
        a_l, b_l, c_l = layout(R_16BF, k, o, k), layout(R_16BF, k, m, k), layout(R_32F, o, m, o)
        pref = ctypes.c_void_p()
        assert lt.cublasLtMatmulPreferenceCreate(ctypes.byref(pref)) == 0
        wsb = ctypes.c_uint64(WS)
        lt.cublasLtMatmulPreferenceSetAttribute(pref, PREF_MAX_WS, ctypes.byref(wsb), ctypes.c_size_t(8))
        res = (Heuristic * 32)()
        count = ctypes.c_int()
        st = lt.cublasLtMatmulAlgoGetHeuristic(lh, desc, a_l, b_l, c_l, c_l, pref, 32, res, ctypes.byref(count))
        times = []
        for j in range(count.value if st == 0 else 0):
            algo = ctypes.byref(res[j].algo)

            def lt_mm():
                w = ws_[i[0] % COPIES]; i[0] += 1
                r = lt.cublasLtMatmul(lh, desc, ctypes.byref(one), ctypes.c_void_p(w.data_ptr()), a_l,
                                      ctypes.c_void_p(x.data_ptr()), b_l, ctypes.byref(zero),
                                      ctypes.c_void_p(c.data_ptr()), c_l, ctypes.c_void_p(c.data_ptr()), c_l, algo,
                                      ctypes.c_void_p(ws.data_ptr()), ctypes.c_size_t(WS), stream)
                assert r == 0, r

            try:
                times.append((timed(lt_mm), j, res[j].waves))
            except AssertionError:
                pass
        t_mm = timed(lambda: x @ ws_[0].t())   # torch.matmul, L2-warm weights: an upper bound on its rate
        gb = o * k * 2 / 1e9 + m * k * 2 / 1e9 + m * o * 4 / 1e9

        def share(t):
            return gb / (t / 1e3) / (copy * 1e3) * 100

        first = times[0][0] if times and times[0][1] == 0 else float("nan")
        best = min(times) if times else (float("nan"), -1, 0)
        print("%-8s %4d rows  gemmEx %.4f ms (%3.0f%%)  Lt first %.4f (%3.0f%%)  Lt best %.4f (%3.0f%%, #%d of %d, "
              "waves %.2f)  torch.matmul %.4f" % (name, m, t_ex, share(t_ex), first, share(first), best[0],
                                                  share(best[0]), best[1], count.value, best[2], t_mm))
