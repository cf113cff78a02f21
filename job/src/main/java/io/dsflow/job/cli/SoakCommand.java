package io.dsflow.job.cli;

import io.dsflow.cli.Args;
import io.dsflow.cli.UsageException;
import io.dsflow.job.Soak;

import java.io.PrintStream;
import java.time.Duration;
import java.util.Set;

/**
 * {@code soak [--model DIR] [--conversations 200] [--minutes 10] [--max-tokens 16] [--seed S]}: the whole product under
 * load in one process; exit 0 when nothing was lost and the heap the run kept is within the KV caches' budget.
 */
final class SoakCommand {
    static final String USAGE = "soak [--model DIR] [--backend cpu|cuda|auto] [--conversations 200] [--minutes 10]"
            + " [--max-tokens 16] [--seed S]";

    private SoakCommand() {
    }

    static int run(String[] argv, PrintStream out) throws Exception {
        Args a = Args.parse("soak", argv, 1, Set.of("model", "backend", "conversations", "minutes", "max-tokens", "seed"), Set.of());
        int conversations = a.getInt("conversations", 200);
        double minutes = a.getDouble("minutes", 10);
        if (conversations < 1 || minutes <= 0) throw new UsageException("soak: --conversations and --minutes must be positive");
        Soak.Report r = Soak.run(a.get("model", "models/probe-retrieval"), a.get("backend", "auto"), conversations,
                Duration.ofMillis((long) (minutes * 60_000)), a.getInt("max-tokens", 16), a.getLong("seed", 1), out);
        out.println(r.summary());
        return r.lost() == 0 && r.outOfOrder() == 0 && r.errors() == 0 && r.heap().withinAllowance() ? 0 : 1;
    }
}
