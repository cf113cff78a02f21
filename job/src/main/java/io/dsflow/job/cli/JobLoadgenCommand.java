package io.dsflow.job.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import io.dsflow.cli.Args;
import io.dsflow.cli.EngineMain;
import io.dsflow.cli.LoadgenCommand;
import io.dsflow.cli.UsageException;
import io.dsflow.engine.DsflowException;
import io.dsflow.engine.load.Load;
import io.dsflow.job.JobLoad;

import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;

/**
 * {@code loadgen --through job ...}: the engine's load generator's load (the same options, prompts and seeds) through
 * the whole product, Kafka and the Flink job in one process, at-least-once or exactly-once; one report a policy and
 * delivery, each on a fresh embedded job. {@code --through engine} (the default) is the engine's {@code loadgen}.
 */
final class JobLoadgenCommand {
    static final String USAGE = "loadgen --through job --model DIR|synthetic:NAME [--backend cpu|cuda]"
            + " [--delivery at-least-once,exactly-once] [--requests 1024] [--prompt-tokens 1024|MIN-MAX]"
            + " [--output-tokens 1024|MIN-MAX] [--rate REQ/S] [--kv-policy dense,dspp] [--max-running N]"
            + " [--prefill-tokens T] [--seed S] [--json FILE]";

    private JobLoadgenCommand() {
    }

    static int run(String[] argv, PrintStream out, PrintStream progress) throws Exception {
        String through = "engine";
        List<String> rest = new ArrayList<>();
        for (int i = 0; i < argv.length; i++) {
            if (argv[i].equals("--through") && i + 1 < argv.length) through = argv[++i];
            else rest.add(argv[i]);
        }
        if (through.equals("engine")) return EngineMain.dispatch(rest.toArray(new String[0]), out);
        if (!through.equals("job")) throw new UsageException("loadgen: --through must be engine or job, got '" + through + "'");
        Args a = Args.parse("loadgen", rest.toArray(new String[0]), 1, Set.of("model", "backend", "delivery",
                "requests", "prompt-tokens", "output-tokens", "rate", "kv-policy", "max-running", "prefill-tokens",
                "seed", "json"), Set.of());
        String model = a.require("model");
        LoadgenCommand.Shape shape = LoadgenCommand.shape(a);
        int maxRunning = a.getInt("max-running", 0), prefillTokens = a.getInt("prefill-tokens", 0);
        if (maxRunning < 0 || prefillTokens < 0) {   // 0: the backend's default
            throw new UsageException("loadgen: --max-running and --prefill-tokens must be >= 1");
        }
        List<Boolean> deliveries = new ArrayList<>();
        for (String d : a.get("delivery", "at-least-once").split(",")) {
            switch (d.trim()) {
                case "at-least-once" -> deliveries.add(false);
                case "exactly-once" -> deliveries.add(true);
                default -> throw new UsageException("loadgen: --delivery must be at-least-once, exactly-once or both"
                        + " (comma-separated), got '" + d + "'");
            }
        }
        ArrayNode json = new ObjectMapper().createArrayNode();
        boolean allExact = true;
        for (String spec : a.get("kv-policy", "dense").split(",")) {
            Load load;
            try {
                load = new Load(shape.requests(), shape.prompt(), shape.output(), shape.rate(),
                        JobLoad.kvConfig(spec.trim()), a.getLong("seed", 1));
            } catch (DsflowException | IllegalArgumentException e) {
                throw new UsageException("loadgen: --kv-policy '" + spec + "': " + e.getMessage());
            }
            for (boolean exactlyOnce : deliveries) {
                JobLoad.Report r = JobLoad.run(model, a.get("backend", "auto"), load, spec.trim(), maxRunning,
                        prefillTokens, exactlyOnce, progress::println);
                r.print(out);
                var o = r.toJson();
                o.put("policy", spec.trim());
                json.add(o);
                allExact &= r.deliveredExactlyOnce();
            }
        }
        if (a.has("json")) Files.writeString(Path.of(a.get("json", null)), json.toPrettyString());
        return allExact ? 0 : 1;
    }
}
