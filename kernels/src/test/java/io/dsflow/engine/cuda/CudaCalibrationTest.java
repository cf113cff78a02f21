package io.dsflow.engine.cuda;

import io.dsflow.engine.Calibration;
import io.dsflow.engine.CalibrationTest;
import io.dsflow.engine.Engine;
import io.dsflow.engine.Sequence;
import io.dsflow.engine.TestModels;
import io.dsflow.engine.kv.CalibrationStatistics;
import io.dsflow.engine.kv.ChannelConfig;
import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.kv.KvPolicy;
import io.dsflow.engine.model.ModelConfig;
import io.dsflow.engine.probe.ProbePrompts;
import io.dsflow.engine.sample.Sampler;
import io.dsflow.engine.sample.SamplingParams;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.io.IOException;
import java.nio.file.Path;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * Acceptance 1 on the GPU: a model folder without channels.json, where a ds or dspp sequence on the cuda backend
 * calibrates on the GPU first (CudaKvCache.calibrating, calibration.cu in the forward pass), then decodes. The GPU's
 * statistics are held to the CPU's: the same tokens counted, sums within 2% (bf16 products and caches on the GPU move
 * q and k a little), and top-r channel sets that overlap by 90% or more. Skipped where there is no GPU.
 */
class CudaCalibrationTest {
    private static final String MODEL = "llama-tiny";
    @TempDir
    static Path tmp;
    private static Path folder;
    /** The CPU backend on the same folder: calibrates with the default size on first use. */
    private static Engine cpu;

    @BeforeAll
    static void open() throws IOException {
        assumeTrue(CudaRuntime.available(), "no CUDA: " + CudaRuntime.unavailableReason());
        folder = CalibrationTest.withoutChannelFile(MODEL, tmp);
        cpu = Engine.load(folder, "cpu");
    }

    @AfterAll
    static void close() {
        if (cpu != null) cpu.close();
    }

    /** Each statistic's sums of every head within 2% of the CPU's largest sum of that head; the same token count. */
    @Test
    void calibrationOnTheGpuSumsWhatTheCpuSums() {
        try (Engine gpu = Engine.load(folder, "cuda")) {
            List<int[]> blocks = Calibration.probeBlocks(cpu.tokenizer(), 4, 300, 5);
            Calibration.Result onGpu = Calibration.run(gpu, blocks), onCpu = Calibration.run(cpu, blocks);
            ModelConfig c = cpu.config();
            assertEquals(4L * 300, onGpu.all().tokens(), "every token of every block counted once");
            for (CalibrationStatistics[] pair : List.of(
                    new CalibrationStatistics[]{onCpu.firstHalf(), onGpu.firstHalf()},
                    new CalibrationStatistics[]{onCpu.secondHalf(), onGpu.secondHalf()})) {
                assertEquals(pair[0].tokens(), pair[1].tokens());
                for (KvConfig.ChannelSource s : List.of(KvConfig.ChannelSource.QK, KvConfig.ChannelSource.Q,
                        KvConfig.ChannelSource.K)) {
                    for (int l = 0; l < c.numLayers(); l++) {
                        for (int h = 0; h < (s == KvConfig.ChannelSource.K ? c.numKvHeads() : c.numHeads()); h++) {
                            double[] want = pair[0].sums(s, l, h), got = pair[1].sums(s, l, h);
                            double max = 0, diff = 0;
                            for (int ch = 0; ch < want.length; ch++) {
                                max = Math.max(max, want[ch]);
                                diff = Math.max(diff, Math.abs(got[ch] - want[ch]));
                            }
                            assertTrue(max > 0 && diff <= 0.02 * max, s + " layer " + l + " head " + h
                                    + ": sums differ by " + diff + " of " + max);
                        }
                    }
                }
            }
            assertTrue(overlap(cpu.config(), onCpu.all().channels(KvConfig.ChannelSource.QK),
                    onGpu.all().channels(KvConfig.ChannelSource.QK)) >= 0.9);
        }
    }

