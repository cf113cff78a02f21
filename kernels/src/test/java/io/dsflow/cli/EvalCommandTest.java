package io.dsflow.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.dsflow.engine.TestModels;
import io.dsflow.engine.probe.Eval;
import org.junit.jupiter.api.Test;

import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

class EvalCommandTest {
    /**
     * Issue 25: where a sparse policy loses, the table says which layer: mass recall and idx@k per layer that attended
     * sparsely (layers 2-5 of the probe model), "-" for dense; the JSON has both per layer, null for the dense layers.
     * Issue 26: the same for the share of a head's selection that its previous decode step selected too (what a device
     * cache of the last selection would hit), measured on the probe model's trained attention, and the hit rate of a
     * device cache of selected rows at 1, 2 and 4 times a step's rows (RowCache's ring: first in, first out, a row asked
     * again passed over).
     */
    @Test
    void theTableAndTheJsonGiveMassRecallIndexRecallAndReselectionPerSparseLayer() throws Exception {
        List<Eval.Policy> policies = List.of(EvalCommand.policy("dense", Map.of()),
                EvalCommand.policy("dspp:dense-until=0", Map.of()));
        List<Eval.Cell> cells = Eval.run(TestModels.engine("probe-retrieval"), List.of("passkey"), List.of(600),
                policies, 1, 3, 0);
        String[] rows = EvalCommand.table(cells).split("\n");
        assertEquals(3, rows.length, String.join("\n", rows));
        assertTrue(rows[0].endsWith("mass by layer  |  idx@k by layer  |  reused by layer"), rows[0]);
        assertTrue(rows[1].endsWith("-  |  -  |  -"), "dense attends no layer sparsely: " + rows[1]);
        String layers = "L2 [0-9.]+ L3 [0-9.]+ L4 [0-9.]+ L5 [0-9.]+";
        assertTrue(rows[2].matches(".*  " + layers + "  \\|  " + layers + "  \\|  " + layers), rows[2]);
        JsonNode sparse = new ObjectMapper().readTree(EvalCommand.json(cells)).get(1);
        JsonNode index = sparse.get("index_recall_per_layer");
        assertEquals(6, index.size());
        assertTrue(index.get(0).isNull() && index.get(1).isNull(), "layers 0 and 1 are dense: " + index);
        for (int l = 2; l < 6; l++) {
            double x = index.get(l).asDouble(), m = sparse.get("mass_recall_per_layer").get(l).asDouble();
            double r = sparse.get("reselected_per_layer").get(l).asDouble();
            assertTrue(x > 0 && x <= 1 && m > 0 && m <= 1, "layer " + l + ": idx@k " + x + ", mass " + m);
            assertTrue(r > 0 && r <= 1, "layer " + l + ": reselected " + r);
        }
        // the modelled device row cache: a larger cache never hits less, and even the smallest holds some rows
        JsonNode hits = sparse.get("row_cache_hit_rate");
        double h1 = hits.get("1x").asDouble(), h2 = hits.get("2x").asDouble(), h4 = hits.get("4x").asDouble();
        assertTrue(0 < h1 && h1 <= h2 && h2 <= h4 && h4 <= 1, "hit rates 1x/2x/4x " + hits);
        assertTrue(rows[2].contains(String.format(java.util.Locale.ROOT, " %.2f/%.2f/%.2f ", h1, h2, h4)), rows[2]);
        assertTrue(sparse.get("row_cache_hit_rate").size() == 3 && cells.get(0).rowCacheAsked[0] == 0,
                "dense asks no row cache");
    }
}
