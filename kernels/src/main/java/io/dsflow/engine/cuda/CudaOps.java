package io.dsflow.engine.cuda;

import io.dsflow.engine.sample.Sampler;
import io.dsflow.engine.sample.SamplingParams;
import jcuda.driver.CUdeviceptr;

/**
 * The launch policy of the matrix-product, attention and selection kernels: which kernel and variant for which shape,
 * how many splits, which cluster size. One place, shared by {@link CudaBackend} and the kernel tests, so the tests
 * exercise the launches the model makes; the launches themselves go through the typed launchers (MatmulKernels,
 * AttentionKernels, ...), which alone know the kernels' names and arguments.
 */
final class CudaOps {
    /** A segment with at least this many rows in a step attends through the tensor-core prefill kernel. */
    static final int PREFILL_TILE_MIN_ROWS = 16;
    /** Rows of a prefill tile (attention_prefill.cu). */
    static final int PREFILL_TILE_ROWS = PrefillAttentionKernels.TILE_ROWS;

    private CudaOps() {
    }

    /** Whether a product of this many rows over inputs this wide runs on tensor cores (else the GEMV). */
    static boolean tensorCores(int rows, int in) {
        return rows > 32 && in % 8 == 0;
    }

    /**
     * Whether a SwiGLU product of this many rows over inputs this wide runs on cuBLAS, and so needs the GATE_UP buffer
     * for its gate/up pairs before swiglu_rows (the planner sizes it, the forward pass hands it over).
     */
    static boolean swigluOnCublas(CudaRuntime gpu, int rows, int in) {
        return gpu.blas() != null && tensorCores(rows, in);
    }

    /** An RMSNorm a product applies to its input first: weight [in] bf16. */
    record RmsNorm(CUdeviceptr weight, float eps) {
    }

    /**
     * The buffers of a product on tensor cores: its bf16 input [rows][in], and where cuBLAS computes a SwiGLU product,
     * that product [rows][out] f32 before swiglu_rows turns its gate/up pairs into the activations (null otherwise).
     */
    record GemmBuffers(CUdeviceptr inputBf16, CUdeviceptr gateUp) {
    }

    /**
     * y[rows][out] = x'[rows][in] W^T + bias (f32 activations, bf16 weights), x' = x or, with {@code norm},
     * rmsnorm(x) * weight row by row; with {@code accumulate} the product is added to y (the residual stream). On
     * tensor cores ({@link #tensorCores}) the input is bf16 in {@code gemm.inputBf16()}: already there when
     * {@code xInBf16} (its producer wrote it), else x is rounded (or normalised) into it first; the product is cuBLAS's
     * where the runtime found it ({@link CudaRuntime#blas}, its bias and SwiGLU as kernels after it), else gemm_bf16's
     * (both in its epilogue). The GEMV (small batches) reads x in f32, over groups of up to 16 rows, and applies the
     * norm in its prologue: one row through the FMA kernel (gemv_m1), 2-16 rows on tensor cores (gemv_tc, x split into
     * three bf16 parts so the products keep f32 precision) where in % 32 == 0. With {@code swiglu}, W is the
     * row-interleaved gate/up matrix and y receives the activations silu(gate) * up, [rows][out / 2]: bf16 on tensor
     * cores (the next product's input as is), f32 from the GEMV.
     */
    static void linear(CudaRuntime gpu, CUdeviceptr y, CUdeviceptr x, GemmBuffers gemm, boolean xInBf16, int rows,
                       CUdeviceptr w, CUdeviceptr bias, int out, int in, boolean swiglu, RmsNorm norm,
                       boolean accumulate) {
        linear(gpu, gpu.blas(), y, x, gemm, xInBf16, rows, w, bias, out, in, swiglu, norm, accumulate);
    }

