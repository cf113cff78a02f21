package io.dsflow.engine.kv;

import java.util.Arrays;

/**
 * The full key/value store of one sequence on the CPU, every layer. Keys are kept after RoPE and channel-major, so
 * scoring a query against all keys is an axpy per channel (what the JIT vectorises); values are token-major, so the
 * weighted sum is an axpy per token.
 * <pre>
 *   keys[layer][c][j]            c < kvHeads * headDim, j < capacity   (channel c of token j)
 *   values[layer][j * kvDim + c]
 * </pre>
 * Appending is O(1) amortised: storage grows by an eighth at a time (at least a granule), rounded up to
 * {@value #GRANULE} tokens, from {@value #INITIAL_CAPACITY} (so the room a store holds for T tokens is
 * {@link #capacityFor}, which is what the CPU backend budgets: at most an eighth and a granule more than T, where
 * doubling held up to twice); every layer holds the same number of tokens once a forward pass is over. With a
 * {@code limit} C (bounded memory) the first {@code sinks} slots are pinned and, once C tokens are held, each new
 * token overwrites the oldest non-sink slot in ring order, so a stream of any length runs in constant memory;
 * {@code position[layer][slot]} says which token a slot holds (its position in the text).
 * <p>
 * Positions within the cache ({@link Rotary}, a bounded store of a rotary model): rotary positions follow the cache,
 * not the text, as StreamingLLM assigns them, so a conversation never runs out of them. A query sees each window token
 * at its distance in the text and sink i at the distance it would have if the sinks sat just before the oldest window
 * token ({@link #sinkShift}); every other key is stored rotated to its text position minus {@link #rotaryBase}, and
 * when a step would take a rotary position to the model's limit the store turns those keys back ({@link #rebaseFor})
 * so that the oldest window token sits right after the sinks again. The sinks stay at their own positions (a turn
 * at each would add its rounding for good), and both turns stay within the model's positions, so their rounding is
 * that of any rotary position the model has. Attention depends on rotary positions only through their differences,
 * so neither changes an attention output beyond that rounding.
 */
public final class KvStore {
    /** Tokens a store has room for when made (unless made with another initial capacity). */
    public static final int INITIAL_CAPACITY = 32;
    /** Capacities are multiples of this many tokens. */
    public static final int GRANULE = 32;
    final int layers;
    final int kvHeads;
    final int headDim;
    final int kvDim;
    final float[][][] keys;
    final float[][] values;
    final int[] length;
    final int[][] position;
    final long[] appended;
    private final int limit;
    private final int pinned;
    private final Rotary rotary;
    private int capacity;
    private long rotaryBase;

    public KvStore(int layers, int kvHeads, int headDim, int initialCapacity) {
        this(layers, kvHeads, headDim, initialCapacity, 0, 0, null);
    }

    /**
     * @param limit   C, the most tokens held (0 = unbounded)
     * @param sinks   slots never evicted when a limit is set
     * @param rotary  with a limit below its positions: the model's rotary embedding, whose positions then follow the
     *                cache; null for a model without one (OPT)
     */
    public KvStore(int layers, int kvHeads, int headDim, int initialCapacity, int limit, int sinks, Rotary rotary) {
        this.layers = layers;
        this.kvHeads = kvHeads;
        this.headDim = headDim;
        this.kvDim = kvHeads * headDim;
        this.limit = limit;
        this.pinned = sinks;
        // a limit the model's positions run out before is never reached: positions stay the text's
        this.rotary = limit > 0 && rotary != null && limit < rotary.maxPositions() ? rotary : null;
        this.capacity = limit > 0 ? Math.min(limit, Math.max(16, initialCapacity)) : Math.max(16, initialCapacity);
        this.keys = new float[layers][kvDim][capacity];
        this.values = new float[layers][capacity * kvDim];
        this.position = new int[layers][capacity];
        this.length = new int[layers];
        this.appended = new long[layers];
    }

