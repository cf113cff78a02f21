package io.dsflow.engine.cuda;

import jcuda.driver.CUdeviceptr;

import java.util.EnumMap;
import java.util.Map;

/**
 * The forward pass's working buffers in device memory, one per {@link Buffer}, each grown (to at least twice its size)
 * when a step needs more and never shrunk. Growing moves a buffer, so the graphs captured with its old address are
 * dropped first ({@code onMove}); the step planner sizes every buffer of a step before its launches, so a launch never
 * allocates and a captured graph finds its buffers where it left them. Sizes are counted in 4-byte words.
 * Not thread-safe: the backend's one forward pass at a time uses it.
 */
final class Workspace implements AutoCloseable {

    /** The buffers, with their shapes (rows: the step's rows, segments: its sequences, H: query heads). */
    enum Buffer {
        /** [rows][hidden] f32: the residual stream. */
        RESIDUAL,
        /** [rows][hidden] f32: a sublayer's normalised input (where the norm is a kernel of its own). */
        NORMED,
        /** [rows][qDim + 2 kvDim] f32: q, k and v of each row; q and k rotated in place by the append. */
        QKV,
        /** [rows][qDim] f32: the attention's output. */
        ATTENTION,
        /** [rows][hidden] f32: OPT's learned positions. */
        POSITIONS,
        /** [rows][intermediate] f32: OPT's fc1 output, or the SwiGLU activations from the GEMV. */
        MLP,
        /** [rows][intermediate] bf16: the SwiGLU activations from the GEMM (tensor cores). */
        MLP_BF16,
        /** [rows][2 intermediate] f32: cuBLAS's gate/up product, before swiglu_rows (sized only where cuBLAS runs). */
        GATE_UP,
        /** [rows][wordEmbedDim] f32: embeddings before OPT's input projection. */
        EMBEDDED,
        /** [segments][hidden] f32: each segment's last row. */
        LAST_ROWS,
        /** [segments][wordEmbedDim] f32: the last rows after OPT's output projection. */
        PROJECTED,
        /** [rows][widest input] bf16: a GEMM's input. */
        GEMM_INPUT,
        /** [segments][vocab] f32. */
        LOGITS,
        /** [segments] ints: greedy tokens. */
        ARGMAX,
        /** [2 segments splits] words, [segments] ints (zero between launches): argmax's partials and counters. */
        ARGMAX_PARTIALS, ARGMAX_DONE,
        /** [segments] ints, [segments][4] doubles, [segments][2 vocab] doubles: sample_rows' tokens, draws, scratch. */
        SAMPLED, DRAW_PARAMS, SAMPLE_SCRATCH,
        /** The step's metadata (StepMetadata's tables and arrays, end to end). */
        METADATA,
        /** [decodeRows * H][splits][headDim + 2] f32: the dense decode attention's split partials. */
        PARTIALS,
        /** [decodeRows * kvHeads][2] ints: the pipelined attention's chunk counters, zero between launches. */
        CLAIMS,
        /** [maxSparse * H][maxCand] f32: the selection's scores (ds's two-kernel selection only). */
        SCORES,
        /** [maxSparse * H][maxK] ints: the selected slots of the rows selecting on the main stream. */
        SELECTED,
        /** [maxSparse * H][sparseSplits][headDim + 2] f32: the selected rows' attention partials. */
        SPARSE_PARTIALS,
        /** [2][maxAhead * H][maxK] ints: the look-ahead rows' selections, by layer parity. */
        AHEAD_SELECTED,
        /** [rows][qDim] f32: the look-ahead rows' predicted queries (label channels only). */
        AHEAD_QUERIES,
        /** [maxAhead * H][maxCand] f32: the look-ahead selection's scores (ds's two-kernel selection only). */
        AHEAD_SCORES,
        /** [2][segments][maxK][kvDim] bf16: the look-ahead rows' staged keys and values (host placement). */
        AHEAD_STAGE_KEYS, AHEAD_STAGE_VALUES,
        /** [history + rows][kvDim] bf16 per host-placed prefill: its layer's keys and values on the device. */
        PREFILL_STAGE_KEYS, PREFILL_STAGE_VALUES,
        /** [2] u64: rows the device row caches were asked for and rows they missed (CudaBackend#rowCacheStats). */
        ROW_CACHE_STATS
    }

    private final CudaRuntime gpu;
    private final Runnable onMove;
    private final Map<Buffer, CUdeviceptr> pointers = new EnumMap<>(Buffer.class);
    private final Map<Buffer, Long> bytes = new EnumMap<>(Buffer.class);

    /** @param onMove called before a buffer moves (graphs captured with its old address must go) */
    Workspace(CudaRuntime gpu, Runnable onMove) {
        this.gpu = gpu;
        this.onMove = onMove;
    }

    /** The buffer with room for at least {@code words} 4-byte words. */
    CUdeviceptr ensure(Buffer b, long words) {
        long need = Math.max(16, words * 4);
        Long have = bytes.get(b);
        if (have == null || have < need) {
            onMove.run();
            if (have != null) gpu.free(pointers.get(b), have);
            long size = Math.max(need, have == null ? 0 : have * 2);
            pointers.put(b, gpu.alloc(size));
            bytes.put(b, size);
        }
        return pointers.get(b);
    }

    /** {@link #ensure}, and zeroed whenever it is (re)allocated: for counters that each launch leaves zero. */
    CUdeviceptr ensureZeroed(Buffer b, long words) {
        Long had = bytes.get(b);
        CUdeviceptr p = ensure(b, words);
        long now = bytes.get(b);
        if (had == null || had != now) jcuda.driver.JCudaDriver.cuMemsetD32(p, 0, now / 4);
        return p;
    }

    /** The buffer as last sized (a step's planner has sized it). */
    CUdeviceptr get(Buffer b) {
        CUdeviceptr p = pointers.get(b);
        if (p == null) throw new IllegalStateException("workspace buffer " + b + " was not sized for this step");
        return p;
    }

    /** The buffer as last sized, or null where no step has sized it. */
    CUdeviceptr getIfSized(Buffer b) {
        return pointers.get(b);
    }

    @Override
    public void close() {
        for (Map.Entry<Buffer, CUdeviceptr> e : pointers.entrySet()) gpu.free(e.getValue(), bytes.get(e.getKey()));
        pointers.clear();
        bytes.clear();
    }
}
