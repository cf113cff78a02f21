package io.dsflow.job.cli;

import io.dsflow.cli.Args;
import io.dsflow.cli.UsageException;
import io.dsflow.job.DurableCheckpoints;
import io.dsflow.job.JobConfig;
import io.dsflow.job.JsonlFileSink;
import io.dsflow.job.KafkaIO;
import io.dsflow.job.Pipeline;
import io.dsflow.operators.DecodeSettings;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.connector.file.src.FileSource;
import org.apache.flink.connector.file.src.reader.TextLineInputFormat;
import org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.LocalStreamEnvironment;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.channels.FileChannel;
import java.nio.file.StandardOpenOption;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Properties;
import java.util.Set;

/**
 * {@code run --config FILE}: the job against real Kafka (locally, or on a cluster when submitted with flink run);
 * {@code run --replay-file IN --output-file OUT [--config FILE] [--model DIR]}: a bounded job over a JSONL file of
 * requests writing chunk, final and error records as JSONL, then finishing; {@code run --config FILE --replay}: a
 * bounded job over the prompts topic from the earliest offset to the latest at start. Failures are thrown, for the
 * command line to report and for a Flink cluster to see (DsflowJob). In local mode {@code run --config FILE} keeps
 * its checkpoints under {@code state.dir} and restores the newest when started again ({@link DurableCheckpoints}), so
 * a killed process loses nothing; a bad command line (an unknown backend, an output file that cannot be written) is
 * refused before anything starts.
 */
public final class RunCommand {
    static final String USAGE = "run --config FILE [--replay] | run --replay-file IN --output-file OUT [--config FILE]"
            + " [--model DIR] [--backend cpu|cuda|auto|cpu:device-memory=SIZE]";

    private RunCommand() {
    }

    /** Whether two paths name one file (the same path, or links to one file where it exists). */
    private static boolean sameFile(Path x, Path y) throws java.io.IOException {
        if (x.toAbsolutePath().normalize().equals(y.toAbsolutePath().normalize())) return true;
        return Files.exists(x) && Files.exists(y) && Files.isSameFile(x, y);
    }

    /** Builds and runs the job; returns 0, or throws what went wrong. */
    public static int run(String[] argv, PrintStream out) throws Exception {
        Args a = Args.parse("run", argv, 1, Set.of("config", "replay-file", "output-file", "model", "backend"),
                Set.of("replay"));
        if (a.has("replay-file") && a.has("output-file") && sameFile(Path.of(a.get("replay-file", null)),
                Path.of(a.get("output-file", null)))) {
            // the sink truncates its file when the job starts, before the source has read it
            throw new UsageException("run: --output-file is the --replay-file; the replay would overwrite its input");
        }
        if (a.has("backend")) a.getBackend(null);   // a bad name is refused before the job starts
        JobConfig config = a.has("config") ? JobConfig.load(Path.of(a.get("config", null))) : JobConfig.from(new Properties());
        if (a.has("model") || a.has("backend")) {
            DecodeSettings d = config.decode();
            config = config.withDecode(new DecodeSettings(a.get("model", d.modelDir()), a.get("backend", d.backend()),
                    d.kv(), d.limits(), d.prefillChunk()));
        }
        if (!Files.isRegularFile(Path.of(config.decode().modelDir(), "config.json"))) {
            throw new UsageException("run: no model at " + config.decode().modelDir() + " (model.dir in the config, or --model)");
        }
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        if (a.has("config") && !a.has("replay") && !a.has("replay-file") && env instanceof LocalStreamEnvironment) {
            // the local mini cluster: checkpoints on disk, restored when the same job starts again (a Flink cluster
            // keeps its own checkpoint settings and restores through its own means)
            env = StreamExecutionEnvironment.getExecutionEnvironment(DurableCheckpoints.localConfiguration(config));
        }
        env.setParallelism(config.parallelism());
        if (a.has("replay-file")) {
            if (!a.has("output-file")) throw new UsageException("run: --replay-file needs --output-file");
            Path in = Path.of(a.get("replay-file", null));
            if (!Files.isReadable(in)) throw new UsageException("run: cannot read " + in);
            Path output = Path.of(a.get("output-file", null));
            checkWritable(output);
            long requests = countRequests(in);
            DataStream<String> lines = env.fromSource(FileSource.forRecordStreamFormat(new TextLineInputFormat(),
                    new org.apache.flink.core.fs.Path(in.toAbsolutePath().toUri())).build(), WatermarkStrategy.noWatermarks(), "replay file");
            Pipeline.build(lines.filter(l -> !l.isBlank()).name("skip blank lines"), config.decode())
                    .sinkTo(new JsonlFileSink(output, requests)).setParallelism(1).name("output file");
            env.execute("dsflow replay " + in.getFileName());
            out.println("replay: wrote " + a.get("output-file", null));
            return 0;
        }
        if (!a.has("config")) throw new UsageException("run: give --config FILE, or --replay-file IN --output-file OUT");
        env.enableCheckpointing(config.checkpointIntervalMs());
        OffsetsInitializer start = a.has("replay") ? OffsetsInitializer.earliest()
                : OffsetsInitializer.committedOffsets(org.apache.kafka.clients.consumer.OffsetResetStrategy.EARLIEST);
        KafkaIO.sinkTo(KafkaIO.pipeline(env, config, start, a.has("replay") ? OffsetsInitializer.latest() : null), config);
        env.execute(a.has("replay") ? "dsflow replay " + config.promptsTopic() : "dsflow");
        return 0;
    }

    /**
     * Fails with one line now rather than with the sink's stack trace once the job runs: the output file must be
     * creatable or writable (it is replaced when the job starts; nothing is truncated here).
     */
    private static void checkWritable(Path output) {
        if (Files.isDirectory(output)) throw new UsageException("run: --output-file " + output + " is a directory");
        boolean existed = Files.exists(output);
        try {
            FileChannel.open(output, StandardOpenOption.WRITE, StandardOpenOption.CREATE).close();
            if (!existed) Files.delete(output);
        } catch (java.nio.file.AccessDeniedException e) {
            throw new UsageException("run: cannot write --output-file " + output + ": permission denied");
        } catch (java.nio.file.NoSuchFileException e) {
            throw new UsageException("run: cannot write --output-file " + output + ": its folder does not exist");
        } catch (IOException e) {
            throw new UsageException("run: cannot write --output-file " + output + ": " + e);
        }
    }

    /** The non-blank lines of the replay file: the requests the progress lines count against. */
    private static long countRequests(Path in) throws IOException {
        try (var lines = Files.lines(in)) {
            return lines.filter(l -> !l.isBlank()).count();
        } catch (java.io.UncheckedIOException e) {
            throw e.getCause();
        }
    }
}
