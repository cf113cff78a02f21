package io.dsflow.engine.kv;

import io.dsflow.engine.InvalidRequestException;
import org.junit.jupiter.api.Test;

import java.util.Map;

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
}
