package io.dsflow.job;

import io.dsflow.engine.BackendName;
import io.dsflow.engine.DsflowException;
import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.kv.KvPolicy;
import io.dsflow.operators.DecodeSettings;
import io.dsflow.operators.Limits;

import java.io.IOException;
import java.io.Reader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Properties;

/**
 * The job's configuration, a properties file ({@code run --config FILE}); see config/dsflow.properties for every key.
 * Every {@code kafka.*} key other than the ones named here passes through to the Kafka clients, so security settings
 * (SASL/SSL) work as in any Kafka client: {@code kafka.security.protocol=SASL_SSL}. {@code state.dir} is where
 * {@code run --config} keeps its checkpoints in local mode ({@link DurableCheckpoints}); default
 * {@code $XDG_STATE_HOME/dsflow} where that variable is set, else {@code dsflow-data} in the working directory.
 */
public record JobConfig(String bootstrapServers, String promptsTopic, String completionsTopic, String errorsTopic,
                        String groupId, boolean exactlyOnce, long checkpointIntervalMs, int parallelism,
                        DecodeSettings decode, Properties kafkaClient, String stateDir) {

    public static JobConfig load(Path file) {
        Properties p = new Properties();
        try (Reader r = Files.newBufferedReader(file)) {
            p.load(r);
        } catch (IOException e) {
            throw new DsflowException("cannot read config " + file + ": " + e.getMessage(), e);
        }
        return from(p);
    }

    public static JobConfig from(Properties p) {
        Map<String, String> kv = new LinkedHashMap<>();
        Properties client = new Properties();
        for (String key : p.stringPropertyNames()) {
            if (key.startsWith("kv.") && !key.equals("kv.policy")) kv.put(key.substring(3), p.getProperty(key));
            if (key.startsWith("kafka.") && !key.equals("kafka.bootstrap.servers") && !key.equals("kafka.group.id")) {
                client.put(key.substring(6), p.getProperty(key));
            }
        }
        KvConfig kvConfig = KvConfig.defaults(KvPolicy.parse(p.getProperty("kv.policy", "dspp"))).with(kv);
        Limits limits = new Limits(
                integer(p, "limits.max-request-bytes", Limits.DEFAULT.maxRequestBytes()),
                integer(p, "limits.max-prompt-tokens", Limits.DEFAULT.maxPromptTokens()),
                integer(p, "limits.max-tokens", Limits.DEFAULT.maxTokens()),
                positiveOrAuto(p, "limits.max-running"),
                integer(p, "limits.max-conversations", Limits.DEFAULT.maxConversations()),
                integer(p, "limits.max-id-length", Limits.DEFAULT.maxIdLength()),
                integer(p, "limits.conversation-idle-timeout.ms", (int) Limits.DEFAULT_CONVERSATION_IDLE_TIMEOUT_MS));
        String delivery = p.getProperty("delivery", "at_least_once");
        if (!delivery.equals("at_least_once") && !delivery.equals("exactly_once")) {
            throw new DsflowException("delivery must be at_least_once or exactly_once, got '" + delivery + "'");
        }
        String backend = p.getProperty("backend", "auto");
        try {
            BackendName.parse(backend);
        } catch (DsflowException e) {
            throw new DsflowException("config " + e.getMessage());   // "config backend must be cpu, cuda, ..."
        }
        return new JobConfig(p.getProperty("kafka.bootstrap.servers", "localhost:9092"),
                p.getProperty("topic.prompts", "prompts"), p.getProperty("topic.completions", "completions"),
                p.getProperty("topic.errors", "errors"), p.getProperty("kafka.group.id", "dsflow"),
                delivery.equals("exactly_once"), integer(p, "checkpoint.interval.ms", 10_000),
                integer(p, "parallelism", 1),
                new DecodeSettings(p.getProperty("model.dir", "models/probe-retrieval"), backend,
                        kvConfig, limits, positiveOrAuto(p, "prefill.chunk")),
                client, p.getProperty("state.dir", defaultStateDir()));
    }

    /** $XDG_STATE_HOME/dsflow where the variable is set (the XDG place for state that outlives a process). */
    static String defaultStateDir() {
        String xdg = System.getenv("XDG_STATE_HOME");
        return xdg != null && !xdg.isBlank() ? Path.of(xdg, "dsflow").toString() : "dsflow-data";
    }

    /**
     * prefill.chunk or limits.max-running: a positive integer, or "auto" (the default: the decode operator sizes it for
     * its backend), read as 0 ({@link DecodeSettings#AUTO}, {@link Limits#AUTO}).
     */
    private static int positiveOrAuto(Properties p, String key) {
        String v = p.getProperty(key, "auto").trim();
        if (v.equals("auto")) return 0;
        int n = integer(p, key, 0);
        if (n < 1) throw new DsflowException("config " + key + " must be a positive integer or auto, got '" + v + "'");
        return n;
    }

    private static int integer(Properties p, String key, int fallback) {
        String v = p.getProperty(key);
        if (v == null) return fallback;
        try {
            return Integer.parseInt(v.trim());
        } catch (NumberFormatException e) {
            throw new DsflowException("config " + key + " must be an integer, got '" + v + "'");
        }
    }

    public JobConfig withBootstrap(String servers) {
        return new JobConfig(servers, promptsTopic, completionsTopic, errorsTopic, groupId, exactlyOnce,
                checkpointIntervalMs, parallelism, decode, kafkaClient, stateDir);
    }

    public JobConfig withDecode(DecodeSettings d) {
        return new JobConfig(bootstrapServers, promptsTopic, completionsTopic, errorsTopic, groupId, exactlyOnce,
                checkpointIntervalMs, parallelism, d, kafkaClient, stateDir);
    }

    public JobConfig withDelivery(boolean exactly, long checkpointMs) {
        return new JobConfig(bootstrapServers, promptsTopic, completionsTopic, errorsTopic, groupId, exactly,
                checkpointMs, parallelism, decode, kafkaClient, stateDir);
    }
}
