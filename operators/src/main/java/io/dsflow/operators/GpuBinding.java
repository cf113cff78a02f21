package io.dsflow.operators;

import io.dsflow.engine.DsflowException;
import org.apache.flink.api.common.externalresource.ExternalResourceInfo;

import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.stream.IntStream;

/**
 * Which GPU a decode subtask runs on: one engine (CUDA context, memory pool, weights) per subtask, each on its own GPU
 * where there are enough.
 * <ul>
 *   <li>Flink's GPU external resource, where the TaskManager is configured with it ({@code external-resources: gpu},
 *       the GPUDriverFactory): the subtask takes one of the GPU indices the TaskManager was given, by subtask index
 *       modulo their count (one slot a GPU gets each its own).</li>
 *   <li>Otherwise the subtask index modulo the devices this process sees (CUDA_VISIBLE_DEVICES applies), so
 *       parallelism = number of GPUs puts one subtask on each.</li>
 *   <li>No device: -1 (the backend runs on the CPU or reports why CUDA is unavailable).</li>
 *   <li>Within one TaskManager process ({@link #claim}), a subtask whose GPU another subtask of the process already
 *       uses takes the least used of its candidates instead: slots are filled in no particular subtask order, so two
 *       subtasks with equal indices modulo the GPU count may share a TaskManager.</li>
 * </ul>
 */
public final class GpuBinding {
    /** The external resource name the docker-compose TaskManagers declare ({@code external-resources: gpu}). */
    public static final String RESOURCE = "gpu";

    private GpuBinding() {
    }

    /**
     * The device ordinal for a subtask.
     *
     * @param subtask     the subtask's index
     * @param assigned    the GPU external resources of its TaskManager (empty where none is configured)
     * @param deviceCount the CUDA devices this process sees
     */
    public static int device(int subtask, Collection<ExternalResourceInfo> assigned, int deviceCount) {
        List<Integer> candidates = candidates(assigned, deviceCount);
        return candidates.isEmpty() ? -1 : visible(candidates.get(subtask % candidates.size()), deviceCount);
    }

    /** Subtasks of this process on each device. */
    private static final Map<Integer, Integer> IN_USE = new HashMap<>();

    /**
     * The device for a subtask of this process, as {@link #device} picks it unless another subtask here already uses
     * that one and a candidate is less used; release it in close().
     */
    public static synchronized int claim(int subtask, Collection<ExternalResourceInfo> assigned, int deviceCount) {
        List<Integer> candidates = candidates(assigned, deviceCount);
        if (candidates.isEmpty()) return -1;
        int chosen = visible(candidates.get(subtask % candidates.size()), deviceCount);
        for (int c : candidates) {
            if (IN_USE.getOrDefault(c, 0) < IN_USE.getOrDefault(chosen, 0)) chosen = c;
        }
        visible(chosen, deviceCount);   // a less used candidate is checked as well
        IN_USE.merge(chosen, 1, Integer::sum);
        return chosen;
    }

    /** Gives back a device {@link #claim} handed out (negative: none). */
    public static synchronized void release(int device) {
        if (device >= 0) IN_USE.computeIfPresent(device, (d, n) -> n > 1 ? n - 1 : null);
    }

    /**
     * The GPUs a subtask may take: the TaskManager's resource indices in order, else every device this process sees.
     */
    private static List<Integer> candidates(Collection<ExternalResourceInfo> assigned, int deviceCount) {
        if (!assigned.isEmpty()) return assigned.stream().map(GpuBinding::index).sorted().toList();
        return IntStream.range(0, deviceCount).boxed().toList();
    }

    /** The index, checked against the devices this process sees (none seen: not checked, the backend says why). */
    private static int visible(int index, int deviceCount) {
        if (deviceCount > 0 && index >= deviceCount) {
            throw new DsflowException("the TaskManager was given GPU " + index + " but this process sees "
                    + deviceCount + " CUDA device(s) (does CUDA_VISIBLE_DEVICES hide it?)");
        }
        return index;
    }

    private static int index(ExternalResourceInfo info) {
        Optional<String> index = info.getProperty("index");
        try {
            return Integer.parseInt(index.orElseThrow(() -> new DsflowException(
                    "a GPU external resource without an index property: " + info.getKeys())).trim());
        } catch (NumberFormatException e) {
            throw new DsflowException("a GPU external resource with index '" + index.orElse("") + "', not a number");
        }
    }
}
