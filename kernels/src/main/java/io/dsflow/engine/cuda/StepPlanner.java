package io.dsflow.engine.cuda;

import io.dsflow.engine.Batch;
import io.dsflow.engine.cuda.StepPlan.RowKinds;
import io.dsflow.engine.cuda.Workspace.Buffer;
import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.kv.KvPolicy;
import io.dsflow.engine.kv.SparseStepPolicy;
import io.dsflow.engine.model.ModelConfig;
import jcuda.driver.CUdeviceptr;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Turns a {@link Batch} into a {@link StepPlan}: each row's segment, cache slot and attended length, each layer's
 * tables of the segments' cache pointers, how the dense rows attend (prefill tiles, split counts, the pipelined
 * kernel), which decode rows of sparse caches select in each layer and how (asking each cache's {@link
 * SparseStepPolicy}, as the CPU's SparseKvCache does), and every work buffer at its size. With {@code graph}, the
 * attention covers the caches' capacity (empty splits exit at once), so one captured graph serves every step until a
 * cache grows. Not thread-safe: the backend plans one step at a time.
 */
final class StepPlanner {
    private final CudaRuntime gpu;
    private final ModelConfig c;
    private final Workspace workspace;
    /** Policies kept, least recently used dropped: requests may each bring their own kv options, without end. */
    private static final int MAX_POLICIES = 64;
    /** Policies by configuration: a batch's sequences of one policy and context share their decisions. */
    private final Map<KvConfig, SparseStepPolicy> policies = new LinkedHashMap<>(16, 0.75f, true) {
        @Override
        protected boolean removeEldestEntry(Map.Entry<KvConfig, SparseStepPolicy> eldest) {
            return size() > MAX_POLICIES;
        }
    };
    /** The configuration last asked for, and its policy (an evicted one stays right: a policy is its config's). */
    private KvConfig lastKv;
    private SparseStepPolicy lastPolicy;
    private boolean denseFallback = true;
    /** Rows (a kv head's each) of row-cached sequences read from host memory since the last take: steps too large. */
    private long unservedRows;

    StepPlanner(CudaRuntime gpu, ModelConfig c, Workspace workspace) {
        this.gpu = gpu;
        this.c = c;
        this.workspace = workspace;
    }

    /** Rows of row-cached sequences' steps read from host memory since the last call (too large to serve). */
    long takeUnservedRows() {
        long n = unservedRows;
        unservedRows = 0;
        return n;
    }

    /** Tests: a layer whose candidates all fit its budget selects them all instead of attending densely. */
    void denseFallback(boolean enabled) {
        denseFallback = enabled;
        policies.clear();
        lastKv = null;
    }

    private SparseStepPolicy policy(KvConfig kv) {
        // a batch's caches mostly share one configuration: the last one's policy without hashing the record again
        if (kv != lastKv) {
            lastPolicy = policies.computeIfAbsent(kv, k -> new SparseStepPolicy(k, c.numLayers(), denseFallback));
            lastKv = kv;
        }
        return lastPolicy;
    }

    /** Where each row goes and attends, by segment (host arrays, before upload). */
    private record RowLayout(int[] segmentOf, int[] slot, int[] attendedLength, int[] lastRows, int[] rowsOf,
                             int decodeRows, int[] tiles, int span) {
    }

