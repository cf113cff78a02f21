package io.dsflow.engine.cuda;

import io.dsflow.engine.cpu.CpuOps;
import io.dsflow.engine.kv.CpuAttention;
import io.dsflow.engine.kv.KvStore;
import io.dsflow.engine.sample.Sampler;
import io.dsflow.engine.sample.SamplingParams;
import jcuda.Pointer;
import jcuda.driver.CUdeviceptr;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.api.Test;

import java.util.List;
import java.util.Random;

import static jcuda.driver.JCudaDriver.cuMemcpyDtoH;
import static jcuda.driver.JCudaDriver.cuMemcpyHtoD;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
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
        return Float.intBitsToFloat(CudaWeights.toBf16(f) << 16);
    }

    static CUdeviceptr upload(float[] x) {
        CUdeviceptr p = gpu.alloc(x.length * 4L);
        cuMemcpyHtoD(p, Pointer.to(x), x.length * 4L);
        return p;
    }

    static CUdeviceptr uploadBf16(float[] x) {
        short[] b = new short[x.length];
        for (int i = 0; i < x.length; i++) b[i] = CudaWeights.toBf16(x[i]);
        CUdeviceptr p = gpu.alloc(x.length * 2L);
        cuMemcpyHtoD(p, Pointer.to(b), x.length * 2L);
        return p;
    }

    /** A copy of a device buffer in pinned host memory mapped into the device (host placement's store). */
    static CUdeviceptr onHost(CUdeviceptr device, long bytes) {
        CUdeviceptr h = gpu.allocHost(bytes);
        jcuda.driver.JCudaDriver.cuMemcpy(h, device, bytes);
        return h;
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

    /** Random label channels [heads * r] of [0, hd), the same for the heads of each label row (labelGroup heads). */
    private static int[] labelRowChannels(Random rnd, int heads, int r, int hd, int labelGroup) {
        int[] channels = new int[heads * r];
        for (int i = 0; i < channels.length; i++) {
            int h = i / r;
            channels[i] = h % labelGroup == 0 ? rnd.nextInt(hd) : channels[i - h % labelGroup * r];
        }
        return channels;
    }

    static int[] downloadInts(CUdeviceptr p, int n) {
        gpu.synchronize();
        int[] x = new int[n];
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

    /**
     * A linear layer as the forward pass launches it (GEMV up to 32 rows, tensor cores beyond), plain and with the
     * SwiGLU epilogue: then W is a gate/up pair ({@code out} rows each) interleaved on the device by interleave_rows,
     * as the backend uploads it, and the output is silu(gate) * up (bf16 from the tensor cores).
     */
    @ParameterizedTest(name = "rows {0}, out {1}, in {2}")
    @CsvSource({"1,97,200", "2,64,130", "3,129,256", "5,77,96", "8,200,1000", "9,61,160", "11,33,40", "13,300,2048",
            "16,45,88", "27,99,1024",
            "33,97,200", "97,129,136", "200,70,333", "300,260,520", "513,384,1032"})
    void linearMatchesCpu(int rows, int out, int in) {
        for (boolean fused : new boolean[]{false, true}) {
            for (boolean swiglu : new boolean[]{false, true}) {
                linearCase(rows, out, in, swiglu, fused, fused && !swiglu);
            }
        }
    }

    /** One product against the CPU: plain, or with the RMSNorm prologue ({@code norm}) and the residual epilogue. */
    private void linearCase(int rows, int out, int in, boolean swiglu, boolean norm, boolean accumulate) {
        int n = swiglu ? 2 * out : out;   // rows of W: [gate; up] stacked for SwiGLU
        Random r = new Random(rows * 31L + out + (norm ? 7 : 0));
        float[] x = random(r, rows * in, 1), w = random(r, n * in, 0.05f), b = random(r, n, 0.1f);
        float[] g = random(r, in, 1), y0 = random(r, rows * out, 1);
        for (int i = 0; i < w.length; i++) w[i] = bf(w[i]);
        for (int i = 0; i < b.length; i++) b[i] = bf(b[i]);
        for (int i = 0; i < g.length; i++) g[i] = bf(g[i]);
        float[] wt = new float[w.length];
        for (int o = 0; o < n; o++) for (int i = 0; i < in; i++) wt[i * n + o] = w[o * in + i];
        float[][] xr = new float[rows][in], yr = new float[rows][n];
        for (int m = 0; m < rows; m++) {
            System.arraycopy(x, m * in, xr[m], 0, in);
            if (norm) CpuOps.rmsNorm(xr[m].clone(), g, 1e-5f, xr[m]);
        }
        CpuOps.matmul(xr, rows, new CpuOps.Linear(wt, in, n, b), yr);
        float[] ref = new float[rows * out];
        for (int m = 0; m < rows; m++) {
            float[] gate = java.util.Arrays.copyOf(yr[m], out);
            if (swiglu) CpuOps.swiglu(gate, java.util.Arrays.copyOfRange(yr[m], out, n));
            for (int o = 0; o < out; o++) ref[m * out + o] = accumulate ? y0[m * out + o] + gate[o] : gate[o];
        }
        CUdeviceptr dw = uploadBf16(w), db = uploadBf16(b);
        if (swiglu) {
            CUdeviceptr iw = gpu.alloc((long) n * in * 2), ib = gpu.alloc(n * 2L);
            gpu.launch("interleave_rows", n, 1, 256, iw, dw, out, (long) in);
            gpu.launch("interleave_rows", n, 1, 256, ib, db, out, 1L);
            dw = iw;
            db = ib;
        }
        boolean tc = CudaOps.tensorCores(rows, in);
        float[] start = accumulate ? y0 : new float[rows * out];
        if (!accumulate) java.util.Arrays.fill(start, Float.NaN);
        CUdeviceptr dy = swiglu && tc ? uploadBf16(start) : upload(start);
        CudaOps.RmsNorm rms = norm ? new CudaOps.RmsNorm(uploadBf16(g), 1e-5f) : null;
        CudaOps.linear(gpu, dy, upload(x), gpu.alloc((long) rows * in * 2), false, rows, dw, db, n, in, swiglu, rms,
                accumulate);
        float[] got = swiglu && tc ? downloadBf16(dy, rows * out) : download(dy, rows * out);
        double err = relError(got, ref);
        // the tensor-core path rounds x (and a SwiGLU output) to bf16 (about 3e-3); the GEMV reads x in f32
        String what = (norm ? "rmsnorm prologue, " : "") + (accumulate ? "residual epilogue, " : "") + (swiglu ? "swiglu, " : "");
        assertTrue(err < (tc ? 1e-2 : 1e-5), what + "relative error " + err);
    }

    @ParameterizedTest(name = "dim {0}")
    @CsvSource({"333", "9001"})   // 9001: wider than the values a thread keeps in registers
    void normsMatchCpu(int dim) {
        Random r = new Random(5);
        int rows = 7;
        float[] x = random(r, rows * dim, 2), y = random(r, rows * dim, 1), w = random(r, dim, 1), b = random(r, dim, 1);
        for (int i = 0; i < dim; i++) {
            w[i] = bf(w[i]);
            b[i] = bf(b[i]);
        }
        for (boolean layerNorm : new boolean[]{false, true}) {
            CUdeviceptr dx = upload(x), dy = upload(y), out = poisoned(rows * dim);
            CUdeviceptr outBf = uploadBf16(new float[rows * dim]), dx2 = upload(x);
            if (layerNorm) {
                gpu.launch("add_layer_norm", rows, 1, 1024, dx, dy, out, null, uploadBf16(w), uploadBf16(b), rows, dim, 1e-5f);
                gpu.launch("add_layer_norm", rows, 1, 1024, dx2, dy, null, outBf, uploadBf16(w), uploadBf16(b), rows, dim, 1e-5f);
            } else {
                gpu.launch("add_rms_norm", rows, 1, 1024, dx, dy, out, null, uploadBf16(w), rows, dim, 1e-5f);
                gpu.launch("add_rms_norm", rows, 1, 1024, dx2, dy, null, outBf, uploadBf16(w), rows, dim, 1e-5f);
            }
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
            assertTrue(relError(downloadBf16(outBf, rows * dim), ref) < 5e-3, "norm output in bf16");
            assertTrue(relError(download(dx, rows * dim), sum) < 1e-6, "residual updated in place");
        }
    }

    /** q rotated in place, k rotated and v copied into the cache at each row's slot, as bf16. */
    @Test
    void ropeAndCacheAppendMatchCpu() {
        Random r = new Random(6);
        int rows = 5, heads = 3, kvHeads = 2, d = 32, kvDim = kvHeads * d, stride = (heads + 2 * kvHeads) * d + 5;
        float[] x = random(r, rows * stride, 1);
        int[] pos = {0, 1, 17, 4095, 131000}, slot = {3, 0, 7, 1, 2};
        float[] inv = io.dsflow.engine.model.RopeConfig.defaults(500000).inverseFrequencies(d);
        CUdeviceptr dx = upload(x), kc = uploadBf16(new float[8 * kvDim]), vc = uploadBf16(new float[8 * kvDim]);
        gpu.launch("kv_append_rope", rows, heads + 2 * kvHeads, d / 2, dx, upload(pos), upload(inv),
                upload(new long[]{jcuda.DeviceAddress.of(kc)}), upload(new long[]{jcuda.DeviceAddress.of(vc)}),
                upload(new int[rows]), upload(slot), heads, kvHeads, d, stride);
        float[] ref = x.clone(), kRef = new float[8 * kvDim], vRef = new float[8 * kvDim];
        for (int m = 0; m < rows; m++) {
            float[] q = java.util.Arrays.copyOfRange(ref, m * stride, m * stride + heads * d);
            CpuOps.rope(q, heads, d, pos[m], inv);
            System.arraycopy(q, 0, ref, m * stride, q.length);
            float[] k = java.util.Arrays.copyOfRange(x, m * stride + heads * d, m * stride + heads * d + kvDim);
            CpuOps.rope(k, kvHeads, d, pos[m], inv);
            for (int i = 0; i < kvDim; i++) {
                kRef[slot[m] * kvDim + i] = bf(k[i]);
                vRef[slot[m] * kvDim + i] = bf(x[m * stride + heads * d + kvDim + i]);
            }
        }
        float[] got = download(dx, rows * stride);
        float[] q = new float[rows * heads * d], qRef = new float[rows * heads * d];
        for (int m = 0; m < rows; m++) {
            System.arraycopy(got, m * stride, q, m * heads * d, heads * d);
            System.arraycopy(ref, m * stride, qRef, m * heads * d, heads * d);
        }
        assertTrue(relError(q, qRef) < 1e-5, "q");
        assertTrue(relError(downloadBf16(kc, 8 * kvDim), kRef) < 1e-3, "keys in the cache");
        assertTrue(relError(downloadBf16(vc, 8 * kvDim), vRef) == 0, "values in the cache");
    }

    static float[] downloadBf16(CUdeviceptr p, int n) {
        gpu.synchronize();
        short[] b = new short[n];
        cuMemcpyDtoH(Pointer.to(b), p, n * 2L);
        float[] x = new float[n];
        for (int i = 0; i < n; i++) x[i] = Float.intBitsToFloat(b[i] << 16);
        return x;
    }

    /**
     * Two sequences in one launch, as a forward pass batches them: the first's last {@code rows} tokens attend
     * causally over its cache of {@code context} tokens (a prefill tail), the second's one token over {@code context / 2 + 3}
     * (a decode step); the keys and values are appended through kv_append_rope first (no rotation).
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
        CUdeviceptr kTable = upload(new long[]{jcuda.DeviceAddress.of(kc[0]), jcuda.DeviceAddress.of(kc[1])});
        CUdeviceptr vTable = upload(new long[]{jcuda.DeviceAddress.of(vc[0]), jcuda.DeviceAddress.of(vc[1])});
        CUdeviceptr dSeg = upload(seg), dSlot = upload(slot), dLen = upload(len);
        float[] kvRows = new float[totalRows * 2 * kvDim];   // rows [k | v], as the fused projection lays them out
        for (int m = 0; m < totalRows; m++) {
            System.arraycopy(kRows, m * kvDim, kvRows, m * 2 * kvDim, kvDim);
            System.arraycopy(vRows, m * kvDim, kvRows, m * 2 * kvDim + kvDim, kvDim);
        }
        gpu.launch("kv_append_rope", totalRows, 2 * kvHeads, d / 2, upload(kvRows), dSlot, null, kTable, vTable, dSeg,
                dSlot, 0, kvHeads, d, 2 * kvDim);
        float[] q = random(r, totalRows * heads * d, 1);
        float scale = (float) (1 / Math.sqrt(d));
        float[] ref = new float[totalRows * heads * d];
        for (int s = 0, r0 = 0; s < 2; r0 += rowsPerSeq[s], s++) {
            float[][] qr = new float[rowsPerSeq[s]][heads * d], outRef = new float[rowsPerSeq[s]][heads * d];
            for (int m = 0; m < rowsPerSeq[s]; m++) System.arraycopy(q, (r0 + m) * heads * d, qr[m], 0, heads * d);
            CpuAttention.causal(stores[s], 0, qr, 0, rowsPerSeq[s], outRef, heads, scale);
            for (int m = 0; m < rowsPerSeq[s]; m++) System.arraycopy(outRef[m], 0, ref, (r0 + m) * heads * d, heads * d);
        }
        // the first sequence's rows go through the tensor-core prefill tiles where the forward pass would send them
        boolean tiled = rows >= CudaOps.PREFILL_TILE_MIN_ROWS && CudaOps.hasPrefillAttention(gpu, d);
        java.util.List<Integer> tiles = new java.util.ArrayList<>();
        int[] rowsOf = new int[totalRows];
        int decodeRows = 0;
        for (int i = 0; i < rows; i += tiled ? CudaOps.PREFILL_TILE_ROWS : 1) {
            if (tiled) tiles.addAll(java.util.List.of(0, i, Math.min(CudaOps.PREFILL_TILE_ROWS, rows - i)));
            else rowsOf[decodeRows++] = i;
        }
        rowsOf[decodeRows++] = rows;
        int chunk = rows % 2 == 0 ? 32 : rows % 3 == 0 ? 64 : 128;
        int slots = CudaOps.splitSlots(gpu, heads, kvHeads, d, chunk), splits = (context + slots - 1) / slots;
        CUdeviceptr dq = upload(q), dTiles = upload(tiles.stream().mapToInt(Integer::intValue).toArray());
        CUdeviceptr dRowsOf = upload(rowsOf);
        CUdeviceptr partials = gpu.alloc((long) decodeRows * heads * splits * (d + 2) * 4), out = poisoned(totalRows * heads * d);
        CudaOps.attention(gpu, out, dq, heads * d, kTable, vTable, dSeg, dLen, tiles.size() / 3, dTiles, decodeRows,
                dRowsOf, partials, splits, chunk, null, heads, kvHeads, d);
        double err = relError(download(out, totalRows * heads * d), ref);
        // the tensor-core path rounds q and the probabilities to bf16; the split kernels keep them in f32
        assertTrue(err < (tiled ? 1e-2 : 1e-4), "relative error " + err + (tiled ? " (prefill tiles)" : ""));
        if (!CudaOps.densePipelined(gpu, heads, kvHeads, d)) return;
        // the decode rows through attention_pipelined: one split, a few, the backend's wave; each launch twice (the
        // chunk counters it shares between a row's splits must be left zero for the next)
        int claimInts = 2 * decodeRows * kvHeads;
        CUdeviceptr claims = upload(new int[claimInts]);
        int wave = CudaOps.densePipelinedSplits(gpu, heads, kvHeads, d, decodeRows, context);
        for (int pipeSplits : new int[]{1, 3, wave}) {
            CUdeviceptr pipeParts = gpu.alloc((long) decodeRows * heads * pipeSplits * (d + 2) * 4);
            for (int run = 0; run < 2; run++) {
                out = poisoned(totalRows * heads * d);
                CudaOps.attention(gpu, out, dq, heads * d, kTable, vTable, dSeg, dLen, tiles.size() / 3, dTiles,
                        decodeRows, dRowsOf, pipeParts, pipeSplits, chunk, claims, heads, kvHeads, d);
                double pipeErr = relError(download(out, totalRows * heads * d), ref);
                // tensor cores again, with q and the probabilities in three bf16 parts: f32 precision
                assertTrue(pipeErr < (tiled ? 1e-2 : 1e-4), "pipelined, " + pipeSplits + " splits, run " + run
                        + ": relative error " + pipeErr);
                assertArrayEquals(new int[claimInts], downloadInts(claims, claimInts), "counters left zero");
            }
        }
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

    /**
     * sample_rows draws what the CPU Sampler draws: random logits with planted ties (equal values, so the order's
     * lower-index-first rule decides), temperatures, top-k and top-p together and alone, 40 steps of a seed each.
     */
    @ParameterizedTest(name = "vocab {0}")
    @CsvSource({"1001", "128256"})
    void samplingMatchesTheCpuSampler(int vocab) {
        Random r = new Random(vocab);
        SamplingParams[] kinds = {new SamplingParams(1.0, 1.0, 0, 7, 8, List.of()), new SamplingParams(0.7, 0.9, 40, 8, 8, List.of()),
                new SamplingParams(1.3, 1.0, 5, 9, 8, List.of()), new SamplingParams(0.5, 0.5, 0, 10, 8, List.of()),
                new SamplingParams(1.0, 0.95, 1, 11, 8, List.of()), new SamplingParams(2.0, 0.99, 1000, 12, 8, List.of())};
        int steps = 40, rows = kinds.length * steps;
        float[] logits = new float[rows * vocab];
        SamplingParams[] params = new SamplingParams[rows];
        int[] step = new int[rows];
        for (int k = 0; k < kinds.length; k++) {
            for (int s = 0; s < steps; s++) {
                int row = k * steps + s;
                params[row] = kinds[k];
                step[row] = s;
                for (int i = 0; i < vocab; i++) logits[row * vocab + i] = (float) (r.nextGaussian() * 3);
                for (int t = 0; t < 8; t++) {   // ties among the likeliest tokens
                    int a = r.nextInt(vocab), b = r.nextInt(vocab);
                    logits[row * vocab + b] = logits[row * vocab + a] = 9f + r.nextInt(3);
                }
            }
        }
        CUdeviceptr out = upload(new int[rows]);
        gpu.launch("sample_rows", rows, 1, 1024, out, upload(logits), upload(CudaOps.drawParams(params, step)),
                gpu.alloc((long) rows * vocab * 8), vocab);
        gpu.synchronize();
        int[] got = new int[rows];
        cuMemcpyDtoH(Pointer.to(got), out, rows * 4L);
        for (int row = 0; row < rows; row++) {
            float[] l = java.util.Arrays.copyOfRange(logits, row * vocab, (row + 1) * vocab);
            assertEquals(Sampler.sample(l, params[row], step[row]), got[row], "row " + row + " " + params[row]);
        }
    }

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
        int[] sp = new int[rows * SparseRowDescriptor.FIELDS];
        for (int p = 0; p < rows; p++) {
            sp[p * SparseRowDescriptor.FIELDS] = p;
            sp[p * SparseRowDescriptor.FIELDS + 1] = rowsSpec[p][0];
            sp[p * SparseRowDescriptor.FIELDS + 2] = rowsSpec[p][1];
            sp[p * SparseRowDescriptor.FIELDS + 3] = sinks;
            sp[p * SparseRowDescriptor.FIELDS + 5] = rowsSpec[p][2];
        }
        CUdeviceptr sel = upload(new int[rows * heads * maxK]);
        gpu.launch("sparse_topk", rows * heads, 1, 1024, sel, upload(scores), upload(sp), heads, kvHeads, maxCand, maxK);
        gpu.synchronize();
        int[] got = new int[rows * heads * maxK];
        cuMemcpyDtoH(Pointer.to(got), sel, got.length * 4L);
        for (int p = 0; p < rows; p++) {
            int n = rowsSpec[p][0], k = Math.min(rowsSpec[p][1], n), mode = rowsSpec[p][2];
            for (int h = 0; h < heads; h++) {
                float[] s = java.util.Arrays.copyOfRange(scores, (p * heads + h) * maxCand, (p * heads + h) * maxCand + n);
                if (mode != 0) {
                    int h0 = (h / group) * group;
                    s = java.util.Arrays.copyOfRange(scores, (p * heads + h0) * maxCand, (p * heads + h0) * maxCand + n);
                    for (int j = 1; j < group; j++) {
                        for (int c = 0; c < n; c++) {
                            float o = scores[(p * heads + h0 + j) * maxCand + c];
                            s[c] = mode == 1 ? Math.max(s[c], o) : s[c] + o;
                        }
                    }
                }
                int[] want = new int[k];
                io.dsflow.engine.kv.TopK.select(s, n, k, want);
                for (int i = 0; i < k; i++) want[i] += sinks;
                assertArrayEquals(want, java.util.Arrays.copyOfRange(got, (p * heads + h) * maxK, (p * heads + h) * maxK + k),
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
    @org.junit.jupiter.params.provider.CsvSource({"16, 1", "8, 1", "16, 4", "8, 4"})
    void fusedSelectionEqualsScoresThenTopK(int bits, int labelGroup) {
        Random rnd = new Random(21);
        int heads = 8, kvHeads = 2, group = 4, hd = 32, qStride = (heads + 2 * kvHeads) * hd, sinks = 4, cap = 5200;
        int rowsOfLabels = heads / labelGroup;
        int[] segR = {16, 12};
        int[][] rowsSpec = {{0, 1000, 7, 0}, {1, 37, 40, 1}, {0, 5000, 300, 2}, {1, 2049, 64, 0}, {0, 3001, 1000, 1}};
        int rows = rowsSpec.length, maxCand = 5120, maxK = 1024;
        float[][] labels = new float[2][], chq = new float[rows][];
        int[][] channels = new int[2][];
        long[] lptr = new long[2], chptr = new long[2], sptr = new long[2];
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
                CUdeviceptr dl = gpu.alloc(half.length * 2L);
                cuMemcpyHtoD(dl, Pointer.to(half), half.length * 2L);
                lptr[sgm] = jcuda.DeviceAddress.of(dl);
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
                CUdeviceptr dl = gpu.alloc(values.length), ds = gpu.alloc(scales.length * 2L);
                cuMemcpyHtoD(dl, Pointer.to(values), values.length);
                cuMemcpyHtoD(ds, Pointer.to(scales), scales.length * 2L);
                lptr[sgm] = jcuda.DeviceAddress.of(dl);
                sptr[sgm] = jcuda.DeviceAddress.of(ds);
            }
            channels[sgm] = labelRowChannels(rnd, heads, r, hd, labelGroup);
            chptr[sgm] = jcuda.DeviceAddress.of(upload(channels[sgm]));
        }
        float[] q = random(rnd, rows * qStride, 1);
        int[] sp = new int[rows * SparseRowDescriptor.FIELDS], seg = new int[rows];
        for (int p = 0; p < rows; p++) {
            seg[p] = rowsSpec[p][0];
            sp[p * SparseRowDescriptor.FIELDS] = p;
            sp[p * SparseRowDescriptor.FIELDS + 1] = rowsSpec[p][1];
            sp[p * SparseRowDescriptor.FIELDS + 2] = rowsSpec[p][2];
            sp[p * SparseRowDescriptor.FIELDS + 3] = sinks;
            sp[p * SparseRowDescriptor.FIELDS + 5] = rowsSpec[p][3];
            sp[p * SparseRowDescriptor.FIELDS + 6] = segR[seg[p]];
            sp[p * SparseRowDescriptor.FIELDS + 7] = bits;
            sp[p * SparseRowDescriptor.FIELDS + 8] = cap;
            sp[p * SparseRowDescriptor.FIELDS + 10] = labelGroup;
        }
        CUdeviceptr dq = upload(q), dl = upload(lptr), dch = upload(chptr), dsc = upload(sptr), dseg = upload(seg);
        CUdeviceptr dsp = upload(sp);
        CUdeviceptr unfused = upload(new int[rows * heads * maxK]), fused = upload(new int[rows * heads * maxK]);
        CUdeviceptr scores = gpu.alloc(4L * rows * heads * maxCand);
        gpu.launch("sparse_scores", rows * heads, (maxCand + 255) / 256, 256, scores, dq, dl, dch, dsc, dseg, dsp, heads,
                hd, qStride, maxCand);
        gpu.launch("sparse_topk", rows * heads, 1, 1024, unfused, scores, dsp, heads, kvHeads, maxCand, maxK);
        int[] a = new int[rows * heads * maxK], b = new int[rows * heads * maxK];
        gpu.synchronize();
        cuMemcpyDtoH(Pointer.to(a), unfused, a.length * 4L);
        // the one-block kernel
        gpu.launchWithSharedMemory("sparse_select", rows * heads, 1, 1024, 4 * maxCand, fused, dq, dl, dch, dsc, dseg,
                dsp, heads, kvHeads, hd, qStride, maxK);
        gpu.synchronize();
        cuMemcpyDtoH(Pointer.to(b), fused, b.length * 4L);
        checkSelection(a, b, rowsSpec, seg, segR, labels, channels, q, heads, group, labelGroup, hd, qStride, sinks, maxK,
                "sparse_select");
        // on Hopper the cluster kernels, of 8 blocks and of 2
        for (int cluster : gpu.computeMajor() >= 9 ? new int[]{8, 2} : new int[0]) {
            CUdeviceptr clustered = upload(new int[rows * heads * maxK]);
            CudaOps.launchSelect(gpu, cluster, clustered, dq, dl, dch, dsc, dseg, dsp, rows, heads, kvHeads, hd, qStride,
                    maxCand, maxK);
            gpu.synchronize();
            cuMemcpyDtoH(Pointer.to(b), clustered, b.length * 4L);
            checkSelection(a, b, rowsSpec, seg, segR, labels, channels, q, heads, group, labelGroup, hd, qStride, sinks,
                    maxK, "sparse_select_cluster, " + cluster + " blocks");
        }
    }

    /**
     * label_append writes what kv/SparseKvCache stores: fp16 labels, or int8 values with the row's fp16 scale
     * (fp16(max |k_c| / 127), values rounded half up and clamped), bit for bit, a label row a query head (segment 1)
     * or a kv head (segment 0: the group's heads share their channels); and with host placement the ring of
     * sinks and window: a prefill of 150 rows (S = 4, W = 16, so the window wrapped around) leaves the sinks and the
     * last 16 keys and values in their ring slots, whichever rows' blocks ran last.
     */
    @Test
    void labelAppendWritesLabelsScalesAndRingAsTheCpuStoresThem() {
        Random rnd = new Random(31);
        int heads = 8, kvHeads = 2, hd = 32, r = 16, stride = (heads + 2 * kvHeads) * hd, sinks = 4, window = 16;
        int prefill = 150, rows = prefill + 1, cap0 = 160, cap1 = 64, decodeSlot = 40;
        float[] qkv = random(rnd, rows * stride, 2);
        int[] seg = new int[rows], slot = new int[rows];
        for (int i = 0; i < prefill; i++) slot[i] = i;
        seg[prefill] = 1;
        slot[prefill] = decodeSlot;
        int group = heads / kvHeads;
        int[] labelGroup = {group, 1};
        int[][] channels = new int[2][];
        for (int sg = 0; sg < 2; sg++) channels[sg] = labelRowChannels(rnd, heads, r, hd, labelGroup[sg]);
        // segment 0: 8-bit labels a kv head and a ring; segment 1: 16-bit labels a query head, no ring
        int rows0 = heads / group;
        CUdeviceptr lab0 = upload(new int[cap0 * rows0 * r / 4]), scales0 = upload(new int[rows0 * cap0 / 2]);
        CUdeviceptr lab1 = upload(new int[cap1 * heads * r / 2]);
        CUdeviceptr ringK = upload(new int[(sinks + window) * kvHeads * hd / 2]), ringV = upload(new int[(sinks + window) * kvHeads * hd / 2]);
        long[] lptr = {jcuda.DeviceAddress.of(lab0), jcuda.DeviceAddress.of(lab1)};
        long[] sptr = {jcuda.DeviceAddress.of(scales0), 0}, rk = {jcuda.DeviceAddress.of(ringK), 0}, rv = {jcuda.DeviceAddress.of(ringV), 0};
        long[] chptr = {jcuda.DeviceAddress.of(upload(channels[0])), jcuda.DeviceAddress.of(upload(channels[1]))};
        int[] info = {r, 8, sinks, window, cap0, labelGroup[0], r, 16, 0, 0, cap1, labelGroup[1]};
        gpu.launch("label_append", rows, heads, 32, upload(qkv), upload(lptr), upload(chptr), upload(sptr), upload(rk),
                upload(rv), upload(seg), upload(slot), upload(new int[]{prefill - 1, prefill}), upload(info), heads,
                kvHeads, hd, stride);
        gpu.synchronize();
        byte[] int8 = new byte[cap0 * rows0 * r];
        short[] scales = new short[rows0 * cap0], half = new short[cap1 * heads * r];
        cuMemcpyDtoH(Pointer.to(int8), lab0, int8.length);
        cuMemcpyDtoH(Pointer.to(scales), scales0, scales.length * 2L);
        cuMemcpyDtoH(Pointer.to(half), lab1, half.length * 2L);
        for (int row = 0; row < rows; row++) {
            for (int h = 0; h < heads; h++) {
                int sg = seg[row], g = h / (heads / kvHeads);
                float[] k = new float[r];
                float max = 0;
                for (int i = 0; i < r; i++) {
                    k[i] = qkv[row * stride + (heads + g) * hd + channels[sg][h * r + i]];
                    max = Math.max(max, Math.abs(k[i]));
                }
                if (sg == 1) {
                    for (int i = 0; i < r; i++) {
                        assertEquals(io.dsflow.engine.model.DType.floatToHalf(k[i]), half[slot[row] * heads * r + h * r + i],
                                "fp16 label, head " + h + " channel " + i);
                    }
                    continue;
                }
                int lr = h / group;   // the head's label row: its kv head's
                short scale = io.dsflow.engine.model.DType.floatToHalf(max / 127f);
                assertEquals(scale, scales[lr * cap0 + slot[row]], "scale of slot " + slot[row] + " head " + h);
                float sc = io.dsflow.engine.model.DType.halfToFloat(scale);
                for (int i = 0; i < r; i++) {
                    int want = sc == 0 ? 0 : (int) Math.max(-127, Math.min(127, Math.floor(k[i] / sc + 0.5f)));
                    assertEquals(want, int8[slot[row] * rows0 * r + lr * r + i], "int8 label of slot " + slot[row] + " head " + h);
                }
            }
        }
        float[] ringKeys = downloadBf16(ringK, (sinks + window) * kvHeads * hd), ringValues = downloadBf16(ringV, ringKeys.length);
        for (int p = 0; p < prefill; p++) {
            if (p >= sinks && p < prefill - window) continue;
            int at = p < sinks ? p : sinks + (p - sinks) % window;
            for (int c = 0; c < kvHeads * hd; c++) {
                assertEquals(bf(qkv[p * stride + heads * hd + c]), ringKeys[at * kvHeads * hd + c], "ring key of position " + p);
                assertEquals(bf(qkv[p * stride + (heads + kvHeads) * hd + c]), ringValues[at * kvHeads * hd + c],
                        "ring value of position " + p);
            }
        }
    }

    /**
     * dspp's one append kernel (kv_label_append_rope) writes what kv_append_rope then label_append write (the latter
     * checked against the CPU above), byte for byte: rotated q and k, the stores, labels, 8-bit scales and ring slots,
     * for three segments (8-bit labels a kv head with a ring, a prefill whose window wrapped around; 16-bit labels a
     * query head; a dense cache, whose rows get no labels), at head sizes 32 (a block of 16 pairs in a warp) and 128.
     */
    @Test
    void fusedAppendWritesWhatRopeAppendThenLabelAppendWrite() {
        for (int hd : new int[]{32, 128}) {
            Random rnd = new Random(37 + hd);
            int heads = 8, kvHeads = 2, group = heads / kvHeads, r = 16, stride = (heads + 2 * kvHeads) * hd;
            int kvDim = kvHeads * hd, sinks = 4, window = 16, prefill = 150, rows = prefill + 2, cap = 160;
            float[] qkv = random(rnd, rows * stride, 2);
            int[] seg = new int[rows], slot = new int[rows], pos = new int[rows];
            for (int i = 0; i < prefill; i++) slot[i] = pos[i] = i;
            seg[prefill] = 1;
            slot[prefill] = pos[prefill] = 40;
            seg[prefill + 1] = 2;
            slot[prefill + 1] = pos[prefill + 1] = 77;
            int[] labelGroup = {group, 1};
            int[][] channels = {labelRowChannels(rnd, heads, r, hd, group), labelRowChannels(rnd, heads, r, hd, 1)};
            int[] info = {r, 8, sinks, window, cap, group, r, 16, 0, 0, cap, 1, 0, 0, 0, 0, cap, 1};
            float[] inv = io.dsflow.engine.model.RopeConfig.defaults(500000).inverseFrequencies(hd);
            long labelBytes0 = (long) cap * (heads / group) * r, labelBytes1 = (long) cap * heads * r * 2;
            long scaleBytes = (long) (heads / group) * cap * 2, ringBytes = (long) (sinks + window) * kvDim * 2;
            long storeBytes = (long) cap * kvDim * 2;
            byte[][][] outputs = new byte[2][][];
            for (int fused = 0; fused < 2; fused++) {
                CUdeviceptr dq = upload(qkv);
                CUdeviceptr[] k = new CUdeviceptr[3], v = new CUdeviceptr[3];
                for (int sg = 0; sg < 3; sg++) {
                    k[sg] = upload(new int[(int) (storeBytes / 4)]);
                    v[sg] = upload(new int[(int) (storeBytes / 4)]);
                }
                CUdeviceptr lab0 = upload(new int[(int) (labelBytes0 / 4)]), lab1 = upload(new int[(int) (labelBytes1 / 4)]);
                CUdeviceptr scales0 = upload(new int[(int) (scaleBytes / 4)]);
                CUdeviceptr ringK = upload(new int[(int) (ringBytes / 4)]), ringV = upload(new int[(int) (ringBytes / 4)]);
                CUdeviceptr kt = upload(java.util.Arrays.stream(k).mapToLong(jcuda.DeviceAddress::of).toArray());
                CUdeviceptr vt = upload(java.util.Arrays.stream(v).mapToLong(jcuda.DeviceAddress::of).toArray());
                CUdeviceptr lt = upload(new long[]{jcuda.DeviceAddress.of(lab0), jcuda.DeviceAddress.of(lab1), 0});
                CUdeviceptr ct = upload(new long[]{jcuda.DeviceAddress.of(upload(channels[0])),
                        jcuda.DeviceAddress.of(upload(channels[1])), 0});
                CUdeviceptr st = upload(new long[]{jcuda.DeviceAddress.of(scales0), 0, 0});
                CUdeviceptr rkt = upload(new long[]{jcuda.DeviceAddress.of(ringK), 0, 0});
                CUdeviceptr rvt = upload(new long[]{jcuda.DeviceAddress.of(ringV), 0, 0});
                CUdeviceptr dseg = upload(seg), dslot = upload(slot), dpos = upload(pos), dinv = upload(inv);
                CUdeviceptr last = upload(new int[]{prefill - 1, prefill, prefill + 1}), dinfo = upload(info);
                if (fused == 1) {
                    gpu.launch("kv_label_append_rope", rows, heads + 2 * kvHeads, Math.max(32, hd / 2), dq, dpos, dinv,
                            kt, vt, lt, ct, st, rkt, rvt, dseg, dslot, last, dinfo, heads, kvHeads, hd, stride);
                } else {
                    gpu.launch("kv_append_rope", rows, heads + 2 * kvHeads, hd / 2, dq, dpos, dinv, kt, vt, dseg, dslot,
                            heads, kvHeads, hd, stride);
                    gpu.launch("label_append", rows, heads, 32, dq, lt, ct, st, rkt, rvt, dseg, dslot, last, dinfo, heads,
                            kvHeads, hd, stride);
                }
                gpu.synchronize();
                CUdeviceptr[] bufs = {dq, k[0], v[0], k[1], v[1], k[2], v[2], lab0, lab1, scales0, ringK, ringV};
                long[] sizes = {(long) rows * stride * 4, storeBytes, storeBytes, storeBytes, storeBytes, storeBytes,
                        storeBytes, labelBytes0, labelBytes1, scaleBytes, ringBytes, ringBytes};
                outputs[fused] = new byte[bufs.length][];
                for (int b = 0; b < bufs.length; b++) {
                    outputs[fused][b] = new byte[(int) sizes[b]];
                    cuMemcpyDtoH(Pointer.to(outputs[fused][b]), bufs[b], sizes[b]);
                }
            }
            String[] names = {"q/k/v rows", "keys 0", "values 0", "keys 1", "values 1", "keys 2 (dense)",
                    "values 2 (dense)", "8-bit labels", "16-bit labels", "8-bit scales", "ring keys", "ring values"};
            for (int b = 0; b < names.length; b++) {
                assertArrayEquals(outputs[0][b], outputs[1][b], "head size " + hd + ": " + names[b]);
            }
            // and they were written: the decode rows' keys, labels and the ring hold numbers
            assertTrue(java.util.stream.IntStream.range(0, outputs[1][8].length).anyMatch(i -> outputs[1][8][i] != 0),
                    "16-bit labels written");
            assertTrue(java.util.stream.IntStream.range(0, outputs[1][10].length).anyMatch(i -> outputs[1][10][i] != 0),
                    "ring written");
            assertTrue(java.util.stream.IntStream.range(0, outputs[1][5].length).anyMatch(i -> outputs[1][5][i] != 0),
                    "the dense segment's key stored");
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
                assertArrayEquals(java.util.Arrays.copyOfRange(a, from, from + k), java.util.Arrays.copyOfRange(b, from, from + k), what);
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
                    assertTrue(c >= 0 && c < n && !picked[c] && (i == 0 || b[from + i] > b[from + i - 1]), what + ": slot " + b[from + i]);
                    picked[c] = true;
                    lowestPicked = Math.min(lowestPicked, cpu[c]);
                }
                for (int c = 0; c < n; c++) if (!picked[c]) highestLeft = Math.max(highestLeft, cpu[c]);
                assertTrue(lowestPicked >= highestLeft - 1e-4, what + ": picked down to " + lowestPicked + ", left " + highestLeft);
            }
        }
    }

    /**
     * The selected rows' attention in blocks of four warps (sparse_attention_dD_gG: per-head rows and rows whose group
     * shares a selection, in one step) equals softmax attention over sinks + selection + window computed on the CPU,
     * for head sizes 32, 64 and 128, GQA groups of 4, candidates and budgets of odd sizes, a budget above the candidates.
     * Host placement: the store in pinned host memory, its sinks and window rows overwritten with NaN there, so the
     * attention must read them from the device ring (window wrapped around: row lengths are not multiples of W);
     * staged: the same store and ring on the device (a look-ahead row's device stage). The shared rows on the device
     * take sparse_attention_pipelined; {@code splits} > 0: only they, over that many splits (one split for all; two, so
     * that a row's splits own its first chunks and claim the last four; more splits than a small row has chunks). Run
     * twice: the pipelined kernel's chunk counters are left zero for the next launch.
     */
    @ParameterizedTest(name = "head_dim {0}, {1} placement, splits {2}")
    @CsvSource({"32, device, 0", "64, device, 0", "128, device, 0", "128, device, 1", "128, device, 2", "128, device, 37",
            "64, host, 0", "128, host, 0", "32, staged, 37", "128, staged, 0", "64, staged, 37"})
    void groupedSparseAttentionMatchesCpu(int hd, String placement, int splitsAsked) {
        boolean host = placement.equals("host"), ring = !placement.equals("device");
        Random rnd = new Random(hd);
        int heads = 8, kvHeads = 2, group = 4, sinks = 4, window = 16, cap = 700, qStride = heads * hd, maxK = 512;
        int[][] rowsSpec = {{613, 97, 0}, {300, 1000, 2}, {450, 131, 1}};   // row length, budget, mode
        int rows = rowsSpec.length;
        float[][] keys = new float[rows][], values = new float[rows][];
        long[] kptr = new long[rows], vptr = new long[rows], ringK = new long[rows], ringV = new long[rows];
        int rowWidth = kvHeads * hd;
        for (int r = 0; r < rows; r++) {
            keys[r] = random(rnd, cap * rowWidth, 1);
            values[r] = random(rnd, cap * rowWidth, 1);
            for (int i = 0; i < keys[r].length; i++) {
                keys[r][i] = bf(keys[r][i]);
                values[r][i] = bf(values[r][i]);
            }
            if (!ring) {
                kptr[r] = jcuda.DeviceAddress.of(uploadBf16(keys[r]));
                vptr[r] = jcuda.DeviceAddress.of(uploadBf16(values[r]));
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
                java.util.Arrays.fill(storeK, t * rowWidth, (t + 1) * rowWidth, Float.NaN);
                java.util.Arrays.fill(storeV, t * rowWidth, (t + 1) * rowWidth, Float.NaN);
            }
            kptr[r] = jcuda.DeviceAddress.of(host ? onHost(uploadBf16(storeK), storeK.length * 2L) : uploadBf16(storeK));
            vptr[r] = jcuda.DeviceAddress.of(host ? onHost(uploadBf16(storeV), storeV.length * 2L) : uploadBf16(storeV));
            ringK[r] = jcuda.DeviceAddress.of(uploadBf16(rk));
            ringV[r] = jcuda.DeviceAddress.of(uploadBf16(rv));
        }
        float[] q = random(rnd, rows * qStride, 1);
        int[] sp = new int[rows * SparseRowDescriptor.FIELDS], seg = new int[rows], len = new int[rows], sel = new int[rows * heads * maxK];
        int[][][] chosen = new int[rows][heads][];
        for (int p = 0; p < rows; p++) {
            int n = rowsSpec[p][0], cand = n - sinks - window, k = Math.min(rowsSpec[p][1], cand), mode = rowsSpec[p][2];
            seg[p] = p;
            len[p] = n;
            sp[p * SparseRowDescriptor.FIELDS] = p;
            sp[p * SparseRowDescriptor.FIELDS + 1] = cand;
            sp[p * SparseRowDescriptor.FIELDS + 2] = rowsSpec[p][1];
            sp[p * SparseRowDescriptor.FIELDS + 3] = sinks;
            sp[p * SparseRowDescriptor.FIELDS + 4] = window;
            sp[p * SparseRowDescriptor.FIELDS + 5] = mode;
            sp[p * SparseRowDescriptor.FIELDS + 9] = host ? 1 : 0;
            for (int h = 0; h < heads; h++) {
                if (mode != 0 && h % group != 0) {
                    chosen[p][h] = chosen[p][h - h % group];   // the group's first head's selection
                } else {
                    java.util.List<Integer> all = new java.util.ArrayList<>();
                    for (int c = 0; c < cand; c++) all.add(sinks + c);
                    java.util.Collections.shuffle(all, rnd);
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
        for (int run = 0; run < 2; run++) {
            CudaOps.sparseAttention(gpu, partials, upload(q), upload(kptr), upload(vptr), upload(ringK), upload(ringV),
                    upload(seg), upload(len), upload(sp), upload(sel), claims, rows, heads, kvHeads, hd, splits, qStride,
                    maxK, (splitsAsked > 0 ? 2 : 3) | (host ? 8 : 4));
            gpu.launch("attention_merge", rows * heads, 1, Math.min(1024, 4 * hd), out, partials, upload(new int[]{0, 1, 2}),
                    heads, hd, splits);
            runs[run] = download(out, rows * qStride);
        }
        assertArrayEquals(new int[2 * rows * kvHeads], downloadInts(claims, 2 * rows * kvHeads), "counters left zero");
        float[] ref = new float[rows * qStride];
        for (int p = 0; p < rows; p++) {
            int n = len[p];
            for (int h = 0; h < heads; h++) {
                int g = h / group;
                java.util.List<Integer> slots = new java.util.ArrayList<>();
                for (int t = 0; t < sinks; t++) slots.add(t);
                for (int c : chosen[p][h]) slots.add(c);
                for (int t = n - window; t < n; t++) slots.add(t);
                double[] w = new double[slots.size()];
                double max = Double.NEGATIVE_INFINITY, sum = 0;
                for (int i = 0; i < w.length; i++) {
                    double dot = 0;
                    for (int c = 0; c < hd; c++) dot += q[p * qStride + h * hd + c] * keys[p][(slots.get(i) * kvHeads + g) * hd + c];
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
        int[] compared = java.util.stream.IntStream.range(0, rows).filter(p -> splitsAsked == 0 || rowsSpec[p][2] != 0)
                .toArray();
        double err = relError(rowsOf(runs[0], compared, qStride), rowsOf(ref, compared, qStride));
        assertTrue(err < 1e-4, "relative error " + err);
        // the second launch's blocks may claim other chunks: the same up to the merge's rounding
        double again = relError(rowsOf(runs[1], compared, qStride), rowsOf(runs[0], compared, qStride));
        assertTrue(again < 1e-6, "a second launch: relative difference " + again);
    }

    /** Rows {@code rows} of a [*][width] array, one after another. */
    private static float[] rowsOf(float[] x, int[] rows, int width) {
        float[] out = new float[rows.length * width];
        for (int i = 0; i < rows.length; i++) System.arraycopy(x, rows[i] * width, out, i * width, width);
        return out;
    }

    /** A float that fp16 holds exactly (normal or zero) as its fp16 bits. */
    static short fp16(float f) {
        if (f == 0) return 0;
        int bits = Float.floatToIntBits(f), exp = ((bits >>> 23) & 0xff) - 127 + 15;
        return (short) (((bits >>> 16) & 0x8000) | (exp << 10) | ((bits >>> 13) & 0x3ff));
    }

    static CUdeviceptr upload(double[] x) {
        CUdeviceptr p = gpu.alloc(x.length * 8L);
        cuMemcpyHtoD(p, Pointer.to(x), x.length * 8L);
        return p;
    }

    /**
     * Lookahead's kernels (lookahead.cu) against the CPU: predict_label_queries = the label channels of RoPE(W_q
     * rmsnorm(x) + b) (CpuBackend.predictNextQueries' arithmetic), with RMSNorm and without a norm (post-norm), for
     * rows in another order than their descriptors, each read at its own row of the residual stream; gather_selected_rows copies each shared selection's rows of a
     * store in pinned host memory to the row's device stage and rewrites the selection to the stage's indices.
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
                List<Integer> perm = new java.util.ArrayList<>();
                for (int c = 0; c < d; c++) perm.add(c);
                java.util.Collections.shuffle(perm, r);
                for (int i = 0; i < rLabels; i++) ch[h * rLabels + i] = perm.get(i);
            }
        }
        int[] sp = new int[p * SparseRowDescriptor.FIELDS];
        int maxK = 64, k = 29, cap = 41;
        for (int i = 0; i < p; i++) {   // row, candidates, budget k, ..., mode mean, r, 16-bit labels
            int[] desc = {descRows[i], 37, k, 0, 4, 2, rLabels, 16, cap, 1};
            System.arraycopy(desc, 0, sp, i * SparseRowDescriptor.FIELDS, desc.length);
        }
        float[] inv = io.dsflow.engine.model.RopeConfig.defaults(500000).inverseFrequencies(d);
        CUdeviceptr chTable = upload(new long[]{jcuda.DeviceAddress.of(upload(channels[0])),
                jcuda.DeviceAddress.of(upload(channels[1]))});
        CUdeviceptr dx = upload(x), dw = uploadBf16(w), db = uploadBf16(bias), dn = uploadBf16(normW);
        CUdeviceptr dsp = upload(sp), dseg = upload(seg), dpos = upload(pos), dinv = upload(inv);
        for (boolean norm : new boolean[]{true, false}) {
            CUdeviceptr q = poisoned(rows * qDim);
            gpu.launchWithSharedMemory("predict_label_queries", p, heads * ((rLabels + CudaOps.PREDICT_LABELS - 1)
                    / CudaOps.PREDICT_LABELS), 256, 4 * hidden, q, dx, norm ? dn : null, null,
                    1e-5f, dw, db, dpos, dinv, chTable, dseg, dsp, heads, d, hidden);
            float[] got = download(q, rows * qDim);
            for (int i = 0; i < p; i++) {
                int row = descRows[i];
                float[] xn = new float[hidden], ref = new float[qDim];
                float[] xi = java.util.Arrays.copyOfRange(x, row * hidden, (row + 1) * hidden);
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
                            assertTrue(Float.isNaN(v), "only label channels are written: row " + row + " head " + h + " channel " + c);
                        } else {
                            assertEquals(ref[h * d + c], v, 2e-4 * (1 + Math.abs(ref[h * d + c])),
                                    "norm " + norm + " row " + row + " head " + h + " channel " + c);
                        }
                    }
                }
            }
        }
        // gather: each segment's store [cap][kvHeads][d] in host memory; a selection per (row, kv head) at its first head
        int kvDim = kvHeads * d, g = heads / kvHeads;
        float[][] keys = new float[2][], values = new float[2][];
        long[] kt = new long[2], vt = new long[2], skt = new long[2], svt = new long[2];
        CUdeviceptr[] stageK = new CUdeviceptr[2], stageV = new CUdeviceptr[2];
        for (int s = 0; s < 2; s++) {
            keys[s] = random(r, cap * kvDim, 1);
            values[s] = random(r, cap * kvDim, 1);
            kt[s] = jcuda.DeviceAddress.of(onHost(uploadBf16(keys[s]), cap * kvDim * 2L));
            vt[s] = jcuda.DeviceAddress.of(onHost(uploadBf16(values[s]), cap * kvDim * 2L));
            stageK[s] = uploadBf16(new float[maxK * kvDim]);
            stageV[s] = uploadBf16(new float[maxK * kvDim]);
            skt[s] = jcuda.DeviceAddress.of(stageK[s]);
            svt[s] = jcuda.DeviceAddress.of(stageV[s]);
        }
        int[] selected = new int[p * heads * maxK];
        for (int i = 0; i < selected.length; i++) selected[i] = r.nextInt(cap);
        CUdeviceptr dsel = upload(selected);
        int[] rowsOfSegment = {0, 1};   // the gather reads descriptors 0 and 1 (rows 3 and 0: segments 1 and 0)
        gpu.launch("gather_selected_rows", 3, 1, 256, dsel, upload(kt), upload(vt), upload(skt), upload(svt), dseg, dsp,
                2, heads, kvHeads, d, maxK);
        gpu.synchronize();
        int[] after = new int[selected.length];
        cuMemcpyDtoH(Pointer.to(after), dsel, after.length * 4L);
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

    @Test
    void elementwiseKernelsAndEmbeddingMatchCpu() {
        Random r = new Random(9);
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
