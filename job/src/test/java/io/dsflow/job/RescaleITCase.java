package io.dsflow.job;

import io.dsflow.operators.OutputRecord;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.StateRecoveryOptions;
import org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer;
import org.apache.flink.core.execution.JobClient;
import org.apache.flink.core.execution.SavepointFormatType;
import org.apache.flink.runtime.testutils.MiniClusterResourceConfiguration;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.test.junit5.MiniClusterExtension;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * Savepoint, then restart with another parallelism (1 -> 2 -> 1): conversations continue with their history and
 * produce the same tokens as without the restarts (generate on the whole history).
 */
class RescaleITCase {
    @RegisterExtension
    static final MiniClusterExtension CLUSTER = new MiniClusterExtension(new MiniClusterResourceConfiguration.Builder()
            .setNumberTaskManagers(1).setNumberSlotsPerTaskManager(2).setConfiguration(PipelineITCase.memory("64m")).build());

    static EmbeddedKafka kafka;

    @TempDir
    Path savepoints;

    @BeforeAll
    static void start() throws Exception {
        kafka = EmbeddedKafka.start();
    }

    @AfterAll
    static void stop() {
        kafka.close();
    }

    static JobClient start(JobConfig config, int parallelism, String savepoint) throws Exception {
        Configuration conf = new Configuration();
        if (savepoint != null) conf.set(StateRecoveryOptions.SAVEPOINT_PATH, savepoint);
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        env.configure(conf);
        env.setParallelism(parallelism);
        env.enableCheckpointing(config.checkpointIntervalMs());
        KafkaIO.sinkTo(KafkaIO.pipeline(env, config, OffsetsInitializer.earliest(), null), config);
        return env.executeAsync("rescale it, parallelism " + parallelism);
    }

    @Test
    void conversationsContinueThroughSavepointsAndRescaling() throws Exception {
        JobConfig config = KafkaTestJob.config(kafka, "rs", false, 200);
        Conversations c = Conversations.withTurns(10, 3, 21);
        int[] parallelism = {1, 2, 1};
        List<OutputRecord> out = new ArrayList<>();
        String savepoint = null;
        try (KafkaConsumer<String, String> consumer = KafkaTestJob.consumer(kafka, config, false)) {
            for (int turn = 0; turn < 3; turn++) {
                JobClient job = start(config, parallelism[turn], savepoint);
                KafkaTestJob.send(kafka, config, c.turn(turn));
                long finals = KafkaTestJob.readFinals(consumer, out, c.turn(turn).size(), Duration.ofMinutes(1));
                assertEquals(c.turn(turn).size(), finals, "turn " + turn + " served at parallelism " + parallelism[turn]);
                savepoint = job.stopWithSavepoint(false, savepoints.toUri().toString(), SavepointFormatType.CANONICAL).get();
            }
        }
        assertEquals(0, out.stream().filter(OutputRecord::isError).count(), "no errors");
        c.check(out, Conversations.reference()); // every turn equals generate on the conversation's whole history
    }
}