    /**
     * {@link #linear} with the products of many rows on {@code blas}, or on gemm_bf16 where it is null (tests run
     * both).
     */
    static void linear(CudaRuntime gpu, Cublas blas, CUdeviceptr y, CUdeviceptr x, GemmBuffers gemm, boolean xInBf16,
                       int rows, CUdeviceptr w, CUdeviceptr bias, int out, int in, boolean swiglu, RmsNorm norm,
                       boolean accumulate) {
        if (swiglu && accumulate) throw new IllegalArgumentException("the SwiGLU epilogue does not accumulate");
        if (norm != null && xInBf16) throw new IllegalArgumentException("a normalised input is read in f32");
        if (tensorCores(rows, in)) {
            CUdeviceptr xBf16 = gemm.inputBf16();
            if (norm != null) {
                NormKernels.addRmsNorm(gpu, x, null, null, xBf16, norm.weight(), rows, in, norm.eps());
            } else if (!xInBf16) {
                ActivationKernels.f32ToBf16(gpu, xBf16, x, (long) rows * in);
            }
            if (blas == null) {
                MatmulKernels.gemmBf16(gpu, swiglu ? null : y, swiglu ? y : null, xBf16, w, bias, accumulate, rows,
                        out, in);
            } else if (swiglu) {
                if (gemm.gateUp() == null) throw new IllegalArgumentException("cuBLAS's SwiGLU product needs gateUp");
                blas.gemm(gemm.gateUp(), xBf16, w, false, rows, out, in);
                ActivationKernels.swigluRows(gpu, y, gemm.gateUp(), bias, rows, out);
            } else {
                blas.gemm(y, xBf16, w, accumulate, rows, out, in);
                if (bias != null) ActivationKernels.addBiasRows(gpu, y, bias, rows, out);
            }
            return;
        }
        if (xInBf16) throw new IllegalStateException("the GEMV reads f32 inputs");
        int width = swiglu ? out / 2 : out;
        CUdeviceptr normWeight = norm == null ? null : norm.weight();
        float eps = norm == null ? 0f : norm.eps();
        for (int r = 0; r < rows; ) {
            CUdeviceptr yr = y.withByteOffset((long) r * width * 4), xr = x.withByteOffset((long) r * in * 4);
            if (rows - r >= 2 && in % 32 == 0) {   // 2-16 rows on tensor cores
                int m = Math.min(16, rows - r);
                MatmulKernels.gemvTc(gpu, yr, xr, w, bias, normWeight, eps, accumulate, swiglu, m, out, in);
                r += m;
                continue;
            }
            int m = rows - r >= 16 ? 16 : rows - r >= 8 ? 8 : rows - r >= 4 ? 4 : rows - r >= 2 ? 2 : 1;
            if (swiglu) {
                MatmulKernels.gemvSwiglu(gpu, m, yr, xr, w, bias, normWeight, eps, out, in);
            } else {
                MatmulKernels.gemv(gpu, m, yr, xr, w, bias, normWeight, eps, accumulate, out, in);
            }
            r += m;
        }
    }

    /** Warps of a block of attention_gqa (attention.cu), each taking one chunk of the block's split. */
    static final int GQA_WARPS = AttentionKernels.GQA_WARPS;

    private static boolean groupKernel(CudaRuntime gpu, int heads, int kvHeads, int hd) {
        return heads > kvHeads && AttentionKernels.hasAttentionGqa(gpu, hd, heads / kvHeads);
    }

    /** Cache slots one split of the decode attention covers, for warps of {@code chunk} slots. */
    static int splitSlots(CudaRuntime gpu, int heads, int kvHeads, int hd, int chunk) {
        return groupKernel(gpu, heads, kvHeads, hd) ? GQA_WARPS * chunk : chunk;
    }

    /** Whether this build has the tensor-core prefill attention for a head size. */
    static boolean hasPrefillAttention(CudaRuntime gpu, int headDim) {
        return PrefillAttentionKernels.hasAttentionPrefill(gpu, headDim);
    }

