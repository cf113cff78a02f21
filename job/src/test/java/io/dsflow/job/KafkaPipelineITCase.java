package io.dsflow.job;

import io.dsflow.operators.DecodeOperator;
import io.dsflow.operators.OutputRecord;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.MemorySize;
import org.apache.flink.configuration.TaskManagerOptions;
import org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer;
import org.apache.flink.core.execution.JobClient;
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

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * Acceptance 2 of the streaming job: the embedded broker and a MiniCluster, 50 conversations (some multi-turn,
 * sampling seeded) through the exactly-once Kafka sink, read back with read_committed.
 */
class KafkaPipelineITCase {
    @RegisterExtension
    static final MiniClusterExtension CLUSTER = new MiniClusterExtension(new MiniClusterResourceConfiguration.Builder()
            .setNumberTaskManagers(1).setNumberSlotsPerTaskManager(2).setConfiguration(memory()).build());

    static EmbeddedKafka kafka;

    static Configuration memory() {
        Configuration c = new Configuration();
        c.set(TaskManagerOptions.MANAGED_MEMORY_SIZE, MemorySize.parse("128m"));
        return c;
    }

    @BeforeAll
    static void start() throws Exception {
        kafka = EmbeddedKafka.start();
    }

    @AfterAll
    static void stop() {
        kafka.close();
    }

    @Test
    void fiftyConversationsThroughKafkaEqualGenerateWithNoHistoryReprefill() throws Exception {
        Properties p = new Properties();
        p.setProperty("model.dir", Conversations.MODEL.toString());
        p.setProperty("backend", "cpu");
        p.setProperty("topic.prompts", "it-prompts");
        p.setProperty("topic.completions", "it-completions");
        p.setProperty("topic.errors", "it-errors");
        p.setProperty("parallelism", "2");
        JobConfig config = JobConfig.from(p).withBootstrap(kafka.bootstrapServers()).withDelivery(true, 500);
        kafka.createTopics(2, "it-prompts", "it-completions", "it-errors");

        Conversations c = Conversations.random(50, 3);
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(Map.of("bootstrap.servers",
                kafka.bootstrapServers()), new StringSerializer(), new StringSerializer())) {
            for (Conversations.Req q : c.requests) {
                producer.send(new ProducerRecord<>("it-prompts", q.conversationId(), q.json()));
            }
        }
        // a replay of the topic up to its end at start: the job finishes, and its accumulators can be read
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        env.setParallelism(config.parallelism());
        env.enableCheckpointing(config.checkpointIntervalMs());
        Pipeline.build(env.fromSource(KafkaIO.source(config, OffsetsInitializer.earliest(), OffsetsInitializer.latest()),
                WatermarkStrategy.noWatermarks(), "prompts"), config.decode()).sinkTo(KafkaIO.sink(config));
        JobClient job = env.executeAsync("kafka it");
        List<OutputRecord> out = new ArrayList<>();
        long finals = 0;
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(Map.of("bootstrap.servers",
                kafka.bootstrapServers(), "group.id", "it-reader", "auto.offset.reset", "earliest",
                "isolation.level", "read_committed"), new StringDeserializer(), new StringDeserializer())) {
            consumer.subscribe(List.of("it-completions", "it-errors"));
            long deadline = System.nanoTime() + 240_000_000_000L;
            while (finals < c.requests.size() && System.nanoTime() < deadline) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
                    OutputRecord rec = Conversations.parse(r.value());
                    assertEquals(rec.conversationId, r.key(), "records are keyed by conversation");
                    out.add(rec);
                    if (OutputRecord.FINAL.equals(rec.kind)) finals++;
                }
            }
        }
        Map<String, Object> acc = job.getJobExecutionResult().get().getAllAccumulatorResults();
        assertEquals(0, out.stream().filter(OutputRecord::isError).count(), "no errors");
        c.check(out, Conversations.reference());
        assertEquals(0L, ((Number) acc.get(DecodeOperator.HISTORY_PREFILLS)).longValue(),
                "follow-up turns continue their caches: no history is prefilled again");
        long promptTokens = c.requests.stream().mapToLong(q -> q.prompt().length + (q.turn() > 0 ? 1 : 0)).sum();
        assertEquals(promptTokens, ((Number) acc.get(DecodeOperator.PREFILLED_TOKENS)).longValue(),
                "prefill fed each prompt once (plus the unfed last token of the previous turn)");
    }
}
