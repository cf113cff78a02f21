// The descriptor of a sparse decode row, shared by the sparse kernels (sparse.cu, lookahead.cu) and mirrored by
// CudaBackend.SPARSE_FIELDS: sp[p][SP_FIELDS] ints of sparse row p: its batch row, its candidates count (slots
// [sinks, sinks + cand)), its budget k, sinks S, window W, GQA selection mode (0 per head, 1 max, 2 mean), label
// channels r, label bits (16 or 8), cache capacity, 1 if the attention reads its selected rows from host memory, the
// query heads a label row serves (1, or G where the group's heads share their label channels: sparse.cu's header).
#pragma once

#define SP_FIELDS 11
enum { SP_ROW, SP_CAND, SP_K, SP_SINKS, SP_WINDOW, SP_MODE, SP_R, SP_BITS, SP_CAP, SP_HOST, SP_LGROUP };
