package io.dsflow.job;

import io.dsflow.engine.BatchScheduler;
import io.dsflow.engine.DsflowException;
import io.dsflow.operators.DecodeSettings;
import io.dsflow.operators.Limits;
import org.junit.jupiter.api.Test;

import java.nio.file.Path;
import java.util.Properties;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

/**
 * The job config's scheduler keys (issue 23): prefill.chunk and limits.max-running sized for the backend unless given;
 * and its backend name, checked when the config is read (issue 26: cpu:device-memory=SIZE).
 */
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
    void runningRequestsAreSizedForTheBackendUnlessGiven() {
        Limits auto = JobConfig.from(new Properties()).decode().limits();
        assertEquals(Limits.AUTO, auto.maxRunning());
        assertEquals(BatchScheduler.GPU_MAX_RUNNING, auto.maxRunningFor(true));
        assertEquals(BatchScheduler.CPU_MAX_RUNNING, auto.maxRunningFor(false));
        Limits given = JobConfig.from(with("limits.max-running", "96")).decode().limits();
        assertEquals(96, given.maxRunningFor(true));
        assertEquals(96, given.maxRunningFor(false));
        for (String bad : new String[]{"0", "-1", "many"}) {
            DsflowException e = assertThrows(DsflowException.class,
                    () -> JobConfig.from(with("limits.max-running", bad)));
            assertEquals(true, e.getMessage().contains("limits.max-running"), e.getMessage());
        }
    }

    @Test
    void theCpuBackendMayModelAGpusMemoryAndABadSizeIsOneClearError() {
        assertEquals("cpu:device-memory=64MiB", JobConfig.from(with("backend", "cpu:device-memory=64MiB")).decode()
                .backend(), "passed on as given: the decode operator's engine parses it");
        DsflowException e = assertThrows(DsflowException.class,
                () -> JobConfig.from(with("backend", "cpu:device-memory=lots")));
        assertEquals("config backend cpu:device-memory must be a size such as 64MiB, got 'lots'", e.getMessage());
    }

    @Test
    void theShippedConfigsLeaveItToTheBackend() {
        for (String file : new String[]{"dsflow.properties", "compose.properties"}) {
            DecodeSettings d = JobConfig.load(Path.of("..", "config", file)).decode();
            assertEquals(DecodeSettings.AUTO, d.prefillChunk(), file);
            assertEquals(Limits.AUTO, d.limits().maxRunning(), file);
        }
    }
}
