package io.dsflow.engine.cuda;

import io.dsflow.engine.cpu.CpuOps;
import io.dsflow.engine.kv.CpuAttention;
import io.dsflow.engine.kv.KvStore;
import jcuda.Pointer;
import jcuda.driver.CUdeviceptr;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.api.Test;

import java.util.Random;

import static jcuda.driver.JCudaDriver.cuMemcpyDtoH;
import static jcuda.driver.JCudaDriver.cuMemcpyHtoD;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * Every CUDA kernel against the CPU backend on random inputs of odd sizes; outputs are poisoned with NaN first, so an
 * element the kernel does not write fails the comparison. Skipped where there is no GPU.
 */
class CudaKernelTest {
    static CudaRuntime gpu;

    @BeforeAll
    static void open() {
        assumeTrue(CudaRuntime.available(), "no CUDA: " + CudaRuntime.unavailableReason());
        gpu = CudaRuntime.open(0);
    }

    @AfterAll
    static void close() {
        if (gpu != null) gpu.close();
    }

    static float[] random(Random r, int n, float scale) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float) r.nextGaussian() * scale;
        return x;
    }

    static float bf(float f) {
        return Float.intBitsToFloat(CudaBackend.toBf16(f) << 16);
    }

    static CUdeviceptr upload(float[] x) {
        CUdeviceptr p = gpu.alloc(x.length * 4L);
        cuMemcpyHtoD(p, Pointer.to(x), x.length * 4L);
        return p;
    }

    static CUdeviceptr uploadBf16(float[] x) {
        short[] b = new short[x.length];
        for (int i = 0; i < x.length; i++) b[i] = CudaBackend.toBf16(x[i]);
        CUdeviceptr p = gpu.alloc(x.length * 2L);
        cuMemcpyHtoD(p, Pointer.to(b), x.length * 2L);
        return p;
    }

    static CUdeviceptr poisoned(int n) {
        float[] nan = new float[n];
        java.util.Arrays.fill(nan, Float.NaN);
        return upload(nan);
    }

    static float[] download(CUdeviceptr p, int n) {
        gpu.synchronize();
        float[] x = new float[n];
        cuMemcpyDtoH(Pointer.to(x), p, n * 4L);
        return x;
    }

    /** ||a - b|| / ||b||, NaN failing. */
    static double relError(float[] got, float[] ref) {
        double e = 0, n = 0;
        for (int i = 0; i < ref.length; i++) {
            assertTrue(Float.isFinite(got[i]), "element " + i + " not written or not finite: " + got[i]);
            e += (got[i] - ref[i]) * (double) (got[i] - ref[i]);
            n += ref[i] * (double) ref[i];
        }
        return Math.sqrt(e / Math.max(n, 1e-30));
    }

    @ParameterizedTest(name = "rows {0}, out {1}, in {2}")
    @CsvSource({"1,97,200", "2,64,130", "3,129,256", "5,77,96", "8,200,1000", "11,33,40", "16,45,88", "27,99,1024",
            "33,97,200", "97,129,136", "200,70,333"})
    void linearMatchesCpu(int rows, int out, int in) {
        Random r = new Random(rows * 31L + out);
        float[] x = random(r, rows * in, 1), w = random(r, out * in, 0.05f), b = random(r, out, 0.1f);
        for (int i = 0; i < w.length; i++) w[i] = bf(w[i]);
        for (int i = 0; i < b.length; i++) b[i] = bf(b[i]);
        float[] wt = new float[w.length];
        for (int o = 0; o < out; o++) for (int i = 0; i < in; i++) wt[i * out + o] = w[o * in + i];
        float[][] xr = new float[rows][in], yr = new float[rows][out];
        for (int m = 0; m < rows; m++) System.arraycopy(x, m * in, xr[m], 0, in);
        CpuOps.matmul(xr, rows, new CpuOps.Linear(wt, in, out, b), yr);
        float[] ref = new float[rows * out];
        for (int m = 0; m < rows; m++) System.arraycopy(yr[m], 0, ref, m * out, out);
        CudaBackend backend = null;
        CUdeviceptr dx = upload(x), dw = uploadBf16(w), db = uploadBf16(b), dy = poisoned(rows * out);
        if (rows > 32) gpu.launch("gemm_wmma", (out + 63) / 64, (rows + 63) / 64, 128, dy, dx, dw, db, rows, out, in);
        else {
            for (int m0 = 0; m0 < rows; ) {
                int m = rows - m0 >= 16 ? 16 : rows - m0 >= 8 ? 8 : rows - m0 >= 4 ? 4 : rows - m0 >= 2 ? 2 : 1;
                int cols = 8 * CudaBackend.gemvColumns(m);
                gpu.launch("gemv_m" + m, (out + cols - 1) / cols, 1, 256, dy.withByteOffset(m0 * out * 4L), dx.withByteOffset(m0 * in * 4L), dw, db, out, in);
                m0 += m;
            }
        }
        double err = relError(download(dy, rows * out), ref);
        // the tensor-core path rounds x to bf16 (about 3e-3); the GEMV reads x in f32
        assertTrue(err < (rows > 32 ? 1e-2 : 1e-5), "relative error " + err);
    }

    @Test
    void normsMatchCpu() {
        Random r = new Random(5);
        int rows = 7, dim = 333;
        float[] x = random(r, rows * dim, 2), y = random(r, rows * dim, 1), w = random(r, dim, 1), b = random(r, dim, 1);
        for (int i = 0; i < dim; i++) {
            w[i] = bf(w[i]);
            b[i] = bf(b[i]);
        }
        for (boolean layerNorm : new boolean[]{false, true}) {
            CUdeviceptr dx = upload(x), dy = upload(y), out = poisoned(rows * dim);
            if (layerNorm) gpu.launch("add_layer_norm", rows, 1, 1024, dx, dy, out, uploadBf16(w), uploadBf16(b), rows, dim, 1e-5f);
            else gpu.launch("add_rms_norm", rows, 1, 1024, dx, dy, out, uploadBf16(w), rows, dim, 1e-5f);
            float[] ref = new float[rows * dim], sum = new float[rows * dim];
            for (int m = 0; m < rows; m++) {
                float[] row = new float[dim], o = new float[dim];
                for (int i = 0; i < dim; i++) row[i] = x[m * dim + i] + y[m * dim + i];
                if (layerNorm) CpuOps.layerNorm(row, w, b, 1e-5f, o);
                else CpuOps.rmsNorm(row, w, 1e-5f, o);
                System.arraycopy(o, 0, ref, m * dim, dim);
                System.arraycopy(row, 0, sum, m * dim, dim);
            }
            assertTrue(relError(download(out, rows * dim), ref) < 1e-5, "norm output");
            assertTrue(relError(download(dx, rows * dim), sum) < 1e-6, "residual updated in place");
        }
    }

    @Test
    void ropeMatchesCpu() {
        Random r = new Random(6);
        int rows = 5, heads = 3, d = 32, stride = heads * d;
        float[] x = random(r, rows * stride, 1);
        int[] pos = {0, 1, 17, 4095, 131000};
        float[] inv = io.dsflow.engine.model.RopeConfig.defaults(500000).inverseFrequencies(d);
        CUdeviceptr dx = upload(x), dp = gpu.alloc(pos.length * 4L), di = upload(inv);
        cuMemcpyHtoD(dp, Pointer.to(pos), pos.length * 4L);
        gpu.launch("rope", rows, heads, d / 2, dx, dp, di, rows, heads, d, stride);
        float[] ref = x.clone();
        for (int m = 0; m < rows; m++) {
            float[] row = java.util.Arrays.copyOfRange(ref, m * stride, (m + 1) * stride);
            CpuOps.rope(row, heads, d, pos[m], inv);
            System.arraycopy(row, 0, ref, m * stride, stride);
        }
        assertTrue(relError(download(dx, rows * stride), ref) < 1e-5);
    }

    /**
     * Two sequences in one launch, as a forward pass batches them: the first's last {@code rows} tokens attend
     * causally over its cache of {@code context} tokens (a prefill tail), the second's one token over {@code context / 2 + 3}
     * (a decode step); the keys and values are appended through kv_append_rows first.
     */
    @ParameterizedTest(name = "head_dim {0}, rows {1}, context {2}, heads {3}/{4}")
    @CsvSource({"32,1,97,6,2", "64,3,97,6,2", "128,1,700,6,2", "128,97,97,6,2", "32,13,600,6,2", "128,2,5000,6,2",
            "32,1,97,8,2", "128,3,700,16,4", "128,2,5000,28,4", "64,5,300,16,2", "128,1,300,8,4"})
    void appendAndAttentionMatchCpu(int d, int rows, int context, int heads, int kvHeads) {
        Random r = new Random(d * 7L + rows);
        int kvDim = kvHeads * d;
        int[] lengths = {context, context / 2 + 3}, rowsOf = {rows, 1};
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
                boolean appendedByKernel = t >= lengths[s] - rowsOf[s];
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
        CUdeviceptr kTable = upload(new long[]{jcuda.DeviceAddress.of(kc[0]), jcuda.DeviceAddress.of(kc[1])});
        CUdeviceptr vTable = upload(new long[]{jcuda.DeviceAddress.of(vc[0]), jcuda.DeviceAddress.of(vc[1])});
        CUdeviceptr dSeg = upload(seg), dSlot = upload(slot), dLen = upload(len);
        gpu.launch("kv_append_rows", totalRows, (kvDim + 255) / 256, 256, kTable, vTable, dSeg, dSlot, upload(kRows), upload(vRows), kvDim, kvDim);
        float[] q = random(r, totalRows * heads * d, 1);
        float scale = (float) (1 / Math.sqrt(d));
        float[] ref = new float[totalRows * heads * d];
        for (int s = 0, r0 = 0; s < 2; r0 += rowsOf[s], s++) {
            float[][] qr = new float[rowsOf[s]][heads * d], outRef = new float[rowsOf[s]][heads * d];
            for (int m = 0; m < rowsOf[s]; m++) System.arraycopy(q, (r0 + m) * heads * d, qr[m], 0, heads * d);
            CpuAttention.causal(stores[s], 0, qr, 0, rowsOf[s], outRef, heads, scale);
            for (int m = 0; m < rowsOf[s]; m++) System.arraycopy(outRef[m], 0, ref, (r0 + m) * heads * d, heads * d);
        }
        int chunk = rows % 2 == 0 ? 32 : rows % 3 == 0 ? 64 : 128, splits = (context + chunk - 1) / chunk;
        CUdeviceptr partials = gpu.alloc((long) totalRows * heads * splits * (d + 2) * 4), out = poisoned(totalRows * heads * d);
        String gqa = "attention_gqa_d" + d + "_g" + heads / kvHeads;
        if (gpu.has(gqa)) {
            gpu.launch(gqa, totalRows * kvHeads, splits, 32, partials, upload(q), kTable, vTable, dSeg, dLen, heads,
                    kvHeads, splits, scale, heads * d, chunk);
        } else {
            gpu.launch("attention_rows_d" + d, totalRows * heads, splits, 32, partials, upload(q), kTable, vTable, dSeg,
                    dLen, heads, kvHeads, splits, scale, heads * d, chunk);
        }
        gpu.launch("attention_merge", totalRows * heads, 1, Math.max(d, 128), out, partials, totalRows, heads, d, splits);
        double err = relError(download(out, totalRows * heads * d), ref);
        assertTrue(err < 1e-4, "relative error " + err);
    }

    static CUdeviceptr upload(long[] x) {
        CUdeviceptr p = gpu.alloc(x.length * 8L);
        cuMemcpyHtoD(p, Pointer.to(x), x.length * 8L);
        return p;
    }

    static CUdeviceptr upload(int[] x) {
        CUdeviceptr p = gpu.alloc(x.length * 4L);
        cuMemcpyHtoD(p, Pointer.to(x), x.length * 4L);
        return p;
    }

    @Test
    void elementwiseKernelsAndEmbeddingMatchCpu() {
        Random r = new Random(9);
        int rows = 3, inter = 301;
        float[] gu = random(r, rows * 2 * inter, 2);
        CUdeviceptr out = poisoned(rows * inter);
        gpu.launch("swiglu_fused", (rows * inter + 255) / 256, 1, 256, out, upload(gu), rows, inter);
        float[] ref = new float[rows * inter];
        for (int m = 0; m < rows; m++) {
            float[] g = java.util.Arrays.copyOfRange(gu, m * 2 * inter, m * 2 * inter + inter);
            float[] u = java.util.Arrays.copyOfRange(gu, m * 2 * inter + inter, (m + 1) * 2 * inter);
            CpuOps.swiglu(g, u);
            System.arraycopy(g, 0, ref, m * inter, inter);
        }
        assertTrue(relError(download(out, rows * inter), ref) < 1e-5, "swiglu_fused");

        float[] x = random(r, 1001, 1), y = random(r, 1001, 1);
        CUdeviceptr dx = upload(x);
        gpu.launch("relu", 4, 1, 256, dx, 1001L);
        float[] relu = x.clone();
        CpuOps.relu(relu);
        assertTrue(relError(download(dx, 1001), relu) < 1e-7, "relu");
        gpu.launch("residual_add", 4, 1, 256, dx, upload(y), 1001L);
        CpuOps.add(relu, y);
        assertTrue(relError(download(dx, 1001), relu) < 1e-7, "residual_add");

        int vocab = 37, dim = 77;
        float[] table = random(r, vocab * dim, 1), pos = random(r, 20 * dim, 1);
        for (int i = 0; i < table.length; i++) table[i] = bf(table[i]);
        for (int i = 0; i < pos.length; i++) pos[i] = bf(pos[i]);
        int[] tokens = {5, 36, 0}, positions = {0, 7, 15};
        CUdeviceptr emb = poisoned(3 * dim);
        gpu.launch("embed", 3, 1, 256, emb, uploadBf16(table), upload(tokens), 3, dim, uploadBf16(pos), upload(positions), 2);
        float[] expected = new float[3 * dim];
        for (int m = 0; m < 3; m++) {
            for (int i = 0; i < dim; i++) expected[m * dim + i] = table[tokens[m] * dim + i] + pos[(positions[m] + 2) * dim + i];
        }
        assertTrue(relError(download(emb, 3 * dim), expected) < 1e-7, "embedding with OPT positions");
    }

    @Test
    void argmaxAndGatherMatchCpu() {
        Random r = new Random(8);
        int rows = 3, vocab = 50001;
        float[] logits = random(r, rows * vocab, 1);
        logits[vocab + 777] = 10f;
        logits[vocab + 999] = 10f; // tie: the lower index wins
        CUdeviceptr ids = gpu.alloc(rows * 4L);
        gpu.launch("argmax", rows, 1, 1024, ids, upload(logits), vocab);
        gpu.synchronize();
        int[] got = new int[rows];
        cuMemcpyDtoH(Pointer.to(got), ids, rows * 4L);
        for (int m = 0; m < rows; m++) {
            assertEquals(io.dsflow.engine.sample.Sampler.argmax(java.util.Arrays.copyOfRange(logits, m * vocab, (m + 1) * vocab)), got[m]);
        }
        assertEquals(777, got[1]);
        // gather_rows: the last row of each segment, in segment order
        int dim = 129;
        float[] hidden = random(r, 7 * dim, 1);
        int[] index = {6, 0, 3};
        CUdeviceptr dst = poisoned(3 * dim);
        gpu.launch("gather_rows", 3, 1, 256, dst, upload(hidden), upload(index), 3, dim);
        float[] expected = new float[3 * dim];
        for (int i = 0; i < 3; i++) System.arraycopy(hidden, index[i] * dim, expected, i * dim, dim);
        assertTrue(relError(download(dst, 3 * dim), expected) == 0.0, "gather_rows");
    }
}