    /**
     * The attention of one layer for every row of a step. Rows in prefill tiles ({@code tiles}: [tileCount][3] =
     * segment, first row, row count) go through the tensor-core kernel; the {@code decodeRows} rows listed in
     * {@code rowsOf} go through the split (flash-decoding) kernels into {@code partials}
     * ([decodeRows * heads][splits][hd + 2] f32) and the merge. Either kernel writes out[row][heads * hd] f32, or
     * the same in bf16 into {@code outBf16} where it is not null (the output product's operand on tensor cores). With
     * {@code claims} (caches in device memory, {@link #densePipelined}; [decodeRows * kvHeads][2] ints, zero before the
     * first launch and after each) the decode rows take attention_pipelined, whose {@code splits} blocks a (row, kv
     * head) share its chunks ({@link #densePipelinedSplits}); else attention_gqa / attention_rows, splits of
     * {@code chunk} slots a warp.
     */
    static void attention(CudaRuntime gpu, CUdeviceptr out, CUdeviceptr outBf16, CUdeviceptr q, int qStride,
                          CUdeviceptr kTable, CUdeviceptr vTable, CUdeviceptr seg, CUdeviceptr rowLen, int tileCount,
                          CUdeviceptr tiles, int decodeRows, CUdeviceptr rowsOf, CUdeviceptr partials, int splits,
                          int chunk, CUdeviceptr claims, int heads, int kvHeads, int hd) {
        float scale = (float) (1.0 / Math.sqrt(hd));
        if (tileCount > 0) {
            PrefillAttentionKernels.attentionPrefill(gpu, hd, tileCount, out, outBf16, q, kTable, vTable, tiles, rowLen,
                    heads, kvHeads, scale, qStride);
        }
        if (decodeRows == 0) return;
        if (claims != null && splits == 1) {   // a block a (row, kv head) writes its heads' outputs: no merge
            AttentionKernels.attentionPipelined(gpu, hd, decodeRows, partials, q, kTable, vTable, seg, rowLen, rowsOf,
                    heads, kvHeads, splits, scale, qStride, claims, outBf16 == null ? out : null, outBf16);
            return;
        } else if (claims != null) {
            AttentionKernels.attentionPipelined(gpu, hd, decodeRows, partials, q, kTable, vTable, seg, rowLen, rowsOf,
                    heads, kvHeads, splits, scale, qStride, claims, null, null);
        } else if (groupKernel(gpu, heads, kvHeads, hd)) {   // each key/value row read once for its group's heads
            AttentionKernels.attentionGqa(gpu, hd, decodeRows, partials, q, kTable, vTable, seg, rowLen, rowsOf, heads,
                    kvHeads, splits, scale, qStride, chunk);
        } else {
            AttentionKernels.attentionRows(gpu, hd, decodeRows, partials, q, kTable, vTable, seg, rowLen, rowsOf, heads,
                    kvHeads, splits, scale, qStride, chunk);
        }
        AttentionKernels.attentionMerge(gpu, decodeRows, out, outBf16, partials, rowsOf, heads, hd, splits);
    }

    /**
     * Whether decode rows over caches in device memory take attention_pipelined: built for groups of 2 and 4 (the
     * tensor-core tile holds three parts of each head's query) at head sizes 32, 64 and 128.
     */
    static boolean densePipelined(CudaRuntime gpu, int heads, int kvHeads, int hd) {
        return heads > kvHeads && AttentionKernels.hasAttentionPipelined(gpu, hd, heads / kvHeads);
    }

    /** Splits for attention_pipelined: {@link #pipelinedSplits}' one wave over the (row, kv head) pairs. */
    static int densePipelinedSplits(CudaRuntime gpu, int heads, int kvHeads, int hd, int decodeRows, int maxSlots) {
        int resident = AttentionKernels.attentionPipelinedBlocksPerMultiprocessor(gpu, hd, heads / kvHeads);
        return wave(gpu, resident, decodeRows * kvHeads, maxSlots);
    }

    /**
     * Whether this build has the grouped sparse attention (sparse_attention_dD_gG, and its twin for host stores) for a
     * head size and a group of {@code group} query heads a selection (1: per-head selections).
     */
    static boolean hasSparseGroupAttention(CudaRuntime gpu, int hd, int group) {
        return SparseAttentionKernels.hasSparseAttentionGrouped(gpu, hd, group, false);
    }

