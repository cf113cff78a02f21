package io.dsflow.engine.cuda;

import io.dsflow.engine.model.DType;
import io.dsflow.engine.model.RopeConfig;
import jcuda.driver.CUdeviceptr;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.util.Random;
import java.util.stream.IntStream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * label_append.cu's appends against what kv/SparseKvCache stores: ds's label_append, and dspp's kv_label_append_rope
 * against kv_append_rope then label_append.
 */
class LabelAppendKernelsTest extends KernelTestSupport {
    /**
     * label_append writes what kv/SparseKvCache stores: fp16 labels, or int8 values with the row's fp16 scale
     * (fp16(max |k_c| / 127), values rounded half up and clamped), or int4 values two a byte (low nibble first, a row
     * of odd r padded with a 0 nibble) with the row's scale (max / 7, clamped to +-7), bit for bit, a label row a query
     * head (segment 1) or a kv head (segment 0: the group's heads share their channels); and with host placement the
     * ring of sinks and window: a prefill of 150 rows (S = 4, W = 16, so the window wrapped around) leaves the sinks
     * and the last 16 keys and values in their ring slots, whichever rows' blocks ran last.
     */
    @ParameterizedTest(name = "{0}-bit labels of {1} channels")
    @CsvSource({"8, 16", "4, 16", "8, 13", "4, 13", "4, 32"})
    void labelAppendWritesLabelsScalesAndRingAsTheCpuStoresThem(int bits, int r) {
        Random rnd = new Random(31 + bits + r);
        int heads = 8, kvHeads = 2, hd = 32, stride = (heads + 2 * kvHeads) * hd, sinks = 4, window = 16;
        int prefill = 150, rows = prefill + 1, cap0 = 160, cap1 = 64, decodeSlot = 40;
        float[] qkv = random(rnd, rows * stride, 2);
        int[] seg = new int[rows], slot = new int[rows];
        for (int i = 0; i < prefill; i++) slot[i] = i;
        seg[prefill] = 1;
        slot[prefill] = decodeSlot;
        int group = heads / kvHeads;
        int[] labelGroup = {group, 1};
        int[][] channels = new int[2][];
        for (int sg = 0; sg < 2; sg++) channels[sg] = labelRowChannels(rnd, heads, r, hd, labelGroup[sg]);
        // segment 0: 8- or 4-bit labels a kv head and a ring; segment 1: 16-bit labels a query head, no ring
        int rows0 = heads / group, rowBytes0 = (int) labelValueBytes(bits, r);
        CUdeviceptr lab0 = uploadBytes(new byte[cap0 * rows0 * rowBytes0]), scales0 = upload(new int[rows0 * cap0 / 2]);
        CUdeviceptr lab1 = uploadBytes(new byte[cap1 * heads * r * 2]);
        CUdeviceptr ringK = upload(new int[(sinks + window) * kvHeads * hd / 2]);
        CUdeviceptr ringV = upload(new int[(sinks + window) * kvHeads * hd / 2]);
        CUdeviceptr segInfo = uploadSegments(new SegmentDescriptor(r, bits, sinks, window, cap0, labelGroup[0]),
                new SegmentDescriptor(r, 16, 0, 0, cap1, labelGroup[1]));
        LabelAppendKernels.labelAppend(gpu, rows, r, upload(qkv), pointerTable(lab0, lab1),
                pointerTable(upload(channels[0]), upload(channels[1])), pointerTable(scales0, null),
                pointerTable(ringK, null), pointerTable(ringV, null), upload(seg), upload(slot),
                upload(new int[]{prefill - 1, prefill}), segInfo, heads, kvHeads, hd, stride);
        byte[] narrow = downloadBytes(lab0, (long) cap0 * rows0 * rowBytes0);
        short[] scales = downloadShorts(scales0, rows0 * cap0), half = downloadShorts(lab1, cap1 * heads * r);
        for (int row = 0; row < rows; row++) {
            for (int h = 0; h < heads; h++) {
                int sg = seg[row], g = h / (heads / kvHeads);
                float[] k = new float[r];
                float max = 0;
                for (int i = 0; i < r; i++) {
                    k[i] = qkv[row * stride + (heads + g) * hd + channels[sg][h * r + i]];
                    max = Math.max(max, Math.abs(k[i]));
                }
                if (sg == 1) {
                    for (int i = 0; i < r; i++) {
                        assertEquals(DType.floatToHalf(k[i]), half[slot[row] * heads * r + h * r + i],
                                "fp16 label, head " + h + " channel " + i);
                    }
                    continue;
                }
                int lr = h / group, levels = bits == 8 ? 127 : 7;   // the head's label row: its kv head's
                short scale = DType.floatToHalf(max / levels);
                assertEquals(scale, scales[lr * cap0 + slot[row]], "scale of slot " + slot[row] + " head " + h);
                float sc = DType.halfToFloat(scale);
                int at = (slot[row] * rows0 + lr) * rowBytes0;   // the row's first byte
                for (int i = 0; i < r; i++) {
                    int want = sc == 0 ? 0 : (int) Math.max(-levels, Math.min(levels, Math.floor(k[i] / sc + 0.5f)));
                    int got = bits == 8 ? narrow[at + i] : nibble(narrow[at + i / 2], i % 2);
                    assertEquals(want, got, bits + "-bit label " + i + " of slot " + slot[row] + " head " + h);
                }
                if (bits == 4 && r % 2 == 1) {
                    assertEquals(0, nibble(narrow[at + r / 2], 1), "the padding nibble of slot " + slot[row]);
                }
            }
        }
        float[] ringKeys = downloadBf16(ringK, (sinks + window) * kvHeads * hd);
        float[] ringValues = downloadBf16(ringV, ringKeys.length);
        for (int p = 0; p < prefill; p++) {
            if (p >= sinks && p < prefill - window) continue;
            int at = p < sinks ? p : sinks + (p - sinks) % window;
            for (int c = 0; c < kvHeads * hd; c++) {
                assertEquals(bf(qkv[p * stride + heads * hd + c]), ringKeys[at * kvHeads * hd + c],
                        "ring key of position " + p);
                assertEquals(bf(qkv[p * stride + (heads + kvHeads) * hd + c]), ringValues[at * kvHeads * hd + c],
                        "ring value of position " + p);
            }
        }
    }

