// One (row, head) of the step between the q/k/v projection and attention, shared by kv_append_rope (kvcache.cu) and
// the dspp append kernel that also writes labels and ring slots (kv_label_append_rope, label_append.cu):
//   qkv: [rows][row_stride] f32, each row [q: H x D | k: KVH x D | v: KVH x D | ...] (the fused projection's output)
//   q heads: rotated in place (RoPE, Hugging Face rotate-half: (x_i, x_{i+D/2}) -> (x_i cos - x_{i+D/2} sin,
//     x_{i+D/2} cos + x_i sin), angle = positions[r] * inv_freq[i] in f32; inv_freq: [D / 2], llama3 scaling applied
//     on the host; null for models without rotary positions)
//   k heads: rotated (in place as well), then appended, rounded to bf16, to the cache of segment seg[r] at slot slot[r];
//   v heads: appended likewise. Each cache: [cap][KVH * D] bf16 at kptr[seg[r]], vptr[seg[r]] (this layer's tables).
#pragma once
#include "common.cuh"

// cos and sin of pair i's RoPE angle at row r (1 and 0 without rotary positions, or for i >= D / 2)
__device__ __forceinline__ void rope_angle(const int* positions, const float* inv_freq, int r, int i, int D, float* c,
                                           float* s) {
    *c = 1.f;
    *s = 0.f;
    if (inv_freq && i < D / 2) sincosf((float)positions[r] * inv_freq[i], s, c);
}

// Pair (i, i + D / 2) of head h (0 <= h < H + 2 KVH) of row r, rotated by (c, s) for q and k heads when rotary; returns
// the pair in *a, *b (i >= D / 2 returns false and does nothing).
__device__ __forceinline__ bool kv_append_pair(float* qkv, float c, float s, bool rotary,
                                               const unsigned long long* kptr, const unsigned long long* vptr,
                                               const int* seg, const int* slot, int r, int h, int i, int H, int KVH,
                                               int D, int row_stride, float* a_out, float* b_out) {
    int half = D / 2;
    if (i >= half) return false;
    float* x = qkv + (size_t)r * row_stride + h * D;
    float a = x[i], b = x[i + half];
    if (rotary && h < H + KVH) {
        float ra = a * c - b * s, rb = b * c + a * s;
        a = ra;
        b = rb;
    }
    if (h < H + KVH) {   // rotated q and k stay in the row (the label cache reads the rotated keys)
        x[i] = a;
        x[i + half] = b;
    }
    *a_out = a;
    *b_out = b;
    if (h < H) return true;
    bool key = h < H + KVH;
    int g = key ? h - H : h - H - KVH;
    bf16* cache = reinterpret_cast<bf16*>(key ? kptr[seg[r]] : vptr[seg[r]]) + (size_t)slot[r] * KVH * D + g * D;
    cache[i] = __float2bfloat16(a);
    cache[i + half] = __float2bfloat16(b);
    return true;
}
