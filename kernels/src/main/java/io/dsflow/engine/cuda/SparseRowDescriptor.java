package io.dsflow.engine.cuda;

/**
 * The descriptor of one selecting decode row in a layer, as the sparse kernels read it: sparse_rows.cuh's
 * {@code sp[p][SP_FIELDS]} ints, in the order of its {@code SP_*} enum (a test holds the two to the same fields).
 *
 * @param row           the row in the batch
 * @param candidates    candidate slots [sinks, sinks + candidates)
 * @param budget        k: slots the selection keeps
 * @param sinks         S: attention sinks, always attended
 * @param window        W: the ring window's slots, always attended
 * @param gqaMode       GQA selection: 0 per head, 1 max, 2 mean (KvConfig.GqaSelection's ordinal)
 * @param labelChannels r: label channels a head
 * @param labelBits     16, 8 or 4
 * @param capacity      the cache's slots (the stride of its label scales)
 * @param readsHost     whether the attention reads the selected rows from host memory
 * @param labelGroup    query heads one label row serves (1, or the GQA group for qk-group / k channels)
 */
public record SparseRowDescriptor(int row, int candidates, int budget, int sinks, int window, int gqaMode,
                                  int labelChannels, int labelBits, int capacity, boolean readsHost, int labelGroup) {
    /** The fields' names in sparse_rows.cuh's enum order (SP_ROW ... SP_LGROUP). */
    public enum Field { ROW, CAND, K, SINKS, WINDOW, MODE, R, BITS, CAP, HOST, LGROUP }

    /** Ints a descriptor takes (SP_FIELDS). */
    public static final int FIELDS = Field.values().length;

    /** Writes the descriptor's ints at {@code dst[offset ..]} in the enum's order. */
    public void writeTo(int[] dst, int offset) {
        write(dst, offset, row, candidates, budget, sinks, window, gqaMode, labelChannels, labelBits, capacity,
                readsHost, labelGroup);
    }

    /** A descriptor's ints at {@code dst[offset ..]} without the object (the step planner's rows, every step). */
    public static void write(int[] dst, int offset, int row, int candidates, int budget, int sinks, int window,
                             int gqaMode, int labelChannels, int labelBits, int capacity, boolean readsHost,
                             int labelGroup) {
        dst[offset + Field.ROW.ordinal()] = row;
        dst[offset + Field.CAND.ordinal()] = candidates;
        dst[offset + Field.K.ordinal()] = budget;
        dst[offset + Field.SINKS.ordinal()] = sinks;
        dst[offset + Field.WINDOW.ordinal()] = window;
        dst[offset + Field.MODE.ordinal()] = gqaMode;
        dst[offset + Field.R.ordinal()] = labelChannels;
        dst[offset + Field.BITS.ordinal()] = labelBits;
        dst[offset + Field.CAP.ordinal()] = capacity;
        dst[offset + Field.HOST.ordinal()] = readsHost ? 1 : 0;
        dst[offset + Field.LGROUP.ordinal()] = labelGroup;
    }
}
