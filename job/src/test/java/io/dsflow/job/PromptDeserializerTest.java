package io.dsflow.job;

import io.dsflow.operators.InputRecord;
import org.junit.jupiter.api.Test;

import java.nio.charset.StandardCharsets;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Issue 22, item 2: every Kafka record becomes one InputRecord, and the decoder never throws. */
class PromptDeserializerTest {
    private static byte[] utf8(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    @Test
    void valuesKeysAndTombstonesDecode() {
        InputRecord r = PromptDeserializer.decode(utf8("c1"), utf8("{\"prompt\":\"héllo ✓\"}"));
        assertEquals("c1", r.key);
        assertEquals("{\"prompt\":\"héllo ✓\"}", r.value);
        assertNull(r.undecodable);
        InputRecord tombstone = PromptDeserializer.decode(utf8("c1"), null);
        assertEquals("c1", tombstone.key);
        assertNull(tombstone.value);
        assertNull(tombstone.undecodable);
        InputRecord neither = PromptDeserializer.decode(null, null);
        assertNull(neither.key);
        assertNull(neither.value);
        assertNull(neither.undecodable, "the parser makes it an empty_record error");
    }

    @Test
    void bytesThatAreNotUtf8AreNamedNotReplaced() {
        byte[] bad = {'{', '"', 'a', '"', ':', '"', (byte) 0xC3, 0x28, '"', '}'};
        InputRecord r = PromptDeserializer.decode(utf8("c1"), bad);
        assertTrue(r.undecodable.contains("value is not UTF-8"), r.undecodable);
        assertTrue(r.value.startsWith("{\"a\":\""), "shown as far as it reads: " + r.value);
        InputRecord badKey = PromptDeserializer.decode(new byte[]{(byte) 0xFF}, null);
        assertTrue(badKey.undecodable.contains("key"), badKey.undecodable);
        InputRecord badKeyWithValue = PromptDeserializer.decode(new byte[]{(byte) 0xFF}, utf8("{}"));
        assertNull(badKeyWithValue.undecodable, "the value names the conversation; the key is dropped");
        assertNull(badKeyWithValue.key);
        assertEquals("{}", badKeyWithValue.value);
    }
}
