package io.dsflow.operators;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.dsflow.engine.DsflowException;
import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.sample.SamplingParams;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Set;

/**
 * Parses and validates one request record (JSON), or one {@link InputRecord} of a source with keys (Kafka). A bad
 * record becomes exactly one error record naming the cause, the ids when they can be read, and the raw input (cut to
 * 1000 characters), followed by a final record with finish_reason error when both ids can be read (the rule of
 * {@link OutputRecord#refusal}: {@link Parsed#records}); nothing throws.
 * <p>
 * Ending a conversation: a record {@code {"conversation_id": "c1", "end_conversation": true}} (request_id optional,
 * nothing else), or on Kafka a tombstone (no value) keyed by the conversation_id, becomes an end command
 * ({@link Request#endConversation}).
 */
public final class RequestParser {
    /** Strict: a duplicate key, or anything after the one JSON value of a record, is an error. */
    private static final ObjectMapper JSON = new ObjectMapper()
            .enable(DeserializationFeature.FAIL_ON_READING_DUP_TREE_KEY)
            .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS);
    private static final Set<String> FIELDS = Set.of("conversation_id", "request_id", "prompt", "prompt_ids",
            "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "ignore_eos", "kv", "model", "stream",
            "n", "user", "end_conversation");
    /** The fields an end_conversation record may have. */
    private static final Set<String> END_FIELDS = Set.of("conversation_id", "request_id", "end_conversation");
    private static final int DEFAULT_MAX_TOKENS = 64;
    private static final int MAX_INPUT_IN_ERROR = 1000;

    private final Limits limits;

    public RequestParser(Limits limits) {
        this.limits = limits;
    }

    /** Either a request (or end command) or an error record. */
    public record Parsed(Request request, OutputRecord error) {
        /** What a bad record emits: its error record, and its final record when both ids could be read. */
        public List<OutputRecord> records() {
            return error == null ? List.of() : OutputRecord.refusal(error);
        }
    }

    /**
     * A record of a source with keys: a value is parsed as a request; a tombstone (no value) keyed by a conversation
     * ends that conversation; a record with neither, or with bytes that are not UTF-8, is an error.
     */
    public Parsed parse(InputRecord record) {
        if (record.undecodable != null) {
            return error(null, null, "invalid_encoding", record.undecodable, record.value == null ? "" : record.value);
        }
        if (record.value != null) return parse(record.value);
        if (record.key == null) {
            return error(null, null, "empty_record", "a record with neither key nor value (to end a conversation, "
                    + "send a tombstone keyed by its conversation_id)", "");
        }
        String key = record.key;
        if (key.isEmpty() || key.length() > limits.maxIdLength()) {
            return error(null, null, "invalid_field", "a tombstone's key is the conversation_id to end; this one is "
                    + (key.isEmpty() ? "empty" : key.length() + " characters, the limit is " + limits.maxIdLength()),
                    cut(key, MAX_INPUT_IN_ERROR));
        }
        return new Parsed(Request.end(key, null, "tombstone keyed " + cut(key, 64)), null);
    }

    public Parsed parse(String raw) {
        if (raw == null) return error(null, null, "invalid_json", "empty record", "");
        if (raw.getBytes(StandardCharsets.UTF_8).length > limits.maxRequestBytes()) {
            return error(null, null, "too_large", "request is over " + limits.maxRequestBytes() + " bytes", raw);
        }
        JsonNode root;
        try {
            root = JSON.readTree(raw);
        } catch (JsonProcessingException e) {
            String why = e.getOriginalMessage().replace('\n', ' ');
            return error(null, null, "invalid_json", "not valid JSON: " + why, raw);
        }
        if (root == null || !root.isObject()) {
            return error(null, null, "invalid_json", "a request must be a JSON object", raw);
        }
        String requestId = readableId(root, "request_id"), conversationId = readableId(root, "conversation_id");
        try {
            return new Parsed(build(root, raw), null);
        } catch (BadRequest e) {
            return error(conversationId, requestId, e.code, e.getMessage(), raw);
        } catch (DsflowException e) {
            return error(conversationId, requestId, "invalid_parameter", e.getMessage(), raw);
        }
    }

    /** The id as an error record may name it: a non-empty string within the length limit, else null. */
    private String readableId(JsonNode root, String field) {
        JsonNode n = root.get(field);
        if (n == null || !n.isTextual() || n.asText().isEmpty() || n.asText().length() > limits.maxIdLength()) {
            return null;
        }
        return n.asText();
    }

    private Request build(JsonNode root, String raw) {
        for (Iterator<String> it = root.fieldNames(); it.hasNext(); ) {
            String f = it.next();
            if (!FIELDS.contains(f)) throw new BadRequest("unknown_field", "unknown field '" + cut(f, 64) + "'");
        }
        JsonNode end = root.get("end_conversation");
        if (end != null && !end.isNull()) {
            if (!end.isBoolean()) throw new BadRequest("invalid_field", "end_conversation must be true or false");
            if (end.asBoolean()) return endCommand(root, raw);
        }
        Request r = new Request();
        r.raw = raw;
        r.conversationId = id(root, "conversation_id");
        r.requestId = id(root, "request_id");
        boolean hasText = root.has("prompt") && !root.get("prompt").isNull();
        boolean hasIds = root.has("prompt_ids") && !root.get("prompt_ids").isNull();
        if (hasText == hasIds) throw new BadRequest("invalid_prompt", "give exactly one of prompt and prompt_ids");
        if (hasText) {
            JsonNode p = root.get("prompt");
            if (!p.isTextual()) throw new BadRequest("invalid_prompt", "prompt must be a string");
            if (p.asText().isEmpty()) throw new BadRequest("invalid_prompt", "prompt is empty");
            r.prompt = p.asText();
        } else {
            JsonNode ids = root.get("prompt_ids");
            if (!ids.isArray()) throw new BadRequest("invalid_prompt", "prompt_ids must be an array of token ids");
            if (ids.isEmpty()) throw new BadRequest("invalid_prompt", "prompt_ids is empty");
            if (ids.size() > limits.maxPromptTokens()) {
                throw new BadRequest("prompt_too_long", "prompt has " + ids.size() + " tokens; the limit is "
                        + limits.maxPromptTokens());
            }
            r.promptIds = new int[ids.size()];
            for (int i = 0; i < r.promptIds.length; i++) {
                JsonNode t = ids.get(i);
                if (!t.isIntegralNumber() || !t.canConvertToInt() || t.asInt() < 0) {
                    throw new BadRequest("invalid_prompt", "prompt_ids[" + i + "] is not a token id: "
                            + cut(t.toString(), 32));
                }
                r.promptIds[i] = t.asInt();
            }
        }
        openAiFields(root);
        r.maxTokens = integer(root, "max_tokens", DEFAULT_MAX_TOKENS);
        if (r.maxTokens < 1 || r.maxTokens > limits.maxTokens()) {
            throw new BadRequest("invalid_parameter", "max_tokens must be in [1, " + limits.maxTokens() + "], got "
                    + r.maxTokens);
        }
        r.temperature = number(root, "temperature", 1.0);
        r.topP = number(root, "top_p", 1.0);
        r.topK = integer(root, "top_k", 0);
        // without a seed, one derived from the request id: a regenerated step after a restore samples the same token
        // (null, as for every other field, means the default)
        boolean seeded = root.has("seed") && !root.get("seed").isNull();
        r.seed = seeded ? longValue(root, "seed") : r.requestId.hashCode() * 0x9E3779B97F4A7C15L;
        List<String> stop = new ArrayList<>();
        JsonNode s = root.get("stop");
        if (s != null && !s.isNull()) {
            if (s.isTextual()) stop.add(s.asText());
            else if (s.isArray()) {
                for (JsonNode e : s) {
                    if (!e.isTextual()) {
                        throw new BadRequest("invalid_parameter", "stop must be a string or a list of strings");
                    }
                    stop.add(e.asText());
                }
            } else throw new BadRequest("invalid_parameter", "stop must be a string or a list of strings");
        }
        r.stop = stop.toArray(new String[0]);
        JsonNode ignoreEos = root.get("ignore_eos");
        if (ignoreEos != null && !ignoreEos.isNull()) {
            if (!ignoreEos.isBoolean()) throw new BadRequest("invalid_parameter", "ignore_eos must be true or false");
            r.ignoreEos = ignoreEos.asBoolean();
        }
        samplingParams(r); // validates temperature, top_p, top_k, stop
        JsonNode kv = root.get("kv");
        if (kv != null && !kv.isNull()) {
            r.kv = KvOverrides.of(kv);
            r.kvConfig(KvConfig.DENSE); // validates names and values now
        }
        return r;
    }

    /** An end_conversation record: the conversation_id, an optional request_id, nothing else. */
    private Request endCommand(JsonNode root, String raw) {
        for (Iterator<String> it = root.fieldNames(); it.hasNext(); ) {
            String f = it.next();
            if (!END_FIELDS.contains(f)) {
                throw new BadRequest("invalid_field", "an end_conversation record has only conversation_id and "
                        + "request_id; '" + f + "' is not allowed (send the request first, then the end)");
            }
        }
        return Request.end(id(root, "conversation_id"), root.has("request_id") && !root.get("request_id").isNull()
                ? id(root, "request_id") : null, raw);
    }

    /**
     * The OpenAI completions fields a client sends anyway, accepted where they ask for what dsflow does: {@code model}
     * and {@code user} (strings, not used: the job serves one model), {@code stream} true (every completion streams a
     * record a token), {@code n} 1 (one completion a request).
     */
    private static void openAiFields(JsonNode root) {
        for (String f : new String[]{"model", "user"}) {
            JsonNode n = root.get(f);
            if (n != null && !n.isNull() && !n.isTextual()) {
                throw new BadRequest("invalid_parameter", f + " must be a string");
            }
        }
        JsonNode stream = root.get("stream");
        if (stream != null && !stream.isNull() && !(stream.isBoolean() && stream.asBoolean())) {
            throw new BadRequest("invalid_parameter", "stream must be true: every completion streams a record a token");
        }
        if (integer(root, "n", 1) != 1) {
            throw new BadRequest("invalid_parameter", "n must be 1: one completion a request");
        }
    }

    /** The sampling parameters of a valid request. */
    public static SamplingParams samplingParams(Request r) {
        return new SamplingParams(r.temperature, r.topP, r.topK, r.seed, r.maxTokens, List.of(r.stop), r.ignoreEos);
    }

    private String id(JsonNode root, String field) {
        JsonNode n = root.get(field);
        if (n == null || n.isNull()) throw new BadRequest("missing_field", field + " is required");
        if (!n.isTextual()) throw new BadRequest("invalid_field", field + " must be a string");
        String v = n.asText();
        if (v.isEmpty()) throw new BadRequest("invalid_field", field + " is empty");
        if (v.length() > limits.maxIdLength()) {
            throw new BadRequest("invalid_field", field + " is " + v.length() + " characters; the limit is "
                    + limits.maxIdLength());
        }
        return v;
    }

    private static int integer(JsonNode root, String field, int fallback) {
        JsonNode n = root.get(field);
        if (n == null || n.isNull()) return fallback;
        if (!n.isIntegralNumber() || !n.canConvertToInt()) {
            throw new BadRequest("invalid_parameter", field + " must be an integer, got " + cut(n.toString(), 32));
        }
        return n.asInt();
    }

    private static long longValue(JsonNode root, String field) {
        JsonNode n = root.get(field);
        if (!n.isIntegralNumber() || !n.canConvertToLong()) {
            throw new BadRequest("invalid_parameter", field + " must be an integer, got " + cut(n.toString(), 32));
        }
        return n.asLong();
    }

    private static double number(JsonNode root, String field, double fallback) {
        JsonNode n = root.get(field);
        if (n == null || n.isNull()) return fallback;
        if (!n.isNumber()) {
            throw new BadRequest("invalid_parameter", field + " must be a number, got " + cut(n.toString(), 32));
        }
        return n.asDouble();
    }

    private static String cut(String s, int n) {
        return s.length() <= n ? s : s.substring(0, n) + "...";
    }

    private static Parsed error(String conversationId, String requestId, String code, String message, String raw) {
        String input = cut(raw, MAX_INPUT_IN_ERROR);
        return new Parsed(null, OutputRecord.error(conversationId, requestId, code, message, input));
    }

    /** A request that breaks a rule, with an error code. */
    static final class BadRequest extends DsflowException {
        final String code;

        BadRequest(String code, String message) {
            super(message);
            this.code = code;
        }
    }
}
