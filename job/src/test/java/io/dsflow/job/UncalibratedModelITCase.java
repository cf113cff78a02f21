package io.dsflow.job;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.dsflow.engine.Engine;
import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.kv.KvPolicy;
import io.dsflow.operators.DecodeSettings;
import io.dsflow.operators.Limits;
import io.dsflow.operators.OutputRecord;
import io.dsflow.operators.Request;
import io.dsflow.operators.RequestParser;
import org.apache.flink.runtime.testutils.MiniClusterResourceConfiguration;
import org.apache.flink.test.junit5.MiniClusterExtension;
import org.apache.logging.log4j.Level;
import org.apache.logging.log4j.LogManager;
import org.apache.logging.log4j.core.LogEvent;
import org.apache.logging.log4j.core.LoggerContext;
import org.apache.logging.log4j.core.appender.AbstractAppender;
import org.apache.logging.log4j.core.config.Property;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Random;
import java.util.Set;
import java.util.stream.Collectors;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Acceptance 1 of issue 21, the job's half: a model folder without channels.json (every model a user downloads)
 * serves ds and dspp requests through the decode operator on the CPU. The engine calibrates the heavy channels first
 * and logs that it does, then decodes; the completions equal {@code generate}'s on the same folder.
 */
class UncalibratedModelITCase {
    /** The tiny Llama of the engine's tests (no channels.json). */
    static final Path TINY = Path.of("..", "kernels", "src", "test", "resources", "models", "llama-tiny");
    /**
     * The copy's context: calibration blocks are capped at max_position_embeddings, so 8 blocks of 256 tokens
     * instead of 2048 (seconds, not a minute, on a loaded CI machine); the prompts and completions fit in it.
     */
    static final int POSITIONS = 256;
    private static final ObjectMapper JSON = new ObjectMapper();

    @RegisterExtension
    static final MiniClusterExtension CLUSTER = new MiniClusterExtension(new MiniClusterResourceConfiguration.Builder()
            .setNumberTaskManagers(1).setNumberSlotsPerTaskManager(1)
            .setConfiguration(PipelineITCase.memory("64m")).build());

    @TempDir
    Path temp;

    /** A copy of the tiny model (weights, tokenizer, config with {@link #POSITIONS}) without channels.json. */
    private Path modelWithoutChannels() throws Exception {
        Path dir = Files.createDirectory(temp.resolve("llama-tiny-uncalibrated"));
        for (String f : List.of("generation_config.json", "model.safetensors", "tokenizer.json")) {
            Files.copy(TINY.resolve(f), dir.resolve(f));
        }
        ObjectNode config = (ObjectNode) JSON.readTree(TINY.resolve("config.json").toFile());
        config.put("max_position_embeddings", POSITIONS);
        JSON.writeValue(dir.resolve("config.json").toFile(), config);
        assertFalse(Files.exists(dir.resolve(Engine.CHANNEL_FILE)));
        return dir;
    }

    /** A request of {@code promptLength} token ids: long enough that ds and dspp select (candidates > budget). */
    private static String request(String conv, String id, String policy, int promptLength, long seed) {
        Random rnd = new Random(seed);
        String ids = "0," + rnd.ints(promptLength - 1, 3, 512).mapToObj(String::valueOf)
                .collect(Collectors.joining(","));
        return "{\"conversation_id\": \"" + conv + "\", \"request_id\": \"" + id + "\", \"prompt_ids\": [" + ids
                + "], \"max_tokens\": 8, \"temperature\": 0.8, \"seed\": " + seed + ", \"kv\": {\"policy\": \""
                + policy + "\"}}";
    }

    @Test
    void dsAndDsppRequestsOnAFolderWithoutChannelsJsonCalibrateSayingSoThenDecode() throws Exception {
        Path model = modelWithoutChannels();
        List<String> lines = List.of(request("c1", "r-dspp", "dspp", 150, 11), request("c2", "r-ds", "ds", 150, 12));
        DecodeSettings settings = new DecodeSettings(model.toString(), "cpu", KvConfig.DENSE,
                new Limits(1 << 20, 4096, 512, 8, 100, 256), 32);

        List<OutputRecord> out;
        List<String> log;
        try (LogCapture capture = LogCapture.of("io.dsflow")) {
            out = PipelineITCase.run(lines, settings, 1);
            log = capture.messages();
        }

        assertTrue(log.stream().anyMatch(m -> m.startsWith("no channels.json in " + model
                + ": calibrating the heavy channels first")), "the engine says it calibrates: " + log);
        assertTrue(log.stream().anyMatch(m -> m.startsWith("calibration on cpu") && m.contains(": block 8/8 ("
                        + POSITIONS + " tokens)")),
                "all blocks ran, capped at the model's positions: " + log);
        assertEquals(List.of(), out.stream().filter(OutputRecord::isError).toList(), "no error record");
        assertFalse(Files.exists(model.resolve(Engine.CHANNEL_FILE)), "calibrating writes nothing into the folder");

        try (Engine reference = Engine.load(model, "cpu")) {   // calibrates the same way: same channels
            for (String line : lines) {
                Request r = new RequestParser(Limits.DEFAULT).parse(line).request();
                List<OutputRecord> chunks = out.stream()
                        .filter(o -> OutputRecord.CHUNK.equals(o.kind) && r.requestId.equals(o.requestId)).toList();
                OutputRecord fin = out.stream()
                        .filter(o -> OutputRecord.FINAL.equals(o.kind) && r.requestId.equals(o.requestId))
                        .findFirst().orElseThrow(() -> new AssertionError("no final record for " + r.requestId));
                assertTrue(Set.of("length", "stop").contains(fin.finishReason), r.requestId + ": " + fin);
                assertEquals(150, fin.promptTokens);
                assertEquals(chunks.size(), fin.completionTokens);
                assertTrue(fin.completionTokens >= 1, r.requestId + " decoded: " + fin);
                KvConfig kv = r.kvConfig(KvConfig.DENSE);
                assertEquals(r.requestId.equals("r-ds") ? KvPolicy.DS : KvPolicy.DSPP, kv.policy());
                int[] expected = reference.generate(r.promptIds, RequestParser.samplingParams(r), kv).tokenIds();
                assertArrayEquals(expected, chunks.stream().mapToInt(o -> o.tokenId).toArray(),
                        r.requestId + " equals generate with the same policy on the same folder");
            }
        }
    }

    /** Collects the messages log4j gives a logger (and its children) while open. */
    static final class LogCapture extends AbstractAppender implements AutoCloseable {
        private final List<String> messages = Collections.synchronizedList(new ArrayList<>());
        private final String logger;

        private LogCapture(String logger) {
            super("capture-" + logger, null, null, true, Property.EMPTY_ARRAY);
            this.logger = logger;
        }

        static LogCapture of(String logger) {
            LogCapture c = new LogCapture(logger);
            c.start();
            LoggerContext ctx = (LoggerContext) LogManager.getContext(false);
            ctx.getConfiguration().getLoggerConfig(logger).addAppender(c, Level.INFO, null);
            ctx.updateLoggers();
            return c;
        }

        @Override
        public void append(LogEvent event) {
            messages.add(event.getMessage().getFormattedMessage());
        }

        List<String> messages() {
            synchronized (messages) {
                return List.copyOf(messages);
            }
        }

        @Override
        public void close() {
            LoggerContext ctx = (LoggerContext) LogManager.getContext(false);
            ctx.getConfiguration().getLoggerConfig(logger).removeAppender(getName());
            ctx.updateLoggers();
            stop();
        }
    }
}