    /** The plan of one forward pass over {@code batch} (its caches reserved for the new rows). */
    StepPlan plan(Batch batch, boolean graph) {
        List<Batch.Segment> segments = batch.segments();
        int rows = batch.rows(), nseg = segments.size(), layers = c.numLayers();
        CudaKvCache[] caches = new CudaKvCache[nseg];
        for (int s = 0; s < nseg; s++) {
            caches[s] = CudaKvCache.of(segments.get(s).cache());
            caches[s].reserve(segments.get(s).tokens().length);
        }
        RowLayout layout = layout(batch, caches, graph);
        long[] keyTable = new long[layers * nseg], valueTable = new long[layers * nseg];
        for (int s = 0; s < nseg; s++) {
            for (int l = 0; l < layers; l++) {
                keyTable[l * nseg + s] = address(caches[s].keys(l));
                valueTable[l * nseg + s] = address(caches[s].values(l));
            }
        }
        List<StepPlan.HostPrefill> hostPrefills = hostPrefills(batch, caches, keyTable, valueTable);
        List<StepPlan.Calibrating> calibrating = new ArrayList<>();
        int[] starts = batch.segmentStarts();
        for (int s = 0; s < nseg; s++) {
            if (caches[s].calibration() != null) {
                calibrating.add(new StepPlan.Calibrating(caches[s], starts[s], segments.get(s).tokens().length));
            }
        }
        // split attention: chunks a warp, splits a row; the pipelined kernel where every cache is in device memory
        int heads = c.numHeads(), kvHeads = c.numKvHeads(), hd = c.headDim(), decodeRows = layout.decodeRows();
        int[] chunkAndSplits = denseSplits(decodeRows, layout.span());
        boolean anyOnHost = false, anySparse = false;
        for (CudaKvCache cache : caches) {
            anyOnHost |= cache.anyOnHost();
            anySparse |= cache.sparse() != null;
        }
        boolean pipelined = decodeRows > 0 && CudaOps.densePipelined(gpu, heads, kvHeads, hd) && !anyOnHost;
        int splits = pipelined ? CudaOps.densePipelinedSplits(gpu, heads, kvHeads, hd, decodeRows, layout.span())
                : chunkAndSplits[1];
        sizeBuffers(rows, nseg);
        CUdeviceptr partials = workspace.ensure(Buffer.PARTIALS, (long) Math.max(1, decodeRows) * heads * splits
                * (hd + 2));
        // the pipelined attention's chunk counters, a pair a (row, kv head): zero when made, each launch leaves them 0
        CUdeviceptr claims = workspace.ensureZeroed(Buffer.CLAIMS, 2L * Math.max(1, decodeRows) * kvHeads);
        CUdeviceptr logits = workspace.ensure(Buffer.LOGITS, (long) nseg * c.vocabSize());
        SparseTables sparse = anySparse ? new SparseTables(batch, caches, layout, keyTable, valueTable) : null;

        MetadataUpload up = new MetadataUpload();
        MetadataUpload.Slot keys = up.add(keyTable), values = up.add(valueTable);
        MetadataUpload.Slot labels = null, channels = null, scales = null, ringKeys = null, ringValues = null;
        MetadataUpload.Slot stageKeys = null, stageValues = null, selectedKeys = keys, selectedValues = values;
        MetadataUpload.Slot rowIndex = null;
        if (sparse != null && sparse.rowIndex != null) {
            selectedKeys = up.add(sparse.selectedKeys);
            selectedValues = up.add(sparse.selectedValues);
            rowIndex = up.add(sparse.rowIndex);
        }
        if (sparse != null) {
            labels = up.add(sparse.labels);
            channels = up.add(sparse.channels);
            scales = up.add(sparse.scales);
            ringKeys = up.add(sparse.ringKeys);
            ringValues = up.add(sparse.ringValues);
            stageKeys = up.add(sparse.stageKeys);
            stageValues = up.add(sparse.stageValues);
        }
        MetadataUpload.Slot tokens = up.add(batch.tokens()), positions = up.add(batch.positions());
        MetadataUpload.Slot segmentOf = up.add(layout.segmentOf()), slot = up.add(layout.slot());
        MetadataUpload.Slot attended = up.add(layout.attendedLength()), tiles = up.add(layout.tiles());
        MetadataUpload.Slot rowsOf = up.add(layout.rowsOf()), lastRows = up.add(layout.lastRows());
        MetadataUpload.Slot denseRows = null, descriptors = null, selectRows = null, segmentInfo = null;
        if (sparse != null) {
            denseRows = up.add(sparse.runs.denseRows());
            descriptors = up.add(sparse.runs.descriptors());
            selectRows = up.add(sparse.runs.selectRows());
            segmentInfo = up.add(sparse.segmentInfo);
        }
        up.upload(gpu, workspace);

        StepPlan.Inputs inputs = new StepPlan.Inputs(tokens.address(), positions.address(), segmentOf.address(),
                slot.address(), attended.address(), lastRows.address());
        StepPlan.CacheTables tables = new StepPlan.CacheTables(keys.address(), values.address(), addr(labels),
                addr(channels), addr(scales), addr(ringKeys), addr(ringValues), addr(segmentInfo),
                selectedKeys.address(), selectedValues.address(), addr(rowIndex));
        StepPlan.DenseAttention dense = new StepPlan.DenseAttention(layout.tiles().length / 3, tiles.address(),
                decodeRows, rowsOf.address(), splits, chunkAndSplits[0], partials, pipelined ? claims : null);
        StepPlan.SparseStep sparseStep = sparse == null ? null
                : sparse.step(decodeRows, addr(denseRows), addr(descriptors), addr(selectRows), addr(stageKeys),
                addr(stageValues));
        return new StepPlan(rows, nseg, graph, inputs, tables, dense, sparseStep, hostPrefills, calibrating, logits);
    }

