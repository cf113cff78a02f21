package io.dsflow.engine.cuda;

import jcuda.driver.CUevent;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Stage marks of a profiled forward pass (bench --profile): the forward pass calls {@link #mark} at the start of each
 * stage; while profiling, that records a CUDA event on the current stream (main or side), and the time until that
 * stream's next mark is the stage's. The events serialise nothing: each stream runs in order anyway. While not
 * profiling, a mark does nothing, so graph captures record no events.
 */
public final class StepProfiler {
    /** The side stream's mark at the end of a burst of work: the time until its next mark is idle, not a stage. */
    static final String SIDE_IDLE = "(side stream idle)";

    /** A stage of a profiled step on one stream, in ms from the step's start (or its layer's, in a timeline). */
    public record Span(String stream, String stage, double startMs, double endMs) {
    }

    /**
     * A profiled step: its device time, each stage's time summed over the layers per stream (the main stream's stages
     * in the order they first ran; the side stream's, when there is look-ahead work), and the timeline of the middle
     * layer, its times from that layer's first stage (the side stream's work launched during the layer, for the next
     * one, included).
     */
    public record Profile(double stepMs, Map<String, Double> mainMs, Map<String, Double> sideMs, int layer,
                          List<Span> layerTimeline) {
    }

    /** An event recorded at the start of a stage, on the main or the side stream. */
    private record Mark(String stage, boolean side, int layer, CUevent event) {
    }

    private final CudaRuntime gpu;
    private List<Mark> marks;
    private int layer = -1;

    StepProfiler(CudaRuntime gpu) {
        this.gpu = gpu;
    }

    /** The layer the next marks belong to (-1: none). */
    void layer(int layer) {
        this.layer = layer;
    }

    /** Whether a profiled step is running (its launches must run eagerly). */
    boolean active() {
        return marks != null;
    }

    /** Starts stage {@code name} on the current stream, when profiling. */
    void mark(String name) {
        if (marks != null) marks.add(new Mark(name, gpu.onSideStream(), layer, gpu.recordEvent()));
    }

    /** Runs {@code step} (one eager forward pass) with marks, and reads them back; {@code layers}: the model's. */
    Profile profile(Runnable step, int layers) {
        marks = new ArrayList<>();
        try {
            step.run();
            layer = -1;
            mark("end");
            return read(layers / 2);
        } finally {
            for (Mark m : marks) gpu.destroy(m.event());
            marks = null;
        }
    }

    private Profile read(int middle) {
        CUevent origin = marks.get(0).event();
        Map<String, Double> main = new LinkedHashMap<>(), side = new LinkedHashMap<>();
        List<Span> timeline = new ArrayList<>();
        double layerStart = Double.NaN;
        for (boolean onSide : new boolean[]{false, true}) {
            Mark prev = null;
            for (Mark m : marks) {
                if (m.side() != onSide) continue;
                if (prev != null && !prev.stage().equals(SIDE_IDLE)) {
                    double from = gpu.elapsedMs(origin, prev.event()), to = gpu.elapsedMs(origin, m.event());
                    (onSide ? side : main).merge(prev.stage(), to - from, Double::sum);
                    if (prev.layer() == middle) {
                        if (Double.isNaN(layerStart)) layerStart = from;   // main first: the layer's first stage
                        timeline.add(new Span(onSide ? "side" : "main", prev.stage(), from - layerStart,
                                to - layerStart));
                    }
                }
                prev = m;
            }
        }
        return new Profile(gpu.elapsedMs(origin, marks.get(marks.size() - 1).event()), main, side, middle, timeline);
    }
}
