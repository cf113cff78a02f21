package io.dsflow.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import org.junit.jupiter.api.Test;

import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;

/** bench's ratio lines: each policy over dense's and ds's tokens/s at the same shape, in the same run only. */
class BenchRatiosTest {
    private static void row(ArrayNode decode, String policy, int batch, int context, double tokensPerSecond) {
        decode.addObject().put("policy", policy).put("batch", batch).put("context", context)
                .put("tokens_per_s", tokensPerSecond);
    }

    @Test
    void everyPolicyOverTheBaselinesThatRanAtItsShape() {
        ArrayNode decode = new ObjectMapper().createArrayNode();
        row(decode, "dense", 64, 4096, 3440.5);
        row(decode, "dense", 16, 16384, 777.9);
        row(decode, "ds", 64, 4096, 2788.5);
        row(decode, "dspp", 64, 4096, 5621.8);
        row(decode, "dspp", 16, 16384, 1171.9);
        row(decode, "dspp", 1, 4096, 152.9);   // no baseline at this shape: no line
        assertEquals(List.of("  64 x 4096: ds 0.81x dense, dspp 1.63x dense, dspp 2.02x ds",
                "  16 x 16384: dspp 1.51x dense"), BenchCommand.ratioLines(decode));
    }

    @Test
    void aBaselineAloneHasNoRatios() {
        ArrayNode decode = new ObjectMapper().createArrayNode();
        row(decode, "dense", 8, 4096, 947.1);
        assertEquals(List.of(), BenchCommand.ratioLines(decode));
    }
}