    private static CUdeviceptr addr(MetadataUpload.Slot slot) {
        return slot == null ? null : slot.address();
    }

    /**
     * Rows by segment: segments of many rows (prefills) attend in tiles on tensor cores where the build has the
     * kernel, the other rows (decode rows, short prefills) through the split kernels over {@code span} slots.
     */
    private RowLayout layout(Batch batch, CudaKvCache[] caches, boolean graph) {
        int rows = batch.rows(), nseg = caches.length;
        int[] starts = batch.segmentStarts();
        int[] segmentOf = new int[rows], slot = new int[rows], attended = new int[rows], lastRows = new int[nseg];
        int[] rowsOf = new int[rows];
        boolean tensorCorePrefill = CudaOps.hasPrefillAttention(gpu, c.headDim());
        List<int[]> tiles = new ArrayList<>();
        int decodeRows = 0, span = 0;
        for (int s = 0; s < nseg; s++) {
            int n = batch.segments().get(s).tokens().length, start = caches[s].length(0);
            for (int i = 0; i < n; i++) {
                segmentOf[starts[s] + i] = s;
                slot[starts[s] + i] = start + i;
                attended[starts[s] + i] = start + i + 1;
            }
            if (tensorCorePrefill && n >= CudaOps.PREFILL_TILE_MIN_ROWS) {
                for (int i = 0; i < n; i += CudaOps.PREFILL_TILE_ROWS) {
                    int count = Math.min(CudaOps.PREFILL_TILE_ROWS, n - i);
                    tiles.add(new int[]{s, starts[s] + i, count, start + i + count});   // + the keys its last row sees
                }
            } else {
                for (int i = 0; i < n; i++) rowsOf[decodeRows++] = starts[s] + i;
                span = Math.max(span, graph ? caches[s].capacity() : start + n);
            }
            lastRows[s] = starts[s] + n - 1;
        }
        return new RowLayout(segmentOf, slot, attended, lastRows, rowsOf, decodeRows,
                prefillTiles(tiles), span);
    }

    /**
     * The tiles as the prefill kernel reads them ([T][3]: segment, first row, rows), the ones whose last row sees the
     * most keys first: a tile's time grows with its keys, so the longest start first and the grid ends on short ones.
     */
    private static int[] prefillTiles(List<int[]> tiles) {
        tiles.sort(Comparator.comparingInt((int[] t) -> t[3]).reversed());
        int[] flat = new int[tiles.size() * 3];
        for (int t = 0; t < tiles.size(); t++) System.arraycopy(tiles.get(t), 0, flat, 3 * t, 3);
        return flat;
    }

    /**
     * Slots a warp takes and splits a row for the split kernels: small batches take short chunks so enough warps run
     * (the merge then has more), up to 128 splits: past that the merge costs more than the warps gain (H100, batch 1:
     * 32-slot chunks are best at 4K, 64 at 16K, 128 at 32K). Returns {chunk, splits}.
     */
    private int[] denseSplits(int decodeRows, int span) {
        int heads = c.numHeads(), kvHeads = c.numKvHeads();
        boolean small = decodeRows * kvHeads < 32;
        int chunk = decodeRows * kvHeads >= 256 ? 128 : small ? 32 : 64;
        int slots = CudaOps.splitSlots(gpu, heads, kvHeads, c.headDim(), chunk);
        while (small && chunk < 128 && (span + slots - 1) / slots > 128) {
            chunk *= 2;
            slots *= 2;
        }
        while ((span + slots - 1) / slots > 2048) {
            chunk *= 2;
            slots *= 2;
        }
        return new int[]{chunk, Math.max(1, (span + slots - 1) / slots)};
    }

