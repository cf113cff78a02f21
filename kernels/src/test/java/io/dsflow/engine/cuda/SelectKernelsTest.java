package io.dsflow.engine.cuda;

import io.dsflow.engine.kv.LabelQueries;
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
import static org.junit.jupiter.api.Assertions.fail;

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
     * A layer's label caches of segments with {@code segR[s]} label channels at one label width, random: values (as
     * the CPU keeps them: fp16, or the integer, with its row's fp16 scale in scales) and the device's buffers. 16-bit:
     * multiples of 1/256 in [-4, 4), exact in fp16, with ties among the scores; 8- and 4-bit: integers in +-127 or +-7
     * with scales of 2^-2 .. 2^-5 (fp16-exact), scales [label rows][cap]; 4-bit values two a byte, label 2i of a row in
     * the low nibble of the row's byte i, rows of (r + 1) / 2 bytes (sparse_rows.cuh). {@code zeroShare}: the share of
     * tokens whose labels are all 0 (skewed scores: most candidates tie at 0, a few stand out).
     */
    private record LabelCaches(int bits, float[][] values, float[][] scales, int[][] channels, CUdeviceptr labelTable,
                               CUdeviceptr channelTable, CUdeviceptr scaleTable) {
        static LabelCaches random(Random rnd, int bits, int[] segR, int cap, int heads, int hd, int labelGroup) {
            return random(rnd, bits, segR, cap, heads, hd, labelGroup, 0);
        }

        static LabelCaches random(Random rnd, int bits, int[] segR, int cap, int heads, int hd, int labelGroup,
                                  double zeroShare) {
            int rowsOfLabels = heads / labelGroup, nseg = segR.length;
            float[][] values = new float[nseg][], scaleValues = new float[nseg][];
            int[][] channels = new int[nseg][];
            CUdeviceptr[] labelBuffers = new CUdeviceptr[nseg], channelBuffers = new CUdeviceptr[nseg];
            CUdeviceptr[] scaleBuffers = new CUdeviceptr[nseg];
            for (int sgm = 0; sgm < nseg; sgm++) {
                int r = segR[sgm];
                values[sgm] = new float[cap * rowsOfLabels * r];
                boolean[] zero = new boolean[cap];
                for (int t = 0; zeroShare > 0 && t < cap; t++) zero[t] = rnd.nextDouble() < zeroShare;
                if (bits == 16) {
                    short[] half = new short[values[sgm].length];
                    for (int i = 0; i < half.length; i++) {
                        values[sgm][i] = zero[i / (rowsOfLabels * r)] ? 0f : (rnd.nextInt(2048) - 1024) / 256f;
                        half[i] = fp16(values[sgm][i]);
                    }
                    labelBuffers[sgm] = gpu.alloc(half.length * 2L);
                    cuMemcpyHtoD(labelBuffers[sgm], Pointer.to(half), half.length * 2L);
                } else {
                    int levels = bits == 8 ? 127 : 7, rowBytes = (int) labelValueBytes(bits, r);
                    byte[] packed = new byte[cap * rowsOfLabels * rowBytes];
                    short[] scales = new short[rowsOfLabels * cap];
                    scaleValues[sgm] = new float[rowsOfLabels * cap];
                    for (int t = 0; t < cap; t++) {
                        for (int h = 0; h < rowsOfLabels; h++) {
                            float scale = 1f / (4 << rnd.nextInt(4));
                            scales[h * cap + t] = fp16(scale);
                            scaleValues[sgm][h * cap + t] = scale;
                            int row = (t * rowsOfLabels + h) * rowBytes;
                            for (int i = 0; i < r; i++) {
                                int v = zero[t] ? 0 : rnd.nextInt(2 * levels + 1) - levels;
                                values[sgm][t * rowsOfLabels * r + h * r + i] = v;
                                if (bits == 8) packed[row + i] = (byte) v;
                                else packed[row + i / 2] |= (byte) ((v & 15) << (4 * (i % 2)));
                            }
                        }
                    }
                    labelBuffers[sgm] = uploadBytes(packed);
                    scaleBuffers[sgm] = gpu.alloc(scales.length * 2L);
                    cuMemcpyHtoD(scaleBuffers[sgm], Pointer.to(scales), scales.length * 2L);
                }
                channels[sgm] = labelRowChannels(rnd, heads, r, hd, labelGroup);
                channelBuffers[sgm] = upload(channels[sgm]);
            }
            return new LabelCaches(bits, values, scaleValues, channels, pointerTable(labelBuffers),
                    pointerTable(channelBuffers), pointerTable(scaleBuffers));
        }

        /**
         * The CPU specification's score (kv/SparseKvCache#select) of label row {@code row} (of {@code rows}) of
         * segment sgm at a slot, for a head's r label channels of q: in floats (16-bit), or LabelQueries' integers.
         */
        float score(int sgm, int r, int rows, int row, int slot, float[] qc) {
            int at = (slot * rows + row) * r, cap = scales[sgm] == null ? 0 : scales[sgm].length / rows;
            if (bits == 16) {
                float s = 0;
                for (int i = 0; i < r; i++) s += qc[i] * values[sgm][at + i];
                return s;
            }
            int[] qi = new int[r];
            float queryScale = LabelQueries.quantise(qc, qi);
            int dot = 0;
            for (int i = 0; i < r; i++) dot += qi[i] * (int) values[sgm][at + i];
            return LabelQueries.score(dot, queryScale, scales[sgm][row * cap + slot]);
        }

        /**
         * The score of candidate c of a row (q at qRow) by selection head h under a mode: the head's own (0), the
         * group's max (1), or its sum (2; the group's summed query where its heads share a label row), as the CPU
         * combines them, in floats.
         */
        float selectionScore(int sgm, int r, float[] q, int qRow, int h, int mode, int heads, int group,
                             int labelGroup, int hd, int sinks, int c) {
            int rows = heads / labelGroup, h0 = mode == 0 ? h : h / group * group, nh = mode == 0 ? 1 : group;
            boolean summed = mode == 2 && labelGroup == group && group > 1;
            float v = 0;
            for (int j = 0; j < (summed ? 1 : nh); j++) {
                float[] qc = new float[r];
                for (int i = 0; i < r; i++) {
                    qc[i] = q[qRow + (h0 + j) * hd + channels[sgm][(h0 + j) * r + i]];
                    for (int o = 1; summed && o < nh; o++) {
                        qc[i] += q[qRow + (h0 + o) * hd + channels[sgm][(h0 + o) * r + i]];
                    }
                }
                float t = score(sgm, r, rows, (h0 + j) / labelGroup, sinks + c, qc);
                v = j == 0 ? t : mode == 1 ? Math.max(v, t) : v + t;
            }
            return v;
        }
    }

    /**
     * A launch's rows (rowsSpec[p] = segment, candidates, budget, mode; no window) on the device, and ds's selection of
     * them (sparse_scores then sparse_topk: [rows * heads][maxK] slots), which the fused kernels must equal.
     */
    private record SelectionCase(int[] seg, CUdeviceptr q, CUdeviceptr segments, CUdeviceptr descriptors,
                                 int[] reference) {
        static SelectionCase of(int[][] rowsSpec, int[] segR, LabelCaches caches, float[] q, int bits, int cap,
                                int labelGroup, int heads, int kvHeads, int hd, int qStride, int sinks, int maxCand,
                                int maxK) {
            int rows = rowsSpec.length;
            int[] seg = new int[rows];
            List<SparseRowDescriptor> desc = new ArrayList<>();
            for (int p = 0; p < rows; p++) {
                seg[p] = rowsSpec[p][0];
                desc.add(new SparseRowDescriptor(p, rowsSpec[p][1], rowsSpec[p][2], sinks, 0, rowsSpec[p][3],
                        segR[seg[p]], bits, cap, false, labelGroup));
            }
            CUdeviceptr dq = upload(q), dseg = upload(seg), dsp = uploadRows(desc);
            CUdeviceptr unfused = upload(new int[rows * heads * maxK]);
            CUdeviceptr scores = gpu.alloc(4L * rows * heads * maxCand);
            SelectKernels.sparseScores(gpu, rows, scores, dq, caches.labelTable(), caches.channelTable(),
                    caches.scaleTable(), dseg, dsp, heads, hd, qStride, maxCand);
            SelectKernels.sparseTopk(gpu, rows, unfused, scores, dsp, heads, kvHeads, maxCand, maxK);
            return new SelectionCase(seg, dq, dseg, dsp, downloadInts(unfused, rows * heads * maxK));
        }
    }

    /**
     * sparse_select (dspp: scores in shared memory, one kernel) selects exactly what sparse_scores then sparse_topk
     * (ds) select, per head and per kv head (max, sum), with 8, 16 and 32 label channels (the unrolled paths where
     * the width has one: 16-bit at 8 and 16, 8-bit at 16 and 32, 4-bit at 16 and 32; a kv head's four rows of a
     * label row a head coalesced), 12 and 13 (the general one; 4-bit rows of odd r padded to a byte), budgets below
     * and above the candidates; and the selection is the top of the scores
     * computed on the CPU (every selected candidate scores at least every other one, within float rounding). 16-bit
     * labels, 8-bit ones (int8 values times a per-token, per-row fp16 scale, kept row-major) and 4-bit ones (int4, two
     * a byte, times such a scale); a label row a query head, or one a kv head serving its group (whose heads then share
     * their channels: channels=qk-group).
     */
    @ParameterizedTest(name = "{0}-bit labels, a label row for {1} heads")
    @CsvSource({"16, 1", "8, 1", "4, 1", "16, 4", "8, 4", "4, 4"})
    void fusedSelectionEqualsScoresThenTopK(int bits, int labelGroup) {
        Random rnd = new Random(21 + bits);
        int heads = 8, kvHeads = 2, group = 4, hd = 32, qStride = (heads + 2 * kvHeads) * hd, sinks = 4, cap = 5200;
        int[] segR = {16, 12, 32, 13, 8};
        int[][] rowsSpec = {{0, 1000, 7, 0}, {1, 37, 40, 1}, {0, 5000, 300, 2}, {1, 2049, 64, 0}, {0, 3001, 1000, 1},
                {2, 1500, 100, 0}, {3, 777, 50, 1}, {2, 4097, 256, 2}, {3, 2500, 300, 2}, {2, 999, 2000, 1},
                {4, 1800, 120, 1}, {4, 901, 60, 2}};
        int rows = rowsSpec.length, maxCand = 5120, maxK = 1024;
        LabelCaches caches = LabelCaches.random(rnd, bits, segR, cap, heads, hd, labelGroup);
        float[] q = random(rnd, rows * qStride, 1);
        SelectionCase sc = SelectionCase.of(rowsSpec, segR, caches, q, bits, cap, labelGroup, heads, kvHeads, hd,
                qStride, sinks, maxCand, maxK);
        CUdeviceptr dq = sc.q(), dl = caches.labelTable(), dch = caches.channelTable();
        CUdeviceptr dsc = caches.scaleTable(), dseg = sc.segments(), dsp = sc.descriptors();
        int[] seg = sc.seg(), a = sc.reference();
        // the one-block kernel at each block size CudaOps.selectThreads may choose; near-normal scores: selections
        // that guess are served from the guess's list
        CUdeviceptr paths = upload(new int[2]);
        for (int threads : new int[]{1024, 512, 256}) {
            CUdeviceptr fused = upload(new int[rows * heads * maxK]);
            SelectKernels.sparseSelect(gpu, rows, threads, maxCand, fused, dq, dl, dch, dsc, dseg, dsp, heads, kvHeads,
                    hd, qStride, maxK, paths);
            checkSelection(a, downloadInts(fused, rows * heads * maxK), rowsSpec, seg, segR, caches, q, heads,
                    group, labelGroup, hd, qStride, sinks, maxK, "one block of " + threads + " threads a selection");
        }
        int[] taken = downloadInts(paths, 2);
        assertTrue(taken[0] > 0, "selections from a guess's list " + taken[0] + ", fell back " + taken[1]);
        // on Hopper the cluster kernels, of 8 blocks and of 2
        for (int cluster : gpu.computeMajor() >= 9 ? new int[]{8, 2} : new int[0]) {
            CUdeviceptr clustered = upload(new int[rows * heads * maxK]);
            CudaOps.launchSelect(gpu, cluster, rows * heads, clustered, dq, dl, dch, dsc, dseg, dsp, rows, heads,
                    kvHeads, hd, qStride, maxCand, maxK);
            checkSelection(a, downloadInts(clustered, rows * heads * maxK), rowsSpec, seg, segR, caches, q,
                    heads, group, labelGroup, hd, qStride, sinks, maxK, "clusters of " + cluster + " blocks");
        }
    }

    /**
     * sparse_select's guessed threshold where it misses: 98% of the tokens' labels 0, so most candidates tie at a
     * score of 0 and about 2% stand out; the normal quantile's guess then lies above 0 and leaves fewer than k
     * candidates above it wherever k is more than 2% of them (the selection falls back to the radix select over every
     * candidate, ties to the lower candidate), a short list elsewhere; either way the selection is sparse_topk's and
     * the top of the CPU's scores.
     */
    @ParameterizedTest(name = "{0}-bit labels")
    @CsvSource({"16", "8", "4"})
    void selectionWhoseGuessMissesIsExact(int bits) {
        int[] taken = guessedSelection(new Random(31 + bits), bits, 0.98, false, "skewed scores");
        assertTrue(taken[1] > 0, "selections that fell back after a guess: " + taken[1] + " (from a list " + taken[0]
                + ")");
    }

    /**
     * sparse_select on rows of random shapes (candidates 1 to 5,000, budgets 1 to past the candidates, every mode;
     * 4-, 8- and 16-bit labels of 16 channels), at each block size: the guess's list and its fall-back meet odd sizes
     * and budgets near a quarter of the candidates (where the guess stops); the selection is sparse_topk's and the top
     * of the CPU's scores.
     */
    @ParameterizedTest(name = "{0}-bit labels")
    @CsvSource({"4", "8", "16"})
    void randomShapesSelectAsTheRadixSelect(int bits) {
        Random rnd = new Random(41 + bits);
        int heads = 8, kvHeads = 2, group = 4, hd = 32, qStride = (heads + 2 * kvHeads) * hd, sinks = 4, cap = 5200;
        int[] segR = {16, 16, 16};
        int rows = 24, maxCand = 5120, maxK = 1056;
        int[][] rowsSpec = new int[rows][];
        for (int p = 0; p < rows; p++) {
            int n = 1 + rnd.nextInt(5000);
            int k = 1 + rnd.nextInt(Math.min(maxK, p % 3 == 0 ? n / 4 + 2 : n + 40));
            rowsSpec[p] = new int[]{p % segR.length, n, k, rnd.nextInt(3)};
        }
        LabelCaches caches = LabelCaches.random(rnd, bits, segR, cap, heads, hd, 1);
        float[] q = random(rnd, rows * qStride, 1);
        SelectionCase sc = SelectionCase.of(rowsSpec, segR, caches, q, bits, cap, 1, heads, kvHeads, hd, qStride, sinks,
                maxCand, maxK);
        for (int threads : new int[]{1024, 512, 256}) {
            CUdeviceptr fused = upload(new int[rows * heads * maxK]);
            SelectKernels.sparseSelect(gpu, rows, threads, maxCand, fused, sc.q(), caches.labelTable(),
                    caches.channelTable(), caches.scaleTable(), sc.segments(), sc.descriptors(), heads, kvHeads, hd,
                    qStride, maxK, null);
            checkSelection(sc.reference(), downloadInts(fused, rows * heads * maxK), rowsSpec, sc.seg(), segR,
                    caches, q, heads, group, 1, hd, qStride, sinks, maxK,
                    "random shapes, " + threads + " threads");
        }
    }

    /**
     * Groups other than four (two query heads a kv head, and eight) take score_candidates' path for any head count, and
     * label channels 24, 48 and 64 LabelCache::score's general loops for each head of a group (8-bit: 16-byte loads or
     * byte by byte; 4-bit: words of eight); 8- and 4-bit labels, every mode: sparse_select's selection is sparse_topk's
     * and the top of the CPU's integer scores.
     */
    @ParameterizedTest(name = "{0}-bit labels, groups of {1}")
    @CsvSource({"4, 2", "4, 8", "8, 2", "8, 8"})
    void otherGroupsAndLabelWidthsSelectAsTheRadixSelect(int bits, int group) {
        Random rnd = new Random(51 + bits + group);
        int heads = 8, kvHeads = heads / group, hd = 64, qStride = (heads + 2 * kvHeads) * hd, sinks = 4, cap = 3400;
        int[] segR = {24, 48, 64, 16};
        int[][] rowsSpec = {{0, 3000, 200, 1}, {1, 1500, 100, 2}, {2, 777, 60, 0}, {3, 2049, 300, 1},
                {1, 999, 1200, 1}, {2, 3100, 64, 2}, {3, 1234, 77, 2}, {0, 640, 33, 0}};
        int rows = rowsSpec.length, maxCand = 3328, maxK = 1216;
        LabelCaches caches = LabelCaches.random(rnd, bits, segR, cap, heads, hd, 1);
        float[] q = random(rnd, rows * qStride, 1);
        SelectionCase sc = SelectionCase.of(rowsSpec, segR, caches, q, bits, cap, 1, heads, kvHeads, hd, qStride, sinks,
                maxCand, maxK);
        CUdeviceptr fused = upload(new int[rows * heads * maxK]);
        SelectKernels.sparseSelect(gpu, rows, 256, maxCand, fused, sc.q(), caches.labelTable(), caches.channelTable(),
                caches.scaleTable(), sc.segments(), sc.descriptors(), heads, kvHeads, hd, qStride, maxK, null);
        checkSelection(sc.reference(), downloadInts(fused, rows * heads * maxK), rowsSpec, sc.seg(), segR, caches, q,
                heads, group, 1, hd, qStride, sinks, maxK, "groups of " + group);
    }

    /**
     * sparse_select's list where the scores tie often: 4-bit labels and a query of ones make every score a sum of 16
     * integers in +-7 times one of four scales (a few hundred values over thousands of candidates), so the k-th key
     * and the guess fall among ties; the list keeps them in candidate order and the selection is sparse_topk's.
     */
    @Test
    void guessedListKeepsTiesInCandidateOrder() {
        int[] taken = guessedSelection(new Random(37), 4, 0, true, "tied scores");
        assertTrue(taken[0] > 0, "selections from a guess's list: " + taken[0] + " (fell back " + taken[1] + ")");
    }

    /**
     * Selections of 4-bit, 8-bit or 16-bit label caches ({@code zeroShare} of their tokens' labels 0; a query of ones
     * where {@code unitQuery}) by sparse_select at 256 threads, checked against sparse_scores then sparse_topk and the
     * CPU's scores; returns sparse_select's counts of selections served from a guess's list and fallen back after one.
     */
    private static int[] guessedSelection(Random rnd, int bits, double zeroShare, boolean unitQuery, String what) {
        int heads = 8, kvHeads = 2, group = 4, hd = 32, qStride = (heads + 2 * kvHeads) * hd, sinks = 4, cap = 5200;
        int[] segR = {16, 16};
        int[][] rowsSpec = {{0, 5000, 300, 1}, {1, 1000, 7, 0}, {0, 4097, 200, 2}, {1, 3001, 100, 1},
                {0, 2049, 64, 0}, {1, 5000, 600, 1}};
        int rows = rowsSpec.length, maxCand = 5120, maxK = 640;
        LabelCaches caches = LabelCaches.random(rnd, bits, segR, cap, heads, hd, 1, zeroShare);
        float[] q = random(rnd, rows * qStride, 1);
        if (unitQuery) Arrays.fill(q, 1f);
        SelectionCase sc = SelectionCase.of(rowsSpec, segR, caches, q, bits, cap, 1, heads, kvHeads, hd, qStride, sinks,
                maxCand, maxK);
        CUdeviceptr fused = upload(new int[rows * heads * maxK]), paths = upload(new int[2]);
        SelectKernels.sparseSelect(gpu, rows, 256, maxCand, fused, sc.q(), caches.labelTable(), caches.channelTable(),
                caches.scaleTable(), sc.segments(), sc.descriptors(), heads, kvHeads, hd, qStride, maxK, paths);
        checkSelection(sc.reference(), downloadInts(fused, rows * heads * maxK), rowsSpec, sc.seg(), segR,
                caches, q, heads, group, 1, hd, qStride, sinks, maxK, what);
        return downloadInts(paths, 2);
    }

    /**
     * sparse_scores' scores are the CPU reference's floats, bit for bit (kv/SparseKvCache#select: 16-bit labels per
     * channel in order, s += q_c * label, each product and sum rounded to float, no fused multiply-add; 8- and 4-bit
     * labels as kv/LabelQueries scores them, the integer dot product with the int8 query times the two scales; a mean
     * selection over label rows a kv head scores its group's summed query, q_c of the heads added in order, on the
     * group's first head and 0 on the others): 16-, 8- and 4-bit labels, label channels 16, 32, 12, 13 and 24 (every
     * load width of LabelCache::score), a label row a query head or a kv head.
     */
    @ParameterizedTest(name = "{0}-bit labels, a label row for {1} heads")
    @CsvSource({"16, 1", "8, 1", "4, 1", "16, 4", "8, 4", "4, 4"})
    void labelScoresEqualTheCpusBitForBit(int bits, int labelGroup) {
        Random rnd = new Random(23 + bits + labelGroup);
        int heads = 8, group = 4, hd = 64, qStride = heads * hd + 3, sinks = 3, cap = 700;
        int[] segR = {16, 32, 12, 13, 24};
        int[][] rowsSpec = {{0, 600, 0}, {1, 333, 2}, {2, 697, 1}, {3, 1, 2}, {4, 250, 0}, {3, 511, 0}, {1, 64, 1}};
        int rows = rowsSpec.length, maxCand = 697;
        LabelCaches caches = LabelCaches.random(rnd, bits, segR, cap, heads, hd, labelGroup);
        float[] q = random(rnd, rows * qStride, 1);
        int[] seg = new int[rows];
        List<SparseRowDescriptor> desc = new ArrayList<>();
        for (int p = 0; p < rows; p++) {
            seg[p] = rowsSpec[p][0];
            desc.add(new SparseRowDescriptor(p, rowsSpec[p][1], 1, sinks, 0, rowsSpec[p][2], segR[seg[p]], bits, cap,
                    false, labelGroup));
        }
        CUdeviceptr scores = poisoned(rows * heads * maxCand);
        SelectKernels.sparseScores(gpu, rows, scores, upload(q), caches.labelTable(), caches.channelTable(),
                caches.scaleTable(), upload(seg), uploadRows(desc), heads, hd, qStride, maxCand);
        float[] got = download(scores, rows * heads * maxCand);
        int rowsOfLabels = heads / labelGroup;
        for (int p = 0; p < rows; p++) {
            int sgm = seg[p], r = segR[sgm], n = rowsSpec[p][1], mode = rowsSpec[p][2];
            boolean summed = mode == 2 && labelGroup > 1;
            int[] ch = caches.channels()[sgm];
            for (int h = 0; h < heads; h++) {
                boolean scored = !summed || h % group == 0;   // a summed query's score is its group's first head's
                float[] qc = new float[r];
                for (int i = 0; scored && i < r; i++) {
                    qc[i] = q[p * qStride + h * hd + ch[h * r + i]];
                    if (summed) for (int j = 1; j < group; j++) qc[i] += q[p * qStride + (h + j) * hd + ch[h * r + i]];
                }
                for (int c = 0; c < n; c++) {
                    float want = scored ? caches.score(sgm, r, rowsOfLabels, h / labelGroup, sinks + c, qc) : 0f;
                    float g = got[(p * heads + h) * maxCand + c];
                    if (Float.floatToIntBits(want) != Float.floatToIntBits(g)) {
                        fail("row " + p + " head " + h + " candidate " + c + " r " + r
                                + " mode " + mode + ": GPU " + g + ", CPU " + want);
                    }
                }
            }
        }
    }

    /** b (a fused selection) equals a (scores then top-k) and is the top of the scores computed on the CPU. */
    private static void checkSelection(int[] a, int[] b, int[][] rowsSpec, int[] seg, int[] segR, LabelCaches caches,
                                       float[] q, int heads, int group, int labelGroup, int hd, int qStride, int sinks,
                                       int maxK, String kernel) {
        for (int p = 0; p < rowsSpec.length; p++) {
            int sgm = seg[p], r = segR[sgm], n = rowsSpec[p][1], k = Math.min(rowsSpec[p][2], n), mode = rowsSpec[p][3];
            for (int h = 0; h < heads; h++) {
                int from = (p * heads + h) * maxK;
                String what = kernel + ": row " + p + " head " + h + " mode " + mode + " r " + r;
                assertArrayEquals(Arrays.copyOfRange(a, from, from + k), Arrays.copyOfRange(b, from, from + k), what);
                // the CPU's scores of the selection's heads (one head, or the group's combined)
                float[] cpu = new float[n];
                for (int c = 0; c < n; c++) {
                    cpu[c] = caches.selectionScore(sgm, r, q, p * qStride, h, mode, heads, group, labelGroup, hd, sinks,
                            c);
                }
                boolean[] picked = new boolean[n];
                float lowestPicked = Float.MAX_VALUE, highestLeft = -Float.MAX_VALUE;
                for (int i = 0; i < k; i++) {
                    int c = b[from + i] - sinks;
                    assertTrue(c >= 0 && c < n && !picked[c] && (i == 0 || b[from + i] > b[from + i - 1]),
                            what + ": slot " + b[from + i]);
                    picked[c] = true;
                    lowestPicked = Math.min(lowestPicked, cpu[c]);
                }
                for (int c = 0; c < n; c++) if (!picked[c]) highestLeft = Math.max(highestLeft, cpu[c]);
                assertTrue(lowestPicked >= highestLeft,
                        what + ": picked down to " + lowestPicked + ", left " + highestLeft);
            }
        }
    }
}
