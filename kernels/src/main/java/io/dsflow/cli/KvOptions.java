package io.dsflow.cli;

import io.dsflow.engine.Engine;
import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.kv.KvPolicy;

import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;

/**
 * The KV cache options every engine command takes (docs/algorithm.md): {@code --r --label-bits --sinks --window
 * --lambda --rho --k-floor --k-min --dense-layers --channels qk|q|k|qk-group --gqa per_head|max|mean|union --capacity
 * --placement device|host --row-cache F --lookahead on|off --lookahead-rerank F --dense-until T} and
 * {@code --channel-file FILE}. A request's {@code kv} field takes the same names.
 */
public final class KvOptions {
    static final Set<String> NAMES = Set.of("r", "label-bits", "sinks", "window", "lambda", "rho", "k-floor", "k-min",
            "dense-layers", "channels", "gqa", "capacity", "placement", "row-cache", "lookahead", "dense-until",
            "lookahead-rerank", "channel-file");
    public static final String USAGE = "[--r R] [--label-bits 16|8|4] [--sinks S] [--window W] [--lambda L]"
            + " [--rho 1/16] [--k-floor K] [--k-min K] [--dense-layers N] [--channels qk|q|k|qk-group]"
            + " [--gqa per_head|max|mean|union] [--capacity C] [--placement device|host] [--row-cache F]"
            + " [--lookahead on|off]"
            + " [--lookahead-rerank F] [--dense-until T] [--channel-file FILE]";

    private KvOptions() {
    }

    /** The options given on the command line, as kv overrides (policy excluded). */
    static Map<String, String> overrides(Args a) {
        Map<String, String> m = new LinkedHashMap<>();
        for (String n : NAMES) if (!n.equals("channel-file") && a.has(n)) m.put(n, a.get(n, null));
        return m;
    }

    /**
     * A policy as the command line spells it, "dspp" or "dspp:lambda=0.5:window=16": its name and its own options in
     * order (eval's and loadgen's --policies / --kv-policy, and loadgen --through job's kv.* properties).
     */
    public record PolicySpec(String policy, Map<String, String> options) {
        /** UsageException for an option that is not key=value. */
        public static PolicySpec parse(String spec) {
            String[] parts = spec.split(":");
            Map<String, String> options = new java.util.LinkedHashMap<>();
            for (int i = 1; i < parts.length; i++) {
                int eq = parts[i].indexOf('=');
                if (eq <= 0) {
                    throw new UsageException("policy option '" + parts[i] + "' in '" + spec + "' is not key=value");
                }
                options.put(parts[i].substring(0, eq), parts[i].substring(eq + 1));
            }
            return new PolicySpec(parts[0], options);
        }
    }

    /** A policy's configuration with the command line's overrides applied. */
    static KvConfig config(KvPolicy policy, Map<String, String> overrides) {
        return KvConfig.defaults(policy).with(overrides);
    }

    static void applyChannelFile(Args a, Engine engine) {
        if (a.has("channel-file")) engine.useChannelFile(Path.of(a.get("channel-file", null)));
    }
}
