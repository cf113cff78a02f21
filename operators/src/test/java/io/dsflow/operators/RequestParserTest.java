package io.dsflow.operators;

import org.junit.jupiter.api.Test;

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
}