    /**
     * Whether the rows on device memory whose kv head's {@code group} query heads share a selection take
     * sparse_attention_pipelined: built for groups of 2 and 4 (the tensor-core tile holds three parts of each head's
     * query) at head sizes 64 and 128, and 4 at 32. Rows selecting per head keep sparse_attention_dD_g1: a one-warp
     * block of the pipelined kernel (4 warps an SM) took 131-203 us at batch 8 and 32K where they take 127 (H100).
     */
    static boolean pipelined(CudaRuntime gpu, int hd, int group) {
        return group > 1 && SparseAttentionKernels.hasSparseAttentionPipelined(gpu, hd, group);
    }

    /**
     * Splits for sparse_attention_pipelined over {@code units} (row, selection) pairs of at most {@code maxSlots}
     * slots: as many blocks as the device holds at once (its blocks share each row's chunks, so every block is resident
     * from the start whatever a layer's budget), at most a split a chunk of PIPE_ROWS slots. H100, batch 8 at 32K, 2048
     * selected of 32K a kv head: 512 blocks (one wave) 32.0 us in a graph; half a wave 39.6, two waves 34.9
     * (dev/cuda/sparse_attention_bench.cu).
     */
    static int pipelinedSplits(CudaRuntime gpu, int hd, int group, int units, int maxSlots) {
        int resident = SparseAttentionKernels.sparseAttentionPipelinedBlocksPerMultiprocessor(gpu, hd, group);
        return wave(gpu, resident, units, maxSlots);
    }

    /**
     * Splits a pipelined launch over {@code units} takes: one wave of the blocks the device holds at once
     * ({@code blocksPerMultiprocessor} a multiprocessor), at most a split a chunk of PIPE_ROWS (AttentionKernels) of
     * {@code maxSlots}.
     */
    private static int wave(CudaRuntime gpu, int blocksPerMultiprocessor, int units, int maxSlots) {
        int resident = gpu.multiprocessors() * blocksPerMultiprocessor;
        return Math.max(1, Math.min(resident / Math.max(1, units), maxSlots / AttentionKernels.PIPE_ROWS));
    }

