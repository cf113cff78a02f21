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

    @Test
    void argmaxAndGatherMatchCpu() {
        Random r = new Random(8);
        int rows = 3, vocab = 50001;
        float[] logits = random(r, rows * vocab, 1);
        logits[vocab + 777] = 10f;
        logits[vocab + 999] = 10f; // tie: the lower index wins
        CUdeviceptr ids = gpu.alloc(rows * 4L);
        SampleKernels.argmax(gpu, rows, ids, upload(logits), vocab);
        int[] got = downloadInts(ids, rows);
        for (int m = 0; m < rows; m++) {
            assertEquals(Sampler.argmax(Arrays.copyOfRange(logits, m * vocab, (m + 1) * vocab)), got[m]);
        }
        assertEquals(777, got[1]);
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
