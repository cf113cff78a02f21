package io.dsflow.operators;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.dsflow.engine.InvalidRequestException;
import io.dsflow.engine.kv.KvConfig;

import java.util.Arrays;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Objects;

/**
 * A request's kv overrides: the options of its {@code kv} JSON object (policy, r, sinks, window, ...; names as on the
 * command line) as names and values, in the order the request gave them. {@link RequestParser} reads them once from
 * the request's JSON; the decode operator applies them to its default configuration with {@link #applyTo}, which
 * parses nothing.
 * <ul>
 *   <li>A Flink POJO (public fields, a no-arg constructor), so it travels from the parser to the decode operator in
 *       order and without Kryo; {@code names[i]} goes with {@code values[i]}.</li>
 *   <li>Its checkpoint form is the JSON object {@link #toJson} writes (ConversationStateSerializer, format 1: the
 *       field that always held the request's kv JSON), and {@link #fromJson} reads what any version wrote there.</li>
 * </ul>
 */
public class KvOverrides {
    private static final ObjectMapper JSON = new ObjectMapper();

    public String[] names = new String[0];
    public String[] values = new String[0];

    public KvOverrides() {
    }

    /** The options of a request's kv object; throws InvalidRequestException for anything but an object of values. */
    public static KvOverrides of(JsonNode kv) {
        if (kv == null || !kv.isObject()) throw new InvalidRequestException("kv must be an object");
        KvOverrides o = new KvOverrides();
        o.names = new String[kv.size()];
        o.values = new String[kv.size()];
        int i = 0;
        for (Iterator<Map.Entry<String, JsonNode>> it = kv.fields(); it.hasNext(); i++) {
            Map.Entry<String, JsonNode> e = it.next();
            if (!e.getValue().isValueNode() || e.getValue().isNull()) {
                throw new InvalidRequestException("kv." + cut(e.getKey()) + " must be a number or a string");
            }
            o.names[i] = e.getKey();
            o.values[i] = e.getValue().asText();
        }
        return o;
    }

    /** Reads the JSON object {@link #toJson} (or an earlier version's kv field) wrote. */
    public static KvOverrides fromJson(String json) {
        try {
            return of(JSON.readTree(json));
        } catch (JsonProcessingException e) {
            throw new InvalidRequestException("kv is not valid JSON");
        }
    }

    /** The options in order, as {@link KvConfig#with} takes them. */
    public Map<String, String> options() {
        Map<String, String> options = new LinkedHashMap<>();
        for (int i = 0; i < names.length; i++) options.put(names[i], values[i]);
        return options;
    }

    /** {@code base} with these options applied; throws InvalidRequestException for an unknown name or a bad value. */
    public KvConfig applyTo(KvConfig base) {
        return base.with(options());
    }

    public String toJson() {
        ObjectNode o = JSON.createObjectNode();
        for (int i = 0; i < names.length; i++) o.put(names[i], values[i]);
        return o.toString();
    }

    public KvOverrides copy() {
        KvOverrides c = new KvOverrides();
        c.names = names.clone();
        c.values = values.clone();
        return c;
    }

    private static String cut(String s) {
        return s.length() <= 64 ? s : s.substring(0, 64) + "...";
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof KvOverrides k && Arrays.equals(names, k.names) && Arrays.equals(values, k.values);
    }

    @Override
    public int hashCode() {
        return Objects.hash(Arrays.hashCode(names), Arrays.hashCode(values));
    }

    @Override
    public String toString() {
        return toJson();
    }
}