    /**
     * Attention of {@code rows} sparse rows over their sinks, selections and windows into {@code partials}
     * for attention_merge. {@code groupKinds} 0: one warp a split of 32 slots (sparse_attention_dD); else blocks of
     * {@link #GQA_WARPS} warps, a split of GQA_WARPS * 32 slots: bit 1, the rows selecting per query head (a block per
     * head); bit 2, the rows whose group shares a selection (a block per kv head, each selected row read once); bit 4,
     * rows whose store is on the device; bit 8, rows whose store is in host memory (the _host kernels, which stage key
     * rows by whole rows). Rows of kinds 2 and 4 take sparse_attention_pipelined where the build has it (its splits
     * share each row's chunks through {@code claims}, [rows * kvHeads][2] ints that are zero before its first launch
     * and after each; the other kernels take 32 * GQA_WARPS slots a split). Each launch's kernel skips the rows of the
     * other kinds.
     * {@code ringKTable} / {@code ringVTable}: the segments' device rings of sinks and window (host placement; 0 for a
     * segment without one).
     * {@code out} (f32) or {@code outBf16}: where the rows are all shared selections on the device
     * ({@link #writesSparseOutputs}), the pipelined kernel writes their outputs there instead of partials (no merge
     * follows); else both null.
     */
    static void sparseAttention(CudaRuntime gpu, CUdeviceptr partials, CUdeviceptr q, CUdeviceptr kTable,
                                CUdeviceptr vTable, CUdeviceptr ringKTable, CUdeviceptr ringVTable, CUdeviceptr seg,
                                CUdeviceptr rowLen, CUdeviceptr desc, CUdeviceptr selected, CUdeviceptr claims,
                                int rows, int heads, int kvHeads, int hd, int splits, int qStride, int maxK,
                                int groupKinds, CUdeviceptr out, CUdeviceptr outBf16) {
        boolean direct = out != null || outBf16 != null;
        if (direct && !writesSparseOutputs(gpu, hd, heads / kvHeads, splits, groupKinds)) {
            throw new IllegalArgumentException("only the pipelined kernel of one split over shared selections on the "
                    + "device writes outputs, not kinds " + groupKinds + " in " + splits + " splits");
        }
        float scale = (float) (1.0 / Math.sqrt(hd));
        if (groupKinds == 0) {
            SparseAttentionKernels.sparseAttention(gpu, hd, rows, partials, q, kTable, vTable, ringKTable, ringVTable,
                    seg, rowLen, desc, selected, heads, kvHeads, splits, scale, qStride, 32, maxK);
            return;
        }
        for (boolean hostStore : new boolean[]{false, true}) {
            if ((groupKinds & (hostStore ? 8 : 4)) == 0) continue;
            for (int kind : new int[]{1, 2}) {   // per-head selections, then shared ones
                if ((groupKinds & kind) == 0) continue;
                boolean shared = kind == 2;
                int group = shared ? heads / kvHeads : 1;
                if (!hostStore && shared && pipelined(gpu, hd, group)) {
                    SparseAttentionKernels.sparseAttentionPipelined(gpu, hd, group, rows, partials, q, kTable, vTable,
                            ringKTable, ringVTable, seg, rowLen, desc, selected, heads, kvHeads, splits, scale, qStride,
                            maxK, true, claims, outBf16 == null ? out : null, outBf16);
                } else {
                    SparseAttentionKernels.sparseAttentionGrouped(gpu, hd, group, hostStore, rows, partials, q, kTable,
                            vTable, ringKTable, ringVTable, seg, rowLen, desc, selected, heads, kvHeads, splits, scale,
                            qStride, 32, maxK, shared);
                }
            }
        }
    }

    /**
     * Whether a run of selecting rows of these kinds ({@link #sparseAttention}'s bits) in this many splits has its
     * outputs written by the attention itself: one split, shared selections on the device only, the pipelined kernel
     * built for the group (then nothing of the run is left to merge).
     */
    static boolean writesSparseOutputs(CudaRuntime gpu, int hd, int group, int splits, int groupKinds) {
        return splits == 1 && groupKinds == (2 | 4) && pipelined(gpu, hd, group);
    }

    /** Label channels of a head that a block of predict_label_queries (lookahead.cu) computes. */
    static final int PREDICT_LABELS = LookaheadKernels.PREDICT_LABELS;

    /** Blocks of a cluster of sparse_select_cluster (select.cu), each scoring a tile of the candidates. */
    static final int SELECT_CLUSTER = SelectKernels.CLUSTER_BLOCKS;
    /**
     * Most candidates a block of sparse_select keeps in shared memory: 152 KB of order keys, within the 163 KB a block
     * may have on an A100.
     */
    static final int SELECT_MAX_CANDIDATES = 38 * 1024;

    /**
     * Most threads of a sparse_select block on the side stream (lookahead): 1024 would take a whole multiprocessor's
     * registers from the main stream's products for the selection's length; with 512 they share it (H100, gqa=mean
     * 8-bit lookahead, batch 8 at 32K: 627.8 / 620.1 tokens/s against 604.6 / 604.6 with 1024, 521.7 with 256).
     */
    static final int SELECT_SIDE_THREADS = 512;

    /** Threads a sparse_select block may run, most first; {@link #selectThreads} picks one. */
    private static final int[] SELECT_THREADS = {1024, 512, 256};

    /**
     * Fewest candidates for which clusters of two beat one block a selection: the second block halves a long
     * selection's scoring, but its cluster barriers cost more than that saves on short ones (H100, gqa=max over 8-bit
     * label rows a head, dev/cuda/label_select_bench.cu: 8 rows x 32,700 candidates 111.3 us in clusters of two
     * against 133.1 in single blocks; 8 rows x 4,028 35.0 against 24.7).
     */
    static final int SELECT_CLUSTER2_MIN_CANDIDATES = 16384;

