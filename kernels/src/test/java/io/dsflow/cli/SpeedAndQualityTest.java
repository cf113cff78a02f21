package io.dsflow.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import io.dsflow.engine.TestModels;
import io.dsflow.engine.probe.Eval;
import org.junit.jupiter.api.Test;

import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

class SpeedAndQualityTest {
    /** Issue 25: a policy's tokens/s (and its ratio to dense's at the same shape) beside its accuracy, one row each. */
    @Test
    void eachPolicysSpeedStandsBesideItsAccuracy() {
        ArrayNode rows = new ObjectMapper().createArrayNode();
        Object[][] measured = {{"dense", 1, 4096, 160.0}, {"dspp", 1, 4096, 176.0}, {"dense", 64, 4096, 2400.0},
                {"dspp", 64, 4096, 4800.0}};
        for (Object[] m : measured) {
            rows.addObject().put("policy", (String) m[0]).put("batch", (int) m[1]).put("context", (int) m[2])
                    .put("tokens_per_s", (double) m[3]);
        }
        List<Eval.Policy> policies = List.of(EvalCommand.policy("dense", Map.of()), EvalCommand.policy("dspp", Map.of()));
        List<Eval.Cell> cells = Eval.run(TestModels.engine("probe-retrieval"), List.of("passkey"), List.of(600),
                policies, 1, 3, 0);
        String[] lines = SpeedAndQuality.table(rows, cells, List.of("dense", "dspp")).split("\n");
        assertEquals(3, lines.length, String.join("\n", lines));
        assertTrue(lines[0].matches("policy +1x4096 tok/s +64x4096 tok/s +passkey 600"), lines[0]);
        assertTrue(lines[1].matches("dense +160\\.0 +2400\\.0 +[01]/1, mass 1\\.00"), lines[1]);
        assertTrue(lines[2].matches("dspp +176\\.0 \\(1\\.10x\\) +4800\\.0 \\(2\\.00x\\) +[01]/1, mass [01]\\.[0-9]{2}"),
                lines[2]);
    }
}
