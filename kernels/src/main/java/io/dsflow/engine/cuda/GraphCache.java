package io.dsflow.engine.cuda;

import jcuda.driver.CUgraphExec;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Decode steps captured as CUDA graphs, one per step shape ({@link StepPlan#graphKey}) from its second step on, the
 * least recently used dropped past {@link #MAX_GRAPHS}: batch sizes and growing contexts would otherwise add up
 * without end. A graph holds the addresses of the buffers and caches it was captured with, so whoever moves one calls
 * {@link #clear} first.
 * Also keeps the host time of the steps it launched ({@link HostTime}, for bench).
 */
public final class GraphCache implements AutoCloseable {
    /** Graphs kept. */
    static final int MAX_GRAPHS = 64;

    /**
     * Host time of the decode steps run as graphs since the last {@link #resetHostTime}: building each step's metadata
     * ({@code prepareNanos}), finding and launching its graph ({@code launchNanos}), and capturing the graphs of new
     * shapes ({@code captures}, in {@code captureNanos}: once per shape, whose buckets change every few hundred
     * tokens). The device idles through all three (the next step needs the last one's tokens). {@code maxNanos}: the
     * longest step's metadata and launch.
     */
    public record HostTime(long steps, long prepareNanos, long launchNanos, int captures, long captureNanos,
                           long maxNanos) {
    }

    private final CudaRuntime gpu;
    private final Map<StepPlan.GraphKey, CUgraphExec> graphs = new LinkedHashMap<>(16, 0.75f, true) {
        @Override
        protected boolean removeEldestEntry(Map.Entry<StepPlan.GraphKey, CUgraphExec> eldest) {
            if (size() <= MAX_GRAPHS) return false;
            gpu.destroy(eldest.getValue());   // its last replay finished: every step waits for its result
            return true;
        }
    };
    /** Shapes met once, whose next step captures (bounded as the graphs are: a one-off shape evicts no graph). */
    private final Map<StepPlan.GraphKey, Boolean> metOnce = new LinkedHashMap<>(16, 0.75f, true) {
        @Override
        protected boolean removeEldestEntry(Map.Entry<StepPlan.GraphKey, Boolean> eldest) {
            return size() > MAX_GRAPHS;
        }
    };
    private long steps, prepareNanos, launchNanos, captureNanos, maxNanos;
    private int captures;

    GraphCache(CudaRuntime gpu) {
        this.gpu = gpu;
    }

    /**
     * Replays the graph of {@code key}, capturing {@code launches} into it first when there is none; {@code
     * plannedAt} is when the step's planning began (System.nanoTime), for the host time. A shape's first step runs
     * its launches directly and the second captures them: cuBLAS chooses and loads its kernels for a shape at its
     * first product, which must not happen inside a capture.
     */
    void launch(StepPlan.GraphKey key, Runnable launches, long plannedAt) {
        long t1 = System.nanoTime();
        CUgraphExec exec = graphs.get(key);
        if (exec == null && metOnce.put(key, Boolean.TRUE) == null) {
            launches.run();
            return;
        }
        long captured = 0;
        if (exec == null) {
            metOnce.remove(key);
            exec = gpu.capture(launches);
            graphs.put(key, exec);
            captured = System.nanoTime() - t1;
            captures++;
            captureNanos += captured;
        }
        gpu.replay(exec);
        steps++;
        long launched = System.nanoTime() - t1 - captured;
        prepareNanos += t1 - plannedAt;
        launchNanos += launched;
        maxNanos = Math.max(maxNanos, t1 - plannedAt + launched);
    }

    /** Destroys every captured graph (the next steps capture theirs again). */
    void clear() {
        for (CUgraphExec g : graphs.values()) gpu.destroy(g);
        graphs.clear();
        metOnce.clear();
    }

    HostTime hostTime() {
        return new HostTime(steps, prepareNanos, launchNanos, captures, captureNanos, maxNanos);
    }

    void resetHostTime() {
        steps = prepareNanos = launchNanos = captureNanos = maxNanos = captures = 0;
    }

    @Override
    public void close() {
        clear();
    }
}
