package io.dsflow.engine.kv;

import io.dsflow.engine.InvalidRequestException;
import org.junit.jupiter.api.Test;

import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class KvConfigTest {
    @Test
    void placementIsAnOptionOfTheSparsePolicies() {
        KvConfig host = KvConfig.defaults(KvPolicy.DSPP).with(Map.of("placement", "host", "gqa", "mean"));
        assertEquals(KvConfig.Placement.HOST, host.placement());
        assertEquals(KvConfig.GqaSelection.MEAN, host.gqaSelection());
        assertTrue(host.toString().endsWith("placement=host"), host.toString());
        assertEquals(KvConfig.Placement.DEVICE, KvConfig.defaults(KvPolicy.DS).placement());
        // changing the policy resets to its defaults, placement included
        assertEquals(KvConfig.Placement.DEVICE, host.with(Map.of("policy", "ds")).placement());
        InvalidRequestException dense = assertThrows(InvalidRequestException.class,
                () -> KvConfig.DENSE.with(Map.of("placement", "host")));
        assertTrue(dense.getMessage().contains("sparse policies"), dense.getMessage());
        InvalidRequestException bad = assertThrows(InvalidRequestException.class,
                () -> KvConfig.defaults(KvPolicy.DSPP).with(Map.of("placement", "disk")));
        assertEquals("kv option placement: unknown value 'disk'", bad.getMessage());
    }

    @Test
    void lookaheadIsADsppOptionThatSelectsAheadFromTheThirdLayerToTheLastButOne() {
        KvConfig on = KvConfig.defaults(KvPolicy.DSPP).with(Map.of("lookahead", "on", "placement", "host"));
        assertTrue(on.lookahead() && on.toString().endsWith("placement=host lookahead"), on.toString());
        boolean[] ahead = new boolean[8];
        for (int l = 0; l < 8; l++) ahead[l] = on.selectsAhead(l, 8);
        assertArrayEquals(new boolean[]{false, false, true, true, true, true, true, false}, ahead);
        KvConfig denser = on.with(Map.of("dense-layers", "4"));
        assertTrue(!denser.selectsAhead(3, 8) && denser.selectsAhead(4, 8), "dense layers select nothing");
        assertTrue(!KvConfig.defaults(KvPolicy.DSPP).selectsAhead(4, 8), "off by default");
        for (Map<String, String> bad : java.util.List.of(Map.of("policy", "ds", "lookahead", "on"),
                Map.of("lookahead", "on", "window", "0"))) {
            InvalidRequestException e = assertThrows(InvalidRequestException.class, () -> KvConfig.defaults(KvPolicy.DSPP).with(bad));
            assertTrue(e.getMessage().startsWith("lookahead is a dspp option"), e.getMessage());
        }
        InvalidRequestException e = assertThrows(InvalidRequestException.class,
                () -> KvConfig.defaults(KvPolicy.DSPP).with(Map.of("lookahead", "maybe")));
        assertEquals("kv option lookahead must be on or off, got 'maybe'", e.getMessage());
    }
}
