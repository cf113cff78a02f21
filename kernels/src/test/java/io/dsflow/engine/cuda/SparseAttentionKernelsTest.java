package io.dsflow.engine.cuda;

import jcuda.driver.CUdeviceptr;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Random;
import java.util.stream.IntStream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * sparse_attention.cu's attention of selected rows against softmax attention computed on the CPU, launched as the
 * forward pass launches it ({@link CudaOps#sparseAttention}) and merged by attention.cu's attention_merge.
 */
class SparseAttentionKernelsTest extends KernelTestSupport {
    /**
     * The selected rows' attention in blocks of four warps (sparse_attention_dD_gG: per-head rows and rows whose group
     * shares a selection, in one step) equals softmax attention over sinks + selection + window computed on the CPU,
     * for head sizes 32, 64 and 128, GQA groups of 4, candidates and budgets of odd sizes, a budget above the
     * candidates. Host placement: the store in pinned host memory, its sinks and window rows overwritten with NaN
     * there, so the attention must read them from the device ring (window wrapped around: row lengths are not
     * multiples of W); staged: the same store and ring on the device (a look-ahead row's device stage). The shared rows
     * on the device take sparse_attention_pipelined; {@code splits} > 0: only they, over that many splits (one split
     * for all; two, so that a row's splits own its first chunks and claim the last four; more splits than a small row
     * has chunks). Run twice: the pipelined kernel's chunk counters are left zero for the next launch. With one split
     * over shared rows on the device, the kernel's own outputs (no merge) equal the merged ones bit for bit.
     */
    @ParameterizedTest(name = "head_dim {0}, {1} placement, splits {2}")
    @CsvSource({"32, device, 0", "64, device, 0", "128, device, 0", "128, device, 1", "128, device, 2",
            "128, device, 37", "64, host, 0", "128, host, 0", "32, staged, 37", "128, staged, 0", "64, staged, 37",
            "64, staged, 1"})
    void groupedSparseAttentionMatchesCpu(int hd, String placement, int splitsAsked) {
        boolean host = placement.equals("host"), ring = !placement.equals("device");
        Random rnd = new Random(hd);
        int heads = 8, kvHeads = 2, group = 4, sinks = 4, window = 16, cap = 700, qStride = heads * hd, maxK = 512;
        int[][] rowsSpec = {{613, 97, 0}, {300, 1000, 2}, {450, 131, 1}};   // row length, budget, mode
        int rows = rowsSpec.length;
        float[][] keys = new float[rows][], values = new float[rows][];
        CUdeviceptr[] kStores = new CUdeviceptr[rows], vStores = new CUdeviceptr[rows];
        CUdeviceptr[] kRings = new CUdeviceptr[rows], vRings = new CUdeviceptr[rows];
        int rowWidth = kvHeads * hd;
        for (int r = 0; r < rows; r++) {
            keys[r] = random(rnd, cap * rowWidth, 1);
            values[r] = random(rnd, cap * rowWidth, 1);
            for (int i = 0; i < keys[r].length; i++) {
                keys[r][i] = bf(keys[r][i]);
                values[r][i] = bf(values[r][i]);
            }
            if (!ring) {
                kStores[r] = uploadBf16(keys[r]);
                vStores[r] = uploadBf16(values[r]);
                continue;
            }
            // the ring as label_append fills it: position t < S in slot t, else in S + (t - S) mod W
            int n = rowsSpec[r][0];
            float[] rk = new float[(sinks + window) * rowWidth], rv = new float[rk.length];
            float[] storeK = keys[r].clone(), storeV = values[r].clone();
            for (int t = 0; t < n; t++) {
                if (t >= sinks && t < n - window) continue;
                int at = t < sinks ? t : sinks + (t - sinks) % window;
                System.arraycopy(keys[r], t * rowWidth, rk, at * rowWidth, rowWidth);
                System.arraycopy(values[r], t * rowWidth, rv, at * rowWidth, rowWidth);
                Arrays.fill(storeK, t * rowWidth, (t + 1) * rowWidth, Float.NaN);
                Arrays.fill(storeV, t * rowWidth, (t + 1) * rowWidth, Float.NaN);
            }
            kStores[r] = host ? onHost(uploadBf16(storeK), storeK.length * 2L) : uploadBf16(storeK);
            vStores[r] = host ? onHost(uploadBf16(storeV), storeV.length * 2L) : uploadBf16(storeV);
            kRings[r] = uploadBf16(rk);
            vRings[r] = uploadBf16(rv);
        }
        float[] q = random(rnd, rows * qStride, 1);
        int[] seg = new int[rows], len = new int[rows], sel = new int[rows * heads * maxK];
        List<SparseRowDescriptor> desc = new ArrayList<>();
        int[][][] chosen = new int[rows][heads][];
        for (int p = 0; p < rows; p++) {
            int n = rowsSpec[p][0], cand = n - sinks - window, k = Math.min(rowsSpec[p][1], cand);
            int mode = rowsSpec[p][2];
            seg[p] = p;
            len[p] = n;
            // the attention reads no labels: their fields stay 0
            desc.add(new SparseRowDescriptor(p, cand, rowsSpec[p][1], sinks, window, mode, 0, 0, 0, host, 0));
            for (int h = 0; h < heads; h++) {
                if (mode != 0 && h % group != 0) {
                    chosen[p][h] = chosen[p][h - h % group];   // the group's first head's selection
                } else {
                    List<Integer> all = new ArrayList<>();
                    for (int c = 0; c < cand; c++) all.add(sinks + c);
                    Collections.shuffle(all, rnd);
                    chosen[p][h] = all.subList(0, k).stream().mapToInt(Integer::intValue).sorted().toArray();
                }
                System.arraycopy(chosen[p][h], 0, sel, (p * heads + h) * maxK, k);
            }
        }
        int maxSlots = sinks + window + maxK, splits = splitsAsked > 0 ? splitsAsked : (maxSlots + 127) / 128;
        assertTrue(host || CudaOps.pipelined(gpu, hd, group), "this build has sparse_attention_pipelined");
        CUdeviceptr partials = gpu.alloc(4L * rows * heads * splits * (hd + 2)), out = poisoned(rows * qStride);
        CUdeviceptr claims = upload(new int[2 * rows * kvHeads]);
        float[][] runs = new float[2][];
        // the shared rows alone where splits are asked, else both kinds; the rows' placement
        int kinds = (splitsAsked > 0 ? 2 : 3) | (host ? 8 : 4);
        for (int run = 0; run < 2; run++) {
            CudaOps.sparseAttention(gpu, partials, upload(q), pointerTable(kStores), pointerTable(vStores),
                    pointerTable(kRings), pointerTable(vRings), upload(seg), upload(len), uploadRows(desc), upload(sel),
                    claims, rows, heads, kvHeads, hd, splits, qStride, maxK, kinds, null, null);
            AttentionKernels.attentionMerge(gpu, rows, out, null, partials, upload(new int[]{0, 1, 2}), heads, hd,
                    splits);
            runs[run] = download(out, rows * qStride);
        }
        assertArrayEquals(new int[2 * rows * kvHeads], downloadInts(claims, 2 * rows * kvHeads), "counters left zero");
        float[] ref = new float[rows * qStride];
        for (int p = 0; p < rows; p++) {
            int n = len[p];
            for (int h = 0; h < heads; h++) {
                int g = h / group;
                List<Integer> slots = new ArrayList<>();
                for (int t = 0; t < sinks; t++) slots.add(t);
                for (int c : chosen[p][h]) slots.add(c);
                for (int t = n - window; t < n; t++) slots.add(t);
                double[] w = new double[slots.size()];
                double max = Double.NEGATIVE_INFINITY, sum = 0;
                for (int i = 0; i < w.length; i++) {
                    double dot = 0;
                    for (int c = 0; c < hd; c++) {
                        dot += q[p * qStride + h * hd + c] * keys[p][(slots.get(i) * kvHeads + g) * hd + c];
                    }
                    w[i] = dot / Math.sqrt(hd);
                    max = Math.max(max, w[i]);
                }
                for (int i = 0; i < w.length; i++) sum += (w[i] = Math.exp(w[i] - max));
                for (int c = 0; c < hd; c++) {
                    double o = 0;
                    for (int i = 0; i < w.length; i++) o += w[i] * values[p][(slots.get(i) * kvHeads + g) * hd + c];
                    ref[p * qStride + h * hd + c] = (float) (o / sum);
                }
            }
        }
        // splits asked: only the shared rows were attended, so compare those
        int[] compared = IntStream.range(0, rows).filter(p -> splitsAsked == 0 || rowsSpec[p][2] != 0).toArray();
        double err = relError(rowsOf(runs[0], compared, qStride), rowsOf(ref, compared, qStride));
        assertTrue(err < 1e-4, "relative error " + err);
        // the second launch's blocks may claim other chunks: the same up to the merge's rounding
        double again = relError(rowsOf(runs[1], compared, qStride), rowsOf(runs[0], compared, qStride));
        assertTrue(again < 1e-6, "a second launch: relative difference " + again);
        if (!CudaOps.writesSparseOutputs(gpu, hd, group, splits, kinds)) return;
        // one split over shared selections on the device: the kernel writes the outputs itself, f32 or bf16, as the
        // merge of its one split does (a block a (row, kv head) takes its chunks in order: bit for bit)
        CUdeviceptr direct = poisoned(rows * qStride), directBf16 = poisonedBf16(rows * qStride);
        for (CUdeviceptr[] target : new CUdeviceptr[][]{{direct, null}, {null, directBf16}}) {
            CudaOps.sparseAttention(gpu, partials, upload(q), pointerTable(kStores), pointerTable(vStores),
                    pointerTable(kRings), pointerTable(vRings), upload(seg), upload(len), uploadRows(desc), upload(sel),
                    claims, rows, heads, kvHeads, hd, splits, qStride, maxK, kinds, target[0], target[1]);
        }
        float[] f32 = download(direct, rows * qStride), bf16 = downloadBf16(directBf16, rows * qStride);
        for (int p : compared) {
            for (int i = p * qStride; i < (p + 1) * qStride; i++) {
                assertEquals(runs[0][i], f32[i], "row " + p + ", f32 output " + i);
                assertEquals(bf(runs[0][i]), bf16[i], "row " + p + ", bf16 output " + i);
            }
        }
        assertArrayEquals(new int[2 * rows * kvHeads], downloadInts(claims, 2 * rows * kvHeads), "counters left zero");
    }
}
