package io.dsflow.job.cli;

import io.dsflow.cli.Args;
import io.dsflow.cli.UsageException;
import io.dsflow.job.Soak;
import org.apache.flink.configuration.MemorySize;

import java.io.PrintStream;
import java.time.Duration;
import java.util.Set;

/**
 * {@code soak [--model DIR] [--conversations 200] [--turns 16] [--minutes 10] [--max-tokens 16] [--seed S]
 * [--cache-budget 256m]}: the whole product under load in one process (conversations of {@code turns} turns on
 * average, 0 for endless ones; the KV caches' budget, to compare a load that outgrows it with one that fits); exit 0 when nothing was
 * lost, the heap the run kept is within the KV caches' budget and the last full interval served at least 80% of the
 * best.
 */
final class SoakCommand {
    static final String USAGE = "soak [--model DIR] [--backend cpu|cuda|auto] [--conversations 200] [--turns 16]"
            + " [--minutes 10] [--max-tokens 16] [--seed S] [--cache-budget 256m]";

    private SoakCommand() {
    }

    static int run(String[] argv, PrintStream out) throws Exception {
        Args a = Args.parse("soak", argv, 1, Set.of("model", "backend", "conversations", "turns", "minutes",
                "max-tokens", "seed", "cache-budget"), Set.of());
        int conversations = a.getInt("conversations", 200);
        double minutes = a.getDouble("minutes", 10);
        int turns = a.getInt("turns", 16);
        if (conversations < 1 || minutes <= 0) throw new UsageException("soak: --conversations and --minutes must be positive");
        if (turns < 0) throw new UsageException("soak: --turns must be 0 (endless conversations) or more");
        String budget = a.get("cache-budget", Soak.CACHE_BUDGET);
        try {
            if (MemorySize.parse(budget).getBytes() < 1) throw new IllegalArgumentException("empty");
        } catch (IllegalArgumentException e) {
            throw new UsageException("soak: --cache-budget must be a size such as 256m or 2g, got " + budget);
        }
        String model = BundledModel.modelDir(a, "soak").toString();
        Duration length = Duration.ofMillis((long) (minutes * 60_000));
        Soak.Report r = Soak.run(model, a.get("backend", "auto"), conversations, turns, length,
                a.getInt("max-tokens", 16), a.getLong("seed", 1), budget, out);
        out.println(r.summary());
        return r.lost() == 0 && r.outOfOrder() == 0 && r.errors() == 0 && r.heap().withinAllowance()
                && r.throughputHeld() ? 0 : 1;
    }
}
