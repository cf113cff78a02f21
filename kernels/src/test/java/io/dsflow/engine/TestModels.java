package io.dsflow.engine;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/** The models the tests use, carried in the project (test resources, and models/ for the probe model). */
public final class TestModels {
    public static final List<String> GOLDEN = List.of("llama-tiny", "qwen2-tiny", "opt-tiny");
    private static final Map<String, Engine> ENGINES = new ConcurrentHashMap<>();

    private TestModels() {
    }

    public static Path dir(String name) {
        if (name.equals("probe-retrieval")) {
            Path p = Path.of("..", "models", "probe-retrieval");
            return Files.isDirectory(p) ? p : Path.of("models", "probe-retrieval");
        }
        return Path.of("src", "test", "resources", "models", name);
    }

    /** One engine per model for the whole test run (loading converts the weights). */
    public static Engine engine(String name) {
        return ENGINES.computeIfAbsent(name, n -> Engine.load(dir(n), "cpu"));
    }

    public record GoldenCase(String model, int index, int[] promptIds, float[] lastLogits, int[] greedyIds) {
        @Override
        public String toString() {
            return model + " case " + index + " (" + promptIds.length + " prompt tokens)";
        }
    }

    public static List<GoldenCase> goldenCases() {
        List<GoldenCase> cases = new ArrayList<>();
        for (String m : GOLDEN) {
            try {
                JsonNode root = new ObjectMapper().readTree(dir(m).resolve("golden.json").toFile());
                int i = 0;
                for (JsonNode c : root.get("cases")) {
                    cases.add(new GoldenCase(m, i++, ints(c.get("prompt_ids")), floats(c.get("last_logits")),
                            ints(c.get("greedy_ids"))));
                }
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }
        return cases;
    }

    static int[] ints(JsonNode a) {
        int[] r = new int[a.size()];
        for (int i = 0; i < r.length; i++) r[i] = a.get(i).asInt();
        return r;
    }

    static float[] floats(JsonNode a) {
        float[] r = new float[a.size()];
        for (int i = 0; i < r.length; i++) r[i] = (float) a.get(i).asDouble();
        return r;
    }
}
