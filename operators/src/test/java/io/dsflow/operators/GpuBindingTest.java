package io.dsflow.operators;

import io.dsflow.engine.DsflowException;
import org.apache.flink.api.common.externalresource.ExternalResourceInfo;
import org.junit.jupiter.api.Test;

import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.stream.IntStream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The subtask-to-GPU binding with simulated device counts and TaskManager GPU resources. */
class GpuBindingTest {
    private static ExternalResourceInfo gpu(String index) {
        Map<String, String> props = index == null ? Map.of() : Map.of("index", index);
        return new ExternalResourceInfo() {
            @Override
            public Optional<String> getProperty(String key) {
                return Optional.ofNullable(props.get(key));
            }

            @Override
            public Collection<String> getKeys() {
                return props.keySet();
            }
        };
    }

    @Test
    void withoutTheResourceSubtasksSpreadOverTheVisibleDevices() {
        assertEquals(List.of(0, 1, 0, 1, 0, 1),
                IntStream.range(0, 6).map(i -> GpuBinding.device(i, Set.of(), 2)).boxed().toList());
        assertEquals(List.of(0, 1, 2, 3, 4, 5, 6, 7),
                IntStream.range(0, 8).map(i -> GpuBinding.device(i, Set.of(), 8)).boxed().toList());
        assertEquals(0, GpuBinding.device(5, Set.of(), 1));
    }

    @Test
    void noDeviceMeansNoGpu() {
        assertEquals(-1, GpuBinding.device(0, Set.of(), 0));
        assertEquals(-1, GpuBinding.device(3, Set.of(), 0));
    }

    @Test
    void theTaskManagersGpuResourceDecides() {
        // one GPU a TaskManager (one slot each): its index, whatever the subtask index
        assertEquals(3, GpuBinding.device(0, Set.of(gpu("3")), 8));
        assertEquals(3, GpuBinding.device(5, Set.of(gpu("3")), 8));
        // a TaskManager with two slots and GPUs 5 and 2: its subtasks take them in index order
        Set<ExternalResourceInfo> two = Set.of(gpu("5"), gpu("2"));
        assertEquals(List.of(2, 5, 2, 5),
                IntStream.range(0, 4).map(i -> GpuBinding.device(i, two, 8)).boxed().toList());
    }

    /** Subtasks 0 and 2 of a job with parallelism 4 in one two-GPU TaskManager: one GPU each, not both on GPU 0. */
    @Test
    void subtasksOfOneProcessSpreadOverItsGpus() {
        int a = GpuBinding.claim(0, Set.of(), 2), b = GpuBinding.claim(2, Set.of(), 2);
        try {
            assertEquals(0, a);
            assertEquals(1, b);
        } finally {
            GpuBinding.release(a);
            GpuBinding.release(b);
        }
        int again = GpuBinding.claim(2, Set.of(), 2);   // released: the preferred one again
        GpuBinding.release(again);
        assertEquals(0, again);
    }

    @Test
    void aBadResourceIsAClearError() {
        DsflowException hidden = assertThrows(DsflowException.class, () -> GpuBinding.device(0, Set.of(gpu("4")), 2));
        assertTrue(hidden.getMessage().contains("GPU 4") && hidden.getMessage().contains("2 CUDA device"),
                hidden.getMessage());
        assertTrue(assertThrows(DsflowException.class, () -> GpuBinding.device(0, Set.of(gpu(null)), 2)).getMessage()
                .contains("without an index"));
        assertTrue(assertThrows(DsflowException.class, () -> GpuBinding.device(0, Set.of(gpu("x")), 2)).getMessage()
                .contains("'x'"));
    }
}
