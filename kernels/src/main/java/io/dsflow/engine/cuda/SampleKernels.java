package io.dsflow.engine.cuda;

import jcuda.driver.CUdeviceptr;

/**
 * Launchers of sample.cu: sampling on the device, only the chosen ids cross to the host.
 * <ul>
 *   <li>logits: [rows][vocab] f32; out: [rows] ints (the chosen token ids); argmax's partials [2 rows splits] words
 *       and done [rows] ints (zero between launches)</li>
 *   <li>params: [rows][4] doubles {temperature, top_p, top_k (0: all), u in [0, 1)} ({@link CudaOps#drawParams})</li>
 *   <li>probs: [rows][vocab] doubles, scratch</li>
 *   <li>gatherRows: src [.][dim] f32, index [count] ints, dst [count][dim] f32</li>
 * </ul>
 */
public final class SampleKernels {
    private SampleKernels() {
    }

    /**
     * Blocks argmax gives a row: enough for about four blocks a multiprocessor over the rows, each a chunk of at least
     * 4,096 logits.
     */
    public static int argmaxSplits(CudaRuntime gpu, int rows, int vocab) {
        int wanted = (4 * gpu.multiprocessors() + rows - 1) / Math.max(1, rows);
        return Math.max(1, Math.min(wanted, vocab / 4096));
    }

    /**
     * argmax: out[r] = argmax_i logits[r][i], the lowest index on ties. Grid (rows, {@link #argmaxSplits}), block
     * 256; partials: [2 rows splits] words of scratch, done: [rows] ints, zero before the first launch and left zero
     * by each.
     */
    public static void argmax(CudaRuntime gpu, int rows, CUdeviceptr out, CUdeviceptr logits, int vocab,
                              CUdeviceptr partials, CUdeviceptr done) {
        gpu.launch("argmax", rows, argmaxSplits(gpu, rows, vocab), 256, out, logits, vocab, partials, done);
    }

    /**
     * sample_rows: temperature, then top-k, then top-p, then the draw u, as io.dsflow.engine.sample.Sampler does it.
     * Grid (rows), block 1024.
     */
    public static void sampleRows(CudaRuntime gpu, int rows, CUdeviceptr out, CUdeviceptr logits, CUdeviceptr params,
                                  CUdeviceptr probs, int vocab) {
        gpu.launch("sample_rows", rows, 1, 1024, out, logits, params, probs, vocab);
    }

    /** gather_rows: dst[i] = src[index[i]], i &lt; count (each segment's last row before the lm_head). Grid (count). */
    public static void gatherRows(CudaRuntime gpu, CUdeviceptr dst, CUdeviceptr src, CUdeviceptr index, int count,
                                  int dim) {
        gpu.launch("gather_rows", count, 1, 256, dst, src, index, count, dim);
    }
}
