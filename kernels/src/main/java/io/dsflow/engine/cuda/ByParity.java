package io.dsflow.engine.cuda;

/**
 * Two of a thing, one for even layers and one for odd: lookahead's side stream fills layer l + 1's buffers (and records
 * its events) while the main stream still reads layer l's.
 */
record ByParity<T>(T even, T odd) {
    /** The one that layer {@code layer} uses. */
    T of(int layer) {
        return (layer & 1) == 0 ? even : odd;
    }
}
