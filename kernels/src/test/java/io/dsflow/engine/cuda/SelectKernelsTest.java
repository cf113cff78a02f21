package io.dsflow.engine.cuda;

import io.dsflow.engine.kv.TopK;
import jcuda.Pointer;
import jcuda.driver.CUdeviceptr;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;

import static jcuda.driver.JCudaDriver.cuMemcpyHtoD;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * select.cu's selections against kv/TopK and scores computed on the CPU: ds's scores then top-k, dspp's one-block
 * selection and (on Hopper) its clusters as {@link CudaOps#launchSelect} launches them.
 */
class SelectKernelsTest extends KernelTestSupport {
    /**
     * sparse_topk picks what kv/TopK picks (the k largest, ties to the lower candidate) per query head and per kv head
     * from the group's max or sum, for budgets below, at and above the candidate count.
     */
    @Test
    void sparseTopKMatchesCpuTopK() {
        Random r = new Random(12);
        int heads = 4, kvHeads = 2, group = 2, maxCand = 5000, maxK = 300;
        int[][] rowsSpec = {{1000, 7, 0}, {37, 37, 1}, {5000, 300, 2}, {2048, 64, 0}};   // candidates, k, mode
        int rows = rowsSpec.length, sinks = 4;
        float[] scores = new float[rows * heads * maxCand];
        for (int i = 0; i < scores.length; i++) scores[i] = r.nextInt(5) == 0 ? 1f : (float) r.nextGaussian();   // ties
        List<SparseRowDescriptor> desc = new ArrayList<>();
        for (int p = 0; p < rows; p++) {   // the top-k reads candidates, budget, sinks and mode alone
            desc.add(new SparseRowDescriptor(p, rowsSpec[p][0], rowsSpec[p][1], sinks, 0, rowsSpec[p][2], 0, 0, 0,
                    false, 0));
        }
        CUdeviceptr sel = upload(new int[rows * heads * maxK]);
        SelectKernels.sparseTopk(gpu, rows, sel, upload(scores), uploadRows(desc), heads, kvHeads, maxCand, maxK);
        int[] got = downloadInts(sel, rows * heads * maxK);
        for (int p = 0; p < rows; p++) {
            int n = rowsSpec[p][0], k = Math.min(rowsSpec[p][1], n), mode = rowsSpec[p][2];
            for (int h = 0; h < heads; h++) {
                float[] s = Arrays.copyOfRange(scores, (p * heads + h) * maxCand, (p * heads + h) * maxCand + n);
                if (mode != 0) {
                    int h0 = (h / group) * group;
                    s = Arrays.copyOfRange(scores, (p * heads + h0) * maxCand, (p * heads + h0) * maxCand + n);
                    for (int j = 1; j < group; j++) {
                        for (int c = 0; c < n; c++) {
                            float o = scores[(p * heads + h0 + j) * maxCand + c];
                            s[c] = mode == 1 ? Math.max(s[c], o) : s[c] + o;
                        }
                    }
                }
                int[] want = new int[k];
                TopK.select(s, n, k, want);
                for (int i = 0; i < k; i++) want[i] += sinks;
                assertArrayEquals(want, Arrays.copyOfRange(got, (p * heads + h) * maxK, (p * heads + h) * maxK + k),
                        "row " + p + " head " + h + " mode " + mode);
            }
        }
    }

    /**
     * sparse_select (dspp: scores in shared memory, one kernel) selects exactly what sparse_scores then sparse_topk
     * (ds) select, per head and per kv head (max, sum), with 16 label channels (the unrolled path) and 12 (the general
     * one), budgets below and above the candidates; and the selection is the top of the scores computed on the CPU
     * (every selected candidate scores at least every other one, within float rounding). 16-bit labels and 8-bit ones
     * (int8 values times a per-token, per-row fp16 scale, kept row-major); a label row a query head, or one a kv head
     * serving its group (whose heads then share their channels: channels=qk-group).
     */
    @ParameterizedTest(name = "{0}-bit labels, a label row for {1} heads")
    @CsvSource({"16, 1", "8, 1", "16, 4", "8, 4"})
    void fusedSelectionEqualsScoresThenTopK(int bits, int labelGroup) {
        Random rnd = new Random(21);
        int heads = 8, kvHeads = 2, group = 4, hd = 32, qStride = (heads + 2 * kvHeads) * hd, sinks = 4, cap = 5200;
        int rowsOfLabels = heads / labelGroup;
        int[] segR = {16, 12};
        int[][] rowsSpec = {{0, 1000, 7, 0}, {1, 37, 40, 1}, {0, 5000, 300, 2}, {1, 2049, 64, 0}, {0, 3001, 1000, 1}};
        int rows = rowsSpec.length, maxCand = 5120, maxK = 1024;
        float[][] labels = new float[2][];
        int[][] channels = new int[2][];
        CUdeviceptr[] labelBuffers = new CUdeviceptr[2], channelBuffers = new CUdeviceptr[2];
        CUdeviceptr[] scaleBuffers = new CUdeviceptr[2];
        for (int sgm = 0; sgm < 2; sgm++) {
            int r = segR[sgm];
            labels[sgm] = new float[cap * rowsOfLabels * r];
            if (bits == 16) {
                short[] half = new short[labels[sgm].length];
                for (int i = 0; i < half.length; i++) {
                    // multiples of 1/256 in [-4, 4): exact in fp16, and ties among the scores
                    labels[sgm][i] = (rnd.nextInt(2048) - 1024) / 256f;
                    half[i] = fp16(labels[sgm][i]);
                }
                labelBuffers[sgm] = gpu.alloc(half.length * 2L);
                cuMemcpyHtoD(labelBuffers[sgm], Pointer.to(half), half.length * 2L);
            } else {
                // int8 values times scales of 2^-2 .. 2^-5 (fp16-exact), scales [label rows][cap]
                byte[] values = new byte[labels[sgm].length];
                short[] scales = new short[rowsOfLabels * cap];
                for (int t = 0; t < cap; t++) {
                    for (int h = 0; h < rowsOfLabels; h++) {
                        float scale = 1f / (4 << rnd.nextInt(4));
                        scales[h * cap + t] = fp16(scale);
                        for (int i = 0; i < r; i++) {
                            int at = t * rowsOfLabels * r + h * r + i;
                            values[at] = (byte) (rnd.nextInt(255) - 127);
                            labels[sgm][at] = values[at] * scale;
                        }
                    }
                }
                labelBuffers[sgm] = gpu.alloc(values.length);
                scaleBuffers[sgm] = gpu.alloc(scales.length * 2L);
                cuMemcpyHtoD(labelBuffers[sgm], Pointer.to(values), values.length);
                cuMemcpyHtoD(scaleBuffers[sgm], Pointer.to(scales), scales.length * 2L);
            }
            channels[sgm] = labelRowChannels(rnd, heads, r, hd, labelGroup);
            channelBuffers[sgm] = upload(channels[sgm]);
        }
        float[] q = random(rnd, rows * qStride, 1);
        int[] seg = new int[rows];
        List<SparseRowDescriptor> desc = new ArrayList<>();
        for (int p = 0; p < rows; p++) {   // no window: the selection reads none
            seg[p] = rowsSpec[p][0];
            desc.add(new SparseRowDescriptor(p, rowsSpec[p][1], rowsSpec[p][2], sinks, 0, rowsSpec[p][3], segR[seg[p]],
                    bits, cap, false, labelGroup));
        }
        CUdeviceptr dq = upload(q), dl = pointerTable(labelBuffers), dch = pointerTable(channelBuffers);
        CUdeviceptr dsc = pointerTable(scaleBuffers), dseg = upload(seg), dsp = uploadRows(desc);
        CUdeviceptr unfused = upload(new int[rows * heads * maxK]), fused = upload(new int[rows * heads * maxK]);
        CUdeviceptr scores = gpu.alloc(4L * rows * heads * maxCand);
        SelectKernels.sparseScores(gpu, rows, scores, dq, dl, dch, dsc, dseg, dsp, heads, hd, qStride, maxCand);
        SelectKernels.sparseTopk(gpu, rows, unfused, scores, dsp, heads, kvHeads, maxCand, maxK);
        int[] a = downloadInts(unfused, rows * heads * maxK);
        // the one-block kernel
        SelectKernels.sparseSelect(gpu, rows, 1024, maxCand, fused, dq, dl, dch, dsc, dseg, dsp, heads, kvHeads, hd,
                qStride, maxK);
        int[] b = downloadInts(fused, rows * heads * maxK);
        checkSelection(a, b, rowsSpec, seg, segR, labels, channels, q, heads, group, labelGroup, hd, qStride, sinks,
                maxK, "one block a selection");
        // on Hopper the cluster kernels, of 8 blocks and of 2
        for (int cluster : gpu.computeMajor() >= 9 ? new int[]{8, 2} : new int[0]) {
            CUdeviceptr clustered = upload(new int[rows * heads * maxK]);
            CudaOps.launchSelect(gpu, cluster, clustered, dq, dl, dch, dsc, dseg, dsp, rows, heads, kvHeads, hd,
                    qStride, maxCand, maxK);
            b = downloadInts(clustered, rows * heads * maxK);
            checkSelection(a, b, rowsSpec, seg, segR, labels, channels, q, heads, group, labelGroup, hd, qStride, sinks,
                    maxK, "clusters of " + cluster + " blocks");
        }
    }

    /** b (a fused selection) equals a (scores then top-k) and is the top of the scores computed on the CPU. */
    private static void checkSelection(int[] a, int[] b, int[][] rowsSpec, int[] seg, int[] segR, float[][] labels,
                                       int[][] channels, float[] q, int heads, int group, int labelGroup, int hd,
                                       int qStride, int sinks, int maxK, String kernel) {
        for (int p = 0; p < rowsSpec.length; p++) {
            int sgm = seg[p], r = segR[sgm], n = rowsSpec[p][1], k = Math.min(rowsSpec[p][2], n), mode = rowsSpec[p][3];
            for (int h = 0; h < heads; h++) {
                int from = (p * heads + h) * maxK;
                String what = kernel + ": row " + p + " head " + h + " mode " + mode + " r " + r;
                assertArrayEquals(Arrays.copyOfRange(a, from, from + k), Arrays.copyOfRange(b, from, from + k), what);
                // the CPU's scores of the selection's heads (one head, or the group's combined)
                double[] cpu = new double[n];
                int h0 = mode == 0 ? h : h / group * group, nh = mode == 0 ? 1 : group;
                for (int c = 0; c < n; c++) {
                    for (int j = 0; j < nh; j++) {
                        double t = 0;
                        for (int i = 0; i < r; i++) {
                            int hh = h0 + j;
                            t += q[p * qStride + hh * hd + channels[sgm][hh * r + i]]
                                    * labels[sgm][(sinks + c) * (heads / labelGroup) * r + hh / labelGroup * r + i];
                        }
                        cpu[c] = j == 0 ? t : mode == 1 ? Math.max(cpu[c], t) : cpu[c] + t;
                    }
                }
                boolean[] picked = new boolean[n];
                double lowestPicked = Double.MAX_VALUE, highestLeft = -Double.MAX_VALUE;
                for (int i = 0; i < k; i++) {
                    int c = b[from + i] - sinks;
                    assertTrue(c >= 0 && c < n && !picked[c] && (i == 0 || b[from + i] > b[from + i - 1]),
                            what + ": slot " + b[from + i]);
                    picked[c] = true;
                    lowestPicked = Math.min(lowestPicked, cpu[c]);
                }
                for (int c = 0; c < n; c++) if (!picked[c]) highestLeft = Math.max(highestLeft, cpu[c]);
                assertTrue(lowestPicked >= highestLeft - 1e-4,
                        what + ": picked down to " + lowestPicked + ", left " + highestLeft);
            }
        }
    }
}
