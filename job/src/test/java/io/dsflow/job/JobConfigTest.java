package io.dsflow.job;

import io.dsflow.engine.BatchScheduler;
import io.dsflow.engine.DsflowException;
import io.dsflow.operators.DecodeSettings;
import org.junit.jupiter.api.Test;

import java.nio.file.Path;
import java.util.Properties;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

/** The job config's scheduler keys (issue 23): prefill.chunk sized for the backend unless given. */
class JobConfigTest {

    private static Properties with(String key, String value) {
        Properties p = new Properties();
        p.setProperty(key, value);
        return p;
    }

    @Test
    void thePrefillChunkIsSizedForTheBackendUnlessGiven() {
        DecodeSettings auto = JobConfig.from(new Properties()).decode();
        assertEquals(DecodeSettings.AUTO, auto.prefillChunk());
        assertEquals(BatchScheduler.GPU_PREFILL_TOKENS, auto.prefillChunkFor(true));
        assertEquals(BatchScheduler.CPU_PREFILL_TOKENS, auto.prefillChunkFor(false));
        DecodeSettings given = JobConfig.from(with("prefill.chunk", "512")).decode();
        assertEquals(512, given.prefillChunkFor(true));
        assertEquals(512, given.prefillChunkFor(false));
    }

    @Test
    void aBadPrefillChunkIsOneClearError() {
        for (String bad : new String[]{"0", "-3", "lots"}) {
            DsflowException e = assertThrows(DsflowException.class, () -> JobConfig.from(with("prefill.chunk", bad)));
            assertEquals(true, e.getMessage().contains("prefill.chunk"), e.getMessage());
        }
    }

    @Test
    void theShippedConfigsLeaveItToTheBackend() {
        for (String file : new String[]{"dsflow.properties", "compose.properties"}) {
            assertEquals(DecodeSettings.AUTO, JobConfig.load(Path.of("..", "config", file)).decode().prefillChunk(), file);
        }
    }
}