    /** Prefills of host-placed caches attend over a device stage of each host layer (StepPlan.HostPrefill). */
    private List<StepPlan.HostPrefill> hostPrefills(Batch batch, CudaKvCache[] caches, long[] keyTable,
                                                    long[] valueTable) {
        List<StepPlan.HostPrefill> prefills = new ArrayList<>();
        long rowBytes = (long) c.kvDim() * 2, stageRows = 0;
        int nseg = caches.length;
        for (int s = 0; s < nseg; s++) {
            int n = batch.segments().get(s).tokens().length;
            if (n > 1 && caches[s].anyOnHost()) stageRows += caches[s].length(0) + n;
        }
        if (stageRows == 0) return prefills;
        CUdeviceptr stageK = workspace.ensure(Buffer.PREFILL_STAGE_KEYS, stageRows * rowBytes / 4);
        CUdeviceptr stageV = workspace.ensure(Buffer.PREFILL_STAGE_VALUES, stageRows * rowBytes / 4);
        long at = 0;
        for (int s = 0; s < nseg; s++) {
            CudaKvCache cache = caches[s];
            int n = batch.segments().get(s).tokens().length, start = cache.length(0);
            if (n <= 1 || !cache.anyOnHost()) continue;
            StepPlan.HostPrefill hp = new StepPlan.HostPrefill(cache, start, n, stageK.withByteOffset(at),
                    stageV.withByteOffset(at), rowBytes);
            prefills.add(hp);
            for (int l = 0; l < c.numLayers(); l++) {
                if (!cache.onHost(l)) continue;
                keyTable[l * nseg + s] = address(hp.keys());
                valueTable[l * nseg + s] = address(hp.values());
            }
            at += (start + n) * rowBytes;
        }
        return prefills;
    }

    /** Sizes the buffers every step uses first: a later growth would invalidate graphs captured in between. */
    private void sizeBuffers(int rows, int nseg) {
        int hidden = c.hiddenSize();
        workspace.ensure(Buffer.RESIDUAL, (long) rows * hidden);
        workspace.ensure(Buffer.NORMED, (long) rows * hidden);
        workspace.ensure(Buffer.QKV, (long) rows * (c.qDim() + 2L * c.kvDim()));
        workspace.ensure(Buffer.ATTENTION, (long) rows * c.qDim());
        workspace.ensure(Buffer.POSITIONS, (long) rows * hidden);
        workspace.ensure(Buffer.MLP, (long) rows * c.intermediateSize());
        workspace.ensure(Buffer.MLP_BF16, (long) rows * c.intermediateSize() / 2 + 4);
        if (CudaOps.swigluOnCublas(gpu, rows, hidden)) {
            workspace.ensure(Buffer.GATE_UP, 2L * rows * c.intermediateSize());
        }
        workspace.ensure(Buffer.EMBEDDED, (long) rows * c.wordEmbedDim());
        workspace.ensure(Buffer.LAST_ROWS, (long) nseg * hidden);
        workspace.ensure(Buffer.PROJECTED, (long) nseg * c.wordEmbedDim());
        workspace.ensure(Buffer.ARGMAX, nseg);
        int widestInput = Math.max(Math.max(hidden, c.qDim()), Math.max(c.intermediateSize(), c.wordEmbedDim()));
        workspace.ensure(Buffer.GEMM_INPUT, (long) rows * widestInput / 2 + 4);
    }

