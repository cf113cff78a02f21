package io.dsflow.engine.cuda;

import io.dsflow.engine.kv.CpuAttention;
import io.dsflow.engine.kv.KvStore;
import jcuda.driver.CUdeviceptr;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The dense attention of a step against the CPU's causal attention, launched as the forward pass launches it
 * ({@link CudaOps#attention}): attention_prefill.cu's tiles, attention.cu's split kernels (rows, gqa, pipelined) and
 * their merge, over caches appended by kvcache.cu's kv_append_rope.
 */
class AttentionKernelsTest extends KernelTestSupport {
    /**
     * Two sequences in one launch, as a forward pass batches them: the first's last {@code rows} tokens attend
     * causally over its cache of {@code context} tokens (a prefill tail), the second's one token over
     * {@code context / 2 + 3} (a decode step); the keys and values are appended through kv_append_rope first (no
     * rotation).
     */
    @ParameterizedTest(name = "head_dim {0}, rows {1}, context {2}, heads {3}/{4}")
    @CsvSource({"32,1,97,6,2", "64,3,97,6,2", "128,1,700,6,2", "128,97,97,6,2", "32,13,600,6,2", "128,2,5000,6,2",
            "32,1,97,8,2", "128,3,700,16,4", "128,2,5000,28,4", "64,5,300,16,2", "128,1,300,8,4", "128,200,1000,32,8",
            "64,130,300,16,2", "128,16,16,8,8", "128,63,5000,8,2", "32,40,300,8,2", "96,33,200,6,2",
            "32,3,301,4,2"})
    void appendAndAttentionMatchCpu(int d, int rows, int context, int heads, int kvHeads) {
        Random r = new Random(d * 7L + rows);
        int kvDim = kvHeads * d;
        int[] lengths = {context, context / 2 + 3}, rowsPerSeq = {rows, 1};
        int totalRows = rows + 1;
        KvStore[] stores = new KvStore[2];
        CUdeviceptr[] kc = new CUdeviceptr[2], vc = new CUdeviceptr[2];
        float[] kRows = new float[totalRows * kvDim], vRows = new float[totalRows * kvDim];
        int[] seg = new int[totalRows], slot = new int[totalRows], len = new int[totalRows];
        int row = 0;
        for (int s = 0; s < 2; s++) {
            stores[s] = new KvStore(1, kvHeads, d, 16);
            float[] kAll = new float[lengths[s] * kvDim], vAll = new float[lengths[s] * kvDim];
            for (int t = 0; t < lengths[s]; t++) {
                float[] k = random(r, kvDim, 1), v = random(r, kvDim, 1);
                for (int i = 0; i < kvDim; i++) {
                    k[i] = bf(k[i]);
                    v[i] = bf(v[i]);
                }
                stores[s].append(0, k, v);
                boolean appendedByKernel = t >= lengths[s] - rowsPerSeq[s];
                if (appendedByKernel) {
                    System.arraycopy(k, 0, kRows, row * kvDim, kvDim);
                    System.arraycopy(v, 0, vRows, row * kvDim, kvDim);
                    seg[row] = s;
                    slot[row] = t;
                    len[row] = t + 1;
                    row++;
                } else {
                    System.arraycopy(k, 0, kAll, t * kvDim, kvDim);
                    System.arraycopy(v, 0, vAll, t * kvDim, kvDim);
                }
            }
            kc[s] = uploadBf16(kAll);
            vc[s] = uploadBf16(vAll);
        }
        CUdeviceptr kTable = pointerTable(kc[0], kc[1]), vTable = pointerTable(vc[0], vc[1]);
        CUdeviceptr dSeg = upload(seg), dSlot = upload(slot), dLen = upload(len);
        float[] kvRows = new float[totalRows * 2 * kvDim];   // rows [k | v], as the fused projection lays them out
        for (int m = 0; m < totalRows; m++) {
            System.arraycopy(kRows, m * kvDim, kvRows, m * 2 * kvDim, kvDim);
            System.arraycopy(vRows, m * kvDim, kvRows, m * 2 * kvDim + kvDim, kvDim);
        }
        // no query heads in these rows (H = 0) and no rotation (no inverse frequencies)
        KvAppendKernels.kvAppendRope(gpu, totalRows, upload(kvRows), dSlot, null, kTable, vTable, dSeg, dSlot, 0,
                kvHeads, d, 2 * kvDim);
        float[] q = random(r, totalRows * heads * d, 1);
        float scale = (float) (1 / Math.sqrt(d));
        float[] ref = new float[totalRows * heads * d];
        for (int s = 0, r0 = 0; s < 2; r0 += rowsPerSeq[s], s++) {
            float[][] qr = new float[rowsPerSeq[s]][heads * d], outRef = new float[rowsPerSeq[s]][heads * d];
            for (int m = 0; m < rowsPerSeq[s]; m++) System.arraycopy(q, (r0 + m) * heads * d, qr[m], 0, heads * d);
            CpuAttention.causal(stores[s], 0, qr, 0, rowsPerSeq[s], outRef, heads, scale);
            for (int m = 0; m < rowsPerSeq[s]; m++) {
                System.arraycopy(outRef[m], 0, ref, (r0 + m) * heads * d, heads * d);
            }
        }
        // the first sequence's rows go through the tensor-core prefill tiles where the forward pass would send them
        boolean tiled = rows >= CudaOps.PREFILL_TILE_MIN_ROWS && CudaOps.hasPrefillAttention(gpu, d);
        List<Integer> tiles = new ArrayList<>();
        int[] rowsOf = new int[totalRows];
        int decodeRows = 0;
        for (int i = 0; i < rows; i += tiled ? CudaOps.PREFILL_TILE_ROWS : 1) {
            if (tiled) tiles.addAll(List.of(0, i, Math.min(CudaOps.PREFILL_TILE_ROWS, rows - i)));
            else rowsOf[decodeRows++] = i;
        }
        rowsOf[decodeRows++] = rows;
        int chunk = rows % 2 == 0 ? 32 : rows % 3 == 0 ? 64 : 128;
        int slots = CudaOps.splitSlots(gpu, heads, kvHeads, d, chunk), splits = (context + slots - 1) / slots;
        CUdeviceptr dq = upload(q), dTiles = upload(tiles.stream().mapToInt(Integer::intValue).toArray());
        CUdeviceptr dRowsOf = upload(rowsOf);
        CUdeviceptr partials = gpu.alloc((long) decodeRows * heads * splits * (d + 2) * 4);
        int n = totalRows * heads * d;
        CUdeviceptr out = poisoned(n);
        CudaOps.attention(gpu, out, null, dq, heads * d, kTable, vTable, dSeg, dLen, tiles.size() / 3, dTiles,
                decodeRows, dRowsOf, partials, splits, chunk, null, heads, kvHeads, d);
        float[] got = download(out, n);
        double err = relError(got, ref);
        // the tensor-core path rounds q and the probabilities to bf16; the split kernels keep them in f32
        assertTrue(err < (tiled ? 1e-2 : 1e-4), "relative error " + err + (tiled ? " (prefill tiles)" : ""));
        // the output product's bf16 operand instead: the same values, each rounded to bf16
        CUdeviceptr outBf16 = poisonedBf16(n);
        CudaOps.attention(gpu, null, outBf16, dq, heads * d, kTable, vTable, dSeg, dLen, tiles.size() / 3, dTiles,
                decodeRows, dRowsOf, partials, splits, chunk, null, heads, kvHeads, d);
        float[] gotBf16 = downloadBf16(outBf16, n);
        for (int i = 0; i < n; i++) assertEquals(bf(got[i]), gotBf16[i], "bf16 output " + i);
        if (!CudaOps.densePipelined(gpu, heads, kvHeads, d)) return;
        // the decode rows through attention_pipelined: one split, a few, the backend's wave; each launch twice (the
        // chunk counters it shares between a row's splits must be left zero for the next)
        int claimInts = 2 * decodeRows * kvHeads;
        CUdeviceptr claims = upload(new int[claimInts]);
        int wave = CudaOps.densePipelinedSplits(gpu, heads, kvHeads, d, decodeRows, context);
        for (int pipeSplits : new int[]{1, 3, wave}) {
            CUdeviceptr pipeParts = gpu.alloc((long) decodeRows * heads * pipeSplits * (d + 2) * 4);
            for (int run = 0; run < 2; run++) {   // the second run writes bf16
                out = run == 0 ? poisoned(n) : null;
                outBf16 = run == 0 ? null : poisonedBf16(n);
                CudaOps.attention(gpu, out, outBf16, dq, heads * d, kTable, vTable, dSeg, dLen, tiles.size() / 3,
                        dTiles, decodeRows, dRowsOf, pipeParts, pipeSplits, chunk, claims, heads, kvHeads, d);
                double pipeErr = relError(run == 0 ? download(out, n) : downloadBf16(outBf16, n), ref);
                // tensor cores again, with q and the probabilities in three bf16 parts: f32 precision (and the bf16
                // output's rounding, 2^-9 relative)
                assertTrue(pipeErr < (tiled ? 1e-2 : run == 0 ? 1e-4 : 4e-3), "pipelined, " + pipeSplits
                        + " splits, run " + run + ": relative error " + pipeErr);
                assertArrayEquals(new int[claimInts], downloadInts(claims, claimInts), "counters left zero");
            }
            if (pipeSplits != 1) continue;
            // one split writes the outputs itself (no merge): what its partial merged would be, bit for bit (a
            // single block a (row, kv head) takes its chunks in order, so both runs sum alike)
            CUdeviceptr direct = poisoned(n), merged = poisoned(n);
            AttentionKernels.attentionPipelined(gpu, d, decodeRows, pipeParts, dq, kTable, vTable, dSeg, dLen, dRowsOf,
                    heads, kvHeads, 1, scale, heads * d, claims, direct, null);
            AttentionKernels.attentionPipelined(gpu, d, decodeRows, pipeParts, dq, kTable, vTable, dSeg, dLen, dRowsOf,
                    heads, kvHeads, 1, scale, heads * d, claims, null, null);
            AttentionKernels.attentionMerge(gpu, decodeRows, merged, null, pipeParts, dRowsOf, heads, d, 1);
            float[] a = download(direct, n), b = download(merged, n);
            for (int m = 0; m < decodeRows; m++) {
                int at = rowsOf[m] * heads * d;
                assertArrayEquals(Arrays.copyOfRange(b, at, at + heads * d), Arrays.copyOfRange(a, at, at + heads * d),
                        "one split's outputs against its partial merged, decode row " + m);
            }
        }
    }

    /**
     * attention_merge alone, against a double-precision merge of random partials with empty splits (l = 0) among
     * them: pairs few enough that a block's warps share a pair's splits (the first rows) and many enough for a warp a
     * pair (the last), head sizes that are not multiples of 32, f32 and bf16 outputs, rows scattered by rowsOf.
     */
    @ParameterizedTest(name = "rows {0}, heads {1}, head_dim {2}, splits {3}")
    @CsvSource({"1,32,128,33", "1,8,64,2048", "3,5,96,7", "2,6,80,40", "1,4,256,5", "300,8,128,1", "300,8,128,3",
            "97,17,64,9", "200,12,256,2", "150,5,40,70"})
    void mergeMatchesCpu(int rows, int heads, int d, int splits) {
        Random r = new Random(rows * 31L + heads * 7L + d + splits);
        int pairs = rows * heads, n = rows * heads * d;
        float[] partials = new float[pairs * splits * (d + 2)];
        for (int pair = 0; pair < pairs; pair++) {
            for (int s = 0; s < splits; s++) {
                int at = (pair * splits + s) * (d + 2);
                boolean empty = s > 0 && r.nextInt(5) == 0;   // a split past a row's slots (never all of a pair's)
                for (int c = 0; c < d; c++) partials[at + c] = empty ? 0f : (float) r.nextGaussian();
                partials[at + d] = empty ? Float.NEGATIVE_INFINITY : (float) (4 * r.nextGaussian());
                partials[at + d + 1] = empty ? 0f : 0.5f + 10 * r.nextFloat();
            }
        }
        int[] rowsOf = new int[rows];
        for (int p = 0; p < rows; p++) rowsOf[p] = rows - 1 - p;
        float[] ref = new float[n];
        for (int pair = 0; pair < pairs; pair++) {
            double m = Double.NEGATIVE_INFINITY, l = 0;
            double[] o = new double[d];
            for (int s = 0; s < splits; s++) {
                int at = (pair * splits + s) * (d + 2);
                if (partials[at + d + 1] > 0) m = Math.max(m, partials[at + d]);
            }
            for (int s = 0; s < splits; s++) {
                int at = (pair * splits + s) * (d + 2);
                if (partials[at + d + 1] == 0) continue;
                double w = Math.exp(partials[at + d] - m);
                l += partials[at + d + 1] * w;
                for (int c = 0; c < d; c++) o[c] += partials[at + c] * w;
            }
            int row = rowsOf[pair / heads], h = pair % heads;
            for (int c = 0; c < d; c++) ref[row * heads * d + h * d + c] = (float) (o[c] / l);
        }
        CUdeviceptr dPartials = upload(partials), dRowsOf = upload(rowsOf);
        CUdeviceptr out = poisoned(n), outBf16 = poisonedBf16(n);
        AttentionKernels.attentionMerge(gpu, rows, out, null, dPartials, dRowsOf, heads, d, splits);
        AttentionKernels.attentionMerge(gpu, rows, null, outBf16, dPartials, dRowsOf, heads, d, splits);
        double err = relError(download(out, n), ref), errBf16 = relError(downloadBf16(outBf16, n), ref);
        assertTrue(err < 1e-5, "f32: relative error " + err);
        assertTrue(errBf16 < 4e-3, "bf16: relative error " + errBf16);
    }
}
