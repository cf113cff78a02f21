package io.dsflow.job;

import io.dsflow.operators.OutputRecord;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.StateRecoveryOptions;
import org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer;
import org.apache.flink.core.execution.JobClient;
import org.apache.flink.core.execution.SavepointFormatType;
import org.apache.flink.runtime.testutils.MiniClusterResourceConfiguration;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.test.junit5.MiniClusterExtension;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;

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
        Pipeline.build(env.fromSource(KafkaIO.source(config, OffsetsInitializer.earliest(), null),
                        WatermarkStrategy.noWatermarks(), "prompts").uid("prompts"), config.decode())
                .sinkTo(KafkaIO.sink(config)).uid("completions");
        return env.executeAsync("rescale it, parallelism " + parallelism);
    }

    @Test
    void conversationsContinueThroughSavepointsAndRescaling() throws Exception {
        Properties p = new Properties();
        p.setProperty("model.dir", Conversations.MODEL.toString());
        p.setProperty("backend", "cpu");
        p.setProperty("topic.prompts", "rs-prompts");
        p.setProperty("topic.completions", "rs-completions");
        p.setProperty("topic.errors", "rs-errors");
        p.setProperty("kafka.group.id", "rs-it");
        JobConfig config = JobConfig.from(p).withBootstrap(kafka.bootstrapServers()).withDelivery(false, 200);
        kafka.createTopics(2, "rs-prompts", "rs-completions", "rs-errors");
        Conversations c = Conversations.withTurns(10, 3, 21);
        int[] parallelism = {1, 2, 1};
        List<OutputRecord> out = new ArrayList<>();
        String savepoint = null;
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(Map.of("bootstrap.servers",
                kafka.bootstrapServers()), new StringSerializer(), new StringSerializer());
             KafkaConsumer<String, String> consumer = new KafkaConsumer<>(Map.of("bootstrap.servers",
                     kafka.bootstrapServers(), "group.id", "rs-reader", "auto.offset.reset", "earliest"),
                     new StringDeserializer(), new StringDeserializer())) {
            consumer.subscribe(List.of("rs-completions", "rs-errors"));
            for (int turn = 0; turn < 3; turn++) {
                JobClient job = start(config, parallelism[turn], savepoint);
                for (Conversations.Req q : c.turn(turn)) producer.send(new ProducerRecord<>("rs-prompts", q.conversationId(), q.json()));
                producer.flush();
                long finals = 0, deadline = System.nanoTime() + 60_000_000_000L;
                while (finals < c.turn(turn).size() && System.nanoTime() < deadline) {
                    for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(100))) {
                        OutputRecord rec = Conversations.parse(r.value());
                        out.add(rec);
                        if (OutputRecord.FINAL.equals(rec.kind)) finals++;
                    }
                }
                assertEquals(c.turn(turn).size(), finals, "turn " + turn + " served at parallelism " + parallelism[turn]);
                savepoint = job.stopWithSavepoint(false, savepoints.toUri().toString(), SavepointFormatType.CANONICAL).get();
            }
        }
        assertEquals(0, out.stream().filter(OutputRecord::isError).count(), "no errors");
        c.check(out, Conversations.reference()); // every turn equals generate on the conversation's whole history
    }
}
