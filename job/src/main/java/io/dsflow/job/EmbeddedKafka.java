package io.dsflow.job;

import kafka.server.KafkaConfig;
import kafka.server.KafkaRaftServer;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.common.Uuid;
import org.apache.kafka.common.utils.Time;
import org.apache.kafka.metadata.storage.Formatter;
import org.apache.kafka.server.common.Feature;
import org.apache.kafka.server.common.MetadataVersion;

import java.io.IOException;
import java.io.PrintStream;
import java.io.OutputStream;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.stream.Stream;

/**
 * An in-process single-node Kafka (KRaft, broker and controller in one) on loopback ports, for the demo and the
 * integration tests: no external service. Its log directory is a temporary folder removed on close.
 */
public final class EmbeddedKafka implements AutoCloseable {
    private final Path dir;
    private final KafkaRaftServer server;
    private final String bootstrap;

    private EmbeddedKafka(Path dir, KafkaRaftServer server, String bootstrap) {
        this.dir = dir;
        this.server = server;
        this.bootstrap = bootstrap;
    }

    public static EmbeddedKafka start() throws Exception {
        try {
            Class.forName("kafka.server.KafkaRaftServer", false, EmbeddedKafka.class.getClassLoader());
        } catch (ClassNotFoundException e) {
            throw new io.dsflow.engine.DsflowException("this jar has no embedded Kafka broker (dsflow-gpu.jar leaves it"
                    + " out): put dsflow-broker.jar beside it on the class path, or run --config against a real"
                    + " broker");
        }
        Path dir = Files.createTempDirectory("dsflow-kafka");
        int[] ports = freePorts(2);
        int brokerPort = ports[0], controllerPort = ports[1];
        Properties p = new Properties();
        p.put("process.roles", "broker,controller");
        p.put("node.id", "1");
        p.put("controller.quorum.voters", "1@127.0.0.1:" + controllerPort);
        p.put("listeners", "PLAINTEXT://127.0.0.1:" + brokerPort + ",CONTROLLER://127.0.0.1:" + controllerPort);
        p.put("advertised.listeners", "PLAINTEXT://127.0.0.1:" + brokerPort);
        p.put("listener.security.protocol.map", "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT");
        p.put("controller.listener.names", "CONTROLLER");
        p.put("inter.broker.listener.name", "PLAINTEXT");
        p.put("log.dirs", dir.toString());
        p.put("offsets.topic.replication.factor", "1");
        p.put("offsets.topic.num.partitions", "1");
        p.put("transaction.state.log.replication.factor", "1");
        p.put("transaction.state.log.min.isr", "1");
        p.put("transaction.state.log.num.partitions", "1");
        p.put("group.initial.rebalance.delay.ms", "0");
        p.put("num.partitions", "1");
        p.put("auto.create.topics.enable", "true");
        p.put("log.flush.interval.messages", "10000");
        KafkaConfig config = new KafkaConfig(p);
        PrintStream quiet = new PrintStream(OutputStream.nullOutputStream());
        new Formatter().setPrintStream(quiet).setNodeId(1).setClusterId(Uuid.randomUuid().toString())
                .setDirectories(List.of(dir.toString())).setMetadataLogDirectory(dir.toString())
                .setReleaseVersion(MetadataVersion.latestProduction()).setControllerListenerName("CONTROLLER")
                .setSupportedFeatures(Feature.PRODUCTION_FEATURES).run();
        KafkaRaftServer server = new KafkaRaftServer(config, Time.SYSTEM);
        server.startup();
        return new EmbeddedKafka(dir, server, "127.0.0.1:" + brokerPort);
    }

    public String bootstrapServers() {
        return bootstrap;
    }

    /** Creates topics (partitions each, replication 1), waiting until they exist. */
    public void createTopics(int partitions, String... topics) throws Exception {
        try (Admin admin = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap))) {
            admin.createTopics(Stream.of(topics).map(t -> new NewTopic(t, partitions, (short) 1)).toList()).all().get();
        }
    }

    /**
     * n distinct free loopback ports: every socket stays open until all are chosen (asked one at a time, the system
     * can hand the same port out twice, and the broker then refuses two listeners on one port).
     */
    private static int[] freePorts(int n) throws IOException {
        ServerSocket[] sockets = new ServerSocket[n];
        try {
            int[] ports = new int[n];
            for (int i = 0; i < n; i++) {
                sockets[i] = new ServerSocket(0, 0, java.net.InetAddress.getLoopbackAddress());
                ports[i] = sockets[i].getLocalPort();
            }
            return ports;
        } finally {
            for (ServerSocket s : sockets) if (s != null) s.close();
        }
    }

    @Override
    public void close() {
        server.shutdown();
        server.awaitShutdown();
        try (Stream<Path> files = Files.walk(dir)) {
            files.sorted(Comparator.reverseOrder()).forEach(f -> f.toFile().delete());
        } catch (IOException ignored) {
            // a temporary folder left behind is harmless
        }
    }
}
