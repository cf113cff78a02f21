package io.dsflow.operators;

/**
 * A record as its source read it, before {@link RequestParser} parses it (a Flink POJO): the value as text, the key
 * where the source has keys (Kafka), or why its bytes could not be read as text. A source's decoder makes one of these
 * of every record and never throws, so no record can stop the source; the parser turns each into a request, an end
 * command or one error record:
 * <ul>
 *   <li>a value: a request (JSON), whatever the key;</li>
 *   <li>no value but a key: a tombstone, Kafka's idiom for deletion: it ends the conversation the key names;</li>
 *   <li>neither, or bytes that are not UTF-8: an error record.</li>
 * </ul>
 */
public class InputRecord {
    /** The record's key as text (the conversation_id on the prompts topic), or null. */
    public String key;
    /** The record's value as text, or null (a tombstone). */
    public String value;
    /** Why the record's bytes are not text, or null; {@link #value} then shows them as far as they can be read. */
    public String undecodable;

    public InputRecord() {
    }

    /** A record of a source without keys (a file, a collection). */
    public static InputRecord of(String value) {
        return of(null, value);
    }

    public static InputRecord of(String key, String value) {
        InputRecord r = new InputRecord();
        r.key = key;
        r.value = value;
        return r;
    }

    /** A record whose bytes are not text: {@code why}, and {@code shown} (the bytes as far as they can be read). */
    public static InputRecord undecodable(String why, String shown) {
        InputRecord r = new InputRecord();
        r.undecodable = why;
        r.value = shown;
        return r;
    }

    @Override
    public String toString() {
        return "InputRecord{key=" + key + ", " + (undecodable != null ? "undecodable: " + undecodable
                : value == null ? "no value" : value.length() + " chars") + "}";
    }
}