    /**
     * A layer's decode rows of sparse caches as the step policy decides them, in the tables the kernels read.
     *
     * @param denseCount   [L] rows attending densely in each layer
     * @param denseRows    [L][stride] their batch rows
     * @param selectCount  [L] selecting rows in each layer
     * @param descriptors  [L][stride][SparseRowDescriptor.FIELDS], the selecting rows in run order
     * @param selectRows   [L][stride] their batch rows
     * @param stagedCount  [L] look-ahead rows staged from host memory (run 0)
     * @param aheadCount   [L] look-ahead rows (runs 0 and 1)
     * @param stagedKinds  kinds of the rows of run 0, over every layer
     * @param aheadKinds   of run 1
     * @param mainKinds    of run 2 (rows selecting on the main stream)
     * @param maxR         the most label channels of a selecting row
     * @param maxCand      the most candidates (not bucketed)
     * @param maxK         the largest budget (not bucketed)
     * @param maxSinksWindow the most sinks + window slots
     * @param allDspp      every selecting row is dspp
     * @param served       [L][segments] whether the segment's selecting row in the layer is served from its device
     *                     row cache (PlannedCache#servesRows)
     * @param servedAhead  [L] such rows among the look-ahead rows of run 1
     * @param servedMain   [L] such rows among the rows of run 2
     */
    record SelectionRuns(int[] denseCount, int[] denseRows, int[] selectCount, int[] descriptors, int[] selectRows,
                         int[] stagedCount, int[] aheadCount, RowKinds stagedKinds, RowKinds aheadKinds,
                         RowKinds mainKinds, int maxR, int maxCand, int maxK, int maxSinksWindow, boolean allDspp,
                         boolean[] served, int[] servedAhead, int[] servedMain) {
    }

    /** What the selection runs need of a segment's cache (CudaKvCache gives it; tests make their own). */
    interface PlannedCache {
        /** The sparse policy, or null for a dense cache. */
        KvConfig sparse();

        /** Tokens held before this step. */
        int length();

        boolean onHost(int layer);

        int labelChannels();

        int labelBits();

        int capacity();

        int labelGroup();

        /**
         * Whether layer {@code layer}'s shared selection of {@code rows} rows this step is served from a device cache
         * of selected rows (CudaRowCache, made to hold them), instead of read from host memory.
         */
        default boolean servesRows(int layer, int rows) {
            return false;
        }

        /** Whether this cache keeps a device row cache (whether or not it can serve a given step). */
        default boolean keepsRowCache() {
            return false;
        }
    }

