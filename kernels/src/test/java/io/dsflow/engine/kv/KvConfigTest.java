package io.dsflow.engine.kv;

import io.dsflow.engine.InvalidRequestException;
import org.junit.jupiter.api.Test;

import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class KvConfigTest {
    /**
     * dspp's default (issue 25): one selection a kv head from the maximum of its heads' label scores, over 4-bit labels
     * on per-head channels; ds keeps Double Sparsity's per-head selections over 16-bit labels.
     */
    @Test
    void dsppSelectsOnceAKvHeadOverFourBitLabelsAndDsPerHeadOverSixteen() {
        KvConfig dspp = KvConfig.defaults(KvPolicy.DSPP), ds = KvConfig.defaults(KvPolicy.DS);
        assertEquals(KvConfig.GqaSelection.MAX, dspp.gqaSelection());
        assertEquals(4, dspp.labelBits());
        assertEquals(KvConfig.GqaSelection.PER_HEAD, ds.gqaSelection());
        assertEquals(16, ds.labelBits());
    }

    /**
     * A label row's bytes at each width: its values (fp16; int8; int4 two a byte, a row of odd r padded to a whole
     * byte, as the CUDA cache lays them out) and, for 8- and 4-bit, the row's fp16 scale.
     */
    @Test
    void labelRowBytesCountValuesPackedAndTheScale() {
        int[][] want = {{16, 13, 26, 26}, {16, 16, 32, 32}, {8, 13, 13, 15}, {8, 16, 16, 18}, {4, 13, 7, 9},
                {4, 16, 8, 10}, {4, 1, 1, 3}};   // bits, r, value bytes, row bytes
        for (int[] w : want) {
            KvConfig kv = KvConfig.defaults(KvPolicy.DSPP).with(Map.of("label-bits", Integer.toString(w[0])));
            assertEquals(w[2], kv.labelValueBytes(w[1]), w[0] + "-bit values of r = " + w[1]);
            assertEquals(w[3], kv.labelRowBytes(w[1]), w[0] + "-bit row of r = " + w[1]);
        }
    }

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
    void rowCacheIsAHostPlacementOptionForSharedSelections() {
        KvConfig host = KvConfig.defaults(KvPolicy.DSPP).with(Map.of("placement", "host"));
        assertEquals(0, host.rowCache());
        KvConfig cached = host.with(Map.of("row_cache", "1.5"));
        assertEquals(1.5, cached.rowCache());
        assertTrue(cached.toString().contains("placement=host row-cache=1.5"), cached.toString());
        // places for F times a step's rows, rounded up as the kernel rounds F in 256ths
        assertEquals(2970, RowCache.places(1.5, 1980));
        assertEquals(1980, RowCache.places(1, 1980));
        assertEquals(7, RowCache.places(1.1, 6));
        InvalidRequestException device = assertThrows(InvalidRequestException.class,
                () -> KvConfig.defaults(KvPolicy.DSPP).with(Map.of("row-cache", "2")));
        assertTrue(device.getMessage().contains("placement=host"), device.getMessage());
        InvalidRequestException perHead = assertThrows(InvalidRequestException.class,
                () -> host.with(Map.of("row-cache", "2", "gqa", "per_head")));
        assertTrue(perHead.getMessage().contains("shared selection"), perHead.getMessage());
        for (String bad : new String[]{"0.5", "65", "NaN", "lots"}) {
            assertThrows(InvalidRequestException.class, () -> host.with(Map.of("row-cache", bad)), bad);
        }
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

    /**
     * Issue 25: dspp never starves a layer at short contexts. Up to dense-until (1024) tokens every sparse layer's
     * budget covers its candidates (a dense step); beyond, the total budget is max(T rho, T0^2 / T): 512 at 2048,
     * rho's 256 from 4096 on; no context leaves fewer than 188 selected tokens a layer on average (or all candidates).
     * ds keeps the published uniform budget.
     */
    @Test
    void dsppAttendsShortContextsDenselyAndNeverStarvesALayer() {
        KvConfig dspp = KvConfig.defaults(KvPolicy.DSPP);
        assertEquals(1024, dspp.denseUntil());
        assertTrue(dspp.toString().contains("dense_until=1024"), dspp.toString());
        for (int t : new int[]{69, 500, 1024}) {
            int[] k = dspp.layerBudgets(6, t);
            for (int l = 2; l < 6; l++) assertTrue(k[l] >= dspp.candidates(t), t + " tokens, layer " + l + ": " + k[l]);
        }
        assertEquals(512 - 68, dspp.meanBudget(2048));
        assertEquals((1024 * 1024 + 2999) / 3000 - 68, dspp.meanBudget(3000));
        assertEquals(256 - 68, dspp.meanBudget(4096));
        assertEquals(2048 - 68, dspp.meanBudget(32768));
        for (int t = 69; t <= 100_000; t += 7) {
            assertTrue(dspp.meanBudget(t) >= Math.min(dspp.candidates(t), 188), t + " tokens: " + dspp.meanBudget(t));
        }
        KvConfig off = dspp.with(Map.of("dense_until", "0"));
        assertEquals(0, off.meanBudget(1024), "without the rule 1024 tokens leave nothing to select");
        KvConfig ds = KvConfig.defaults(KvPolicy.DS);
        assertEquals(0, ds.denseUntil());
        assertEquals(64, ds.meanBudget(1024));
        InvalidRequestException e = assertThrows(InvalidRequestException.class, () -> dspp.with(Map.of("dense-until", "-1")));
        assertTrue(e.getMessage().startsWith("dense-until must be in"), e.getMessage());
    }
}
