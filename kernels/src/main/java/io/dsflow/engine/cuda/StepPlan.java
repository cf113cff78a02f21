package io.dsflow.engine.cuda;

import jcuda.driver.CUdeviceptr;

import java.util.Arrays;
import java.util.List;

/**
 * One forward pass's plan, built once by {@link StepPlanner} and read by every layer: the step's metadata in device
 * memory (uploaded in one copy), which rows attend how, and every work buffer at its size, so the launches allocate
 * nothing and a decode step can be captured as a graph ({@link #graphKey}). Shapes: rows (the step's new tokens),
 * segments (its sequences), L layers, H query heads, KVH kv heads.
 *
 * @param rows         rows of the step
 * @param segments     sequences of the step
 * @param graph        planned for a captured graph (the attention covers the caches' capacity)
 * @param inputs       the rows' tokens and positions and where they go
 * @param caches       the segments' cache tables
 * @param dense        the rows attending densely (prefill tiles, decode rows)
 * @param sparse       the sparse rows' plan, or null when no cache of the step is sparse
 * @param hostPrefills prefills of host-placed caches, whose layers attend over a device stage
 * @param calibrating  segments whose cache collects calibration statistics (empty but for calibration's prefills)
 * @param logits       [segments][vocab] f32: the step's output
 */