    private KvStore(KvStore o) {
        layers = o.layers;
        kvHeads = o.kvHeads;
        headDim = o.headDim;
        kvDim = o.kvDim;
        limit = o.limit;
        pinned = o.pinned;
        rotary = o.rotary;
        rotaryBase = o.rotaryBase;
        int held = Arrays.stream(o.length).max().orElse(0);   // the room a store holding as many has
        capacity = (int) capacityFor(held, limit);
        keys = new float[layers][kvDim][];
        values = new float[layers][];
        length = o.length.clone();
        appended = o.appended.clone();
        position = new int[layers][];
        for (int l = 0; l < layers; l++) {
            for (int c = 0; c < kvDim; c++) keys[l][c] = Arrays.copyOf(o.keys[l][c], capacity);
            values[l] = Arrays.copyOf(o.values[l], capacity * kvDim);
            position[l] = Arrays.copyOf(o.position[l], capacity);
        }
    }

    /** Tokens held (after a complete forward pass, the same in every layer). */
    public int length() {
        return length[layers - 1];
    }

    public int length(int layer) {
        return length[layer];
    }

    public int headDim() {
        return headDim;
    }

    public int kvHeads() {
        return kvHeads;
    }

    /**
     * Appends one token's key (post-RoPE) and value, each [kvHeads * headDim]; returns the slot written (past the
     * limit, the oldest non-sink slot).
     */
    public int append(int layer, float[] k, float[] v) {
        int j;
        if (limit > 0 && length[layer] == limit) {
            j = pinned + (int) ((appended[layer] - limit) % (limit - pinned));
        } else {
            j = length[layer];
            if (j == capacity) grow();
            length[layer] = j + 1;
        }
        float[][] kl = keys[layer];
        for (int c = 0; c < kvDim; c++) kl[c][j] = k[c];
        System.arraycopy(v, 0, values[layer], j * kvDim, kvDim);
        position[layer][j] = (int) appended[layer];
        appended[layer]++;
        return j;
    }

    /** Tokens ever appended to a layer (the next token's position). */
    public long appended(int layer) {
        return appended[layer];
    }

    /** Whether a layer has evicted tokens, so slot order is no longer position order. */
    public boolean wrapped(int layer) {
        return appended[layer] > length[layer];
    }

    /** The most tokens held (0: unbounded). */
    public int limit() {
        return limit;
    }

    /** Slots never evicted once the limit is reached. */
    public int sinks() {
        return pinned;
    }

    /** Whether rotary positions follow the cache ({@link Rotary}): a bounded store of a rotary model. */
    public boolean positionsWithinCache() {
        return rotary != null;
    }

    /** What a token's text position less is its rotary position (0 unless positions follow the cache). */
    public long rotaryBase() {
        return rotaryBase;
    }

    /**
     * How much further than its stored rotation (its own position) a sink key turns for the query at text position
     * {@code position}: 0 until the text passes the limit, then the distance that puts sink i at rotary distance
     * limit - 1 - i from the query, as if the sinks preceded the oldest window token (positions within the cache
     * only): at most the model's positions less the limit.
     */
    public long sinkShift(long position) {
        return rotary == null || pinned == 0 ? 0 : Math.max(0, position - rotaryBase - limit + 1);
    }

    /**
     * Before a step feeds tokens at text positions first .. first + rows - 1: where the last would reach the model's
     * limit in rotary positions, turns every held key but the sinks back so the oldest window token sits right after
     * the sinks; returns by how much (0: nothing to do). The caller turns what it derived from the keys (a ring's
     * copies, labels) by as much.
     */
    public long rebaseFor(long first, int rows) {
        if (rotary == null || first + rows - 1 - rotaryBase < rotary.maxPositions()) return 0;
        long oldest = wrapped(layers - 1) ? appended[layers - 1] - (limit - pinned) : pinned;
        long delta = oldest - pinned - rotaryBase;
        if (first + rows - 1 - (rotaryBase + delta) >= rotary.maxPositions()) {
            throw new IllegalArgumentException("a step of " + rows + " tokens over a cache of " + limit
                    + " needs rotary positions past the model's " + rotary.maxPositions());
        }
        if (delta <= 0) return 0;
        Rotary.Turn back = rotary.by(-delta);
        float[] key = new float[headDim];
        for (int l = 0; l < layers; l++) {
            for (int j = pinned; j < length[l]; j++) {
                for (int g = 0; g < kvHeads; g++) {
                    for (int c = 0; c < headDim; c++) key[c] = keys[l][g * headDim + c][j];
                    back.apply(key, 0);
                    for (int c = 0; c < headDim; c++) keys[l][g * headDim + c][j] = key[c];
                }
            }
        }
        rotaryBase += delta;
        return delta;
    }

