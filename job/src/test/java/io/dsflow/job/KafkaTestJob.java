package io.dsflow.job;

import io.dsflow.operators.OutputRecord;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.RestartStrategyOptions;
import org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer;
import org.apache.flink.core.execution.JobClient;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.Properties;

import static org.junit.jupiter.api.Assertions.assertEquals;

/** The Kafka side of the ITCases: a test's topics and job config, sending requests, reading the records back. */
final class KafkaTestJob {
    private KafkaTestJob() {
    }

    /** Topics {prefix}-prompts, -completions, -errors (2 partitions each) and a job config on the embedded broker. */
    static JobConfig config(EmbeddedKafka kafka, String prefix, boolean exactlyOnce, long checkpointMs) throws Exception {
        Properties p = new Properties();
        p.setProperty("model.dir", Conversations.MODEL.toString());
        p.setProperty("backend", "cpu");
        p.setProperty("topic.prompts", prefix + "-prompts");
        p.setProperty("topic.completions", prefix + "-completions");
        p.setProperty("topic.errors", prefix + "-errors");
        p.setProperty("kafka.group.id", prefix + "-it");
        JobConfig c = JobConfig.from(p).withBootstrap(kafka.bootstrapServers()).withDelivery(exactlyOnce, checkpointMs);
        kafka.createTopics(2, c.promptsTopic(), c.completionsTopic(), c.errorsTopic());
        return c;
    }

    /**
     * Starts the job on the prompts topic from its beginning to its end now (a bounded replay, so the job finishes),
     * with restarts disabled: a failure anywhere fails the job, so a job that finishes never restarted.
     */
    static JobClient startReplayWithoutRestarts(JobConfig c, int parallelism, String name) throws Exception {
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        Configuration conf = new Configuration();
        conf.set(RestartStrategyOptions.RESTART_STRATEGY, "none");
        env.configure(conf);
        env.setParallelism(parallelism);
        env.enableCheckpointing(c.checkpointIntervalMs());
        KafkaIO.sinkTo(KafkaIO.pipeline(env, c, OffsetsInitializer.earliest(), OffsetsInitializer.latest()), c);
        return env.executeAsync(name);
    }

    /** Sends requests to the prompts topic, keyed by conversation, and waits until they are written. */
    static void send(EmbeddedKafka kafka, JobConfig c, List<Conversations.Req> requests) {
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(Map.of("bootstrap.servers",
                kafka.bootstrapServers()), new StringSerializer(), new StringSerializer())) {
            for (Conversations.Req q : requests) producer.send(new ProducerRecord<>(c.promptsTopic(), q.conversationId(), q.json()));
        }
    }

    /**
     * Sends records as bytes, in order, and waits until they are written: a null key or value is sent as such (a
     * tombstone, or a record with neither), and a value need not be text.
     */
    static void sendBytes(EmbeddedKafka kafka, JobConfig c, List<ProducerRecord<byte[], byte[]>> records)
            throws Exception {
        // one record at a time, each acknowledged before the next: thousands in flight at once on a starved 2-core CI
        // machine timed out, and the idempotent producer's retries then failed with OutOfOrderSequenceException
        // until it dropped them (three of RealTrafficITCase's records once); a lost record now fails the test here
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(Map.of("bootstrap.servers",
                kafka.bootstrapServers(), "linger.ms", "0"), new ByteArraySerializer(), new ByteArraySerializer())) {
            for (ProducerRecord<byte[], byte[]> r : records) producer.send(r).get(60, TimeUnit.SECONDS);
        }
    }

    /** A record of the prompts topic; null key or value as given. */
    static ProducerRecord<byte[], byte[]> record(JobConfig c, String key, byte[] value) {
        return new ProducerRecord<>(c.promptsTopic(), key == null ? null : key.getBytes(StandardCharsets.UTF_8), value);
    }

    static ProducerRecord<byte[], byte[]> record(JobConfig c, String key, String value) {
        return record(c, key, value == null ? null : value.getBytes(StandardCharsets.UTF_8));
    }

    /**
     * Reads every record until none has come for {@code quiet} (call when the job has finished, so everything is
     * written). Every record with a conversation_id must be keyed by it.
     */
    static List<OutputRecord> readAll(KafkaConsumer<String, String> consumer, Duration quiet) {
        List<OutputRecord> out = new ArrayList<>();
        long lastRecord = System.nanoTime();
        while (System.nanoTime() - lastRecord < quiet.toNanos()) {
            for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
                OutputRecord rec = Conversations.parse(r.value());
                if (rec.conversationId != null) {
                    assertEquals(rec.conversationId, r.key(), "records are keyed by conversation");
                }
                out.add(rec);
                lastRecord = System.nanoTime();
            }
        }
        return out;
    }

    /** A consumer of the completions and errors topics from the beginning (read_committed when asked). */
    static KafkaConsumer<String, String> consumer(EmbeddedKafka kafka, JobConfig c, boolean readCommitted) {
        Map<String, Object> props = new HashMap<>(Map.of("bootstrap.servers", kafka.bootstrapServers(),
                "group.id", c.groupId() + "-reader", "auto.offset.reset", "earliest"));
        if (readCommitted) props.put("isolation.level", "read_committed");
        KafkaConsumer<String, String> consumer = new KafkaConsumer<>(props, new StringDeserializer(), new StringDeserializer());
        consumer.subscribe(List.of(c.completionsTopic(), c.errorsTopic()));
        return consumer;
    }

    /**
     * Reads records into {@code out} until {@code finals} more final records arrived or the time is up; every record
     * must be keyed by its conversation. Returns the finals read.
     */
    static long readFinals(KafkaConsumer<String, String> consumer, List<OutputRecord> out, long finals, Duration timeout) {
        long read = 0, deadline = System.nanoTime() + timeout.toNanos();
        while (read < finals && System.nanoTime() < deadline) {
            for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(100))) {
                OutputRecord rec = Conversations.parse(r.value());
                if (rec.conversationId != null) assertEquals(rec.conversationId, r.key(), "records are keyed by conversation");
                out.add(rec);
                if (OutputRecord.FINAL.equals(rec.kind)) read++;
            }
        }
        return read;
    }
}
