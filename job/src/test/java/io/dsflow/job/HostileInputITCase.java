package io.dsflow.job;

import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.kv.KvPolicy;
import io.dsflow.operators.DecodeSettings;
import io.dsflow.operators.Limits;
import io.dsflow.operators.OutputRecord;
import org.apache.flink.runtime.testutils.MiniClusterResourceConfiguration;
import org.apache.flink.test.junit5.MiniClusterExtension;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * 10,000 generated bad records interleaved with valid requests: the job never fails, each bad record gets exactly one
 * error record, and every valid request is served.
 */
class HostileInputITCase {
    @RegisterExtension
    static final MiniClusterExtension CLUSTER = new MiniClusterExtension(new MiniClusterResourceConfiguration.Builder()
            .setNumberTaskManagers(1).setNumberSlotsPerTaskManager(2).setConfiguration(PipelineITCase.memory("64m")).build());

    static final int BAD = 10_000;

    /** A bad record whose text carries {@code marker} in its first few hundred characters. */
    static String bad(int kind, String marker, Random rnd) {
        String base = "\"request_id\":\"" + marker + "\",\"conversation_id\":\"hostile-" + rnd.nextInt(50) + "\"";
        return switch (kind) {
            case 0 -> "{" + base + ",\"prompt\":\"unterminated";                          // invalid JSON
            case 1 -> "{" + base + ",\"prompt\":123}";                                     // wrong type
            case 2 -> "{" + base + ",\"prompt\":\"" + "x".repeat(1_100_000) + "\"}";       // over the size limit
            case 3 -> "{" + base + ",\"prompt\":\"hi\",\"max_tokens\":-5}";                // negative
            case 4 -> "{" + base + ",\"prompt\":\"hi\",\"temperature\":NaN}";              // NaN
            case 5 -> "{" + base + ",\"prompt\":\"hi\",\"max_tokens\":99999999999999}";    // enormous
            case 6 -> "{" + base + ",\"prompt\":\"hi\",\"surprise\":true}";                // unknown field
            case 7 -> "{" + base + ",\"prompt_ids\":[0,5," + (512 + rnd.nextInt(100000)) + "],\"max_tokens\":2}"; // outside the vocabulary
            case 8 -> "{" + base + ",\"prompt\":\"\"}";                                    // empty prompt
            case 9 -> "{\"request_id\":\"" + marker + "\",\"conversation_id\":\"" + "c".repeat(100_000) + "\",\"prompt\":\"hi\"}"; // extreme id
            case 10 -> "{" + base + ",\"prompt_ids\":[1.5,2]}";                            // not token ids
            case 11 -> "{" + base + ",\"prompt\":\"hi\",\"kv\":{\"window\":-1}}";          // bad kv option
            case 12 -> "[\"" + marker + "\",1,2]";                                          // not an object
            default -> "{" + base + ",\"prompt\":\"hi\",\"top_p\":1e308,\"top_k\":-1}";    // nonsense sampling
        };
    }

    @Test
    void everyBadRecordGetsOneErrorAndEveryValidRequestIsServed() throws Exception {
        Random rnd = new Random(7);
        List<String> lines = new ArrayList<>();
        List<String> markers = new ArrayList<>();
        List<String> valid = new ArrayList<>();
        int v = 0;
        for (int i = 0; i < BAD; i++) {
            String marker = "bad-" + i + "-end";
            int kind = i % 14;
            if (kind == 2 && i > 14 * 20) kind = 3; // twenty records over the size limit are enough
            lines.add(bad(kind, marker, rnd));
            markers.add(marker);
            if (i % 250 == 0) { // a valid request, and every other time a duplicate of it in the same conversation
                String id = "ok-" + v, conv = "good-" + (v % 7);
                String req = "{\"conversation_id\":\"" + conv + "\",\"request_id\":\"" + id + "\",\"prompt_ids\":[0,"
                        + (10 + v) + "," + (20 + v) + "],\"max_tokens\":3,\"temperature\":0,\"kv\":{\"policy\":\"dense\"}}";
                lines.add(req);
                valid.add(id);
                if (v % 2 == 0) { // the same request again: a retry, refused as a duplicate in its conversation
                    lines.add(req);
                    markers.add("dup-" + v + "-end");
                    dupIds.put("dup-" + v + "-end", id);
                }
                v++;
            }
        }
        List<OutputRecord> out = PipelineITCase.run(lines, new DecodeSettings(Conversations.MODEL.toString(), "cpu",
                KvConfig.defaults(KvPolicy.DSPP), new Limits(1 << 20, 4096, 512, 8, 100_000, 256), 32), 2);

        Map<String, Integer> errorsPerMarker = new HashMap<>();
        int errors = 0;
        for (OutputRecord r : out) {
            if (!r.isError()) continue;
            errors++;
            String key = r.input.contains("-end\"") ? r.input.replaceAll("(?s).*?\"?(bad-\\d+-end).*", "$1") : null;
            if ("duplicate_request_id".equals(r.errorCode)) key = "dup:" + r.requestId;
            errorsPerMarker.merge(key, 1, Integer::sum);
        }
        int duplicates = dupIds.size();
        assertEquals(BAD + duplicates, errors, "one error record per bad record (incl. " + duplicates + " duplicates)");
        for (String m : markers) {
            String key = m.startsWith("dup-") ? "dup:" + dupIds.get(m) : m;
            assertEquals(1, errorsPerMarker.getOrDefault(key, 0), "error records for " + m);
        }
        for (String id : valid) {
            List<OutputRecord> finals = out.stream().filter(r -> id.equals(r.requestId) && OutputRecord.FINAL.equals(r.kind)).toList();
            assertEquals(1, finals.size(), "one final for " + id);
            assertTrue(!"error".equals(finals.get(0).finishReason) && finals.get(0).completionTokens > 0, id + " served");
        }
    }

    private final Map<String, String> dupIds = new HashMap<>();
}
