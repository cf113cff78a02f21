package io.dsflow.operators;

import org.junit.jupiter.api.Test;

import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

class RequestParserTest {
    private final RequestParser parser = new RequestParser(new Limits(4096, 100, 512, 8, 1000, 32));

    private OutputRecord error(String raw, String code) {
        RequestParser.Parsed p = parser.parse(raw);
        assertNull(p.request(), raw);
        assertNotNull(p.error());
        assertEquals(code, p.error().errorCode, raw + " -> " + p.error().errorMessage);
        assertTrue(!p.error().errorMessage.contains("\n"));
        return p.error();
    }

    @Test
    void validRequestWithDefaults() {
        Request r = parser.parse("{\"conversation_id\":\"c\",\"request_id\":\"r\",\"prompt\":\"hello\"}").request();
        assertEquals("hello", r.prompt);
        assertEquals(64, r.maxTokens);
        assertEquals(1.0, r.temperature);
        assertEquals(0, r.stop.length);
        long seedAgain = parser.parse("{\"conversation_id\":\"c\",\"request_id\":\"r\",\"prompt\":\"x\"}")
                .request().seed;
        assertEquals(r.seed, seedAgain, "without a seed, the seed follows the request id");
    }

    @Test
    void validRequestWithEverything() {
        Request r = parser.parse("{\"conversation_id\":\"c\",\"request_id\":\"r\",\"prompt_ids\":[0,5,7],"
                + "\"max_tokens\":9,\"temperature\":0.5,\"top_p\":0.9,\"top_k\":3,\"seed\":-4,\"stop\":[\"a\",\"b\"],"
                + "\"kv\":{\"policy\":\"dspp\",\"window\":16,\"lookahead\":\"on\"}}").request();
        assertArrayEquals(new int[]{0, 5, 7}, r.promptIds);
        assertEquals(-4, r.seed);
        assertArrayEquals(new String[]{"a", "b"}, r.stop);
        io.dsflow.engine.kv.KvConfig kv = r.kvConfig(io.dsflow.engine.kv.KvConfig.DENSE);
        assertEquals(16, kv.window());
        assertTrue(kv.lookahead());
    }

    @Test
    void badRecordsNameTheirCauseAndTheRequestIdWhenReadable() {
        error("{oops", "invalid_json");
        error("[1]", "invalid_json");
        error("{\"conversation_id\":\"c\",\"request_id\":\"r\",\"temperature\":NaN,\"prompt\":\"x\"}", "invalid_json");
        OutputRecord e = error("{\"conversation_id\":\"c\",\"request_id\":\"r7\"}", "invalid_prompt");
        assertEquals("r7", e.requestId);
        error("{\"conversation_id\":\"c\",\"request_id\":\"r\",\"prompt\":\"\"}", "invalid_prompt");
        error("{\"conversation_id\":\"c\",\"request_id\":\"r\",\"prompt_ids\":[]}", "invalid_prompt");
        error("{\"conversation_id\":\"c\",\"request_id\":\"r\",\"prompt_ids\":[1,-2]}", "invalid_prompt");
        error("{\"conversation_id\":\"c\",\"request_id\":\"r\",\"prompt_ids\":[1.5]}", "invalid_prompt");
        error(promptX("\"prompt_ids\":[1]"), "invalid_prompt");
        error("{\"conversation_id\":\"c\",\"request_id\":\"r\",\"prompt_ids\":"
                + java.util.Arrays.toString(new int[101]) + "}", "prompt_too_long");
        error(promptX("\"max_tokens\":0"), "invalid_parameter");
        error(promptX("\"max_tokens\":1e12"), "invalid_parameter");
        error(promptX("\"max_tokens\":\"5\""), "invalid_parameter");
        error(promptX("\"temperature\":-1"), "invalid_parameter");
        error(promptX("\"temperature\":1e400"), "invalid_parameter");
        error(promptX("\"top_p\":0"), "invalid_parameter");
        error(promptX("\"stop\":[1]"), "invalid_parameter");
        error(promptX("\"kv\":{\"window\":-1}"), "invalid_parameter");
        error(promptX("\"kv\":{\"nope\":1}"), "invalid_parameter");
        error(promptX("\"kv\":{\"policy\":\"ds\",\"lookahead\":\"on\"}"), "invalid_parameter");
        error(promptX("\"extra\":1"), "unknown_field");
        error(promptX("\"prompt\":\"y\""), "invalid_json");
        error("{\"request_id\":\"r\",\"prompt\":\"x\"}", "missing_field");
        error("{\"conversation_id\":5,\"request_id\":\"r\",\"prompt\":\"x\"}", "invalid_field");
        OutputRecord longId = error("{\"conversation_id\":\"" + "c".repeat(40)
                + "\",\"request_id\":\"r\",\"prompt\":\"x\"}", "invalid_field");
        assertNull(longId.conversationId, "an over-long id is not echoed as a key");
        error("{\"conversation_id\":\"c\",\"request_id\":\"r\",\"prompt\":\"" + "x".repeat(5000) + "\"}", "too_large");
    }