    /** Label channels of q, over the heads of a selection, that sparse_select holds (its qc array). */
    static final int SELECT_MAX_QUERY_CHANNELS = SelectKernels.MAX_QUERY_CHANNELS;
    static final int SELECT_MAX_QUERY_HEADS = SelectKernels.MAX_QUERY_HEADS;

    /**
     * Whether dspp's fused selection takes this many candidates (bucketed) on this device: on Hopper a cluster's tiles
     * of them, elsewhere all of them in one block's shared memory (99 KB a block on sm_86 / sm_89 GPUs holds fewer
     * than {@link #SELECT_MAX_CANDIDATES}).
     */
    static boolean canSelect(CudaRuntime gpu, int maxCand) {
        if (gpu.computeMajor() >= 9) return SelectKernels.clusterTile(maxCand, SELECT_CLUSTER) <= SELECT_MAX_CANDIDATES;
        return maxCand <= SELECT_MAX_CANDIDATES && 4L * maxCand <= gpu.dynamicSharedLimit("sparse_select", 1);
    }

    /**
     * dspp's selection for {@code rows} sparse rows of a layer (select.cu): label scores and top-k in one kernel, the
     * scores' order keys in shared memory. {@code shared}: every row's group shares one selection, so a launch has rows
     * x kv heads selections, not rows x heads. On Hopper clusters where the selections would leave multiprocessors
     * idle: of {@link #SELECT_CLUSTER} blocks where a per-head launch has fewer selections than multiprocessors, or a
     * shared launch 16 or fewer, or the candidates are more than a block holds; of two blocks where a shared
     * launch on the main stream fits its clusters in one wave and has {@link #SELECT_CLUSTER2_MIN_CANDIDATES} or more
     * candidates (a second wave of clusters, or short selections, are faster in single blocks: 16 rows x 16,316
     * candidates, gqa=max, 102.0 us against 126.3); else one block a selection. Measured on
     * the H100 at 32K context (a layer; dev/cuda/README.md): per head, batch 1, 47 us in clusters of 8 against 91 us in
     * single blocks, batch 8, 256 us against 205 us; shared (gqa=mean), 8-bit labels, batch 4: 95.1 us in clusters of
     * 8, 82.9 us in clusters of 2, 133.3 us in single blocks; batch 8: 113.4 us in clusters of 2, 134.4 us in single
     * blocks. On the side stream (lookahead) clusters wait for whole multiprocessor pairs beside the main stream's
     * kernels (batch 8 at 32K, 8-bit: 559.5 tokens/s with clusters of two there, 577.6-586.0 with single blocks),
     * and single blocks run {@link #SELECT_SIDE_THREADS} threads.
     */
    static void select(CudaRuntime gpu, CUdeviceptr selected, CUdeviceptr q, CUdeviceptr labels, CUdeviceptr channels,
                       CUdeviceptr scales, CUdeviceptr seg, CUdeviceptr desc, int rows, int heads, int kvHeads,
                       boolean shared, int hd, int qStride, int maxCand, int maxK) {
        int selections = rows * (shared ? kvHeads : heads);
        int cluster = selectCluster(gpu.computeMajor() >= 9, gpu.multiprocessors(), selections, shared, maxCand,
                gpu.onSideStream());
        launchSelect(gpu, cluster, selections, selected, q, labels, channels, scales, seg, desc, rows, heads, kvHeads,
                hd, qStride, maxCand, maxK);
    }

    /**
     * {@link #select}'s choice: blocks a selection (1, 2 or {@link #SELECT_CLUSTER}) for {@code selections}
     * selections of {@code maxCand} candidates on a device of {@code sms} multiprocessors ({@code hopper}: clusters
     * exist), shared or per head, on the side stream or the main one.
     */
    static int selectCluster(boolean hopper, int sms, int selections, boolean shared, int maxCand, boolean side) {
        if (!hopper) return 1;
        if (maxCand > SELECT_MAX_CANDIDATES || (shared ? selections <= 16 : selections < sms)) return SELECT_CLUSTER;
        if (shared && 2 * selections <= sms && maxCand >= SELECT_CLUSTER2_MIN_CANDIDATES && !side) return 2;
        return 1;
    }

