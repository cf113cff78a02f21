package io.dsflow.job.cli;

import io.dsflow.cli.UsageException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Issue 22, item 10: demo, soak and overhead find the bundled model from the installation, not from the working
 * directory: under DSFLOW_HOME (bin/dsflow sets it), or two folders above the jar (job/target/dsflow.jar); where it is
 * nowhere, one line naming the places looked in.
 */
class BundledModelTest {
    @TempDir
    Path elsewhere;

    private static final Path PROBE = Path.of("..", "models", "probe-retrieval").toAbsolutePath().normalize();

    @Test
    void foundFromTheJarsFolderWhateverTheWorkingDirectory() {
        Path jar = Path.of("target", "dsflow.jar").toAbsolutePath(); // job/target/dsflow.jar (need not exist)
        assertEquals(PROBE, BundledModel.locate("demo", null, jar, elsewhere));
        assertEquals(PROBE, BundledModel.locate("demo", null, Path.of("target", "classes").toAbsolutePath(), elsewhere));
    }

    @Test
    void foundUnderDsflowHome() {
        assertEquals(PROBE, BundledModel.locate("soak", Path.of("..").toAbsolutePath().toString(), null, elsewhere));
    }

    @Test
    void nowhereIsOneLineNamingWhereItLooked() throws Exception {
        Path jar = Files.createDirectories(elsewhere.resolve("a").resolve("b")).resolve("dsflow.jar");
        UsageException e = assertThrows(UsageException.class,
                () -> BundledModel.locate("overhead", elsewhere.resolve("home").toString(), jar, elsewhere));
        assertTrue(e.getMessage().startsWith("overhead: the bundled model is not at "), e.getMessage());
        assertTrue(e.getMessage().contains(elsewhere.resolve("home").resolve("models/probe-retrieval").toString()));
        assertTrue(e.getMessage().contains("give --model DIR"));
        assertEquals(1, e.getMessage().lines().count());
    }
}
