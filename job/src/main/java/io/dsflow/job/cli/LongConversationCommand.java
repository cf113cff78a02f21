package io.dsflow.job.cli;

import io.dsflow.cli.Args;
import io.dsflow.cli.UsageException;
import io.dsflow.job.LongConversation;

import java.io.PrintStream;
import java.util.Set;

/**
 * {@code long-conversation [--model DIR] [--backend cpu|cuda|auto] [--turns 200] [--turn-tokens 1250]
 * [--capacity 4096] [--policy dspp] [--every 20] [--seed S]}: one conversation growing turn after turn through the
 * whole product (embedded Kafka and job) under a cache capacity, with the text so far, the newest checkpoint's size and
 * the live heap every {@code every} turns, and a pass key planted in the turn before the last and asked in the last;
 * exit 0 when every turn was served without an error record, the key was answered and the checkpoint and live heap
 * stayed flat once the cache was full.
 */
final class LongConversationCommand {
    static final String USAGE = "long-conversation [--model DIR] [--backend cpu|cuda|auto] [--turns 200]"
            + " [--turn-tokens 1250] [--capacity 4096] [--policy dspp] [--every 20] [--seed S]";

    private LongConversationCommand() {
    }

    static int run(String[] argv, PrintStream out) throws Exception {
        Args a = Args.parse("long-conversation", argv, 1, Set.of("model", "backend", "turns", "turn-tokens",
                "capacity", "policy", "every", "seed"), Set.of());
        int turns = a.getInt("turns", 200), turnTokens = a.getInt("turn-tokens", 1250);
        int capacity = a.getInt("capacity", 4096), every = a.getInt("every", 20);
        if (turns < 2) throw new UsageException("long-conversation: --turns must be at least 2 (the pass key and its"
                + " question take the last two)");
        if (turnTokens < 64) throw new UsageException("long-conversation: --turn-tokens must be at least 64");
        if (capacity < 1) throw new UsageException("long-conversation: --capacity must be positive");
        if (every < 1) throw new UsageException("long-conversation: --every must be positive");
        String policy = a.get("policy", "dspp");
        if (!Set.of("dense", "ds", "dspp").contains(policy)) {
            throw new UsageException("long-conversation: --policy must be dense, ds or dspp, not " + policy);
        }
        String model = BundledModel.modelDir(a, "long-conversation").toString();
        LongConversation.Report r = LongConversation.run(model, a.get("backend", "auto"), policy, capacity, turns,
                turnTokens, every, a.getLong("seed", 1), out);
        out.print(r.summary());
        return r.served() == r.turns() && r.errors() == 0 && r.answered() && r.flat() ? 0 : 1;
    }
}
