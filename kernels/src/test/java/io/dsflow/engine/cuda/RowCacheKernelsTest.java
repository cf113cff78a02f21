package io.dsflow.engine.cuda;

import io.dsflow.engine.kv.RowCache;
import jcuda.Pointer;
import jcuda.driver.CUdeviceptr;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.function.IntUnaryOperator;
import java.util.stream.IntStream;

import static jcuda.driver.JCudaDriver.cuMemcpy;
import static jcuda.driver.JCudaDriver.cuMemcpyDtoH;
import static jcuda.driver.JCudaDriver.cuMemcpyHtoD;
import static jcuda.driver.JCudaDriver.cuMemsetD16;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * row_cache.cu's row_cache_serve (issue 26's device cache of selected rows) against kv/RowCache, its specification,
 * through CudaRowCache's allocations (ensurePlaces' growth by granules, storeGrew's larger placeOf). Segments of
 * different stores (in mapped pinned host memory, a hash of (segment, slot, kv head, element, key or value) a bf16)
 * and one without a row cache are served in one launch, step after step, each step's selection of a (segment, kv head)
 * repeating a random share of the step before's and of older ones, in random order. After every step:
 * <ul>
 *   <li>each selection entry is rewritten to the place a mirror of RowCache's ring (its hits held to RowCache's)
 *       gives it, a place of the ring, whose cached key and value rows are the store's rows of the slot selected;</li>
 *   <li>the device's index is the mirror's: places allocated, the ring's size, the factor, each kv head's hand and
 *       owners (and -1 past the ring); the rows at every place held are the store's rows of its owner;</li>
 *   <li>the misses of each (segment, kv head), counted from the index the device had before the step, are k - hits
 *       of a RowCache fed the same slots in the same order (grown first to RowCache.places(factor, k)), and the stats
 *       buffer holds the rows asked and missed in all;</li>
 *   <li>everything else of the selection (the segment without a row cache, the entries past k, the other heads of a
 *       group: random garbage) is bit for bit unchanged.</li>
 * </ul>
 * New places are poisoned (bf16 NaN) as they are allocated, and a store's old block after it grew; the runs are held
 * to have had hits, misses, evictions and a hand that wrapped.
 */
class RowCacheKernelsTest extends KernelTestSupport {
    /**
     * Three segments of stores of 301, 1000 and 517 slots (k 37, 45: a budget of 64 past 45 candidates, and 23, in a
     * stride of 64), rings of 1.5 k, and a segment without a row cache, over 40 steps.
     */
    @ParameterizedTest(name = "{0} kv heads of {1}")
    @CsvSource({"2, 128", "4, 64"})
    void servesSegmentsOfDifferentStoresAsRowCache(int kvHeads, int headDim) {
        Run run = new Run(kvHeads, headDim, 64, 1.5, new Random(26L * kvHeads + headDim));
        run.segment(301, t -> 37, t -> 290);
        run.unserved(211, t -> 40, t -> 200);
        run.segment(1000, t -> 64, t -> 45);
        run.segment(517, t -> 23, t -> 517);
        run.steps(40);
        run.assertExercised();
    }

    /** A factor of 1: the ring is k places, and every step reads each of them (its places are 0 .. k - 1). */
    @Test
    void aRingOfExactlyTheStepsRowsReadsEveryPlaceEachStep() {
        Run run = new Run(2, 64, 64, 1.0, new Random(27));
        run.everyPlace = true;
        run.segment(200, t -> 37, t -> 200);
        run.segment(131, t -> 61, t -> 131);
        run.unserved(150, t -> 50, t -> 150);
        run.steps(30);
        run.assertExercised();
    }

    /**
     * k grows from step to step (to 300 of a stride of 320: the allocation grows from 256 places to 512, its rows,
     * owners and hands copied), dips (12, then 0: the ring never shrinks) and grows by one a step in another segment;
     * CudaRowCache.ensurePlaces runs before each step, as the planner does.
     */
    @Test
    void theRingGrowsWithTheRowsAStepSelectsAndNeverShrinks() {
        Run run = new Run(2, 128, 320, 1.5, new Random(28));
        run.segment(2000, t -> t == 20 ? 12 : t == 21 ? 0 : Math.min(300, 5 + t * t / 3), t -> 2000);
        run.unserved(400, t -> 100, t -> 400);
        run.segment(300, t -> 1 + t, t -> 300);
        run.steps(36);
        run.assertExercised();
    }

