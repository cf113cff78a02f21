package io.dsflow.cli;

import io.dsflow.engine.Calibration;
import io.dsflow.engine.DsflowException;
import io.dsflow.engine.Engine;
import io.dsflow.engine.kv.ChannelConfig;
import io.dsflow.engine.kv.KvConfig;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.Set;

/**
 * {@code calibrate --model DIR --out FILE [--samples N] [--block-len L] [--text FILE] [--r R] [--seed S]}: Double
 * Sparsity's offline calibration. Prefills N blocks of L tokens (the probe model's own format, or any text file),
 * sums the channel statistics over all of them, writes the DoubleSparse JSON (qk_proj, q_proj, k_proj) and prints
 * the top-r overlap (Jaccard) between the two halves of the data.
 */
public final class CalibrateCommand {
    public static final String USAGE = "calibrate --model DIR --out FILE [--samples N] [--block-len L] [--text FILE] [--r R]"
            + " [--seed S] [--backend cpu]";

    private CalibrateCommand() {
    }

    public static int run(String[] argv, PrintStream out) {
        Args a = Args.parse("calibrate", argv, 1, Set.of("model", "out", "samples", "block-len", "text", "r", "seed",
                "backend"), Set.of());
        Path model = Path.of(a.require("model"));
        Path outFile = Path.of(a.require("out"));
        int samples = a.getInt("samples", Calibration.DEFAULT_SAMPLES);
        int blockLen = a.getInt("block-len", Calibration.DEFAULT_BLOCK);
        if (samples < 2) throw new UsageException("calibrate: --samples must be >= 2 (the overlap compares two halves)");
        if (blockLen < 2) throw new UsageException("calibrate: --block-len must be >= 2");
        try (Engine engine = Engine.load(model, a.get("backend", "cpu"))) {
            if (blockLen > engine.config().maxPositions()) {
                throw new UsageException("calibrate: --block-len " + blockLen + " exceeds the model's "
                        + engine.config().maxPositions() + " positions");
            }
            List<int[]> blocks;
            String source;
            if (a.has("text")) {
                Path text = Path.of(a.get("text", null));
                String content;
                try {
                    content = Files.readString(text);
                } catch (IOException e) {
                    throw new DsflowException("cannot read calibration text " + text + ": " + e.getMessage(), e);
                }
                blocks = Calibration.textBlocks(engine.tokenizer(), content, samples, blockLen, engine.config().bosTokenId());
                source = text.toString();
            } else {
                blocks = Calibration.probeBlocks(engine.tokenizer(), samples, blockLen, a.getLong("seed", 1));
                source = "probe-format text";
            }
            Calibration.Result r = Calibration.run(engine, blocks);
            int rank = a.has("r") ? a.getInt("r", 0) : KvConfig.defaults(io.dsflow.engine.kv.KvPolicy.DS)
                    .labelChannels(engine.config().headDim());
            ChannelConfig.write(outFile, r.all().channels(KvConfig.ChannelSource.QK),
                    r.all().channels(KvConfig.ChannelSource.Q), r.all().channels(KvConfig.ChannelSource.K));
            out.printf(Locale.ROOT, "calibrated %s on %d blocks of %d tokens of %s in %.1f s; wrote %s%n",
                    model, blocks.size(), blockLen, source, r.seconds(), outFile);
            out.printf(Locale.ROOT, "top-%d overlap (Jaccard) between the two halves: qk %.3f, q %.3f, k %.3f%n", rank,
                    r.overlap(KvConfig.ChannelSource.QK, rank), r.overlap(KvConfig.ChannelSource.Q, rank),
                    r.overlap(KvConfig.ChannelSource.K, rank));
        }
        return 0;
    }
}
