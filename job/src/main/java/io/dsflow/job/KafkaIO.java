package io.dsflow.job;

import io.dsflow.operators.InputRecord;
import io.dsflow.operators.OutputRecord;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.connector.base.DeliveryGuarantee;
import org.apache.flink.connector.kafka.sink.KafkaRecordSerializationSchema;
import org.apache.flink.connector.kafka.sink.KafkaSink;
import org.apache.flink.connector.kafka.source.KafkaSource;
import org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer;

import java.nio.charset.StandardCharsets;
import java.util.Properties;

/** Kafka source of requests and sink of completions/errors for a job configuration. */
public final class KafkaIO {
    /** The brokers' maximum; the connector's default of one hour makes every transactional producer fail. */
    static final String TRANSACTION_TIMEOUT_MS = "900000";

    private KafkaIO() {
    }

    /**
     * The job on Kafka up to its sink: requests from the prompts topic (bounded at {@code end} when given) through the
     * pipeline; every operator has a stable uid, so savepoints survive changes of parallelism.
     */
    public static DataStream<OutputRecord> pipeline(StreamExecutionEnvironment env, JobConfig c, OffsetsInitializer start,
                                                    OffsetsInitializer end) {
        return Pipeline.buildFromRecords(env.fromSource(source(c, start, end), WatermarkStrategy.noWatermarks(),
                "prompts").uid("prompts"), c.decode());
    }

    /** Writes the job's records to the completions and errors topics. */
    public static void sinkTo(DataStream<OutputRecord> records, JobConfig c) {
        records.sinkTo(sink(c)).name("completions").uid("completions");
    }

    /**
     * Records of the prompts topic, bounded at {@code end} when given (replay of an offset range). Their decoder never
     * throws ({@link PromptDeserializer}): a tombstone keyed by a conversation ends it, and a record that is not text
     * becomes an error record, so no record can stop the source.
     */
    public static KafkaSource<InputRecord> source(JobConfig c, OffsetsInitializer start, OffsetsInitializer end) {
        var b = KafkaSource.<InputRecord>builder()
                .setBootstrapServers(c.bootstrapServers())
                .setTopics(c.promptsTopic())
                .setGroupId(c.groupId())
                .setStartingOffsets(start)
                .setDeserializer(new PromptDeserializer())
                // a request should not wait up to the default 500 ms in the broker for more data to arrive
                .setProperty("fetch.max.wait.ms", "10")
                .setProperties(c.kafkaClient())
                .setProperty("isolation.level", "read_committed");
        if (end != null) b.setBounded(end);
        return b.build();
    }

    /** Chunk and final records to the completions topic, error records to the errors topic; key = conversation_id. */
    public static KafkaSink<OutputRecord> sink(JobConfig c) {
        Properties producer = new Properties();
        producer.putAll(c.kafkaClient());
        producer.setProperty("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS);
        producer.putIfAbsent("linger.ms", "0");
        String completions = c.completionsTopic(), errors = c.errorsTopic();
        return KafkaSink.<OutputRecord>builder()
                .setBootstrapServers(c.bootstrapServers())
                .setKafkaProducerConfig(producer)
                .setRecordSerializer(KafkaRecordSerializationSchema.<OutputRecord>builder()
                        .setTopicSelector((OutputRecord r) -> r.isError() ? errors : completions)
                        .setKeySerializationSchema((OutputRecord r) -> r.key() == null ? null : r.key().getBytes(StandardCharsets.UTF_8))
                        .setValueSerializationSchema((OutputRecord r) -> r.toJson().getBytes(StandardCharsets.UTF_8))
                        .build())
                .setDeliveryGuarantee(c.exactlyOnce() ? DeliveryGuarantee.EXACTLY_ONCE : DeliveryGuarantee.AT_LEAST_ONCE)
                .setTransactionalIdPrefix("dsflow-" + c.groupId())
                .build();
    }
}