    /**
     * Stores grow mid-run (CudaRowCache.storeGrew: a larger placeOf, its pointer in the index replaced; the host store
     * copied into a larger pinned block and the old one poisoned): before a segment's first step (no index yet), twice
     * in another, and in the segment without a row cache; the rows held before still hit, the new slots are served.
     */
    @Test
    void rowsHeldBeforeTheStoreGrewAreStillServed() {
        Run run = new Run(4, 64, 64, 1.5, new Random(29));
        run.segment(150, t -> 41, t -> 1 << 20);
        run.segment(120, t -> 53, t -> 1 << 20);
        run.unserved(100, t -> 30, t -> 1 << 20);
        run.grow(0, 0, 260);
        run.grow(15, 1, 700);
        run.grow(30, 1, 1111);
        run.grow(10, 2, 400);
        run.steps(40);
        run.assertExercised();
    }

    /** A finite bf16 (its exponent's top bit clear: never the 0xFFFF that poisons) hashed from its coordinates. */
    private static short value(int segment, int slot, int kvHead, int element, int keyOrValue) {
        int h = 0x2545F491;
        for (int x : new int[]{segment, slot, kvHead, element, keyOrValue}) {
            h ^= x * 0x9E3779B1;
            h ^= h >>> 15;
            h *= 0x2C1B3C6D;
            h ^= h >>> 12;
            h *= 0x297A2D39;
            h ^= h >>> 15;
        }
        return (short) (h & 0xBFFF);
    }

    /** {@code data[from, to)} copied into {@code dst} (pinned host memory mapped into the device) through the GPU. */
    private static void toPinned(CUdeviceptr dst, short[] data, int from, int to) {
        long bytes = 2L * (to - from);
        if (bytes == 0) return;
        CUdeviceptr tmp = gpu.alloc(bytes);
        cuMemcpyHtoD(tmp, Pointer.to(Arrays.copyOfRange(data, from, to)), bytes);
        cuMemcpy(dst, tmp, bytes);
        gpu.free(tmp, bytes);
    }

    private static void writeTable(CUdeviceptr table, long[] addresses) {
        cuMemcpyHtoD(table, Pointer.to(addresses), 8L * addresses.length);
    }

    private static long placeOfPointer(int[] index) {
        return (index[RowCacheKernels.PLACE_OF] & 0xFFFFFFFFL) | ((long) index[RowCacheKernels.PLACE_OF + 1] << 32);
    }

    /**
     * kv/RowCache's ring with its places in view (RowCache keeps them to itself): where each row of a step lands, the
     * owners and the hand, as RowCache.serve moves them.
     */
    private static final class Ring {
        int[] owner = new int[0];
        final Map<Integer, Integer> placeOf = new HashMap<>();
        int hand, hits;
        long evictions, wraps;

        void growTo(int places) {
            if (places <= owner.length) return;
            int old = owner.length;
            owner = Arrays.copyOf(owner, places);
            Arrays.fill(owner, old, places, -1);
        }

        /** The place of each of {@code slots} (distinct) after the step; {@link #hits} the rows held before it. */
        int[] serve(int[] slots) {
            boolean[] asked = new boolean[owner.length], hit = new boolean[slots.length];
            int[] at = new int[slots.length];
            hits = 0;
            for (int i = 0; i < slots.length; i++) {
                Integer c = placeOf.get(slots[i]);
                if (c == null) continue;
                asked[c] = true;
                hit[i] = true;
                at[i] = c;
                hits++;
            }
            for (int i = 0; i < slots.length; i++) {
                if (hit[i]) continue;
                while (asked[hand]) hand = (hand + 1) % owner.length;
                if (owner[hand] >= 0) {
                    placeOf.remove(owner[hand]);
                    evictions++;
                }
                owner[hand] = slots[i];
                placeOf.put(slots[i], hand);
                asked[hand] = true;
                at[i] = hand;
                hand = (hand + 1) % owner.length;
                if (hand == 0) wraps++;
            }
            return at;
        }
    }

