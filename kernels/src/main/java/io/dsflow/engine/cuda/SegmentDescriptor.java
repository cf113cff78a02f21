package io.dsflow.engine.cuda;

/**
 * What the append kernels read of one segment's sparse cache (they run before a layer's row descriptors exist):
 * sparse_rows.cuh's {@code seg_info[s][SEG_FIELDS]} ints, in the order of its {@code SEG_*} enum (a test holds the two
 * to the same fields).
 *
 * @param labelChannels r: label channels a head
 * @param labelBits     16, 8 or 4
 * @param sinks         S
 * @param window        W: the ring's slots
 * @param capacity      the cache's slots (the stride of its label scales)
 * @param labelGroup    query heads one label row serves
 */
public record SegmentDescriptor(int labelChannels, int labelBits, int sinks, int window, int capacity,
                                int labelGroup) {
    /** The fields' names in sparse_rows.cuh's enum order (SEG_R ... SEG_LGROUP). */
    public enum Field { R, BITS, SINKS, WINDOW, CAP, LGROUP }

    /** Ints a descriptor takes (SEG_FIELDS). */
    public static final int FIELDS = Field.values().length;

    /** Writes the descriptor's ints at {@code dst[offset ..]} in the enum's order. */
    public void writeTo(int[] dst, int offset) {
        dst[offset + Field.R.ordinal()] = labelChannels;
        dst[offset + Field.BITS.ordinal()] = labelBits;
        dst[offset + Field.SINKS.ordinal()] = sinks;
        dst[offset + Field.WINDOW.ordinal()] = window;
        dst[offset + Field.CAP.ordinal()] = capacity;
        dst[offset + Field.LGROUP.ordinal()] = labelGroup;
    }
}
