// The sparse caches as the sparse kernels read them (label_append.cu, select.cu, sparse_attention.cu, lookahead.cu),
// for DoubleSparse++ decode on the device (docs/algorithm.md; the CPU reference is kv/SparseKvCache): for a decode row
// p of a sparse layer, the approximate score of every candidate from the label cache, the top-k of the candidates,
// then exact attention over sinks + selected + window, split and merged like the dense decode kernels.
// Device placement: the whole K/V store stays on the device, the window is its last W slots. Host placement: the store
// is pinned host memory the device reads in place; sinks and window also live in a device ring [S + W][KVH][D] bf16
// that the attention reads (ring_slot).
//   qkv rows: [q: H x D | k: KVH x D | v] f32 after RoPE (kv_append_rope writes the rotated keys back)
//   labels of a segment's layer: [cap][LH * r], LH = H / lg label rows a slot, lg the query heads a row serves (1, or
//     the GQA group G where the group's heads have the same channels: KvConfig's qk-group), row h / lg serving head h:
//     label[slot][(h / lg) * r + i] = k[g * D + channels[h * r + i]] (g: h's kv head), fp16 (16-bit labels) or int8
//     times a per-token, per-row scale (8-bit: value = q * scale, scale = fp16(max |k_c| / 127) over the row's r
//     channels, q = round(k_c / scale) clamped to +-127, as kv/SparseKvCache quantises); scales of a segment's layer:
//     [LH][cap] fp16 (row-major: a row's scales of consecutive candidates read together)
//   4-bit labels of a segment's layer: [cap][LH][(r + 1) / 2] bytes ([cap][LH * r / 2] for even r), two labels a byte:
//     label 2i of a row in the low nibble of the row's byte i, 2i + 1 in the high nibble, each a two's complement
//     int4 (a row of odd r ends in a byte whose high nibble is 0, so no two rows share a byte); value = q * scale,
//     scale = fp16(max |k_c| / 7) over the row's r channels, q = round(k_c / scale) clamped to +-7 (scale 0: all 0);
//     scales as for 8-bit, [LH][cap] fp16. Read as a little-endian word, label e of the word's 8 is bits 4e .. 4e + 3.
//   channels of a segment's layer: [H * r] ints; lptr / chptr: this layer's pointer tables by segment (0: dense)
// The layouts of the two descriptors below are defined once more in Java, as named records (SparseRowDescriptor,
// SegmentDescriptor); SparseDescriptorLayoutTest holds each enum to its record's fields, in order.
// sp[p][SP_FIELDS] ints, the descriptor of sparse decode row p of a layer: its batch row, its candidates count (slots
// [sinks, sinks + cand)), its budget k, sinks S, window W, GQA selection mode (0 per head, 1 max, 2 mean), label
// channels r, label bits (16, 8 or 4), cache capacity, 1 if the attention reads its selected rows from host memory, the
// query heads a label row serves (1, or G where the group's heads share their label channels: lg above).
#pragma once

#define SP_FIELDS 11
enum { SP_ROW, SP_CAND, SP_K, SP_SINKS, SP_WINDOW, SP_MODE, SP_R, SP_BITS, SP_CAP, SP_HOST, SP_LGROUP };

// seg_info[s][SEG_FIELDS] ints of each segment's sparse cache, for the appends (which run before a layer's row
// descriptors exist): label channels r, label bits, sinks S, window W, cache capacity, the query heads a label row
// serves.
#define SEG_FIELDS 6
enum { SEG_R, SEG_BITS, SEG_SINKS, SEG_WINDOW, SEG_CAP, SEG_LGROUP };

// The device ring slot of store slot p (host placement): p for a sink (p < S), else S + (p - S) mod W
__device__ __forceinline__ int ring_slot(int p, int sinks, int window) {
    return p < sinks ? p : sinks + (p - sinks) % window;
}