    /** A segment of a run: its host store, its row cache (none where unserved), and each kv head's references. */
    private final class Segment {
        final int id;
        final boolean served;
        final IntUnaryOperator budget, candidates;
        final RowCache[] spec;
        final Ring[] model;
        final List<ArrayDeque<int[]>> history = new ArrayList<>();   // a kv head's selections, the latest first
        final int[][] slots;
        int cap, k;
        short[] keys, values;
        CUdeviceptr hostK, hostV;
        CudaRowCache cache;

        Segment(int id, boolean served, int capacity, IntUnaryOperator budget, IntUnaryOperator candidates,
                Run run) {
            this.id = id;
            this.served = served;
            this.budget = budget;
            this.candidates = candidates;
            spec = new RowCache[run.kvHeads];
            model = new Ring[run.kvHeads];
            slots = new int[run.kvHeads][];
            for (int g = 0; g < run.kvHeads; g++) {
                model[g] = new Ring();
                history.add(new ArrayDeque<>());
            }
            cap = capacity;
            keys = new short[capacity * run.kvDim];
            values = new short[capacity * run.kvDim];
            run.fill(this, 0, capacity);
            hostK = gpu.allocHost(2L * keys.length);
            hostV = gpu.allocHost(2L * values.length);
            toPinned(hostK, keys, 0, keys.length);
            toPinned(hostV, values, 0, values.length);
            if (served) {   // one layer, its store on the host
                cache = new CudaRowCache(gpu, new boolean[]{true}, run.kvHeads, run.kvDim, run.factor, capacity);
            }
        }
    }

    /** Segments served together step after step, each step checked. */
    private final class Run {
        final int kvHeads, heads, headDim, kvDim, maxK, factor256;
        final double factor;
        final Random r;
        final List<Segment> segments = new ArrayList<>();
        final List<int[]> growths = new ArrayList<>();   // {step, segment, capacity}
        final List<CUdeviceptr[]> retired = new ArrayList<>();   // old host stores {keys, values}, poisoned
        final List<Long> retiredBytes = new ArrayList<>();
        boolean everyPlace;
        long asked, missed;
        CUdeviceptr selected, desc, segOfRow, stats, storeK, storeV, cacheK, cacheV, index;

        Run(int kvHeads, int headDim, int maxK, double factor, Random r) {
            this.kvHeads = kvHeads;
            this.heads = 2 * kvHeads;
            this.headDim = headDim;
            this.kvDim = kvHeads * headDim;
            this.maxK = maxK;
            this.factor = factor;
            this.factor256 = (int) Math.round(factor * 256);
            this.r = r;
        }

        void segment(int capacity, IntUnaryOperator budget, IntUnaryOperator candidates) {
            segments.add(new Segment(segments.size(), true, capacity, budget, candidates, this));
        }

        void unserved(int capacity, IntUnaryOperator budget, IntUnaryOperator candidates) {
            segments.add(new Segment(segments.size(), false, capacity, budget, candidates, this));
        }

        /** Segment {@code segment}'s store grows to {@code capacity} slots before step {@code step}. */
        void grow(int step, int segment, int capacity) {
            growths.add(new int[]{step, segment, capacity});
        }

        /** The store rows of slots [from, to): a hash of each element. */
        void fill(Segment s, int from, int to) {
            for (int slot = from; slot < to; slot++) {
                for (int g = 0; g < kvHeads; g++) {
                    for (int e = 0; e < headDim; e++) {
                        int at = (slot * kvHeads + g) * headDim + e;
                        s.keys[at] = value(s.id, slot, g, e, 0);
                        s.values[at] = value(s.id, slot, g, e, 1);
                    }
                }
            }
        }

        /** Segment s's descriptor (segments are described in another order than their index, rows in another still). */
        int descOf(int s) {
            return (s + 1) % segments.size();
        }

        int rowOf(int p) {
            return segments.size() - 1 - p;
        }

