package io.dsflow.engine.model;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import java.util.stream.Stream;

/**
 * A Hugging Face model folder: config.json, weights in model.safetensors or shards listed by
 * model.safetensors.index.json, tokenizer.json, and optionally generation_config.json (its eos_token_id wins).
 * Opening it checks everything that can be checked without reading the weights; pickled weights are refused.
 */
public final class ModelFolder {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final List<String> PICKLE_SUFFIXES = List.of(".bin", ".pt", ".pth", ".ckpt", ".pkl");

    private final Path dir;
    private final ModelConfig config;
    private final Map<String, SafeTensors.Entry> tensors;
    private final long weightBytes;

    private ModelFolder(Path dir, ModelConfig config, Map<String, SafeTensors.Entry> tensors) {
        this.dir = dir;
        this.config = config;
        this.tensors = tensors;
        this.weightBytes = tensors.values().stream().mapToLong(e -> e.end() - e.begin()).sum();
    }

    public static ModelFolder open(Path dir) {
        if (!Files.exists(dir)) throw new ModelLoadException("model folder " + dir + " does not exist");
        if (!Files.isDirectory(dir)) throw new ModelLoadException("model folder " + dir + " is not a directory");
        if (!Files.isReadable(dir)) throw new ModelLoadException("model folder " + dir + " is not readable");
        Path configFile = dir.resolve("config.json");
        if (!Files.isRegularFile(configFile)) throw new ModelLoadException("no config.json in " + dir);
        ModelConfig config = ModelConfig.load(configFile);
        Path gen = dir.resolve("generation_config.json");
        if (Files.isRegularFile(gen)) {
            try {
                JsonNode g = JSON.readTree(Files.readAllBytes(gen));
                if (g != null && g.has("eos_token_id") && !g.get("eos_token_id").isNull()) {
                    config = config.withEosTokenIds(ModelConfig.eosIdsOf(g.get("eos_token_id")));
                }
            } catch (IOException e) {
                throw new ModelLoadException("cannot read " + gen + ": " + Json.describe(e), e);
            }
        }
        return new ModelFolder(dir, config, openWeights(dir));
    }

    private static Map<String, SafeTensors.Entry> openWeights(Path dir) {
        Path single = dir.resolve("model.safetensors");
        Path index = dir.resolve("model.safetensors.index.json");
        List<Path> files = new ArrayList<>();
        if (Files.isRegularFile(index)) {
            files.addAll(shardsOf(dir, index));
        } else if (Files.isRegularFile(single)) {
            files.add(single);
        } else {
            List<String> names = listNames(dir);
            names.stream().filter(n -> n.endsWith(".safetensors")).sorted().forEach(n -> files.add(dir.resolve(n)));
            if (files.isEmpty()) {
                List<String> pickled = names.stream().filter(n -> PICKLE_SUFFIXES.stream().anyMatch(n::endsWith)).toList();
                if (!pickled.isEmpty()) {
                    throw new ModelLoadException(dir + " has only pickled weights (" + String.join(", ", pickled)
                            + "); dsflow never unpickles: convert them to safetensors");
                }
                throw new ModelLoadException("no weights in " + dir + " (model.safetensors or model.safetensors.index.json)");
            }
        }
        Map<String, SafeTensors.Entry> all = new LinkedHashMap<>();
        for (Path f : files) {
            for (Map.Entry<String, SafeTensors.Entry> e : SafeTensors.open(f).entries().entrySet()) {
                if (all.put(e.getKey(), e.getValue()) != null) {
                    throw new ModelLoadException(dir + ": tensor " + e.getKey() + " appears in more than one file");
                }
            }
        }
        return all;
    }

    private static List<Path> shardsOf(Path dir, Path index) {
        JsonNode map;
        try {
            JsonNode root = JSON.readTree(Files.readAllBytes(index));
            map = root == null ? null : root.get("weight_map");
        } catch (IOException e) {
            throw new ModelLoadException("cannot read " + index + ": " + Json.describe(e), e);
        }
        if (map == null || !map.isObject()) throw new ModelLoadException(index + " has no weight_map");
        TreeSet<String> shardNames = new TreeSet<>();
        for (Iterator<JsonNode> it = map.elements(); it.hasNext(); ) shardNames.add(it.next().asText());
        List<Path> shards = new ArrayList<>();
        for (String s : shardNames) {
            Path p = dir.resolve(s).normalize();
            if (!p.startsWith(dir.normalize()) || !s.endsWith(".safetensors")) {
                throw new ModelLoadException(index + " names shard '" + s + "', which is not a .safetensors file in the folder");
            }
            if (!Files.isRegularFile(p)) throw new ModelLoadException(index + " names shard " + s + ", which is missing");
            shards.add(p);
        }
        return shards;
    }

    private static List<String> listNames(Path dir) {
        try (Stream<Path> s = Files.list(dir)) {
            return s.map(p -> p.getFileName().toString()).toList();
        } catch (IOException e) {
            throw new ModelLoadException("cannot list " + dir + ": " + e.getMessage(), e);
        }
    }

    public Path dir() {
        return dir;
    }

    public ModelConfig config() {
        return config;
    }

    public Map<String, SafeTensors.Entry> tensors() {
        return tensors;
    }

    public long weightBytes() {
        return weightBytes;
    }

    /** The dtype most of the weights are stored in (for the log line). */
    public DType storedDtype() {
        Map<DType, Long> bytes = new LinkedHashMap<>();
        tensors.values().forEach(e -> bytes.merge(e.dtype(), e.end() - e.begin(), Long::sum));
        return bytes.entrySet().stream().max(Map.Entry.comparingByValue()).map(Map.Entry::getKey).orElse(DType.F32);
    }

    public Path tokenizerFile() {
        Path t = dir.resolve("tokenizer.json");
        if (!Files.isRegularFile(t)) throw new ModelLoadException("no tokenizer.json in " + dir);
        return t;
    }
}