    /**
     * The selection runs of a step: each decode row ({@code rowsOf[0 .. decodeRows)}, its segment {@code
     * segmentOf[row]} feeding {@code segmentRows[s]} rows) in each layer, dense or selecting as its cache's step
     * policy says, and the selecting rows of a layer in three runs: look-ahead rows staged from host memory (shared
     * selections of host-placed stores that no device row cache serves), other look-ahead rows, rows selecting on the
     * main stream.
     */
    SelectionRuns selectionRuns(List<? extends PlannedCache> caches, int[] segmentRows, int[] rowsOf, int decodeRows,
                                int[] segmentOf) {
        int layers = c.numLayers(), stride = Math.max(1, decodeRows), nseg = caches.size(), kvHeads = c.numKvHeads();
        int[] denseCount = new int[layers], selectCount = new int[layers], denseRows = new int[layers * stride];
        int[] descriptors = new int[layers * stride * SparseRowDescriptor.FIELDS];
        int[] selectRows = new int[layers * stride];
        int[] stagedCount = new int[layers], aheadCount = new int[layers];
        boolean[] served = new boolean[layers * nseg];
        int[] servedAhead = new int[layers], servedMain = new int[layers];
        // per run: any per-head, shared, device-read, host-read rows (RowKinds at the end)
        boolean[][] kinds = new boolean[3][4];
        int maxR = 0, maxCand = 1, maxK = 1, maxSinksWindow = 0;
        boolean allDspp = true;
        SparseStepPolicy.LayerStep[][] steps = new SparseStepPolicy.LayerStep[nseg][];
        for (int s = 0; s < nseg; s++) {
            PlannedCache cache = caches.get(s);
            if (cache.sparse() == null) continue;
            maxR = Math.max(maxR, cache.labelChannels());
            steps[s] = policy(cache.sparse()).step(segmentRows[s], cache.length() + (long) segmentRows[s]);
        }
        // a layer's selecting rows in run order, without a descriptor object a row: each row's run, then the runs' rows
        int[] runOf = new int[decodeRows], count = new int[3], next = new int[3];
        boolean[] readsHostOf = new boolean[decodeRows];
        for (int l = 0; l < layers; l++) {
            java.util.Arrays.fill(count, 0);
            for (int i = 0; i < decodeRows; i++) {
                int row = rowsOf[i], s = segmentOf[row];
                PlannedCache cache = caches.get(s);
                SparseStepPolicy.LayerStep step = steps[s] == null ? null : steps[s][l];
                if (step == null || !step.selects()) {
                    denseRows[l * stride + denseCount[l]++] = row;
                    runOf[i] = -1;
                    continue;
                }
                KvConfig kv = cache.sparse();
                boolean host = cache.onHost(l), shared = kv.gqaSelection() != KvConfig.GqaSelection.PER_HEAD;
                // a host store's shared selection is served from the device row cache where the sequence keeps one
                // (and its places hold the step), else staged on the side stream (look-ahead) or read over the link
                boolean serves = host && shared && cache.servesRows(l, step.kept());
                // a row cache's step too large for its kernel reads its rows over the link: all of them misses
                if (!serves && host && shared && cache.keepsRowCache()) unservedRows += (long) step.kept() * kvHeads;
                int run = !step.selectsAhead() ? 2 : host && shared && !serves ? 0 : 1;
                boolean readsHost = host && !serves && run != 0;   // a staged row's are read from the device
                if (serves) {
                    served[l * nseg + s] = true;
                    if (run == 1) servedAhead[l]++;
                    else servedMain[l]++;
                }
                runOf[i] = run;
                readsHostOf[i] = readsHost;
                count[run]++;
                kinds[run][shared ? 1 : 0] = true;
                kinds[run][readsHost ? 3 : 2] = true;
                maxCand = Math.max(maxCand, step.candidates());
                maxK = Math.max(maxK, step.budget());
                allDspp &= kv.policy() == KvPolicy.DSPP;
                maxSinksWindow = Math.max(maxSinksWindow, kv.sinks() + kv.window());
            }
            stagedCount[l] = count[0];
            aheadCount[l] = count[0] + count[1];
            selectCount[l] = count[0] + count[1] + count[2];
            next[0] = 0;
            next[1] = count[0];
            next[2] = count[0] + count[1];
            for (int i = 0; i < decodeRows; i++) {
                if (runOf[i] < 0) continue;
                int row = rowsOf[i], s = segmentOf[row], p = next[runOf[i]]++;
                PlannedCache cache = caches.get(s);
                KvConfig kv = cache.sparse();
                SparseStepPolicy.LayerStep step = steps[s][l];
                selectRows[l * stride + p] = row;
                SparseRowDescriptor.write(descriptors, (l * stride + p) * SparseRowDescriptor.FIELDS, row,
                        step.candidates(), step.budget(), kv.sinks(), kv.window(), kv.gqaSelection().ordinal(),
                        cache.labelChannels(), cache.labelBits(), cache.capacity(), readsHostOf[i], cache.labelGroup());
            }
        }
        return new SelectionRuns(denseCount, denseRows, selectCount, descriptors, selectRows, stagedCount, aheadCount,
                kinds(kinds[0]), kinds(kinds[1]), kinds(kinds[2]), maxR, maxCand, maxK, maxSinksWindow, allDspp,
                served, servedAhead, servedMain);
    }

    private static RowKinds kinds(boolean[] any) {
        return new RowKinds(any[0], any[1], any[2], any[3]);
    }

    /** A sparse step's host tables and sized buffers, before the upload gives their addresses. */
    private final class SparseTables {
        final long[] labels, channels, scales, ringKeys, ringValues, stageKeys, stageValues;
        /** [L][segments]: where the selected rows are read (a served row's row cache, else the store), row caches. */
        final long[] selectedKeys, selectedValues, rowIndex;
        final int[] segmentInfo;
        final SelectionRuns runs;
        final int maxCand, maxK, maxSlots, splits, maxSparse, maxAhead;
        final boolean fusedSelect, fusedAppend, groupAttention;
        final CUdeviceptr scores, selected, partials, aheadSelected, aheadQueries, aheadScores, rowCacheStats;

