package io.dsflow.engine;

import io.dsflow.engine.kv.KvCache;

import java.util.ArrayList;
import java.util.List;

/**
 * The work of one forward pass, built once and read by every layer: segments of new tokens, one per sequence, each
 * continuing that sequence's cache at its next position. A prefill is one segment of many tokens; a decode step is
 * many segments of one token; both can share a pass. Rows are the segments' tokens laid end to end.
 */
public final class Batch {

    /** New tokens of one sequence at positions startPosition, startPosition + 1, ... */
    public record Segment(KvCache cache, int[] tokens, int startPosition) {
    }

    private final List<Segment> segments = new ArrayList<>();
    private int rows;

    public Batch add(KvCache cache, int[] tokens, int startPosition) {
        if (tokens.length == 0) throw new IllegalArgumentException("a segment needs at least one token");
        segments.add(new Segment(cache, tokens, startPosition));
        rows += tokens.length;
        return this;
    }

    public List<Segment> segments() {
        return segments;
    }

    public int rows() {
        return rows;
    }

    /** Token of each row. */
    public int[] tokens() {
        int[] t = new int[rows];
        int r = 0;
        for (Segment s : segments) for (int tok : s.tokens()) t[r++] = tok;
        return t;
    }

    /** Absolute position of each row. */
    public int[] positions() {
        int[] p = new int[rows];
        int r = 0;
        for (Segment s : segments) for (int i = 0; i < s.tokens().length; i++) p[r++] = s.startPosition() + i;
        return p;
    }

    /** First row of each segment. */
    public int[] segmentStarts() {
        int[] starts = new int[segments.size()];
        int r = 0;
        for (int i = 0; i < starts.length; i++) {
            starts[i] = r;
            r += segments.get(i).tokens().length;
        }
        return starts;
    }
}
