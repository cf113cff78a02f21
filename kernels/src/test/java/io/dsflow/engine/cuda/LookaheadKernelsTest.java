package io.dsflow.engine.cuda;

import io.dsflow.engine.cpu.CpuOps;
import io.dsflow.engine.model.RopeConfig;
import jcuda.driver.CUdeviceptr;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** lookahead.cu's kernels against the CPU (CpuBackend.predictNextQueries' arithmetic, plain copies). */
class LookaheadKernelsTest extends KernelTestSupport {
    /**
     * predict_label_queries = the label channels of RoPE(W_q rmsnorm(x) + b) (CpuBackend.predictNextQueries'
     * arithmetic), with RMSNorm and without a norm (post-norm), for rows in another order than their descriptors, each
     * read at its own row of the residual stream; gather_selected_rows copies each shared selection's rows of a store
     * in pinned host memory to the row's device stage and rewrites the selection to the stage's indices.
     */
    @Test
    void lookaheadPredictsTheLabelQueriesAndGathersTheSelectedRowsAsTheCpu() {
        Random r = new Random(21);
        int heads = 4, kvHeads = 2, d = 64, hidden = 136, rows = 5, rLabels = 11, qDim = heads * d;
        int[] descRows = {3, 0, 4};   // P = 3 look-ahead rows: their batch rows
        int p = descRows.length;
        float[] x = random(r, rows * hidden, 1), w = random(r, (qDim + 2 * kvHeads * d) * hidden, 0.05f);
        float[] bias = random(r, qDim, 0.1f), normW = random(r, hidden, 1);
        int[] pos = {7, 1, 900, 33, 4097};
        int[] seg = {0, 1, 0, 1, 1};   // two segments, each with its own channels
        int[][] channels = new int[2][heads * rLabels];
        for (int[] ch : channels) {
            for (int h = 0; h < heads; h++) {
                List<Integer> perm = new ArrayList<>();
                for (int c = 0; c < d; c++) perm.add(c);
                Collections.shuffle(perm, r);
                for (int i = 0; i < rLabels; i++) ch[h * rLabels + i] = perm.get(i);
            }
        }
        int maxK = 64, k = 29, cap = 41;
        List<SparseRowDescriptor> desc = new ArrayList<>();
        for (int i = 0; i < p; i++) {   // 37 candidates, window 4, mean selection, 16-bit labels, the store on the host
            desc.add(new SparseRowDescriptor(descRows[i], 37, k, 0, 4, 2, rLabels, 16, cap, true, 0));
        }
        float[] inv = RopeConfig.defaults(500000).inverseFrequencies(d);
        CUdeviceptr chTable = pointerTable(upload(channels[0]), upload(channels[1]));
        CUdeviceptr dx = upload(x), dw = uploadBf16(w), db = uploadBf16(bias), dn = uploadBf16(normW);
        CUdeviceptr dsp = uploadRows(desc), dseg = upload(seg), dpos = upload(pos), dinv = upload(inv);
        for (boolean norm : new boolean[]{true, false}) {
            CUdeviceptr q = poisoned(rows * qDim);
            LookaheadKernels.predictLabelQueries(gpu, p, rLabels, q, dx, norm ? dn : null, null, 1e-5f, dw, db, dpos,
                    dinv, chTable, dseg, dsp, heads, d, hidden);
            float[] got = download(q, rows * qDim);
            for (int i = 0; i < p; i++) {
                int row = descRows[i];
                float[] xn = new float[hidden], ref = new float[qDim];
                float[] xi = Arrays.copyOfRange(x, row * hidden, (row + 1) * hidden);
                float[] nw = new float[hidden];
                for (int j = 0; j < hidden; j++) nw[j] = bf(normW[j]);
                if (norm) CpuOps.rmsNorm(xi, nw, 1e-5f, xn);
                else xn = xi;
                for (int o = 0; o < qDim; o++) {
                    double acc = bf(bias[o]);
                    for (int j = 0; j < hidden; j++) acc += bf(w[o * hidden + j]) * (double) xn[j];
                    ref[o] = (float) acc;
                }
                CpuOps.rope(ref, heads, d, pos[row], inv);
                for (int h = 0; h < heads; h++) {
                    for (int c = 0; c < d; c++) {
                        float v = got[row * qDim + h * d + c];
                        boolean label = false;
                        for (int l = 0; l < rLabels; l++) label |= channels[seg[row]][h * rLabels + l] == c;
                        if (!label) {
                            assertTrue(Float.isNaN(v),
                                    "only label channels are written: row " + row + " head " + h + " channel " + c);
                        } else {
                            assertEquals(ref[h * d + c], v, 2e-4 * (1 + Math.abs(ref[h * d + c])),
                                    "norm " + norm + " row " + row + " head " + h + " channel " + c);
                        }
                    }
                }
            }
        }
        // gather: each segment's store [cap][kvHeads][d] in host memory; a selection per (row, kv head) at its first
        // head
        int kvDim = kvHeads * d, g = heads / kvHeads;
        float[][] keys = new float[2][], values = new float[2][];
        CUdeviceptr[] kStores = new CUdeviceptr[2], vStores = new CUdeviceptr[2];
        CUdeviceptr[] stageK = new CUdeviceptr[2], stageV = new CUdeviceptr[2];
        for (int s = 0; s < 2; s++) {
            keys[s] = random(r, cap * kvDim, 1);
            values[s] = random(r, cap * kvDim, 1);
            kStores[s] = onHost(uploadBf16(keys[s]), cap * kvDim * 2L);
            vStores[s] = onHost(uploadBf16(values[s]), cap * kvDim * 2L);
            stageK[s] = uploadBf16(new float[maxK * kvDim]);
            stageV[s] = uploadBf16(new float[maxK * kvDim]);
        }
        int[] selected = new int[p * heads * maxK];
        for (int i = 0; i < selected.length; i++) selected[i] = r.nextInt(cap);
        CUdeviceptr dsel = upload(selected);
        int[] rowsOfSegment = {0, 1};   // the gather reads descriptors 0 and 1 (rows 3 and 0: segments 1 and 0)
        LookaheadKernels.gatherSelectedRows(gpu, 3, dsel, pointerTable(kStores), pointerTable(vStores),
                pointerTable(stageK), pointerTable(stageV), dseg, dsp, 2, heads, kvHeads, d, maxK);
        int[] after = downloadInts(dsel, selected.length);
        for (int i : rowsOfSegment) {
            int s = seg[descRows[i]];
            float[] gotK = downloadBf16(stageK[s], maxK * kvDim), gotV = downloadBf16(stageV[s], maxK * kvDim);
            for (int kv = 0; kv < kvHeads; kv++) {
                int at = (i * heads + kv * g) * maxK;
                for (int j = 0; j < maxK; j++) {
                    assertEquals(j < k ? j : selected[at + j], after[at + j], "selection row " + i + " kv head " + kv);
                    if (j >= k) continue;
                    for (int c = 0; c < d; c++) {
                        int src = (selected[at + j] * kvHeads + kv) * d + c, dst = (j * kvHeads + kv) * d + c;
                        assertEquals(bf(keys[s][src]), gotK[dst], "key row " + j);
                        assertEquals(bf(values[s][src]), gotV[dst], "value row " + j);
                    }
                }
            }
        }
    }
}
