"""PyTorch figures for `dsflow bench`, on the same GPU in the same call, so the comparison is side by side.

1. transformers LlamaForCausalLM (sdpa attention, bf16, random weights) decoding with a static KV cache filled to
   each context: tokens/s per batch and context (the shapes of synthetic:llama-3.1-8b).
2. torch.matmul on the GEMM shapes of a prefill of PROMPT tokens: the rate dsflow's prefill is compared against.

Usage: python3 bench/peer_torch.py [--batch 1,16] [--context 1024,4096] [--prompt 4096] [--steps 32]
"""
import argparse, time, torch

p = argparse.ArgumentParser()
p.add_argument("--batch", default="1,16")
p.add_argument("--context", default="1024,4096")
p.add_argument("--prompt", type=int, default=4096)
p.add_argument("--steps", type=int, default=32)
a = p.parse_args()
L, D, H, KV, HD, FF, V = 32, 4096, 32, 8, 128, 14336, 128256
dev, dt = "cuda", torch.bfloat16

def timed(fn, n):
    fn(); torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n): fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / n

# 2. GEMM rate on the prefill shapes (x [P, in] @ W^T [in, out])
P = a.prompt
shapes = [(D, (H + 2 * KV) * HD), (H * HD, D), (D, 2 * FF), (FF, D)]
flops = sum(2 * P * i * o for i, o in shapes)
tensors = [(torch.randn(P, i, device=dev, dtype=dt), torch.randn(o, i, device=dev, dtype=dt)) for i, o in shapes]
sec = timed(lambda: [x @ w.t() for x, w in tensors], 20)
print(f"torch.matmul prefill GEMM shapes (P={P}, one layer's q/k/v, o, gate/up, down): {flops / sec / 1e12:.1f} TFLOP/s", flush=True)
del tensors

# 1. transformers decode with a static cache
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.cache_utils import StaticCache
cfg = LlamaConfig(vocab_size=V, hidden_size=D, intermediate_size=FF, num_hidden_layers=L, num_attention_heads=H,
                  num_key_value_heads=KV, head_dim=HD, max_position_embeddings=131072, rope_theta=500000.0,
                  rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                "original_max_position_embeddings": 8192}, tie_word_embeddings=False)
with torch.device("meta"):
    m = LlamaForCausalLM(cfg)
m = m.to_empty(device=dev).to(dt)
with torch.no_grad():
    for prm in m.parameters(): prm.normal_(0, 0.02)
m.eval(); m.config._attn_implementation = "sdpa"
for ctx in [int(c) for c in a.context.split(",")]:
    for bs in [int(b) for b in a.batch.split(",")]:
        cache = StaticCache(config=cfg, max_batch_size=bs, max_cache_len=ctx + a.steps + 8, device=dev, dtype=dt)
        tok = torch.randint(0, V, (bs, 1), device=dev)
        pos = [ctx]
        def step():
            cp = torch.tensor([pos[0]], device=dev)
            with torch.no_grad():
                out = m(input_ids=tok, past_key_values=cache, cache_position=cp, use_cache=True)
            pos[0] += 1
            return out.logits.argmax(-1)
        sec = timed(step, a.steps)
        print(f"transformers sdpa bf16 static cache: batch {bs} context {ctx}: {bs / sec:.1f} tokens/s ({sec * 1e3:.2f} ms/step)", flush=True)
        del cache; torch.cuda.empty_cache()