        void steps(int steps) {
            int n = segments.size();
            selected = gpu.alloc(4L * n * heads * maxK);
            desc = gpu.alloc(4L * n * SparseRowDescriptor.FIELDS);
            int[] seg = new int[n];
            for (int s = 0; s < n; s++) seg[rowOf(descOf(s))] = s;
            segOfRow = upload(seg);
            stats = upload(new long[2]);
            storeK = gpu.alloc(8L * n);
            storeV = gpu.alloc(8L * n);
            cacheK = gpu.alloc(8L * n);
            cacheV = gpu.alloc(8L * n);
            index = gpu.alloc(8L * n);
            for (int t = 0; t < steps; t++) step(t);
            gpu.synchronize();   // (a failed step leaves its blocks to the runtime: a kernel's fault is not masked)
            for (Segment s : segments) {
                if (s.cache != null) s.cache.run();
                gpu.freeHost(s.hostK, 2L * s.keys.length);
                gpu.freeHost(s.hostV, 2L * s.values.length);
            }
            for (int i = 0; i < retired.size(); i++) {
                for (CUdeviceptr p : retired.get(i)) gpu.freeHost(p, retiredBytes.get(i));
            }
        }

        /** The store of s grows to {@code capacity} slots, its rows kept at their slots (a copy, host to host). */
        void growStore(Segment s, int capacity) {
            int old = s.cap;
            long oldBytes = 2L * old * kvDim, bytes = 2L * capacity * kvDim;
            s.keys = Arrays.copyOf(s.keys, capacity * kvDim);
            s.values = Arrays.copyOf(s.values, capacity * kvDim);
            fill(s, old, capacity);
            CUdeviceptr k = gpu.allocHost(bytes), v = gpu.allocHost(bytes);
            cuMemcpy(k, s.hostK, oldBytes);
            cuMemcpy(v, s.hostV, oldBytes);
            toPinned(k.withByteOffset(oldBytes), s.keys, old * kvDim, capacity * kvDim);
            toPinned(v.withByteOffset(oldBytes), s.values, old * kvDim, capacity * kvDim);
            short[] poison = new short[old * kvDim];
            Arrays.fill(poison, (short) -1);
            toPinned(s.hostK, poison, 0, poison.length);   // a row read from the old block shows
            toPinned(s.hostV, poison, 0, poison.length);
            retired.add(new CUdeviceptr[]{s.hostK, s.hostV});
            retiredBytes.add(oldBytes);
            s.hostK = k;
            s.hostV = v;
            s.cap = capacity;
            if (!s.served) return;
            CUdeviceptr ix = s.cache.index(0);
            long before = ix == null ? 0 : placeOfPointer(downloadInts(ix, RowCacheKernels.headerInts(kvHeads)));
            s.cache.storeGrew(capacity);
            if (ix != null) {
                long after = placeOfPointer(downloadInts(ix, RowCacheKernels.headerInts(kvHeads)));
                assertNotEquals(before, after, "storeGrew puts the larger placeOf in the index");
            }
        }

        /**
         * k distinct slots of s's store for kv head g: a random share of the step before's selection, some of the
         * three before it, the rest fresh; in random order.
         */
        int[] draw(Segment s, int g, int k) {
            ArrayDeque<int[]> past = s.history.get(g);
            Set<Integer> pick = new LinkedHashSet<>();
            List<Integer> last = new ArrayList<>(), older = new ArrayList<>();
            int age = 0;
            for (int[] sel : past) {
                for (int x : sel) (age == 0 ? last : older).add(x);
                age++;
            }
            Collections.shuffle(last, r);
            int reuse = (int) (r.nextDouble() * Math.min(k, last.size()));
            for (int i = 0; i < reuse; i++) pick.add(last.get(i));
            while (pick.size() < k) {
                pick.add(!older.isEmpty() && r.nextInt(3) == 0 ? older.get(r.nextInt(older.size())) : r.nextInt(s.cap));
            }
            List<Integer> list = new ArrayList<>(pick);
            Collections.shuffle(list, r);
            int[] out = list.stream().mapToInt(Integer::intValue).toArray();
            past.addFirst(out);
            if (past.size() > 4) past.removeLast();
            return out;
        }