record StepPlan(int rows, int segments, boolean graph, Inputs inputs, CacheTables caches, DenseAttention dense,
                SparseStep sparse,
                List<HostPrefill> hostPrefills, List<Calibrating> calibrating, CUdeviceptr logits) {

    /**
     * The rows' inputs, ints in device memory.
     *
     * @param tokens         [rows] token ids
     * @param positions      [rows] absolute positions
     * @param segmentOf      [rows] each row's segment
     * @param slot           [rows] the cache slot each row's key and value go to
     * @param attendedLength [rows] the slots each row attends (its causal length)
     * @param lastRows       [segments] each segment's last row (whose logits the step returns)
     */
    record Inputs(CUdeviceptr tokens, CUdeviceptr positions, CUdeviceptr segmentOf, CUdeviceptr slot,
                  CUdeviceptr attendedLength, CUdeviceptr lastRows) {
    }

    /**
     * The segments' caches as the kernels find them: [L][segments] device addresses (u64) a table, 0 for none.
     *
     * @param keys       key stores (a host-placed prefill's: its device stage)
     * @param values     value stores
     * @param labels     label caches (sparse layers; sparse steps only, else null)
     * @param channels   label channels [H * r] ints
     * @param scales     8- and 4-bit labels' scales
     * @param ringKeys   host placement's device rings of sinks and window
     * @param ringValues likewise for values
     * @param segmentInfo [segments][SegmentDescriptor.FIELDS] ints, what the append kernels read of a sparse cache
     * @param selectedKeys where the attention reads a selecting row's selected keys: its device row cache where the
     *                     step serves it from one (StepPlanner.SelectionRuns#served), else its key store (the keys
     *                     table itself where no row of the step is served)
     * @param selectedValues likewise for values
     * @param rowIndex     the served rows' row-cache indices (RowCacheKernels), 0 for others; null where none is served
     */
    record CacheTables(CUdeviceptr keys, CUdeviceptr values, CUdeviceptr labels, CUdeviceptr channels,
                       CUdeviceptr scales, CUdeviceptr ringKeys, CUdeviceptr ringValues, CUdeviceptr segmentInfo,
                       CUdeviceptr selectedKeys, CUdeviceptr selectedValues, CUdeviceptr rowIndex) {
        /** Bytes from a table's start to layer {@code layer}'s row of {@code segments} addresses. */
        static long layerOffset(int layer, int segments) {
            return 8L * layer * segments;
        }
    }

    /**
     * The rows attending densely: prefill tiles on tensor cores, decode rows split and merged.
     *
     * @param tileCount  prefill tiles
     * @param tiles      [tileCount][3] ints: segment, first row, rows of each tile
     * @param decodeRows rows attending through the split kernels (decode rows, short prefills)
     * @param rowsOf     [decodeRows] their batch rows
     * @param splits     splits of each decode row's attention
     * @param chunk      slots a warp takes in the split kernels
     * @param partials   [decodeRows * H][splits][headDim + 2] f32
     * @param claims     the pipelined kernel's chunk counters where the decode rows take it (caches in device
     *                   memory), else null
     */
    record DenseAttention(int tileCount, CUdeviceptr tiles, int decodeRows, CUdeviceptr rowsOf, int splits, int chunk,
                          CUdeviceptr partials, CUdeviceptr claims) {
        boolean pipelined() {
            return claims != null;
        }
    }

    /**
     * The kinds of a run of selecting rows, which choose the kernels of their attention (CudaOps.sparseAttention).
     *
     * @param perHead rows selecting per query head
     * @param shared  rows whose kv head's group shares one selection
     * @param device  rows reading their selected rows from device memory
     * @param host    rows reading them from host memory
     */
    record RowKinds(boolean perHead, boolean shared, boolean device, boolean host) {
        RowKinds or(RowKinds o) {
            return new RowKinds(perHead || o.perHead, shared || o.shared, device || o.device, host || o.host);
        }

        /** CudaOps.sparseAttention's groupKinds bits: 1 per head, 2 shared, 4 device, 8 host. */
        int kernelBits() {
            return (perHead ? 1 : 0) | (shared ? 2 : 0) | (device ? 4 : 0) | (host ? 8 : 0);
        }
    }

    /**
     * The decode rows of sparse caches, per layer: which attend densely and which select, and how. A layer's
     * selecting rows come in three runs: look-ahead rows whose selected rows are staged from host memory, other
     * look-ahead rows, rows selecting on the main stream (SparseStepPolicy decides who selects and who selects ahead).
     *
     * @param denseCount  [L] decode rows attending densely in each layer
     * @param denseRows   [L][stride] their batch rows
     * @param selectCount [L] selecting rows in each layer
     * @param descriptors [L][stride][SparseRowDescriptor.FIELDS] ints, the selecting rows in run order
     * @param selectRows  [L][stride] their batch rows (the merge's rows)
     * @param stride      rows a layer's tables hold (the step's decode rows)
     * @param maxR        the most label channels of a selecting row
     * @param maxCand     candidates, bucketed to 1024s (a graph serves many steps)
     * @param maxK        budgets, bucketed to powers of two
     * @param maxSlots    the most slots a selecting row attends (sinks + window + maxK)
     * @param splits      splits of each selecting row's attention
     * @param fusedSelect every selecting row is dspp and fits sparse_select: one kernel selects (else scores, top-k)
     * @param fusedAppend every sparse cache is dspp: kv_label_append_rope writes keys, values, labels and rings
     * @param sharedOnly  every row selecting on the main stream shares its group's selection
     * @param mainKinds   the main-stream rows' kinds, or null where one warp a split attends (no block kernels)
     * @param scores      [maxSparse * H][maxCand] f32 (unfused selection only, else null)
     * @param selected    [maxSparse * H][maxK] ints
     * @param partials    [maxSparse * H][splits][headDim + 2] f32
     * @param ahead       the look-ahead rows, or null when the step has none
     * @param servedAhead [L] look-ahead rows (not staged) served from a device row cache
     * @param servedMain  [L] main-stream rows served from a device row cache
     * @param rowCacheStats [2] u64 the row caches add to (Workspace ROW_CACHE_STATS), or null where none is served
     */
    record SparseStep(int[] denseCount, CUdeviceptr denseRows, int[] selectCount, CUdeviceptr descriptors,
                      CUdeviceptr selectRows, int stride, int maxR, int maxCand, int maxK, int maxSlots, int splits,
                      boolean fusedSelect, boolean fusedAppend, boolean sharedOnly, RowKinds mainKinds,
                      CUdeviceptr scores, CUdeviceptr selected, CUdeviceptr partials, Lookahead ahead,
                      int[] servedAhead, int[] servedMain, CUdeviceptr rowCacheStats) {

        /** The descriptors of a layer's selecting rows from row {@code from} on. */
        CUdeviceptr descriptors(int layer, int from) {
            return descriptors.withByteOffset(4L * SparseRowDescriptor.FIELDS * ((long) layer * stride + from));
        }

        CUdeviceptr denseRows(int layer) {
            return denseRows.withByteOffset(4L * layer * stride);
        }

        CUdeviceptr selectRows(int layer) {
            return selectRows.withByteOffset(4L * layer * stride);
        }

        /** Look-ahead rows of a layer (selected on the side stream during the previous layer). */
        int aheadCount(int layer) {
            return ahead == null ? 0 : ahead.aheadCount()[layer];
        }
    }

    /**
     * The look-ahead rows of a step: in each layer the first {@code aheadCount[l]} selecting rows (of which the first
     * {@code stagedCount[l]} are staged: shared selections of host-placed stores) select on the side stream during
     * layer l - 1, from a query predicted from that layer's input; the main stream waits for them at layer l's
     * attention. Buffers by layer parity (the side stream fills layer l + 1's while the main stream reads layer l's).
     *
     * @param selected    by layer parity: [maxAhead * H][maxK] slots (a staged row's: indices into its stage)
     * @param queries     [rows][H * D] predicted queries (label channels only)
     * @param scores      [maxAhead * H][maxCand] f32 (unfused selection only, else null)
     * @param stageKeys   by layer parity: [segments] u64 pointers to [maxK][kvDim] bf16 (no staged rows: null)
     * @param stageValues likewise for values
     * @param stagedKinds the staged rows' kinds (null: one warp a split)
     * @param aheadKinds  the other look-ahead rows' kinds (null: one warp a split)
     * @param sharedOnly  every look-ahead row shares its group's selection
     */
    record Lookahead(int[] aheadCount, int[] stagedCount, RowKinds stagedKinds, RowKinds aheadKinds,
                     boolean sharedOnly, ByParity<CUdeviceptr> selected, CUdeviceptr queries, CUdeviceptr scores,
                     ByParity<CUdeviceptr> stageKeys, ByParity<CUdeviceptr> stageValues) {
    }

    /**
     * A prefill of a host-placed cache: for each of its host layers, the layer's keys and values so far are copied to a
     * device stage before the layer (the step's key/value tables point there), the prefill appends and attends on the
     * device, and its new rows are copied back to host memory after the layer's attention. The prefill's attention
     * reads every earlier row once per tile and head, which from host memory would be many passes over the link.
     * keys, values: [start + rows][kvDim] bf16 on the device, reused by every layer.
     */
    record HostPrefill(CudaKvCache cache, int start, int rows, CUdeviceptr keys, CUdeviceptr values, long rowBytes) {
        void stageHistory(CudaRuntime gpu, int layer) {
            gpu.copyAsync(keys, cache.keys(layer), start * rowBytes);
            gpu.copyAsync(values, cache.values(layer), start * rowBytes);
        }

        void writeBack(CudaRuntime gpu, int layer) {
            gpu.copyAsync(cache.keys(layer).withByteOffset(start * rowBytes), keys.withByteOffset(start * rowBytes),
                    rows * rowBytes);
            gpu.copyAsync(cache.values(layer).withByteOffset(start * rowBytes),
                    values.withByteOffset(start * rowBytes), rows * rowBytes);
        }
    }

    /** A segment whose cache collects calibration statistics: its rows [firstRow, firstRow + rows). */
    record Calibrating(CudaKvCache cache, int firstRow, int rows) {
    }

    /**
     * What a captured graph depends on besides the metadata's contents: the batch size and the attention's splits,
     * and with sparse caches which rows select in each layer and the bucketed sizes of their buffers (candidates,
     * budgets, splits), which change every few hundred tokens.
     */
    record GraphKey(int rows, int chunk, int splits, boolean densePipelined, int[] selectCount, int maxCand,
                    int maxK, int maxSlots, int sparseSplits, int maxR, boolean fusedSelect, boolean fusedAppend,
                    boolean sharedOnly, int mainKinds, int[] aheadCount, int[] stagedCount, int stagedKinds,
                    int aheadKinds, boolean aheadSharedOnly, int[] servedAhead, int[] servedMain) {
        @Override
        public boolean equals(Object o) {
            return o instanceof GraphKey k && rows == k.rows && chunk == k.chunk && splits == k.splits
                    && densePipelined == k.densePipelined && Arrays.equals(selectCount, k.selectCount)
                    && maxCand == k.maxCand && maxK == k.maxK && maxSlots == k.maxSlots
                    && sparseSplits == k.sparseSplits && maxR == k.maxR && fusedSelect == k.fusedSelect
                    && fusedAppend == k.fusedAppend && sharedOnly == k.sharedOnly && mainKinds == k.mainKinds
                    && Arrays.equals(aheadCount, k.aheadCount) && Arrays.equals(stagedCount, k.stagedCount)
                    && stagedKinds == k.stagedKinds && aheadKinds == k.aheadKinds
                    && aheadSharedOnly == k.aheadSharedOnly && Arrays.equals(servedAhead, k.servedAhead)
                    && Arrays.equals(servedMain, k.servedMain);
        }

        @Override
        public int hashCode() {
            return 31 * (31 * (31 * rows + splits) + Arrays.hashCode(selectCount)) + maxCand + 7 * maxK;
        }

        @Override
        public String toString() {
            return "GraphKey[rows=" + rows + ", splits=" + splits + ", selectCount=" + Arrays.toString(selectCount)
                    + ", maxCand=" + maxCand + ", maxK=" + maxK + "]";
        }
    }

    /** The key of this step's graph. */
    GraphKey graphKey() {
        SparseStep s = sparse;
        Lookahead a = s == null ? null : s.ahead();
        return new GraphKey(rows, dense.chunk(), dense.splits(), dense.pipelined(),
                s == null ? null : s.selectCount(), s == null ? 0 : s.maxCand(), s == null ? 0 : s.maxK(),
                s == null ? 0 : s.maxSlots(), s == null ? 0 : s.splits(), s == null ? 0 : s.maxR(),
                s != null && s.fusedSelect(), s != null && s.fusedAppend(), s != null && s.sharedOnly(),
                s == null ? -1 : bits(s.mainKinds()), a == null ? null : a.aheadCount(),
                a == null ? null : a.stagedCount(), a == null ? -1 : bits(a.stagedKinds()),
                a == null ? -1 : bits(a.aheadKinds()), a != null && a.sharedOnly(), s == null ? null : s.servedAhead(),
                s == null ? null : s.servedMain());
    }

    private static int bits(RowKinds kinds) {
        return kinds == null ? 0 : kinds.kernelBits();
    }
}
