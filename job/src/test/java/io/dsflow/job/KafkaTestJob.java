package io.dsflow.job;

import io.dsflow.operators.OutputRecord;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
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

    /** Sends requests to the prompts topic, keyed by conversation, and waits until they are written. */
    static void send(EmbeddedKafka kafka, JobConfig c, List<Conversations.Req> requests) {
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(Map.of("bootstrap.servers",
                kafka.bootstrapServers()), new StringSerializer(), new StringSerializer())) {
            for (Conversations.Req q : requests) producer.send(new ProducerRecord<>(c.promptsTopic(), q.conversationId(), q.json()));
        }
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
