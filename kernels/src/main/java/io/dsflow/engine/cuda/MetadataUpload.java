package io.dsflow.engine.cuda;

import jcuda.driver.CUdeviceptr;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;

/**
 * A step's metadata on its way to the device: arrays are {@link #add}ed, then {@link #upload}ed end to end in one
 * asynchronous copy from pinned memory into the workspace's METADATA buffer (the u64 tables first, 8-byte aligned,
 * then the int arrays), after which each {@link Slot} knows its device address. The layout depends only on the arrays'
 * lengths, so a graph captured for a shape finds its inputs where it left them.
 */
final class MetadataUpload {

    /** Where one added array lands on the device (known after {@link #upload}). */
    static final class Slot {
        private final long[] table;
        private final int[] ints;
        private CUdeviceptr address;

        private Slot(long[] table, int[] ints) {
            this.table = table;
            this.ints = ints;
        }

        private long bytes() {
            return table != null ? 8L * table.length : 4L * ints.length;
        }

        CUdeviceptr address() {
            if (address == null) throw new IllegalStateException("the metadata is not uploaded yet");
            return address;
        }
    }

    private final List<Slot> tables = new ArrayList<>(), arrays = new ArrayList<>();

    /** A table of device addresses. */
    Slot add(long[] table) {
        Slot s = new Slot(table, null);
        tables.add(s);
        return s;
    }

    /** An int array. */
    Slot add(int[] ints) {
        Slot s = new Slot(null, ints);
        arrays.add(s);
        return s;
    }

    /** Copies every added array to the device (asynchronously on the main stream) and sets the slots' addresses. */
    void upload(CudaRuntime gpu, Workspace workspace) {
        long total = 0;
        for (Slot s : tables) total += s.bytes();
        for (Slot s : arrays) total += s.bytes();
        int bytes = Math.toIntExact(total);
        CUdeviceptr base = workspace.ensure(Workspace.Buffer.METADATA, bytes / 4 + 4);
        ByteBuffer b = gpu.staging(bytes);
        // bulk copies through views (the buffer's byte order): element puts cost a step hundreds of microseconds
        // until the JIT compiles them (bench rows are short)
        for (Slot s : tables) {
            s.address = base.withByteOffset(b.position());
            b.asLongBuffer().put(s.table);
            b.position(b.position() + 8 * s.table.length);
        }
        for (Slot s : arrays) {
            s.address = base.withByteOffset(b.position());
            b.asIntBuffer().put(s.ints);
            b.position(b.position() + 4 * s.ints.length);
        }
        gpu.uploadStaging(base, bytes);
    }
}
