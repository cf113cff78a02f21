package io.dsflow.job;

import org.apache.flink.configuration.CheckpointingOptions;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.HeartbeatManagerOptions;
import org.apache.flink.configuration.MemorySize;
import org.apache.flink.configuration.TaskManagerOptions;
import org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer;
import org.apache.flink.core.execution.JobClient;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.logging.log4j.Level;
import org.apache.logging.log4j.core.config.Configurator;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * The whole product in one process, for the demo and measurements: an embedded Kafka broker with the three topics,
 * and the dsflow job on a local Flink cluster reading and writing them. Checkpoints go to a temporary folder, removed at
 * {@link #close}: the conversations' state outgrows what Flink keeps in the JobManager's memory (5 MB; 256 running
 * 2K-token conversations on a GPU checkpoint 15 MB), and each embedded run starts afresh.
 */
public final class EmbeddedJob implements AutoCloseable {
    private final EmbeddedKafka kafka;
    private final JobConfig config;
    private final JobClient job;
    private final Path checkpoints;

    private EmbeddedJob(EmbeddedKafka kafka, JobConfig config, JobClient job, Path checkpoints) {
        this.kafka = kafka;
        this.config = config;
        this.job = job;
        this.checkpoints = checkpoints;
    }

    /** An at-least-once job: see {@link #start(Properties, String, boolean)}. */
    public static EmbeddedJob start(Properties settings, String managedMemory) throws Exception {
        return start(settings, managedMemory, false);
    }

    /**
     * @param settings    job properties (model.dir, backend, kv.*); Kafka addresses are filled in
     * @param exactlyOnce Kafka transactions committed at each checkpoint (every 2 s; read them with a read_committed
     *                    {@link #consumer(String, boolean)}), or at-least-once
     */
    public static EmbeddedJob start(Properties settings, String managedMemory, boolean exactlyOnce) throws Exception {
        EmbeddedKafka kafka = EmbeddedKafka.start();
        Path checkpoints = null;
        try {
            checkpoints = Files.createTempDirectory("dsflow-checkpoints");
            JobConfig config = JobConfig.from(settings).withBootstrap(kafka.bootstrapServers())
                    .withDelivery(exactlyOnce, 2000);
            kafka.createTopics(1, config.promptsTopic(), config.completionsTopic(), config.errorsTopic());
            Configuration flink = new Configuration();
            flink.set(TaskManagerOptions.MANAGED_MEMORY_SIZE, MemorySize.parse(managedMemory));
            // accumulators reach the job's client with the TaskManager's heartbeats: every second, not every 10
            flink.set(HeartbeatManagerOptions.HEARTBEAT_INTERVAL, Duration.ofSeconds(1));
            flink.set(CheckpointingOptions.CHECKPOINT_STORAGE, "filesystem");
            flink.set(CheckpointingOptions.CHECKPOINTS_DIRECTORY, checkpoints.toUri().toString());
            StreamExecutionEnvironment env = StreamExecutionEnvironment.createLocalEnvironment(1, flink);
            env.enableCheckpointing(config.checkpointIntervalMs());
            KafkaIO.sinkTo(KafkaIO.pipeline(env, config, OffsetsInitializer.earliest(), null), config);
            return new EmbeddedJob(kafka, config, env.executeAsync("dsflow (embedded)"), checkpoints);
        } catch (Exception e) {
            kafka.close();
            if (checkpoints != null) delete(checkpoints);
            throw e;
        }
    }

    public JobConfig config() {
        return config;
    }

    /** Where the job's checkpoints go (removed at close). */
    public Path checkpointFolder() {
        return checkpoints;
    }

    public String bootstrapServers() {
        return kafka.bootstrapServers();
    }

    public KafkaProducer<String, String> producer() {
        return new KafkaProducer<>(Map.of("bootstrap.servers", kafka.bootstrapServers(), "linger.ms", "0"),
                new StringSerializer(), new StringSerializer());
    }

    /** A consumer of the completions and errors topics from their beginning. */
    public KafkaConsumer<String, String> consumer(String group) {
        return consumer(group, false);
    }

    /** @param readCommitted only records of committed transactions (an exactly-once job's output) */
    public KafkaConsumer<String, String> consumer(String group, boolean readCommitted) {
        KafkaConsumer<String, String> c = new KafkaConsumer<>(Map.of("bootstrap.servers", kafka.bootstrapServers(),
                "group.id", group, "auto.offset.reset", "earliest", "fetch.max.wait.ms", "10",
                "isolation.level", readCommitted ? "read_committed" : "read_uncommitted"),
                new StringDeserializer(), new StringDeserializer());
        c.subscribe(List.of(config.completionsTopic(), config.errorsTopic()));
        return c;
    }

    /**
     * The job's accumulators (the decode operator's counters) as of the last heartbeat (at most a second old), empty
     * when they cannot be read within a few seconds (the job restarting).
     */
    public Map<String, Object> accumulators() {
        try {
            return job.getAccumulators().get(5, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return Map.of();
        } catch (ExecutionException | TimeoutException e) {
            return Map.of();
        }
    }

    /** A counter among {@link #accumulators()} (a LongCounter's value), 0 when absent. */
    public static long count(Map<String, Object> accumulators, String name) {
        return accumulators.get(name) instanceof Number n ? n.longValue() : 0;
    }

    /**
     * Cancels the job and stops the broker: the end of the embedded mode (demo, overhead, soak), after which the process
     * ends. Flink's local cluster then shuts down on its own threads, racing what is still in flight (a checkpoint fails
     * with "Checkpoint Coordinator is suspending", an RPC endpoint's executor ignores a scheduled command), and logs
     * each at WARN, some with stack traces: expected at this point, so Flink's loggers say only errors from here on.
     */
    @Override
    public void close() throws Exception {
        Configurator.setLevel("org.apache.flink", Level.ERROR);
        try {
            job.cancel().get();
        } finally {
            try {
                kafka.close();
            } finally {
                delete(checkpoints);
            }
        }
    }

    private static void delete(Path dir) {
        try (var paths = Files.walk(dir)) {
            for (Path p : paths.sorted(java.util.Comparator.reverseOrder()).toList()) Files.deleteIfExists(p);
        } catch (IOException e) {
            // a checkpoint still being written as the cluster stops: the temporary folder stays for the system to clear
        }
    }
}
