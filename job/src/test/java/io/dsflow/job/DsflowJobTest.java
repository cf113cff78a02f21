package io.dsflow.job;

import io.dsflow.engine.DsflowException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.NoSuchFileException;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The Flink cluster's entry point hands a failure to Flink as an exception with its cause, not as an exit code. */
class DsflowJobTest {
    @TempDir
    Path tmp;

    @Test
    void aConfigThatCannotBeReadIsThrownWithItsCause() {
        Path missing = tmp.resolve("missing.properties");
        DsflowException e = assertThrows(DsflowException.class,
                () -> DsflowJob.main(new String[]{"--config", missing.toString()}));
        assertTrue(e.getMessage().startsWith("cannot read config " + missing), e.getMessage());
        assertInstanceOf(NoSuchFileException.class, e.getCause());
    }
}