        SparseTables(Batch batch, CudaKvCache[] caches, RowLayout layout, long[] keyTable, long[] valueTable) {
            int layers = c.numLayers(), nseg = caches.length, heads = c.numHeads(), hd = c.headDim();
            int group = heads / c.numKvHeads();
            labels = new long[layers * nseg];
            channels = new long[layers * nseg];
            scales = new long[layers * nseg];
            ringKeys = new long[layers * nseg];
            ringValues = new long[layers * nseg];
            segmentInfo = new int[SegmentDescriptor.FIELDS * nseg];
            int[] segmentRows = new int[nseg];
            for (int s = 0; s < nseg; s++) {
                CudaKvCache cache = caches[s];
                segmentRows[s] = batch.segments().get(s).tokens().length;
                KvConfig kv = cache.sparse();
                if (kv == null) continue;
                new SegmentDescriptor(cache.labelChannels(), cache.labelBits(), kv.sinks(), kv.window(),
                        cache.capacity(), cache.labelGroup()).writeTo(segmentInfo, SegmentDescriptor.FIELDS * s);
                for (int l = 0; l < layers; l++) {
                    labels[l * nseg + s] = address(cache.labels(l));
                    channels[l * nseg + s] = address(cache.channels(l));
                    scales[l * nseg + s] = address(cache.scales(l));
                    ringKeys[l * nseg + s] = address(cache.ringKeys(l));
                    ringValues[l * nseg + s] = address(cache.ringValues(l));
                }
            }
            runs = selectionRuns(Arrays.asList(caches), segmentRows, layout.rowsOf(), layout.decodeRows(),
                    layout.segmentOf());
            boolean anyServed = max(runs.servedAhead()) + max(runs.servedMain()) > 0;
            selectedKeys = anyServed ? keyTable.clone() : null;
            selectedValues = anyServed ? valueTable.clone() : null;
            rowIndex = anyServed ? new long[layers * nseg] : null;
            for (int i = 0; anyServed && i < rowIndex.length; i++) {
                if (!runs.served()[i]) continue;
                CudaRowCache rc = caches[i % nseg].rowCache();
                int l = i / nseg;
                selectedKeys[i] = address(rc.keys(l));
                selectedValues[i] = address(rc.values(l));
                rowIndex[i] = address(rc.index(l));
            }
            RowKinds all = runs.stagedKinds().or(runs.aheadKinds()).or(runs.mainKinds());
            maxSparse = max(runs.selectCount());
            // bucketed, so that a captured graph serves many steps: candidates to 1024s, budgets to powers of two
            maxCand = (runs.maxCand() + 1023) / 1024 * 1024;
            maxK = Math.max(64, Integer.highestOneBit(runs.maxK() - 1) << 1);
            // the selected rows' attention in blocks of GQA_WARPS warps where this build has the kernels for the step
            groupAttention = CudaOps.hasSparseGroupAttention(gpu, hd, 1)
                    && (!all.shared() || CudaOps.hasSparseGroupAttention(gpu, hd, group));
            // row_cache_serve rewrites a shared selection at the group's first head, which only the group kernels read
            // for every head of the group (CudaBackend#newCache refuses a row cache where they are not built)
            if (anyServed && !groupAttention) {
                throw new IllegalStateException("rows served from a row cache need the grouped sparse attention");
            }
            int splitSlots = (groupAttention ? CudaOps.GQA_WARPS : 1) * 32;
            maxSlots = runs.maxSinksWindow() + maxK;
            int sparseSplits = (maxSlots + splitSlots - 1) / splitSlots;
            if (groupAttention && all.equals(new RowKinds(false, true, true, false))
                    && CudaOps.pipelined(gpu, hd, group)) {
                // every selecting row shares its group's selection on device memory: sparse_attention_pipelined's
                sparseSplits = CudaOps.pipelinedSplits(gpu, hd, group, maxSparse * c.numKvHeads(), maxSlots);
            }
            splits = sparseSplits;
            boolean allDsppCaches = true;
            for (CudaKvCache x : caches) allDsppCaches &= x.sparse() == null || x.sparse().policy() == KvPolicy.DSPP;
            fusedAppend = allDsppCaches;
            // sparse_select keeps the selection's heads x label channels of q in shared memory: at most 8 x 64, and
            // at most 8 heads' quantisation scales (larger groups select by scores then top-k)
            int selectionHeads = all.shared() ? group : 1;
            fusedSelect = runs.allDspp() && CudaOps.canSelect(gpu, maxCand)
                    && selectionHeads * runs.maxR() <= CudaOps.SELECT_MAX_QUERY_CHANNELS
                    && selectionHeads <= CudaOps.SELECT_MAX_QUERY_HEADS;
            CUdeviceptr sc = null, sel = null, part = null;
            if (maxSparse > 0) {
                if (!fusedSelect) sc = workspace.ensure(Buffer.SCORES, (long) maxSparse * heads * maxCand);
                sel = workspace.ensure(Buffer.SELECTED, (long) maxSparse * heads * maxK);
                part = workspace.ensure(Buffer.SPARSE_PARTIALS, (long) maxSparse * heads * splits * (hd + 2));
            }
            scores = sc;
            selected = sel;
            partials = part;
            // lookahead's buffers: two of each, which one layer's side work writes while the main stream reads the
            // previous layer's (by layer parity); the stages [2][segments][maxK][kvDim] bf16
            maxAhead = max(runs.aheadCount());
            boolean anyStaged = max(runs.stagedCount()) > 0;
            stageKeys = new long[anyStaged ? 2 * nseg : 0];
            stageValues = new long[stageKeys.length];
            CUdeviceptr aSel = null, aQ = null, aSc = null;
            if (maxAhead > 0) {
                long stageBytes = (long) maxK * c.kvDim() * 2;
                if (anyStaged) {
                    CUdeviceptr sk = workspace.ensure(Buffer.AHEAD_STAGE_KEYS, 2 * nseg * stageBytes / 4);
                    CUdeviceptr sv = workspace.ensure(Buffer.AHEAD_STAGE_VALUES, 2 * nseg * stageBytes / 4);
                    for (int i = 0; i < 2 * nseg; i++) {
                        stageKeys[i] = address(sk) + i * stageBytes;
                        stageValues[i] = address(sv) + i * stageBytes;
                    }
                }
                aSel = workspace.ensure(Buffer.AHEAD_SELECTED, 2 * aheadSelectedWords());
                aQ = workspace.ensure(Buffer.AHEAD_QUERIES, (long) batch.rows() * c.qDim());
                if (!fusedSelect) aSc = workspace.ensure(Buffer.AHEAD_SCORES, (long) maxAhead * heads * maxCand);
            }
            rowCacheStats = anyServed ? workspace.ensureZeroed(Buffer.ROW_CACHE_STATS, 4) : null;
            aheadSelected = aSel;
            aheadQueries = aQ;
            aheadScores = aSc;
        }