        void step(int t) {
            for (int[] e : growths) if (e[0] == t) growStore(segments.get(e[1]), e[2]);
            int n = segments.size(), fields = SparseRowDescriptor.FIELDS, group = heads / kvHeads;
            int[] host = new int[n * heads * maxK];
            for (int i = 0; i < host.length; i++) host[i] = r.nextInt();   // garbage the kernel must not touch
            int[] sp = new int[n * fields];
            long[] sk = new long[n], sv = new long[n], ck = new long[n], cv = new long[n], ix = new long[n];
            int[][] before = new int[n][];
            for (Segment s : segments) {
                int p = descOf(s.id), budget = s.budget.applyAsInt(t), cand = s.candidates.applyAsInt(t);
                s.k = Math.max(0, Math.min(budget, cand));
                assertTrue(s.k <= maxK && 2 * s.k <= s.cap, "the test's sizes");
                new SparseRowDescriptor(rowOf(p), cand, budget, 0, 0, 1, 0, 16, s.cap, true, 1).writeTo(sp, p * fields);
                for (int g = 0; g < kvHeads; g++) {
                    s.slots[g] = draw(s, g, s.k);
                    System.arraycopy(s.slots[g], 0, host, (p * heads + g * group) * maxK, s.k);
                }
                sk[s.id] = address(s.hostK);
                sv[s.id] = address(s.hostV);
                if (!s.served) continue;
                int old = s.cache.places(0);
                assertTrue(s.cache.ensurePlaces(0, s.k), "step " + t + ": " + s.k + " rows");
                int now = s.cache.places(0);
                assertTrue(now >= RowCache.places(factor, s.k) && now % CudaRowCache.GRANULE == 0 && now >= old,
                        "step " + t + ": " + now + " places allocated for " + s.k + " rows");
                if (now > old) {   // the new places poisoned: a row the kernel did not copy shows
                    long from = 2L * old * kvDim, count = (long) (now - old) * kvDim;
                    cuMemsetD16(s.cache.keys(0).withByteOffset(from), (short) -1, count);
                    cuMemsetD16(s.cache.values(0).withByteOffset(from), (short) -1, count);
                }
                before[s.id] = downloadInts(s.cache.index(0), (int) RowCacheKernels.indexInts(kvHeads, now));
                checkIndex(s, before[s.id], "step " + t + ", before (CudaRowCache's allocation)");
                ck[s.id] = address(s.cache.keys(0));
                cv[s.id] = address(s.cache.values(0));
                ix[s.id] = address(s.cache.index(0));
            }
            writeTable(storeK, sk);
            writeTable(storeV, sv);
            writeTable(cacheK, ck);
            writeTable(cacheV, cv);
            writeTable(index, ix);
            cuMemcpyHtoD(selected, Pointer.to(host), 4L * host.length);
            cuMemcpyHtoD(desc, Pointer.to(sp), 4L * sp.length);
            RowCacheKernels.serve(gpu, n, selected, storeK, storeV, cacheK, cacheV, index, segOfRow, desc, heads,
                    kvHeads, headDim, maxK, stats);
            int[] got = downloadInts(selected, host.length);
            boolean[] written = new boolean[host.length];
            for (Segment s : segments) {
                if (!s.served) continue;
                int p = descOf(s.id), places = s.cache.places(0);
                int[] after = downloadInts(s.cache.index(0), (int) RowCacheKernels.indexInts(kvHeads, places));
                short[] keys = downloadShorts(s.cache.keys(0), places * kvDim);
                short[] values = downloadShorts(s.cache.values(0), places * kvDim);
                for (int g = 0; g < kvHeads; g++) {
                    String what = "step " + t + ", segment " + s.id + ", kv head " + g + ", k " + s.k;
                    int ring = RowCache.places(factor, s.k);
                    if (s.spec[g] == null) s.spec[g] = new RowCache(Math.max(1, ring));
                    s.spec[g].growTo(ring);
                    int hits = s.spec[g].serve(s.slots[g]);
                    s.model[g].growTo(ring);
                    int[] want = s.model[g].serve(s.slots[g]);
                    assertEquals(hits, s.model[g].hits, what + ": the test's ring against RowCache");
                    assertEquals(s.spec[g].slots(), s.model[g].owner.length, what + ": the test's ring's size");
                    assertEquals(s.spec[g].size(), s.model[g].placeOf.size(), what + ": the test's ring's rows");
                    // the misses the device had: the slots no place held before the step
                    Set<Integer> held = new HashSet<>();
                    int header = RowCacheKernels.headerInts(kvHeads);
                    for (int c = 0; c < s.cache.places(0); c++) held.add(before[s.id][header + c * kvHeads + g]);
                    int misses = 0;
                    for (int slot : s.slots[g]) if (!held.contains(slot)) misses++;
                    assertEquals(s.k - hits, misses, what + ": misses");
                    asked += s.k;
                    missed += s.k - hits;
                    int first = (p * heads + g * group) * maxK, size = s.model[g].owner.length;
                    for (int i = 0; i < s.k; i++) {
                        int c = got[first + i], slot = s.slots[g][i], e = i;
                        written[first + i] = true;
                        assertEquals(want[i], c, () -> what + ": the place of entry " + e + " (slot " + slot + ")");
                        assertTrue(c >= 0 && c < size, () -> what + ": place " + c + " of a ring of " + size);
                        assertRow(s, keys, values, c, g, slot, what + ": entry " + i);
                    }
                    if (everyPlace) {
                        assertEquals(s.k, size, what + ": a factor of 1");
                        int[] sorted = Arrays.copyOfRange(got, first, first + s.k);
                        Arrays.sort(sorted);
                        assertArrayEquals(IntStream.range(0, s.k).toArray(), sorted, what + ": every place read");
                    }
                    for (int c = 0; c < size; c++) {   // every row held, not only this step's
                        int slot = s.model[g].owner[c];
                        if (slot >= 0) assertRow(s, keys, values, c, g, slot, what + ": place " + c);
                    }
                }
                checkIndex(s, after, "step " + t + ", after");
            }
            for (int i = 0; i < host.length; i++) {
                int e = i;
                if (!written[i]) assertEquals(host[i], got[i], () -> "step " + t + ": entry " + e + " was written");
            }
            long[] st = new long[2];
            gpu.synchronize();
            cuMemcpyDtoH(Pointer.to(st), stats, 16);
            assertArrayEquals(new long[]{asked, missed}, st, "step " + t + ": rows asked and missed");
        }

