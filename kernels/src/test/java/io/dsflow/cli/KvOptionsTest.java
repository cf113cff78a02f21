package io.dsflow.cli;

import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.kv.KvPolicy;
import org.junit.jupiter.api.Test;

import java.util.Map;
import java.util.Set;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The engine commands' KV options reach KvConfig under their own names, row-cache among them. */
class KvOptionsTest {
    @Test
    void theCommandLinesKvOptionsBecomeTheConfiguration() {
        Args a = Args.parse("eval", new String[]{"--placement", "host", "--row-cache", "1.5", "--window", "32"}, 0,
                KvOptions.NAMES, Set.of());
        Map<String, String> overrides = KvOptions.overrides(a);
        assertEquals(Map.of("placement", "host", "row-cache", "1.5", "window", "32"), overrides);
        KvConfig kv = KvOptions.config(KvPolicy.DSPP, overrides);
        assertEquals(1.5, kv.rowCache());
        assertEquals(KvConfig.Placement.HOST, kv.placement());
        assertEquals(32, kv.window());
        assertTrue(KvOptions.USAGE.contains("[--row-cache F]"), KvOptions.USAGE);
    }
}
