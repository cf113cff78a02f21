package io.dsflow.engine;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Backend names as the command line and the job's config give them: three backends, and the CPU's device memory. */
class BackendNameTest {

    @Test
    void theThreeBackendsTakeNoDeviceMemory() {
        assertEquals(new BackendName(BackendName.Kind.CPU, -1), BackendName.parse("cpu"));
        assertEquals(new BackendName(BackendName.Kind.CUDA, -1), BackendName.parse("cuda"));
        assertEquals(new BackendName(BackendName.Kind.AUTO, -1), BackendName.parse("auto"));
        assertEquals(BackendName.Kind.CPU, BackendName.parse(" CPU ").kind(), "as Engine.load always read them");
        assertTrue(BackendName.parse("cpu").isCpu());
        assertFalse(BackendName.parse("auto").isCpu(), "auto may be a GPU");
    }

    @Test
    void theCpuTakesADeviceMemoryInBytesOrBinaryUnits() {
        assertEquals(4096, BackendName.parse("cpu:device-memory=4096").deviceMemory());
        assertEquals(725L << 10, BackendName.parse("cpu:device-memory=725KiB").deviceMemory());
        assertEquals(64L << 20, BackendName.parse("cpu:device-memory=64MiB").deviceMemory());
        assertEquals(64L << 20, BackendName.parse("cpu:device-memory=64m").deviceMemory());
        assertEquals(64L << 20, BackendName.parse("cpu:device-memory=64mb").deviceMemory());
        assertEquals(2L << 30, BackendName.parse("CPU:Device-Memory=2GiB").deviceMemory());
        assertTrue(BackendName.parse("cpu:device-memory=1k").isCpu());
        assertEquals("cpu:device-memory=1024", BackendName.parse("cpu:device-memory=1KiB").toString());
    }

    @Test
    void aBadNameIsOneLineSayingWhatIsAccepted() {
        assertEquals("backend must be cpu, cuda, auto or cpu:device-memory=SIZE, got 'tpu'", message("tpu"));
        assertEquals("backend must be cpu, cuda, auto or cpu:device-memory=SIZE, got 'null'", message(null));
        assertEquals("backend cuda takes no options (only cpu:device-memory=SIZE does), got 'cuda:device-memory=1g'",
                message("cuda:device-memory=1g"));
        assertEquals("backend cpu takes one option, device-memory=SIZE, got 'cpu:memory=1g'", message("cpu:memory=1g"));
        for (String size : new String[]{"", "lots", "0", "0MiB", "-5", "1.5g", "64TiB", "99999999999g",
                "9999999999999999999"}) {
            assertEquals("backend cpu:device-memory must be a size such as 64MiB, got '" + size + "'",
                    message("cpu:device-memory=" + size), size);
        }
    }

    private static String message(String name) {
        String m = assertThrows(DsflowException.class, () -> BackendName.parse(name)).getMessage();
        assertFalse(m.contains("\n"), m);
        return m;
    }
}
