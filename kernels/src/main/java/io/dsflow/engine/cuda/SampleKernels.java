package io.dsflow.engine.cuda;

import jcuda.driver.CUdeviceptr;

/**
 * Launchers of sample.cu: sampling on the device, only the chosen ids cross to the host.
 * <ul>
 *   <li>logits: [rows][vocab] f32; out: [rows] ints (the chosen token ids)</li>
 *   <li>params: [rows][4] doubles {temperature, top_p, top_k (0: all), u in [0, 1)} ({@link CudaOps#drawParams})</li>
 *   <li>probs: [rows][vocab] doubles, scratch</li>
 *   <li>gatherRows: src [.][dim] f32, index [count] ints, dst [count][dim] f32</li>
 * </ul>
 */
public final class SampleKernels {
    private SampleKernels() {
    }

    /** argmax: out[r] = argmax_i logits[r][i], the lowest index on ties. Grid (rows), block 1024. */
    public static void argmax(CudaRuntime gpu, int rows, CUdeviceptr out, CUdeviceptr logits, int vocab) {
        gpu.launch("argmax", rows, 1, 1024, out, logits, vocab);
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