    /**
     * {@link #select} by one block a selection ({@code cluster} 1, threads by {@link #selectThreads}), or clusters of
     * 2 or {@link #SELECT_CLUSTER}; {@code selections}: the blocks that select (rows x kv heads where shared).
     */
    static void launchSelect(CudaRuntime gpu, int cluster, int selections, CUdeviceptr selected, CUdeviceptr q,
                             CUdeviceptr labels, CUdeviceptr channels, CUdeviceptr scales, CUdeviceptr seg,
                             CUdeviceptr desc, int rows, int heads, int kvHeads, int hd, int qStride, int maxCand,
                             int maxK) {
        if (cluster > 1) {
            SelectKernels.sparseSelectCluster(gpu, cluster, rows, selected, q, labels, channels, scales, seg, desc,
                    heads, kvHeads, hd, qStride, maxK, SelectKernels.clusterTile(maxCand, cluster));
        } else {
            int threads = selectThreads(gpu.multiprocessors(), selections, gpu.onSideStream(),
                    t -> SelectKernels.sparseSelectBlocksPerMultiprocessor(gpu, t, maxCand));
            SelectKernels.sparseSelect(gpu, rows, threads, maxCand, selected, q, labels, channels, scales, seg, desc,
                    heads, kvHeads, hd, qStride, maxK, null);
        }
    }

    /**
     * Threads a block of a single-block selection: the most (up to {@link #SELECT_SIDE_THREADS} on the side stream)
     * whose blocks take the fewest waves over {@code sms} multiprocessors, {@code blocksAt} giving the blocks of that
     * many threads a multiprocessor holds at once (registers: 64 a thread leave one block of 1,024; shared memory:
     * the candidates' keys). A selection's top-k passes are serial, so a second wave costs nearly a whole selection
     * again, while a quarter of the threads costs less (H100, 4-bit labels, a selection a kv head, a layer: 64 rows x
     * 4,028 candidates 109.4 us at 1,024 threads, 84.6 at 512, 75.9 at 256; 32 x 8,124 90.2, 77.9, 135.2; 16 x 16,316
     * 79.4, 134.2, 259.7; dev/cuda/label_select_bench.cu).
     */
    static int selectThreads(int sms, int selections, boolean side, java.util.function.IntUnaryOperator blocksAt) {
        int best = 0;
        long bestWaves = Long.MAX_VALUE;
        for (int threads : SELECT_THREADS) {
            if (side && threads > SELECT_SIDE_THREADS) continue;
            long resident = (long) sms * Math.max(1, blocksAt.applyAsInt(threads));
            long waves = (selections + resident - 1) / resident;
            if (waves < bestWaves) {
                best = threads;
                bestWaves = waves;
            }
        }
        return best;
    }

    /**
     * sample_rows' parameters (sample.cu): [rows][4] doubles {temperature, top_p, top_k, u}, u the host's uniform draw
     * for (seed, step), so the device picks what {@link Sampler} picks; rows without params or greedy get neutral ones
     * (their ids come from argmax or are not wanted).
     */
    static double[] drawParams(SamplingParams[] params, int[] steps) {
        double[] draw = new double[4 * params.length];
        for (int i = 0; i < params.length; i++) {
            SamplingParams p = params[i];
            boolean sampled = p != null && !p.greedy();
            draw[4 * i] = sampled ? p.temperature() : 1;
            draw[4 * i + 1] = sampled ? p.topP() : 1;
            draw[4 * i + 2] = sampled ? p.topK() : 0;
            draw[4 * i + 3] = sampled ? Sampler.uniform(p.seed(), steps[i]) : 0;
        }
        return draw;
    }
}
