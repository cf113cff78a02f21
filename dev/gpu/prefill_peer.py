"""PyTorch's rate for the work of one prefill at Llama-3.1-8B shapes (bf16, random weights), to set beside
`dsflow bench --prompt N`'s prefill row in the same device call: the linear layers of all 32 layers as torch.matmul
runs them (cuBLAS), and the causal attention as F.scaled_dot_product_attention runs it (flash), each timed alone.
Usage: python3 prefill_peer.py 4096 [more prompt lengths...]
"""
import sys, torch, torch.nn.functional as F
L, D, H, KV, HD, FF = 32, 4096, 32, 8, 128, 14336
dev, dt = "cuda", torch.bfloat16
shapes = [((H + 2 * KV) * HD, D), (D, H * HD), (2 * FF, D), (D, FF)]   # q/k/v, output, gate/up, down: [out][in]
ws = [torch.randn(o, i, device=dev, dtype=dt) * 0.02 for o, i in shapes]

def timed(fn, reps=5):
    fn(); torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps): fn()
    end.record(); torch.cuda.synchronize()
    return start.elapsed_time(end) / reps / 1e3   # seconds

for n in map(int, sys.argv[1:]):
    xs = [torch.randn(n, i, device=dev, dtype=dt) for _, i in shapes]
    def products():
        for _ in range(L):
            for x, w in zip(xs, ws): x @ w.t()
    q = torch.randn(1, H, n, HD, device=dev, dtype=dt)
    k, v = torch.randn(1, KV, n, HD, device=dev, dtype=dt), torch.randn(1, KV, n, HD, device=dev, dtype=dt)
    def attention():
        for _ in range(L): F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    tp, ta = timed(products), timed(attention)
    pf = 2.0 * n * sum(o * i for o, i in shapes) * L
    af = 2.0 * L * H * HD * n * n   # causal: half of 4 n^2 HD per head
    print(f"peer prefill {n} tokens: torch.matmul products {tp * 1e3:.1f} ms ({pf / tp / 1e12:.1f} TFLOP/s), "
          f"sdpa causal attention {ta * 1e3:.1f} ms ({af / ta / 1e12:.1f} TFLOP/s), together {n / (tp + ta):.0f} "
          f"tokens/s ({(pf + af) / (tp + ta) / 1e12:.1f} TFLOP/s)")
