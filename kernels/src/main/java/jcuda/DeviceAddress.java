package jcuda;

/**
 * The raw address a JCuda pointer holds (its native pointer plus byte offset), and the handle an object wraps. JCuda
 * keeps them protected; kernels that take tables of device pointers (one cache per sequence) and libraries called
 * outside JCuda (cuBLAS) need the numbers, so this shim sits in JCuda's package.
 */
public final class DeviceAddress {
    private DeviceAddress() {
    }

    public static long of(Pointer p) {
        return p.getNativePointer() + p.getByteOffset();
    }

    /** The handle a JCuda object wraps (a stream's CUstream, for libraries called outside JCuda). */
    public static long handle(NativePointerObject o) {
        return o.getNativePointer();
    }
}
