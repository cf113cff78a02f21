package io.dsflow.cli;

import com.fasterxml.jackson.databind.JsonNode;
import io.dsflow.engine.probe.Eval;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * {@code bench --quality PROBE_DIR}: each policy's decode tokens/s beside what it costs in quality, in one table, so
 * that no configuration is shown fast without its accuracy. A row a policy: tokens/s at each (batch, context) of the
 * bench and its ratio to dense's at the same shape (where dense ran), then each (task, length) of the probe's eval:
 * correct/samples and mass recall (where the backend measures it; the GPU's caches do not, shown "-").
 */
final class SpeedAndQuality {
    private SpeedAndQuality() {
    }

    /**
     * @param decodeRows the bench's decode rows (policy, batch, context, tokens_per_s)
     * @param cells      the probe's eval cells of the same policies (by name)
     * @param policies   the policies in the bench's order
     */
    static String table(JsonNode decodeRows, List<Eval.Cell> cells, List<String> policies) {
        Map<String, Double> speed = new LinkedHashMap<>();
        List<String> shapes = new ArrayList<>();
        for (JsonNode r : decodeRows) {
            String shape = r.get("batch").asInt() + "x" + r.get("context").asInt();
            if (!shapes.contains(shape)) shapes.add(shape);
            speed.put(r.get("policy").asText() + "@" + shape, r.get("tokens_per_s").asDouble());
        }
        List<String> tasks = new ArrayList<>();
        Map<String, Eval.Cell> quality = new LinkedHashMap<>();
        for (Eval.Cell c : cells) {
            String task = c.task + "@" + c.length;
            if (!tasks.contains(task)) tasks.add(task);
            quality.put(c.policy + "@" + task, c);
        }
        StringBuilder b = new StringBuilder(String.format(Locale.ROOT, "%-32s", "policy"));
        for (String s : shapes) b.append(String.format(Locale.ROOT, " %18s", s + " tok/s"));
        for (String t : tasks) b.append(String.format(Locale.ROOT, " %18s", t.replace('@', ' ')));
        b.append('\n');
        for (String p : policies) {
            b.append(String.format(Locale.ROOT, "%-32s", p));
            for (String s : shapes) {
                Double v = speed.get(p + "@" + s), dense = speed.get("dense@" + s);
                String cell = v == null ? "-" : dense == null || p.equals("dense")
                        ? String.format(Locale.ROOT, "%.1f", v)
                        : String.format(Locale.ROOT, "%.1f (%.2fx)", v, v / dense);
                b.append(String.format(Locale.ROOT, " %18s", cell));
            }
            for (String t : tasks) {
                Eval.Cell c = quality.get(p + "@" + t);
                String cell = c == null ? "-" : Double.isNaN(c.massRecall())
                        ? String.format(Locale.ROOT, "%d/%d, mass -", c.correct, c.samples)
                        : String.format(Locale.ROOT, "%d/%d, mass %.2f", c.correct, c.samples, c.massRecall());
                b.append(String.format(Locale.ROOT, " %18s", cell));
            }
            b.append('\n');
        }
        return b.toString();
    }
}
