package io.dsflow.job;

import io.dsflow.engine.DsflowException;
import org.apache.flink.configuration.CheckpointingOptions;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.ExternalizedCheckpointRetention;
import org.apache.flink.configuration.StateRecoveryOptions;
import org.apache.flink.core.execution.RecoveryClaimMode;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.FileTime;
import java.util.Comparator;
import java.util.Optional;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

/**
 * Checkpoints of {@code run --config} in local mode that outlive the process, so that a job killed (even by SIGKILL)
 * and started again with the same configuration continues where its last completed checkpoint left it: the requests
 * in flight are resumed (their caches rebuilt from the checkpointed history), the conversations keep their histories,
 * and the Kafka source restarts at the checkpointed offsets.
 *
 * <p>Contract: checkpoints go to {@code <state.dir>/checkpoints/<kafka.group.id>/<job id>/chk-N} on the local file
 * system and are retained when the job is cancelled or dies; at start the newest completed one there (a
 * {@code chk-N} folder holding a {@code _metadata} file, written atomically by Flink when the checkpoint completes) is
 * restored in claim mode: Flink then owns it and deletes it once a newer checkpoint subsumes it, so the folder holds
 * about one checkpoint. The group id separates jobs that share a state directory. A Flink cluster (DsflowJob) keeps its
 * own checkpoint settings: this is for the local mini cluster only.
 */
public final class DurableCheckpoints {
    private static final Logger LOG = LoggerFactory.getLogger(DurableCheckpoints.class);
    private static final Pattern CHECKPOINT = Pattern.compile("chk-(\\d+)");

    private DurableCheckpoints() {
    }

    /** Where this configuration's checkpoints go: one folder per consumer group under the state directory. */
    public static Path directory(JobConfig c) {
        return Path.of(c.stateDir(), "checkpoints", c.groupId().replaceAll("[^A-Za-z0-9._-]", "_")).toAbsolutePath();
    }

    /** A completed checkpoint: its folder, number and completion time. */
    public record Checkpoint(Path dir, long id, FileTime completed) {
    }

    /** The newest completed checkpoint under {@code dir} (any job id), if any. */
    public static Optional<Checkpoint> latest(Path dir) {
        if (!Files.isDirectory(dir)) return Optional.empty();
        try (Stream<Path> jobs = Files.list(dir)) {
            return jobs.filter(Files::isDirectory).flatMap(DurableCheckpoints::completed)
                    .max(Comparator.comparing(Checkpoint::completed).thenComparingLong(Checkpoint::id));
        } catch (IOException e) {
            throw new DsflowException("cannot read the checkpoint folder " + dir + ": " + e.getMessage(), e);
        }
    }

    private static Stream<Checkpoint> completed(Path jobDir) {
        try (Stream<Path> children = Files.list(jobDir)) {
            return children.map(p -> {
                Matcher m = CHECKPOINT.matcher(p.getFileName().toString());
                Path metadata = p.resolve("_metadata");
                try {
                    if (!m.matches() || !Files.isRegularFile(metadata) || Files.size(metadata) == 0) return null;
                    return new Checkpoint(p, Long.parseLong(m.group(1)), Files.getLastModifiedTime(metadata));
                } catch (IOException e) {
                    return null; // deleted while we looked (a subsumed checkpoint): not a candidate
                }
            }).filter(java.util.Objects::nonNull).toList().stream();
        } catch (IOException e) {
            return Stream.empty();
        }
    }

    /**
     * The local cluster's configuration for durable checkpoints of {@code c}: file system storage in
     * {@link #directory}, retained on cancellation, and the restore of the newest completed checkpoint there.
     */
    public static Configuration localConfiguration(JobConfig c) {
        Path dir = directory(c);
        try {
            Files.createDirectories(dir);
        } catch (IOException e) {
            throw new DsflowException("cannot create the checkpoint folder " + dir + " (state.dir in the config): "
                    + e.getMessage(), e);
        }
        if (!Files.isWritable(dir)) {
            throw new DsflowException("cannot write the checkpoint folder " + dir + " (state.dir in the config)");
        }
        Configuration conf = new Configuration();
        conf.set(CheckpointingOptions.CHECKPOINT_STORAGE, "filesystem");
        conf.set(CheckpointingOptions.CHECKPOINTS_DIRECTORY, dir.toUri().toString());
        conf.set(CheckpointingOptions.EXTERNALIZED_CHECKPOINT_RETENTION,
                ExternalizedCheckpointRetention.RETAIN_ON_CANCELLATION);
        Optional<Checkpoint> last = latest(dir);
        if (last.isPresent()) {
            conf.set(StateRecoveryOptions.SAVEPOINT_PATH, last.get().dir().toUri().toString());
            // claim: the restored checkpoint is deleted once a newer one subsumes it, so retained ones do not pile up
            conf.set(StateRecoveryOptions.RESTORE_MODE, RecoveryClaimMode.CLAIM);
            LOG.info("restoring from checkpoint {} (completed {}): requests in flight resume, conversations keep"
                    + " their histories", last.get().dir(), last.get().completed());
        } else {
            LOG.info("no checkpoint in {}: a fresh start from the committed offsets; checkpoints go there", dir);
        }
        return conf;
    }
}