        private long aheadSelectedWords() {
            return (long) maxAhead * c.numHeads() * maxK;
        }

        /** The plan's sparse step, with the uploaded tables' addresses. */
        StepPlan.SparseStep step(int decodeRows, CUdeviceptr denseRows, CUdeviceptr descriptors,
                                 CUdeviceptr selectRows, CUdeviceptr stageKeysAt, CUdeviceptr stageValuesAt) {
            StepPlan.Lookahead ahead = null;
            if (maxAhead > 0) {
                long words = aheadSelectedWords();
                int nseg = segmentInfo.length / SegmentDescriptor.FIELDS;
                boolean staged = stageKeys.length > 0;
                ahead = new StepPlan.Lookahead(runs.aheadCount(), runs.stagedCount(),
                        groupAttention ? runs.stagedKinds() : null, groupAttention ? runs.aheadKinds() : null,
                        !runs.stagedKinds().perHead() && !runs.aheadKinds().perHead(),
                        new ByParity<>(aheadSelected, aheadSelected.withByteOffset(4 * words)), aheadQueries,
                        aheadScores,
                        staged ? new ByParity<>(stageKeysAt, stageKeysAt.withByteOffset(8L * nseg)) : null,
                        staged ? new ByParity<>(stageValuesAt, stageValuesAt.withByteOffset(8L * nseg)) : null);
            }
            return new StepPlan.SparseStep(runs.denseCount(), denseRows, runs.selectCount(), descriptors, selectRows,
                    Math.max(1, decodeRows), runs.maxR(), maxCand, maxK, maxSlots, splits, fusedSelect, fusedAppend,
                    !runs.mainKinds().perHead(), groupAttention ? runs.mainKinds() : null, scores, selected,
                    partials, ahead, runs.servedAhead(), runs.servedMain(), rowCacheStats);
        }
    }

    private static int max(int[] values) {
        int m = 0;
        for (int v : values) m = Math.max(m, v);
        return m;
    }

    /** The raw device address of a pointer (for the kernels' pointer tables), 0 for none. */
    static long address(CUdeviceptr p) {
        return p == null ? 0 : jcuda.DeviceAddress.of(p);
    }
}
