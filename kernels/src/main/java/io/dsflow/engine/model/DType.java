package io.dsflow.engine.model;

import java.nio.ByteBuffer;

/** Element types of safetensors files that dsflow reads, and their conversion to float32. */
public enum DType {
    BF16(2), F16(2), F32(4);

    public final int bytes;

    DType(int bytes) {
        this.bytes = bytes;
    }

    public static DType of(String name, String where) {
        return switch (name) {
            case "BF16" -> BF16;
            case "F16" -> F16;
            case "F32" -> F32;
            default -> throw new ModelLoadException(where + ": dtype " + name + " is not supported (BF16, F16, F32)");
        };
    }

    /** Reads element {@code index} of a little-endian buffer as float32. */
    public float read(ByteBuffer buf, long index) {
        int at = Math.toIntExact(index * bytes);
        return switch (this) {
            case BF16 -> Float.intBitsToFloat((buf.getShort(at) & 0xffff) << 16);
            case F16 -> halfToFloat(buf.getShort(at));
            case F32 -> buf.getFloat(at);
        };
    }

    /** IEEE 754 binary16 to float32, exact (subnormals, infinities and NaN included). */
    public static float halfToFloat(short h) {
        int bits = h & 0xffff;
        int sign = (bits & 0x8000) << 16;
        int exp = (bits >>> 10) & 0x1f;
        int mant = bits & 0x3ff;
        if (exp == 0x1f) return Float.intBitsToFloat(sign | 0x7f800000 | (mant << 13));
        if (exp == 0) {
            float v = mant * 0x1p-24f; // subnormal: mant * 2^-24
            return sign != 0 ? -v : v;
        }
        return Float.intBitsToFloat(sign | ((exp + 112) << 23) | (mant << 13));
    }

    /** float32 to IEEE 754 binary16, rounding to nearest even (overflow to infinity, NaN kept). */
    public static short floatToHalf(float f) {
        int bits = Float.floatToRawIntBits(f);
        int sign = (bits >>> 16) & 0x8000;
        int exp = (bits >>> 23) & 0xff;
        int mant = bits & 0x7fffff;
        if (exp == 0xff) return (short) (sign | 0x7c00 | (mant != 0 ? 0x200 : 0));
        int e = exp - 127 + 15;
        if (e >= 0x1f) return (short) (sign | 0x7c00);
        if (e <= 0) {
            if (e < -10) return (short) sign;
            mant |= 0x800000;
            int shift = 14 - e;
            int half = mant >> shift;
            int rem = mant & ((1 << shift) - 1);
            int halfway = 1 << (shift - 1);
            if (rem > halfway || (rem == halfway && (half & 1) != 0)) half++;
            return (short) (sign | half);
        }
        int half = (e << 10) | (mant >> 13);
        int rem = mant & 0x1fff;
        if (rem > 0x1000 || (rem == 0x1000 && (half & 1) != 0)) half++;
        return (short) (sign | half);
    }

    /** x rounded to the nearest fp16 value. */
    public static float roundToHalf(float x) {
        return halfToFloat(floatToHalf(x));
    }
}