    /**
     * generate --backend cuda --kv-policy dspp (and ds) on a folder without channels.json: the first sequence
     * calibrates on the GPU with the default size (8 blocks of up to 2048 tokens), with channels close to the CPU's,
     * and decodes: with the defaults (this 2-layer model's layers are both dense) and with every layer sparse, where
     * the calibrated channels pick the labels. The CPU given the GPU's channels generates the same tokens (or differs
     * only at a near-tie of its own).
     */
    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"dspp", "ds"})
    void aFolderWithoutChannelsCalibratesOnTheGpuAndDecodes(String policy) {
        KvPolicy p = KvPolicy.parse(policy);
        try (Engine gpu = Engine.load(folder, "cuda")) {
            Sequence first = gpu.newSequence(p);   // calibrates: no channels.json in the folder
            first.cache().release();
            for (KvConfig.ChannelSource s : List.of(KvConfig.ChannelSource.QK, KvConfig.ChannelSource.Q,
                    KvConfig.ChannelSource.K)) {
                double overlap = overlap(gpu.config(), cpu.channels(s), gpu.channels(s));
                assertTrue(overlap >= 0.9, s + ": top-r overlap of the GPU's and the CPU's channels " + overlap);
            }
            Path channels = tmp.resolve("gpu-" + policy + "-channels.json");
            ChannelConfig.write(channels, gpu.channels(KvConfig.ChannelSource.QK),
                    gpu.channels(KvConfig.ChannelSource.Q), gpu.channels(KvConfig.ChannelSource.K));
            try (Engine cpuSameChannels = Engine.load(folder, "cpu")) {
                cpuSameChannels.useChannelFile(channels);
                int[] prompt = gpu.tokenizer().encode(ProbePrompts.passKey(new Random(11), 40).prompt(), true);
                for (KvConfig kv : List.of(KvConfig.defaults(p),
                        KvConfig.defaults(p).with(Map.of("dense-layers", "0", "k-floor", "16")))) {
                    int[] got = gpu.generate(prompt, SamplingParams.greedy(12), kv).tokenIds();
                    assertTrue(got.length > 0, kv + ": no tokens");
                    int[] want = cpuSameChannels.generate(prompt, SamplingParams.greedy(12), kv).tokenIds();
                    sameOrNearTie(cpuSameChannels, gpu, prompt, kv, want, got, kv + ", " + prompt.length + " tokens");
                }
            }
        }
    }

    /** Mean Jaccard overlap of the top-r sets (r: the default label channels) of every layer and query head. */
    private static double overlap(ModelConfig c, ChannelConfig a, ChannelConfig b) {
        int r = KvConfig.defaults(KvPolicy.DSPP).labelChannels(c.headDim());
        double sum = 0;
        for (int l = 0; l < c.numLayers(); l++) {
            for (int h = 0; h < c.numHeads(); h++) {
                Set<Integer> x = new HashSet<>(), y = new HashSet<>();
                for (int ch : a.top(l, h, r)) x.add(ch);
                for (int ch : b.top(l, h, r)) y.add(ch);
                Set<Integer> union = new HashSet<>(x);
                union.addAll(y);
                x.retainAll(y);
                sum += x.size() / (double) union.size();
            }
        }
        return sum / (c.numLayers() * c.numHeads());
    }

    /**
     * The GPU's tokens equal the CPU's, or differ only where the CPU's own choice was a near-tie: fed the CPU's tokens,
     * the GPU's logits stay within 5% of the CPU's largest at every step, and where the two argmaxes differ the CPU's
     * top two were closer than twice the difference (CudaModelTest holds the sparse policies to the same).
     */
    private static void sameOrNearTie(Engine cpu, Engine gpu, int[] prompt, KvConfig kv, int[] want, int[] got,
                                      String what) {
        if (java.util.Arrays.equals(want, got)) return;
        System.out.println(what + ": CPU " + java.util.Arrays.toString(want) + ", GPU "
                + java.util.Arrays.toString(got));
        Sequence sc = cpu.newSequence(kv), sg = gpu.newSequence(kv);
        float[] lc = cpu.prefill(sc, prompt), lg = gpu.prefill(sg, prompt);
        for (int i = 0; i < want.length; i++) {
            float max = 0, diff = 0;
            for (int v = 0; v < lc.length; v++) {
                max = Math.max(max, Math.abs(lc[v]));
                diff = Math.max(diff, Math.abs(lc[v] - lg[v]));
            }
            assertTrue(diff <= 0.05f * max, what + ": step " + i + " logits differ by " + diff + " of " + max);
            int a = Sampler.argmax(lc), b = Sampler.argmax(lg);
            if (a != b) assertTrue(lc[a] - lc[b] <= 2 * diff, what + ": step " + i + " argmax " + a + " vs " + b);
            if (i + 1 < want.length) {
                lc = cpu.decode(List.of(sc), new int[]{want[i]})[0];
                lg = gpu.decode(List.of(sg), new int[]{want[i]})[0];
            }
        }
        sc.cache().release();
        sg.cache().release();
    }
}
