package io.dsflow.job;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Iterator;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Issue 22, item 11 and acceptance 5: the deployment's monitoring is wired end to end. docker-compose.yml runs
 * Flink's Prometheus reporter on every Flink service (with the plugin enabled by the entry point) and a Prometheus
 * service whose config/prometheus/prometheus.yml scrapes exactly those services on the reporter's port; the
 * published ports are on loopback by default, the long-running services restart and have health checks, Kafka's log
 * and the checkpoints are on volumes. The metric names the README documents for Prometheus are the decode operator's.
 * (The CI validates the compose file's syntax with {@code docker compose config}; this holds its meaning.)
 */
class PrometheusConfigTest {
    private static final Path ROOT = Path.of("..");

    /** A YAML file as a tree, anchors, aliases and merge keys resolved as compose resolves them (SnakeYAML: via Kafka). */
    private static JsonNode yaml(String file) throws IOException {
        Object doc = new org.yaml.snakeyaml.Yaml().load(Files.readString(ROOT.resolve(file)));
        return new ObjectMapper().valueToTree(doc);
    }

    private static JsonNode compose() throws IOException {
        return yaml("docker-compose.yml");
    }

    /** "service:port" for every compose service that runs Flink's Prometheus reporter. */
    private static Set<String> reporterEndpoints(JsonNode services) {
        Set<String> endpoints = new TreeSet<>();
        Pattern port = Pattern.compile("metrics\\.reporter\\.prom\\.port:\\s*(\\d+)");
        for (Iterator<Map.Entry<String, JsonNode>> it = services.properties().iterator(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> s = it.next();
            String props = s.getValue().path("environment").path("FLINK_PROPERTIES").asText("");
            if (!props.contains("org.apache.flink.metrics.prometheus.PrometheusReporterFactory")) continue;
            Matcher m = port.matcher(props);
            assertTrue(m.find(), s.getKey() + " sets the reporter's port");
            endpoints.add(s.getKey() + ":" + m.group(1));
        }
        return endpoints;
    }

    @Test
    void prometheusScrapesTheReporterOfEveryFlinkService() throws IOException {
        JsonNode services = compose().path("services");
        Set<String> flink = new TreeSet<>();
        services.properties().iterator().forEachRemaining(e -> {
            if (e.getValue().path("image").asText().startsWith("flink:")) flink.add(e.getKey());
        });
        Set<String> endpoints = reporterEndpoints(services);
        assertEquals(flink, new TreeSet<>(endpoints.stream().map(x -> x.substring(0, x.indexOf(':'))).toList()),
                "every Flink service (JobManager and TaskManagers) runs the Prometheus reporter");
        for (String f : flink) {
            assertTrue(services.path(f).path("entrypoint").toString().contains("flink-entrypoint.sh"),
                    f + " starts through the entry point that enables the reporter's plugin");
        }
        assertTrue(Files.readString(ROOT.resolve("config/flink-entrypoint.sh")).contains("enable_plugin metrics-prometheus"));

        JsonNode prometheus = services.path("prometheus");
        assertTrue(prometheus.path("volumes").toString().contains("./config/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml"),
                "the prometheus service reads config/prometheus/prometheus.yml");
        JsonNode config = yaml("config/prometheus/prometheus.yml");
        Set<String> targets = new TreeSet<>();
        for (JsonNode job : config.path("scrape_configs")) {
            for (JsonNode sc : job.path("static_configs")) sc.path("targets").forEach(t -> targets.add(t.asText()));
        }
        assertEquals(endpoints, targets, "prometheus.yml scrapes exactly the compose services' reporters");
    }

    @Test
    void portsOnLoopbackRestartsHealthChecksAndVolumes() throws IOException {
        JsonNode services = compose().path("services");
        services.properties().iterator().forEachRemaining(e -> {
            for (JsonNode p : e.getValue().path("ports")) {
                assertTrue(p.asText().startsWith("${DSFLOW_BIND:-127.0.0.1}:"), e.getKey() + " publishes " + p + " on loopback");
            }
            if (!e.getKey().equals("topics")) {
                assertEquals("unless-stopped", e.getValue().path("restart").asText(), e.getKey() + " restarts");
            }
        });
        for (String s : new String[]{"kafka", "jobmanager", "prometheus"}) {
            assertFalse(services.path(s).path("healthcheck").path("test").isMissingNode(), s + " has a health check");
        }
        assertTrue(services.path("jobmanager").path("healthcheck").path("test").toString().contains("/overview"));
        assertTrue(services.path("kafka").path("volumes").toString().contains("kafka-data:/var/lib/kafka/data"));
        assertEquals("/var/lib/kafka/data", services.path("kafka").path("environment").path("KAFKA_LOG_DIRS").asText());
        for (String s : new String[]{"jobmanager", "taskmanager"}) {
            assertTrue(services.path(s).path("volumes").toString().contains("checkpoints:/opt/dsflow/checkpoints"));
            assertTrue(services.path(s).path("environment").path("FLINK_PROPERTIES").asText()
                    .contains("execution.checkpointing.dir: file:///opt/dsflow/checkpoints"));
        }
    }

    @Test
    void theReadmeNamesTheDecodeOperatorsMetricsAsPrometheusShowsThem() throws IOException {
        String operator = Files.readString(ROOT.resolve(
                "operators/src/main/java/io/dsflow/operators/DecodeOperator.java"));
        String readme = Files.readString(ROOT.resolve("README.md"));
        String prometheusYml = Files.readString(ROOT.resolve("config/prometheus/prometheus.yml"));
        for (String metric : new String[]{"time_to_first_token_ms", "inter_token_latency_ms", "generation_tokens_per_second"}) {
            assertTrue(operator.contains("\"" + metric + "\""), "the decode operator registers " + metric);
            String name = "flink_taskmanager_job_task_operator_dsflow_" + metric;
            assertTrue(readme.contains(name), "README names " + name);
            assertTrue(prometheusYml.contains(name), "prometheus.yml names " + name);
        }
        assertTrue(operator.contains("getMetricGroup().addGroup(\"dsflow\")"), "the metrics' group is dsflow");
    }
}