    @Test
    void errorRecordsCarryTheInputCut() {
        OutputRecord e = error(promptX("\"pad\":\"" + "y".repeat(3000) + "\""), "unknown_field");
        assertTrue(e.input.length() <= 1003);
        assertTrue(e.toJson().contains("\"type\":\"error\""));
    }

    /** A request of conversation c, id r and prompt "x", with {@code fields} (JSON members) added. */
    private static String promptX(String fields) {
        return "{\"conversation_id\":\"c\",\"request_id\":\"r\",\"prompt\":\"x\"," + fields + "}";
    }

    @Test
    void dataAfterTheOneJsonValueOfARecordIsAnError() {
        String a = "{\"conversation_id\":\"c\",\"request_id\":\"a\",\"prompt\":\"x\"}";
        String b = "{\"conversation_id\":\"c\",\"request_id\":\"b\",\"prompt\":\"y\"}";
        error(a + b, "invalid_json");
        error(a + " garbage", "invalid_json");
        error(a + " 7", "invalid_json");
        assertNotNull(parser.parse(a + "  \n").request(), "trailing white space is fine");
    }

    @Test
    void nullSeedIsTheDefaultAsForEveryOtherField() {
        Request r = parser.parse(promptX("\"seed\":null")).request();
        assertNotNull(r, "seed null accepted");
        String plain = "{\"conversation_id\":\"c\",\"request_id\":\"r\",\"prompt\":\"x\"}";
        assertEquals(parser.parse(plain).request().seed, r.seed, "the seed a request without one gets");
    }

    @Test
    void openAiFieldsThatAskForWhatDsflowDoesAreAccepted() {
        Request r = parser.parse(promptX("\"model\":\"probe\",\"stream\":true,\"n\":1,\"user\":\"u1\"")).request();
        assertNotNull(r, "model, stream true, n 1 and user accepted");
        error(promptX("\"stream\":false"), "invalid_parameter");
        error(promptX("\"n\":2"), "invalid_parameter");
        error(promptX("\"model\":7"), "invalid_parameter");
        error(promptX("\"best_of\":2"), "unknown_field");
    }

    /** vLLM's ignore_eos (load generators ask for every completion at max_tokens): false unless asked. */
    @Test
    void ignoreEosAsksForMaxTokensWhateverTheModelSays() {
        assertEquals(false, RequestParser.samplingParams(parser.parse(promptX("\"seed\":1")).request()).ignoreEos());
        Request r = parser.parse(promptX("\"ignore_eos\":true")).request();
        assertNotNull(r, "ignore_eos true accepted");
        assertEquals(true, RequestParser.samplingParams(r).ignoreEos());
        assertEquals(false, parser.parse(promptX("\"ignore_eos\":null")).request().ignoreEos, "null: the default");
        error(promptX("\"ignore_eos\":\"yes\""), "invalid_parameter");
    }

