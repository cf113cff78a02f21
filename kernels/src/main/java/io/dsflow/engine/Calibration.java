package io.dsflow.engine;

import io.dsflow.engine.kv.CalibrationStatistics;
import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.model.ModelConfig;
import io.dsflow.engine.probe.ProbePrompts;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Random;

/**
 * Offline calibration of Double Sparsity's heavy channels: prefill blocks of calibration text, sum the channel
 * statistics over all of them, and measure how stable the top-r sets are between the two halves of the data.
 */
public final class Calibration {
    private static final Logger LOG = LoggerFactory.getLogger(Calibration.class);
    public static final int DEFAULT_SAMPLES = 8;
    public static final int DEFAULT_BLOCK = 2048;

    private Calibration() {
    }

    /**
     * @param all        statistics over every block
     * @param firstHalf  over the first half of the blocks
     * @param secondHalf over the other half
     */
    public record Result(CalibrationStatistics all, CalibrationStatistics firstHalf, CalibrationStatistics secondHalf,
                         double seconds) {
        public double overlap(KvConfig.ChannelSource source, int r) {
            return CalibrationStatistics.topOverlap(firstHalf, secondHalf, source, r);
        }
    }

    /**
     * Prefills each block into a calibrating cache of the engine's backend (the GPU's forward pass sums the statistics
     * on the device, the CPU's in its cache), the first half of the blocks into one statistics, the rest into another.
     */
    public static Result run(Engine engine, List<int[]> blocks) {
        if (blocks.size() < 2) {
            throw new DsflowException("calibration needs at least 2 blocks (one per half), got " + blocks.size());
        }
        ModelConfig c = engine.config();
        Backend backend = engine.backend();
        CalibrationStatistics a = new CalibrationStatistics(c.numLayers(), c.numHeads(), c.numKvHeads(), c.headDim());
        CalibrationStatistics b = new CalibrationStatistics(c.numLayers(), c.numHeads(), c.numKvHeads(), c.headDim());
        long t0 = System.nanoTime();
        for (int i = 0; i < blocks.size(); i++) {
            CalibrationStatistics half = i < blocks.size() / 2 ? a : b;
            Sequence seq = new Sequence(backend.newCalibrationCache(half));
            try {
                engine.prefill(seq, blocks.get(i));
            } finally {
                seq.cache().release();
            }
            LOG.info(String.format(Locale.ROOT, "calibration on %s: block %d/%d (%d tokens), %.1f s",
                    backend.description(), i + 1, blocks.size(), blocks.get(i).length, (System.nanoTime() - t0) / 1e9));
        }
        CalibrationStatistics all = new CalibrationStatistics(c.numLayers(), c.numHeads(), c.numKvHeads(), c.headDim());
        all.add(a);
        all.add(b);
        return new Result(all, a, b, (System.nanoTime() - t0) / 1e9);
    }

    /** Blocks of probe-format text (filler with planted facts), each starting with the tokenizer's BOS. */
    public static List<int[]> probeBlocks(Tokenizer tok, int samples, int blockLen, long seed) {
        Random rnd = new Random(seed);
        List<int[]> blocks = new ArrayList<>();
        for (int i = 0; i < samples; i++) {
            StringBuilder text = new StringBuilder();
            int[] ids = new int[0];
            while (ids.length < blockLen) {
                ProbePrompts.Sample s = (i + text.length()) % 2 == 0 ? ProbePrompts.passKey(rnd, 60) : ProbePrompts.records(rnd, 60);
                text.append(s.prompt()).append(' ').append(s.answer()).append('.');
                ids = tok.encode(text.toString(), true);
            }
            blocks.add(Arrays.copyOf(ids, blockLen));
        }
        return blocks;
    }

    /** Blocks cut from the tokens of any text; each starts with BOS where the model has one. */
    public static List<int[]> textBlocks(Tokenizer tok, String text, int samples, int blockLen, int bos) {
        int[] ids = tok.encode(text, false);
        int body = bos >= 0 ? blockLen - 1 : blockLen;
        int available = ids.length / body;
        if (available < 2) {
            throw new DsflowException("calibration text has " + ids.length + " tokens: too few for two blocks of " + blockLen);
        }
        List<int[]> blocks = new ArrayList<>();
        for (int i = 0; i < Math.min(samples, available); i++) {
            int[] block = new int[blockLen];
            int at = 0;
            if (bos >= 0) block[at++] = bos;
            System.arraycopy(ids, i * body, block, at, body);
            blocks.add(block);
        }
        return blocks;
    }
}
