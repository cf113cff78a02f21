package io.dsflow.cli;

import org.junit.jupiter.api.Test;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Issue 22, item 10, on the lean engine jar's entry point: {@code --help} on each engine command prints that command's
 * usage line on stdout and exits 0, before any option is checked (required ones missing, unknown ones present).
 */
class EngineHelpTest {
    @Test
    void everyEngineCommandTakesHelp() {
        for (String command : new String[]{"generate", "calibrate", "eval", "bench", "loadgen"}) {
            ByteArrayOutputStream out = new ByteArrayOutputStream(), err = new ByteArrayOutputStream();
            int exit = EngineMain.run(new String[]{command, "--no-such-option", "--help"},
                    new PrintStream(out, true, StandardCharsets.UTF_8), new PrintStream(err, true, StandardCharsets.UTF_8));
            String printed = out.toString(StandardCharsets.UTF_8);
            assertEquals(0, exit, command + ": " + err);
            assertTrue(printed.startsWith("usage: dsflow " + command + " --"), printed);
            assertEquals(1, printed.strip().lines().count(), printed);
            assertEquals("", err.toString(StandardCharsets.UTF_8));
        }
    }
}
