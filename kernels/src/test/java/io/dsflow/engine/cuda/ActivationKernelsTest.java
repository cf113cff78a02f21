package io.dsflow.engine.cuda;

import io.dsflow.engine.cpu.CpuOps;
import jcuda.driver.CUdeviceptr;
import org.junit.jupiter.api.Test;

import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * activation.cu's element-wise kernels against the CPU backend (interleave_rows and f32_to_bf16 are exercised by
 * {@link MatmulKernelsTest}'s products).
 */
class ActivationKernelsTest extends KernelTestSupport {
    @Test
    void reluAndResidualAddMatchCpu() {
        Random r = new Random(9);
        float[] x = random(r, 1001, 1), y = random(r, 1001, 1);
        CUdeviceptr dx = upload(x);
        ActivationKernels.relu(gpu, dx, 1001);
        float[] relu = x.clone();
        CpuOps.relu(relu);
        assertTrue(relError(download(dx, 1001), relu) < 1e-7, "max(x, 0)");
        ActivationKernels.residualAdd(gpu, dx, upload(y), 1001);
        CpuOps.add(relu, y);
        assertTrue(relError(download(dx, 1001), relu) < 1e-7, "x + y");
    }
}
