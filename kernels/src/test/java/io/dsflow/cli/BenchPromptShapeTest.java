package io.dsflow.cli;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class BenchPromptShapeTest {
    @Test
    void onePromptOrPromptsTimesTokensAndAClearErrorForAnythingElse() {
        assertArrayEquals(new int[]{1, 4096}, BenchCommand.promptShape("4096"));
        assertArrayEquals(new int[]{1, 0}, BenchCommand.promptShape("0"));   // no prefill row
        assertArrayEquals(new int[]{16, 1024}, BenchCommand.promptShape("16x1024"));
        assertArrayEquals(new int[]{16, 1024}, BenchCommand.promptShape(" 16X1024 "));
        for (String bad : new String[]{"x1024", "16x", "0x5", "16x0", "4x4x4", "-1", "many"}) {
            UsageException e = assertThrows(UsageException.class, () -> BenchCommand.promptShape(bad));
            assertTrue(e.getMessage().contains("'" + bad + "'"), e.getMessage());
        }
    }
}
