package io.dsflow.engine.cuda;

import jcuda.driver.CUdeviceptr;
import org.junit.jupiter.api.Test;

import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertTrue;

/** embedding.cu's token embedding against the tables' rows. */
class EmbeddingKernelsTest extends KernelTestSupport {
    /** Token rows plus OPT's learned positions at an offset; an odd width (the element-wise path). */
    @Test
    void embeddingWithLearnedPositionsMatchesTheTables() {
        Random r = new Random(9);
        int vocab = 37, dim = 77;
        float[] table = random(r, vocab * dim, 1), pos = random(r, 20 * dim, 1);
        for (int i = 0; i < table.length; i++) table[i] = bf(table[i]);
        for (int i = 0; i < pos.length; i++) pos[i] = bf(pos[i]);
        int[] tokens = {5, 36, 0}, positions = {0, 7, 15};
        CUdeviceptr emb = poisoned(3 * dim);
        EmbeddingKernels.embed(gpu, emb, uploadBf16(table), upload(tokens), 3, dim, uploadBf16(pos), upload(positions),
                2);
        float[] expected = new float[3 * dim];
        for (int m = 0; m < 3; m++) {
            for (int i = 0; i < dim; i++) {
                expected[m * dim + i] = table[tokens[m] * dim + i] + pos[(positions[m] + 2) * dim + i];
            }
        }
        assertTrue(relError(download(emb, 3 * dim), expected) < 1e-7, "embedding with OPT positions");
    }
}
