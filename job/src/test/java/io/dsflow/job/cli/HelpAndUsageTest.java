package io.dsflow.job.cli;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Issue 22, item 10: {@code --help} on every subcommand prints its usage on stdout and exits 0, whatever else is on
 * the line and before anything runs (no model is loaded, no job started); bad arguments of {@code run} found only
 * once the job ran (an unknown backend, an output file that cannot be written) are one line and exit 2 before
 * anything starts.
 */
class HelpAndUsageTest {
    @TempDir
    Path tmp;

    private static final String TINY = CliHarness.model("llama-tiny").toString();

    @Test
    void everySubcommandTakesHelp() {
        for (String command : new String[]{"demo", "run", "soak", "long-conversation",
                "overhead", "generate", "calibrate", "eval", "bench", "loadgen"}) {
            for (String[] args : new String[][]{{command, "--help"}, {command, "-h"},
                    {command, "--model", "/nowhere", "--help"}}) {
                CliHarness.Result r = CliHarness.run(args);
                assertEquals(0, r.exit(), Arrays.toString(args) + ": " + r.err());
                assertTrue(r.out().startsWith("usage: dsflow " + command + " "), Arrays.toString(args) + ": " + r.out());
                assertEquals("", r.err(), Arrays.toString(args));
            }
        }
    }

    @Test
    void helpAsAnOptionsValueIsThatValue() {
        // generate's prompt may be the text "--help": it is the prompt, not a request for help
        CliHarness.Result r = CliHarness.run("generate", "--model", TINY, "--prompt", "--help", "--max-new-tokens", "1");
        assertEquals(0, r.exit(), r.err());
        assertFalse(r.out().startsWith("usage:"), r.out());
    }

    private static void oneLineExit2(String expected, String... args) {
        CliHarness.Result r = CliHarness.run(args);
        assertEquals(2, r.exit(), Arrays.toString(args) + ": " + r.err());
        assertEquals(1, r.err().strip().lines().count(), "one line: " + r.err());
        assertTrue(r.err().startsWith("dsflow: run: ") && r.err().contains(expected), r.err());
        assertEquals("", r.out());
    }

    @Test
    void runRefusesAnUnknownBackendAndAnUnwritableOutputBeforeStarting() throws Exception {
        Path in = tmp.resolve("requests.jsonl");
        Files.writeString(in, "{\"conversation_id\":\"c\",\"request_id\":\"r\",\"prompt_ids\":[1,2],\"max_tokens\":1}\n");
        Path out = tmp.resolve("out.jsonl");
        oneLineExit2("--backend must be cpu, cuda, auto or cpu:device-memory=SIZE, got 'tpu'", "run", "--replay-file",
                in.toString(), "--output-file", out.toString(), "--model", TINY, "--backend", "tpu");
        oneLineExit2("--backend cpu:device-memory must be a size such as 64MiB, got 'lots'", "run", "--replay-file",
                in.toString(), "--output-file", out.toString(), "--model", TINY, "--backend", "cpu:device-memory=lots");
        oneLineExit2("its folder does not exist", "run", "--replay-file", in.toString(), "--output-file",
                tmp.resolve("no-such-folder").resolve("out.jsonl").toString(), "--model", TINY);
        oneLineExit2("is a directory", "run", "--replay-file", in.toString(), "--output-file", tmp.toString(),
                "--model", TINY);
        assertFalse(Files.exists(out), "nothing was written");
    }

    @Test
    void aBackendNamedInTheConfigIsCheckedToo() throws Exception {
        Path config = tmp.resolve("bad.properties");
        Files.writeString(config, "backend=tpu\n");
        CliHarness.Result r = CliHarness.run("run", "--config", config.toString());
        assertEquals(1, r.exit(), r.err());
        assertEquals("dsflow: error: config backend must be cpu, cuda, auto or cpu:device-memory=SIZE, got 'tpu'",
                r.err().strip());
    }
}
