package io.dsflow.job;

import io.dsflow.operators.DecodeOperator;
import io.dsflow.operators.OutputRecord;
import org.apache.flink.api.common.state.CheckpointListener;
import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.RestartStrategyOptions;
import org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer;
import org.apache.flink.core.execution.JobClient;
import org.apache.flink.runtime.testutils.MiniClusterResourceConfiguration;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.test.junit5.MiniClusterExtension;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Exactly-once token streams through failures: 100 conversations (a third of them two turns) through Kafka and the exactly-once sink with
 * checkpoints, three task failures injected while tokens are being generated; a read_committed consumer sees exactly
 * the token streams of a failure-free run (generate on the same inputs), token for token, no gap, no duplicate.
 * After each restore the decode operator rebuilds its caches by prefill from the checkpointed token ids.
 */
class FailureRecoveryITCase {
    @RegisterExtension
    static final MiniClusterExtension CLUSTER = new MiniClusterExtension(new MiniClusterResourceConfiguration.Builder()
            .setNumberTaskManagers(1).setNumberSlotsPerTaskManager(2).setConfiguration(PipelineITCase.memory("64m")).build());

    static EmbeddedKafka kafka;

    /** Failures injected so far, over all attempts. */
    static final AtomicInteger FAILURES = new AtomicInteger();
    static final int FAILURES_WANTED = 3;

    @BeforeAll
    static void start() throws Exception {
        kafka = EmbeddedKafka.start();
    }

    @AfterAll
    static void stop() {
        kafka.close();
    }

    /**
     * Passes records through; once a checkpoint taken after tokens flowed in this attempt has completed, it throws a few
     * records later, three times in all, so every restart restores a checkpoint taken while tokens were being
     * generated. (A slow map here would backpressure the decode operator and hold every barrier until generation ends.)
     */
    static final class FailThreeTimes implements MapFunction<OutputRecord, OutputRecord>, CheckpointListener {
        // transient fields of a deserialized function start at their defaults (initializers do not run)
        private transient int seen;
        private transient boolean armed;
        private transient int sinceArmed;

        @Override
        public void notifyCheckpointComplete(long checkpointId) {
            // a checkpoint taken after tokens flowed in this attempt holds requests in progress
            if (seen >= 20) armed = true;
        }

        @Override
        public OutputRecord map(OutputRecord r) throws Exception {
            seen++;
            if (armed && ++sinceArmed == 5) {
                int n = FAILURES.get();
                if (n < FAILURES_WANTED && FAILURES.compareAndSet(n, n + 1)) {
                    throw new RuntimeException("injected failure " + (n + 1));
                }
            }
            return r;
        }
    }

    @Test
    void committedTokenStreamsEqualAFailureFreeRunThroughThreeFailures() throws Exception {
        JobConfig config = KafkaTestJob.config(kafka, "fail", true, 200);
        Conversations c = Conversations.random(100, 11);
        KafkaTestJob.send(kafka, config, c.requests);
        Configuration restarts = new Configuration();
        restarts.set(RestartStrategyOptions.RESTART_STRATEGY, "fixed-delay");
        restarts.set(RestartStrategyOptions.RESTART_STRATEGY_FIXED_DELAY_ATTEMPTS, 10);
        restarts.set(RestartStrategyOptions.RESTART_STRATEGY_FIXED_DELAY_DELAY, Duration.ofMillis(200));
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        env.configure(restarts);
        env.setParallelism(2);
        env.enableCheckpointing(config.checkpointIntervalMs());
        // an unbounded source: with a bounded one the decode operator drains everything in endInput, where no
        // checkpoint barrier passes, so no checkpoint would land mid-generation
        KafkaIO.sinkTo(KafkaIO.pipeline(env, config, OffsetsInitializer.earliest(), null).map(new FailThreeTimes())
                .name("fail three times"), config);
        long resumedBefore = DecodeOperator.resumedRequestsInProcess();
        JobClient job = env.executeAsync("failure recovery it");

        List<OutputRecord> out = new ArrayList<>();
        try (KafkaConsumer<String, String> consumer = KafkaTestJob.consumer(kafka, config, true)) {
            KafkaTestJob.readFinals(consumer, out, c.requests.size(), Duration.ofMinutes(2));
            // anything committed after the last final would be a duplicate: read on over two more checkpoints
            KafkaTestJob.readFinals(consumer, out, Long.MAX_VALUE, Duration.ofSeconds(1));
        }
        job.cancel().get();
        assertEquals(FAILURES_WANTED, FAILURES.get(), "every injected failure happened");
        assertTrue(DecodeOperator.resumedRequestsInProcess() > resumedBefore,
                "restores resumed requests that were in progress (caches rebuilt by prefill)");
        assertEquals(0, out.stream().filter(OutputRecord::isError).count(), "no errors");
        c.check(out, Conversations.reference()); // chunk indices 0..n-1 exactly once, one final, tokens = generate
    }
}