    Rotary rotary() {
        return rotary;
    }

    /** q[qAt .. qAt + headDim) . the key of kv head g in a slot of a layer (unscaled). */
    float score(int layer, float[] q, int qAt, int g, int slot) {
        float s = 0;
        for (int c = 0; c < headDim; c++) s += q[qAt + c] * keys[layer][g * headDim + c][slot];
        return s;
    }

    /** Position of the token held in a slot. */
    public int position(int layer, int slot) {
        return position[layer][slot];
    }

    /** Channel c (of kvHeads * headDim) of every key of a layer: keys[j] for j < length(layer). */
    public float[] keyChannel(int layer, int c) {
        return keys[layer][c];
    }

    /** All values of a layer, token-major: value j of kv head g starts at j * kvDim + g * headDim. */
    public float[] values(int layer) {
        return values[layer];
    }

    public int kvDim() {
        return kvDim;
    }

    public int layers() {
        return layers;
    }

    /** Tokens the store has room for now (its arrays' length). */
    public int capacity() {
        return capacity;
    }

    /** The capacity after the one given: an eighth more (a granule at least), rounded up to a granule. */
    static int nextCapacity(int capacity) {
        int grown = capacity + Math.max(GRANULE, capacity / 8);
        return (grown + GRANULE - 1) / GRANULE * GRANULE;
    }

    /**
     * The room a store made with {@link #INITIAL_CAPACITY} has once it holds {@code tokens} tokens (without a limit;
     * with a limit C, the lesser of this and C): what a cache of that many tokens allocates.
     */
    public static long capacityFor(long tokens) {
        int c = INITIAL_CAPACITY;
        while (c < tokens) c = nextCapacity(c);
        return c;
    }

    /** {@link #capacityFor(long)} in a store whose room stops at {@code limit} tokens (0: none). */
    public static long capacityFor(long tokens, int limit) {
        long room = capacityFor(tokens);
        return limit > 0 ? Math.min(limit, room) : room;
    }

    private void grow() {
        int next = limit > 0 ? Math.min(limit, nextCapacity(capacity)) : nextCapacity(capacity);
        for (int l = 0; l < layers; l++) {
            for (int c = 0; c < kvDim; c++) keys[l][c] = Arrays.copyOf(keys[l][c], next);
            values[l] = Arrays.copyOf(values[l], next * kvDim);
            position[l] = Arrays.copyOf(position[l], next);
        }
        capacity = next;
    }

    public KvStore copy() {
        return new KvStore(this);
    }

    /** Bytes of the JVM heap its arrays hold: keys and values (float32) and the slots' positions. */
    public long heapBytes() {
        return heapBytes(layers, kvDim, capacity);
    }

    /** Bytes of heap a store of {@code layers} layers with room for {@code capacity} tokens holds. */
    public static long heapBytes(int layers, int kvDim, long capacity) {
        return (long) layers * capacity * (2L * kvDim * Float.BYTES + Integer.BYTES);
    }

    /** Bytes the stored tokens take at {@code bytesPerValue} per key or value element. */
    public long bytes(int bytesPerValue) {
        long b = 0;
        for (int l = 0; l < layers; l++) b += 2L * length[l] * kvDim * bytesPerValue;
        return b;
    }
}