    /**
     * Issue 22, items 2 and 4: a conversation ends by a record {"conversation_id", "end_conversation": true} or, on
     * Kafka, by a tombstone keyed by its conversation_id; an end record carries nothing else.
     */
    @Test
    void endRecordsAndTombstonesBecomeEndCommands() {
        Request end = parser.parse("{\"conversation_id\":\"c\",\"end_conversation\":true}").request();
        assertTrue(end.endConversation);
        assertEquals("c", end.conversationId);
        assertNull(end.requestId);
        Request tagged = parser.parse("{\"conversation_id\":\"c\",\"request_id\":\"bye\",\"end_conversation\":true}")
                .request();
        assertEquals("bye", tagged.requestId);
        Request notEnd = parser.parse("{\"conversation_id\":\"c\",\"request_id\":\"r\",\"prompt\":\"x\","
                + "\"end_conversation\":false}").request();
        assertTrue(!notEnd.endConversation);
        assertEquals("x", notEnd.prompt);
        error("{\"conversation_id\":\"c\",\"end_conversation\":\"yes\"}", "invalid_field");
        error("{\"conversation_id\":\"c\",\"request_id\":\"r\",\"prompt\":\"x\",\"end_conversation\":true}",
                "invalid_field");
        error("{\"end_conversation\":true}", "missing_field");

        Request tombstone = parser.parse(InputRecord.of("c9", null)).request();
        assertTrue(tombstone.endConversation);
        assertEquals("c9", tombstone.conversationId);
        assertEquals("x", parser.parse(InputRecord.of("c9", "{\"conversation_id\":\"c9\",\"request_id\":\"r\","
                + "\"prompt\":\"x\"}")).request().prompt, "a record with a value is a request");
    }

    /** Issue 22, item 2: a record without key and value, or with bytes that are not text, is one error record. */
    @Test
    void recordsWithoutKeyAndValueOrWithUndecodableBytesAreErrors() {
        RequestParser.Parsed empty = parser.parse(InputRecord.of(null, null));
        assertEquals("empty_record", empty.error().errorCode);
        assertEquals(1, empty.records().size(), "no ids: the error record alone");
        RequestParser.Parsed bytes = parser.parse(InputRecord.undecodable("the record's value is not UTF-8 text",
                "{\"a\":\"\uFFFD\"}"));
        assertEquals("invalid_encoding", bytes.error().errorCode);
        assertEquals("{\"a\":\"\uFFFD\"}", bytes.error().input);
        assertEquals("invalid_field", parser.parse(InputRecord.of("k".repeat(33), null)).error().errorCode,
                "a tombstone's key longer than an id may be");
    }

    /**
     * Issue 22, item 10, the one rule: a bad record whose conversation_id and request_id can be read gets its error
     * record and a final record with finish_reason error (as a request the decode operator refuses does); one whose
     * ids cannot be read gets the error record alone.
     */
    @Test
    void aBadRecordWithReadableIdsGetsAnErrorAndAFinalOthersTheErrorAlone() {
        RequestParser.Parsed p = parser.parse("{\"conversation_id\":\"c\",\"request_id\":\"r\",\"prompt\":7}");
        assertEquals(2, p.records().size());
        assertTrue(p.records().get(0).isError());
        OutputRecord fin = p.records().get(1);
        assertEquals(OutputRecord.FINAL, fin.kind);
        assertEquals("error", fin.finishReason);
        assertEquals("c", fin.conversationId);
        assertEquals("r", fin.requestId);
        assertEquals(0, fin.completionTokens);
        for (String noIds : new String[]{"{oops", "{\"request_id\":\"r\",\"prompt\":\"x\"}",
                "{\"conversation_id\":\"c\",\"prompt\":\"x\"}", "{\"conversation_id\":\"\",\"request_id\":\"r\"}",
                "{\"conversation_id\":\"c\",\"request_id\":\"" + "r".repeat(33) + "\",\"prompt\":\"x\"}"}) {
            assertEquals(1, parser.parse(noIds).records().size(), noIds);
        }
        assertEquals(List.of(), parser.parse("{\"conversation_id\":\"c\",\"request_id\":\"r\",\"prompt\":\"x\"}")
                .records(), "a valid request: no records from the parser");
    }
}
