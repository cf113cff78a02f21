package io.dsflow.engine.cuda;

import io.dsflow.engine.cpu.CpuOps;
import io.dsflow.engine.model.RopeConfig;
import jcuda.driver.CUdeviceptr;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.util.Arrays;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertTrue;

/** kvcache.cu's kv_append_rope against the CPU backend's RoPE and cache rows. */
class KvAppendKernelsTest extends KernelTestSupport {
    /**
     * q rotated in place, k rotated and v copied into the cache at each row's slot, as bf16; a row's heads shared by
     * a few blocks whose groups of D / 2 threads take them in turn: fewer heads than groups, a head a group (few rows),
     * several heads a group (many rows: a prefill's one block a row).
     */
    @ParameterizedTest(name = "heads {0}/{1} x {2}, rows {3}")
    @CsvSource({"3, 2, 32, 5", "10, 2, 128, 5", "7, 1, 64, 5", "32, 8, 128, 64", "10, 2, 128, 700", "7, 1, 64, 300"})
    void ropeAndCacheAppendMatchCpu(int heads, int kvHeads, int d, int rows) {
        Random r = new Random(6);
        int kvDim = kvHeads * d, stride = (heads + 2 * kvHeads) * d + 5, cap = rows + 3;
        float[] x = random(r, rows * stride, 1);
        int[] pos = new int[rows], slot = new int[rows];
        int[] somePositions = {0, 1, 17, 4095, 131000};
        for (int m = 0; m < rows; m++) {
            pos[m] = m < somePositions.length ? somePositions[m] : r.nextInt(200000);
            slot[m] = (m * 7 + 3) % cap;
        }
        float[] inv = RopeConfig.defaults(500000).inverseFrequencies(d);
        CUdeviceptr dx = upload(x), kc = uploadBf16(new float[cap * kvDim]), vc = uploadBf16(new float[cap * kvDim]);
        KvAppendKernels.kvAppendRope(gpu, rows, dx, upload(pos), upload(inv), pointerTable(kc), pointerTable(vc),
                upload(new int[rows]), upload(slot), heads, kvHeads, d, stride);
        float[] ref = x.clone(), kRef = new float[cap * kvDim], vRef = new float[cap * kvDim];
        for (int m = 0; m < rows; m++) {
            float[] q = Arrays.copyOfRange(ref, m * stride, m * stride + heads * d);
            CpuOps.rope(q, heads, d, pos[m], inv);
            System.arraycopy(q, 0, ref, m * stride, q.length);
            float[] k = Arrays.copyOfRange(x, m * stride + heads * d, m * stride + heads * d + kvDim);
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
        assertTrue(relError(downloadBf16(kc, cap * kvDim), kRef) < 1e-3, "keys in the cache");
        assertTrue(relError(downloadBf16(vc, cap * kvDim), vRef) == 0, "values in the cache");
    }
}
