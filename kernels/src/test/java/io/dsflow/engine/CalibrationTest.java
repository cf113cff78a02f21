package io.dsflow.engine;

import io.dsflow.engine.kv.CalibratingKvCache;
import io.dsflow.engine.kv.CalibrationStatistics;
import io.dsflow.engine.kv.ChannelConfig;
import io.dsflow.engine.kv.KvCache;
import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.kv.KvPolicy;
import io.dsflow.engine.model.ModelConfig;
import io.dsflow.engine.sample.SamplingParams;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Calibration through the engine's backend, on the CPU (the GPU's side: cuda.CudaCalibrationTest). */
public class CalibrationTest {
    @TempDir
    Path tmp;

    /** A copy of a test model's folder without its channels.json, if it has one: a folder as a user downloads it. */
    public static Path withoutChannelFile(String model, Path dir) throws IOException {
        Path target = dir.resolve(model);
        Files.createDirectories(target);
        try (Stream<Path> files = Files.list(TestModels.dir(model))) {
            for (Path f : files.toList()) {
                String name = f.getFileName().toString();
                if (!name.equals(Engine.CHANNEL_FILE)) Files.copy(f, target.resolve(name));
            }
        }
        return target;
    }

    /** Calibration as it ran before backends made the cache: each block prefilled into a CPU CalibratingKvCache. */
    private static CalibrationStatistics[] throughCalibratingCaches(Engine e, List<int[]> blocks) {
        ModelConfig c = e.config();
        CalibrationStatistics[] halves = new CalibrationStatistics[2];
        for (int i = 0; i < 2; i++) {
            halves[i] = new CalibrationStatistics(c.numLayers(), c.numHeads(), c.numKvHeads(), c.headDim());
        }
        for (int i = 0; i < blocks.size(); i++) {
            CalibrationStatistics half = halves[i < blocks.size() / 2 ? 0 : 1];
            KvCache cache = new CalibratingKvCache(c.numLayers(), c.numKvHeads(), c.headDim(), half);
            e.prefill(new Sequence(cache), blocks.get(i));
        }
        return halves;
    }

    private static void assertSameSums(CalibrationStatistics want, CalibrationStatistics got, ModelConfig c,
                                       String what) {
        assertEquals(want.tokens(), got.tokens(), what + ": tokens");
        for (KvConfig.ChannelSource s : List.of(KvConfig.ChannelSource.QK, KvConfig.ChannelSource.Q,
                KvConfig.ChannelSource.K)) {
            for (int l = 0; l < c.numLayers(); l++) {
                for (int h = 0; h < (s == KvConfig.ChannelSource.K ? c.numKvHeads() : c.numHeads()); h++) {
                    assertArrayEquals(want.sums(s, l, h), got.sums(s, l, h), what + ": " + s + " layer " + l
                            + " head " + h);
                }
            }
        }
    }

    /** On the CPU, Calibration.run sums exactly what the calibrating cache summed before, half by half. */
    @Test
    void calibrationOnTheCpuSumsWhatItSummedBefore() {
        Engine e = TestModels.engine("llama-tiny");
        List<int[]> blocks = Calibration.probeBlocks(e.tokenizer(), 4, 200, 5);
        Calibration.Result r = Calibration.run(e, blocks);
        CalibrationStatistics[] before = throughCalibratingCaches(e, blocks);
        assertSameSums(before[0], r.firstHalf(), e.config(), "first half");
        assertSameSums(before[1], r.secondHalf(), e.config(), "second half");
        assertEquals(4L * 200, r.all().tokens());
    }

    @Test
    void theCpuBackendCalibratesThroughItsCalibratingCache() {
        Engine e = TestModels.engine("llama-tiny");
        ModelConfig c = e.config();
        CalibrationStatistics stats = new CalibrationStatistics(c.numLayers(), c.numHeads(), c.numKvHeads(),
                c.headDim());
        assertInstanceOf(CalibratingKvCache.class, e.backend().newCalibrationCache(stats));
        CalibrationStatistics other = new CalibrationStatistics(c.numLayers() + 1, c.numHeads(), c.numKvHeads(),
                c.headDim());
        assertThrows(IllegalArgumentException.class, () -> e.backend().newCalibrationCache(other));
    }

    /**
     * Acceptance 1 on the CPU: a folder without channels.json; a ds or dspp sequence calibrates first (on a smaller
     * sample here) and decodes, with the channels Calibration.run gives on the same blocks.
     */
    @Test
    void aFolderWithoutChannelsCalibratesAndDecodes() throws IOException {
        Path dir = withoutChannelFile("llama-tiny", tmp);
        try (Engine e = Engine.load(dir, "cpu")) {
            e.calibrateWith(2, 256);
            int[] prompt = e.tokenizer().encode(
                    io.dsflow.engine.probe.ProbePrompts.passKey(new java.util.Random(3), 30).prompt(), true);
            for (KvPolicy policy : List.of(KvPolicy.DSPP, KvPolicy.DS)) {
                KvConfig kv = KvConfig.defaults(policy).with(java.util.Map.of("dense-layers", "0"));
                GenerationResult r = e.generate(prompt, SamplingParams.greedy(8), kv);
                assertTrue(r.tokenIds().length > 0, policy + " generated nothing");
            }
            ChannelConfig want = Calibration.run(e, Calibration.probeBlocks(e.tokenizer(), 2, 256, 1)).all()
                    .channels(KvConfig.ChannelSource.QK);
            ChannelConfig got = e.channels(KvConfig.ChannelSource.QK);
            for (int l = 0; l < e.config().numLayers(); l++) {
                for (int h = 0; h < e.config().numHeads(); h++) assertArrayEquals(want.order(l, h), got.order(l, h));
            }
            assertFalse(Files.exists(dir.resolve(Engine.CHANNEL_FILE)), "calibrating keeps no file");
        }
    }

    @Test
    void calibrationSizeIsChecked() {
        Engine e = TestModels.engine("llama-tiny");
        assertThrows(DsflowException.class, () -> e.calibrateWith(1, 256));
        assertThrows(DsflowException.class, () -> e.calibrateWith(2, 1));
    }
}
