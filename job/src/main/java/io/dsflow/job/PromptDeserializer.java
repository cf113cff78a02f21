package io.dsflow.job;

import io.dsflow.operators.InputRecord;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema;
import org.apache.flink.util.Collector;
import org.apache.kafka.clients.consumer.ConsumerRecord;

import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.MalformedInputException;
import java.nio.charset.StandardCharsets;

/**
 * Decodes the prompts topic's records into {@link InputRecord}s, and never throws: a deserializer that throws fails
 * the source, which restarts at the same offset and fails again, so one bad record would stop the job for good. Every
 * record becomes exactly one InputRecord, which the parser turns into a request, an end command or one error record:
 * <ul>
 *   <li>the value as UTF-8 text (strictly: a malformed byte is not replaced), with the key where there is one;</li>
 *   <li>a tombstone (no value) with its key: it ends the conversation the key names;</li>
 *   <li>bytes that are not UTF-8 (in the value, or in a tombstone's key): why, and the bytes as far as they read.</li>
 * </ul>
 * The key of a record with a value is passed on as text where it decodes, and otherwise dropped: the value names the
 * conversation.
 */
final class PromptDeserializer implements KafkaRecordDeserializationSchema<InputRecord> {
    private static final long serialVersionUID = 1L;
    /** How much of an undecodable value the error record shows (the parser cuts the input it shows as well). */
    private static final int SHOWN_BYTES = 1000;

    @Override
    public void deserialize(ConsumerRecord<byte[], byte[]> record, Collector<InputRecord> out) {
        out.collect(decode(record.key(), record.value()));
    }

    /** The record as text, or why it is not. */
    static InputRecord decode(byte[] key, byte[] value) {
        try {
            if (value != null) {
                return InputRecord.of(key == null ? null : textOrNull(key), text(value));
            }
            return InputRecord.of(key == null ? null : text(key), null);
        } catch (CharacterCodingException e) {
            byte[] bad = value != null ? value : key;
            String where = value != null ? "value" : "key (a tombstone's key is the conversation_id)";
            String at = e instanceof MalformedInputException m ? " (a malformed sequence of " + m.getInputLength()
                    + " bytes)" : "";
            return InputRecord.undecodable("the record's " + where + " is not UTF-8 text" + at, shown(bad));
        } catch (RuntimeException e) {
            // nothing above should throw; if it does, the record still becomes an error record, not a failed source
            return InputRecord.undecodable("the record cannot be read: " + e, "");
        }
    }

    private static String text(byte[] bytes) throws CharacterCodingException {
        CharsetDecoder strict = StandardCharsets.UTF_8.newDecoder()
                .onMalformedInput(CodingErrorAction.REPORT)
                .onUnmappableCharacter(CodingErrorAction.REPORT);
        return strict.decode(ByteBuffer.wrap(bytes)).toString();
    }

    private static String textOrNull(byte[] bytes) {
        try {
            return text(bytes);
        } catch (CharacterCodingException e) {
            return null;
        }
    }

    /** The bytes as far as they can be shown: malformed sequences as U+FFFD. */
    private static String shown(byte[] bytes) {
        return new String(bytes, 0, Math.min(bytes.length, SHOWN_BYTES), StandardCharsets.UTF_8);
    }

    @Override
    public TypeInformation<InputRecord> getProducedType() {
        return TypeInformation.of(InputRecord.class);
    }
}
