package io.dsflow.engine.cuda;

import io.dsflow.engine.sample.Sampler;
import io.dsflow.engine.sample.SamplingParams;
import jcuda.driver.CUdeviceptr;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.util.Arrays;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** sample.cu's sampling, argmax and row gather against the CPU Sampler and plain copies. */
class SampleKernelsTest extends KernelTestSupport {
    /**
     * sample_rows draws what the CPU Sampler draws: random logits with planted ties (equal values, so the order's
     * lower-index-first rule decides), temperatures, top-k and top-p together and alone, 40 steps of a seed each.
     */
    @ParameterizedTest(name = "vocab {0}")
    @CsvSource({"1001", "128256"})
    void samplingMatchesTheCpuSampler(int vocab) {
        Random r = new Random(vocab);
        SamplingParams[] kinds = {new SamplingParams(1.0, 1.0, 0, 7, 8, List.of()),
                new SamplingParams(0.7, 0.9, 40, 8, 8, List.of()), new SamplingParams(1.3, 1.0, 5, 9, 8, List.of()),
                new SamplingParams(0.5, 0.5, 0, 10, 8, List.of()), new SamplingParams(1.0, 0.95, 1, 11, 8, List.of()),
                new SamplingParams(2.0, 0.99, 1000, 12, 8, List.of())};
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
        SampleKernels.sampleRows(gpu, rows, out, upload(logits), upload(CudaOps.drawParams(params, step)),
                gpu.alloc((long) rows * vocab * 8), vocab);
        int[] got = downloadInts(out, rows);
        for (int row = 0; row < rows; row++) {
            float[] l = Arrays.copyOfRange(logits, row * vocab, (row + 1) * vocab);
            assertEquals(Sampler.sample(l, params[row], step[row]), got[row], "row " + row + " " + params[row]);
        }
    }

    /**
     * argmax against the CPU's, the lowest index on ties (within a block's chunk and across chunks), a NaN ignored:
     * rows split over many blocks (few rows) or one (many rows), rows in whole float4s or not; each launch twice (its
     * counters are left zero for the next).
     */
    @ParameterizedTest(name = "rows {0}, vocab {1}")
    @CsvSource({"3, 50001", "1, 128256", "200, 128256", "600, 32000", "2, 4099"})
    void argmaxMatchesCpu(int rows, int vocab) {
        Random r = new Random(8 + rows);
        float[] logits = random(r, rows * vocab, 1);
        logits[777] = 10f;
        logits[vocab - 3] = 10f;   // a tie in another block's chunk: the lower index wins
        logits[(rows - 1) * vocab + 5] = Float.NaN;
        logits[(rows - 1) * vocab + 11] = 9f;
        logits[(rows - 1) * vocab + 12] = 9f;
        CUdeviceptr ids = gpu.alloc(rows * 4L), dLogits = upload(logits);
        CUdeviceptr partials = gpu.alloc(8L * rows * SampleKernels.argmaxSplits(gpu, rows, vocab));
        CUdeviceptr done = upload(new int[rows]);
        for (int run = 0; run < 2; run++) {
            SampleKernels.argmax(gpu, rows, ids, dLogits, vocab, partials, done);
            int[] got = downloadInts(ids, rows);
            for (int m = 0; m < rows; m++) {
                assertEquals(Sampler.argmax(Arrays.copyOfRange(logits, m * vocab, (m + 1) * vocab)), got[m],
                        "row " + m + ", run " + run);
            }
            assertEquals(777, got[0]);
            if (rows > 1) assertEquals(11, got[rows - 1]);
            assertArrayEquals(new int[rows], downloadInts(done, rows), "counters left zero");
        }
    }

    @Test
    void gatherMatchesCpu() {
        Random r = new Random(8);
        // gather_rows: the last row of each segment, in segment order
        int dim = 129;
        float[] hidden = random(r, 7 * dim, 1);
        int[] index = {6, 0, 3};
        CUdeviceptr dst = poisoned(3 * dim);
        SampleKernels.gatherRows(gpu, dst, upload(hidden), upload(index), 3, dim);
        float[] expected = new float[3 * dim];
        for (int i = 0; i < 3; i++) System.arraycopy(hidden, index[i] * dim, expected, i * dim, dim);
        assertTrue(relError(download(dst, 3 * dim), expected) == 0.0, "the gathered rows");
    }
}
