package io.dsflow.job;

import io.dsflow.operators.DecodeOperator;
import io.dsflow.operators.OutputRecord;
import org.apache.flink.api.common.state.CheckpointListener;
import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.RestartStrategyOptions;
import org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer;
import org.apache.flink.core.execution.JobClient;
import org.apache.flink.runtime.minicluster.MiniCluster;
import org.apache.flink.runtime.minicluster.MiniClusterConfiguration;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.util.TestStreamEnvironment;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Exactly-once token streams through failures: 100 conversations (a third of them two turns) through Kafka and the
 * exactly-once sink with checkpoints; while tokens are being generated, three task failures are thrown and one
 * TaskManager is lost (terminated, a fresh one started in its place); a read_committed consumer sees exactly the token
 * streams of a failure-free run (generate on the same inputs), token for token, no gap, no duplicate. After each
 * restore the decode operator rebuilds its caches by prefill from the checkpointed token ids.
 */
class FailureRecoveryITCase {
    /** Two TaskManagers of one slot each: the job (parallelism 2) has a subtask of every operator on both. */
    static MiniCluster cluster;
    static EmbeddedKafka kafka;

    /** Failures injected so far, over all attempts. */
    static final AtomicInteger FAILURES = new AtomicInteger();
    static final int FAILURES_WANTED = 3;

    @BeforeAll
    static void start() throws Exception {
        kafka = EmbeddedKafka.start();
        cluster = new MiniCluster(new MiniClusterConfiguration.Builder().setConfiguration(PipelineITCase.memory("64m"))
                .setNumTaskManagers(2).setNumSlotsPerTaskManager(1).build());
        cluster.start();
        TestStreamEnvironment.setAsContext(cluster, 2);
    }

    @AfterAll
    static void stop() throws Exception {
        TestStreamEnvironment.unsetAsContext();
        if (cluster != null) cluster.close();
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
    void committedTokenStreamsEqualAFailureFreeRunThroughTaskFailuresAndATaskManagerLoss() throws Exception {
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
        JobClient job = env.executeAsync("failure recovery it");

        List<OutputRecord> out = new ArrayList<>();
        long resumedAtLoss;
        try (KafkaConsumer<String, String> consumer = KafkaTestJob.consumer(kafka, config, true)) {
            // a fifth of the finals committed: checkpoints were taken while tokens flowed; lose a TaskManager now
            long read = KafkaTestJob.readFinals(consumer, out, c.requests.size() / 5, Duration.ofMinutes(2));
            resumedAtLoss = DecodeOperator.resumedRequestsInProcess();
            cluster.terminateTaskManager(0).get();
            cluster.startTaskManager();   // the job needs both slots again
            KafkaTestJob.readFinals(consumer, out, c.requests.size() - read, Duration.ofMinutes(2));
            // anything committed after the last final would be a duplicate: read on over two more checkpoints
            KafkaTestJob.readFinals(consumer, out, Long.MAX_VALUE, Duration.ofSeconds(1));
        }
        job.cancel().get();
        assertEquals(FAILURES_WANTED, FAILURES.get(), "every injected failure happened");
        assertTrue(DecodeOperator.resumedRequestsInProcess() > resumedAtLoss,
                "the restore after the TaskManager loss resumed requests in progress (caches rebuilt by prefill)");
        assertEquals(0, out.stream().filter(OutputRecord::isError).count(), "no errors");
        c.check(out, Conversations.reference()); // chunk indices 0..n-1 exactly once, one final, tokens = generate
    }
}