    /**
     * dspp's one append kernel (kv_label_append_rope) writes what kv_append_rope then label_append write (the latter
     * checked against the CPU above), byte for byte: rotated q and k, the stores, labels, 8- or 4-bit scales and ring
     * slots, for three segments (8- or 4-bit labels a kv head with a ring, a prefill whose window wrapped around;
     * 16-bit labels a query head; a dense cache, whose rows get no labels), at head sizes 32 (a block of 16 pairs in a
     * warp) and 128, with 16 label channels and 13 (4-bit rows of odd r: a padding nibble a row); the first segment's
     * label rows a kv head or a query head (the dspp default: a key block writes its four rows at once where they fit
     * its threads, at head size 128, else one after another; 8, 16 or 32 lanes a row by its width).
     */
    @ParameterizedTest(name = "{0}-bit labels of {1} channels, a label row for {2} heads")
    @CsvSource({"8, 16, 4", "4, 16, 4", "4, 13, 4", "8, 16, 1", "4, 16, 1", "4, 13, 1", "4, 32, 4", "8, 8, 1"})
    void fusedAppendWritesWhatRopeAppendThenLabelAppendWrite(int bits, int r, int group) {
        for (int hd : new int[]{32, 128}) {
            Random rnd = new Random(37 + hd + bits + r + group);
            int heads = 8, kvHeads = 2, stride = (heads + 2 * kvHeads) * hd;
            int kvDim = kvHeads * hd, sinks = 4, window = 16, prefill = 150, rows = prefill + 2, cap = 160;
            float[] qkv = random(rnd, rows * stride, 2);
            int[] seg = new int[rows], slot = new int[rows], pos = new int[rows];
            for (int i = 0; i < prefill; i++) slot[i] = pos[i] = i;
            seg[prefill] = 1;
            slot[prefill] = pos[prefill] = 40;
            seg[prefill + 1] = 2;
            slot[prefill + 1] = pos[prefill + 1] = 77;
            int[][] channels = {labelRowChannels(rnd, heads, r, hd, group), labelRowChannels(rnd, heads, r, hd, 1)};
            SegmentDescriptor[] segments = {new SegmentDescriptor(r, bits, sinks, window, cap, group),
                    new SegmentDescriptor(r, 16, 0, 0, cap, 1), new SegmentDescriptor(0, 0, 0, 0, cap, 1)};
            float[] inv = RopeConfig.defaults(500000).inverseFrequencies(hd);
            long labelBytes0 = cap * (heads / group) * labelValueBytes(bits, r);
            long labelBytes1 = (long) cap * heads * r * 2;
            long scaleBytes = (long) (heads / group) * cap * 2, ringBytes = (long) (sinks + window) * kvDim * 2;
            long storeBytes = (long) cap * kvDim * 2;
            byte[][][] outputs = new byte[2][][];
            for (int fused = 0; fused < 2; fused++) {
                CUdeviceptr dq = upload(qkv);
                CUdeviceptr[] k = new CUdeviceptr[3], v = new CUdeviceptr[3];
                for (int sg = 0; sg < 3; sg++) {
                    k[sg] = upload(new int[(int) (storeBytes / 4)]);
                    v[sg] = upload(new int[(int) (storeBytes / 4)]);
                }
                CUdeviceptr lab0 = uploadBytes(new byte[(int) labelBytes0]);
                CUdeviceptr lab1 = uploadBytes(new byte[(int) labelBytes1]);
                CUdeviceptr scales0 = upload(new int[(int) (scaleBytes / 4)]);
                CUdeviceptr ringK = upload(new int[(int) (ringBytes / 4)]);
                CUdeviceptr ringV = upload(new int[(int) (ringBytes / 4)]);
                CUdeviceptr kt = pointerTable(k), vt = pointerTable(v), lt = pointerTable(lab0, lab1, null);
                CUdeviceptr ct = pointerTable(upload(channels[0]), upload(channels[1]), null);
                CUdeviceptr st = pointerTable(scales0, null, null);
                CUdeviceptr rkt = pointerTable(ringK, null, null), rvt = pointerTable(ringV, null, null);
                CUdeviceptr dseg = upload(seg), dslot = upload(slot), dpos = upload(pos), dinv = upload(inv);
                CUdeviceptr last = upload(new int[]{prefill - 1, prefill, prefill + 1});
                CUdeviceptr dinfo = uploadSegments(segments);
                if (fused == 1) {
                    LabelAppendKernels.kvLabelAppendRope(gpu, rows, dq, dpos, dinv, kt, vt, lt, ct, st, rkt, rvt, dseg,
                            dslot, last, dinfo, heads, kvHeads, hd, stride);
                } else {
                    KvAppendKernels.kvAppendRope(gpu, rows, dq, dpos, dinv, kt, vt, dseg, dslot, heads, kvHeads, hd,
                            stride);
                    LabelAppendKernels.labelAppend(gpu, rows, r, dq, lt, ct, st, rkt, rvt, dseg, dslot, last, dinfo,
                            heads, kvHeads, hd, stride);
                }
                CUdeviceptr[] bufs = {dq, k[0], v[0], k[1], v[1], k[2], v[2], lab0, lab1, scales0, ringK, ringV};
                long[] sizes = {(long) rows * stride * 4, storeBytes, storeBytes, storeBytes, storeBytes, storeBytes,
                        storeBytes, labelBytes0, labelBytes1, scaleBytes, ringBytes, ringBytes};
                outputs[fused] = new byte[bufs.length][];
                for (int b = 0; b < bufs.length; b++) outputs[fused][b] = downloadBytes(bufs[b], sizes[b]);
            }
            String[] names = {"q/k/v rows", "keys 0", "values 0", "keys 1", "values 1", "keys 2 (dense)",
                    "values 2 (dense)", bits + "-bit labels", "16-bit labels", bits + "-bit scales", "ring keys",
                    "ring values"};
            for (int b = 0; b < names.length; b++) {
                assertArrayEquals(outputs[0][b], outputs[1][b], "head size " + hd + ": " + names[b]);
            }
            // and they were written: the decode rows' keys, labels and the ring hold numbers
            assertTrue(IntStream.range(0, outputs[1][7].length).anyMatch(i -> outputs[1][7][i] != 0),
                    bits + "-bit labels written");
            assertTrue(IntStream.range(0, outputs[1][8].length).anyMatch(i -> outputs[1][8][i] != 0),
                    "16-bit labels written");
            assertTrue(IntStream.range(0, outputs[1][10].length).anyMatch(i -> outputs[1][10][i] != 0),
                    "ring written");
            assertTrue(IntStream.range(0, outputs[1][5].length).anyMatch(i -> outputs[1][5][i] != 0),
                    "the dense segment's key stored");
        }
    }
}