        /** The cached key and value rows of kv head g at place c are the store's rows of {@code slot}. */
        void assertRow(Segment s, short[] keys, short[] values, int c, int g, int slot, String what) {
            int from = (slot * kvHeads + g) * headDim, at = (c * kvHeads + g) * headDim;
            assertTrue(Arrays.equals(keys, at, at + headDim, s.keys, from, from + headDim),
                    () -> what + ": the key row at place " + c + " is not slot " + slot + "'s");
            assertTrue(Arrays.equals(values, at, at + headDim, s.values, from, from + headDim),
                    () -> what + ": the value row at place " + c + " is not slot " + slot + "'s");
        }

        /** The device's index is the model's: its fields, each kv head's hand, the owners (-1 past the ring). */
        void checkIndex(Segment s, int[] index, String what) {
            int places = s.cache.places(0), header = RowCacheKernels.headerInts(kvHeads);
            int size = s.model[0].owner.length;
            what += ", segment " + s.id;
            assertEquals(places, index[RowCacheKernels.ALLOCATED], what + ": places allocated");
            assertEquals(size, index[RowCacheKernels.PLACES], what + ": the ring's size");
            assertEquals(factor256, index[RowCacheKernels.FACTOR], what + ": F in 256ths");
            assertNotEquals(0L, placeOfPointer(index), what + ": placeOf");
            String where = what;
            for (int g = 0; g < kvHeads; g++) {
                assertEquals(s.model[g].hand, index[RowCacheKernels.HAND + g], what + ": kv head " + g + "'s hand");
                for (int c = 0; c < places; c++) {
                    int want = c < size ? s.model[g].owner[c] : -1, place = c, head = g;
                    assertEquals(want, index[header + c * kvHeads + g],
                            () -> where + ": owner of place " + place + ", kv head " + head);
                }
            }
        }

        /** The run had hits, misses, evictions and hands that wrapped (else it tested less than it says). */
        void assertExercised() {
            long evictions = 0, wraps = 0;
            for (Segment s : segments) {
                for (Ring m : s.model) {
                    evictions += m.evictions;
                    wraps += m.wraps;
                }
            }
            assertTrue(missed > 0 && missed < asked, "hits and misses: " + missed + " of " + asked + " missed");
            assertTrue(evictions > 0 && wraps > 0, evictions + " evictions, " + wraps + " wraps");
        }
    }
}
