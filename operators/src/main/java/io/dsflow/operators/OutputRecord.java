package io.dsflow.operators;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.dsflow.engine.FinishReason;

import java.util.List;

/**
 * What the job emits, one POJO for the three kinds (Flink serialises it without reflection tricks):
 * <ul>
 *   <li>chunk: {@code request_id, conversation_id, index, token_id, text} (one per token, in index order);</li>
 *   <li>final: {@code request_id, conversation_id, finish_reason (stop|length|error), usage {prompt_tokens,
 *       completion_tokens}, timings {ttft_ms, itl_ms}} (one per request, after its chunks);</li>
 *   <li>error: {@code request_id (if known), error {code, message}, input} (on the errors topic).</li>
 * </ul>
 * One rule for refusals and failures, wherever they are found (the parser or the decode operator): a request whose
 * conversation_id and request_id can be read gets exactly one error record and then one final record with
 * finish_reason error, so a consumer waiting for each request's final never waits forever; a record whose ids cannot
 * be read gets the error record alone (no final could name it). The one exception is duplicate_request_id: the final
 * of that (conversation, request) pair belongs to the request that used the id first, so the duplicate gets only its
 * error record. {@link #refusal} builds the records of the rule.
 */
public class OutputRecord {
    public static final String CHUNK = "chunk", FINAL = "final", ERROR = "error";
    private static final ObjectMapper JSON = new ObjectMapper();

    public String kind;
    public String conversationId;
    public String requestId;
    public int index;
    public int tokenId;
    public String text;
    public String finishReason;
    public int promptTokens;
    public int completionTokens;
    public double ttftMs;
    public double itlMs;
    public String errorCode;
    public String errorMessage;
    public String input;

    public OutputRecord() {
    }

    public static OutputRecord chunk(String conversationId, String requestId, int index, int tokenId, String text) {
        OutputRecord r = new OutputRecord();
        r.kind = CHUNK;
        r.conversationId = conversationId;
        r.requestId = requestId;
        r.index = index;
        r.tokenId = tokenId;
        r.text = text;
        return r;
    }

    public static OutputRecord finalRecord(String conversationId, String requestId, String finishReason,
                                           int promptTokens, int completionTokens, double ttftMs, double itlMs) {
        OutputRecord r = new OutputRecord();
        r.kind = FINAL;
        r.conversationId = conversationId;
        r.requestId = requestId;
        r.finishReason = finishReason;
        r.promptTokens = promptTokens;
        r.completionTokens = completionTokens;
        r.ttftMs = ttftMs;
        r.itlMs = itlMs;
        return r;
    }

    public static OutputRecord error(String conversationId, String requestId, String code, String message,
                                     String input) {
        OutputRecord r = new OutputRecord();
        r.kind = ERROR;
        r.conversationId = conversationId;
        r.requestId = requestId;
        r.errorCode = code;
        r.errorMessage = message;
        r.input = input;
        return r;
    }

    /**
     * The records a refused or failed request gets: {@code error}, then a final record with finish_reason error
     * (no usage, no timings) when the error names both the conversation and the request; {@code error} alone when it
     * cannot.
     */
    public static List<OutputRecord> refusal(OutputRecord error) {
        if (!error.isError()) throw new IllegalArgumentException("not an error record: " + error);
        if (error.conversationId == null || error.requestId == null) return List.of(error);
        return List.of(error, finalRecord(error.conversationId, error.requestId, FinishReason.ERROR.id(), 0, 0, 0, 0));
    }

    public boolean isError() {
        return ERROR.equals(kind);
    }

    /** The record's key on Kafka: the conversation (errors without one use the request id, or none). */
    public String key() {
        return conversationId != null ? conversationId : requestId;
    }

    public String toJson() {
        ObjectNode o = JSON.createObjectNode();
        o.put("type", kind);
        switch (kind) {
            case CHUNK -> {
                o.put("request_id", requestId);
                o.put("conversation_id", conversationId);
                o.put("index", index);
                o.put("token_id", tokenId);
                o.put("text", text);
            }
            case FINAL -> {
                o.put("request_id", requestId);
                o.put("conversation_id", conversationId);
                o.put("finish_reason", finishReason);
                ObjectNode usage = o.putObject("usage");
                usage.put("prompt_tokens", promptTokens);
                usage.put("completion_tokens", completionTokens);
                ObjectNode t = o.putObject("timings");
                t.put("ttft_ms", Math.round(ttftMs * 1000) / 1000.0);
                t.put("itl_ms", Math.round(itlMs * 1000) / 1000.0);
            }
            default -> {
                if (requestId != null) o.put("request_id", requestId);
                if (conversationId != null) o.put("conversation_id", conversationId);
                ObjectNode e = o.putObject("error");
                e.put("code", errorCode);
                e.put("message", errorMessage);
                o.put("input", input);
            }
        }
        return o.toString();
    }

    @Override
    public String toString() {
        return toJson();
    }
}
