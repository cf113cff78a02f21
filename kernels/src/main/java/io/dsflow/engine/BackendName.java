package io.dsflow.engine;

import java.util.Locale;

/**
 * A backend as the command line ({@code --backend}) and the job's config ({@code backend=}) name it, checked in one
 * place: {@code cpu}, {@code cuda}, {@code auto} (cuda where it is available, else cpu), or
 * {@code cpu:device-memory=SIZE}, the CPU backend with a GPU's memory budget, for testing admission and capacity
 * planning: the forward pass and every cache stay the CPU's (the same arithmetic, the caches on the JVM heap), but the
 * backend counts the caches as a GPU keeps them: against SIZE bytes of device memory, and under placement=host the
 * sparse layers' keys and values as pinned host memory (the decode operator's host budget, Flink managed memory; see
 * {@code CpuBackend}). SIZE is a whole number of bytes, or of KiB, MiB or GiB ({@code 64MiB}; k, kb, m, mb, g, gb are
 * binary units too, as Flink's memory sizes are).
 *
 * @param kind         which backend
 * @param deviceMemory {@code cpu:device-memory}'s bytes; -1 when not given (the CPU's caches count against the
 *                     caller's budget, Flink managed memory, as the JVM's memory)
 */
public record BackendName(Kind kind, long deviceMemory) {
    public enum Kind { CPU, CUDA, AUTO }

    public BackendName {
        if (deviceMemory != -1 && (kind != Kind.CPU || deviceMemory < 1)) {
            throw new IllegalArgumentException("a device memory is the cpu's, positive, or -1: " + kind + " "
                    + deviceMemory);
        }
    }

    private static final String DEVICE_MEMORY = "device-memory";

    /**
     * Parses a backend name. A bad one is a {@link DsflowException} whose message is one line starting "backend ", so
     * that callers prefix where it came from ("config ", "run: --"): "backend must be cpu, cuda, auto or
     * cpu:device-memory=SIZE, got 'tpu'".
     */
    public static BackendName parse(String name) {
        String t = name == null ? "" : name.trim();
        int colon = t.indexOf(':');
        Kind kind = switch ((colon < 0 ? t : t.substring(0, colon)).toLowerCase(Locale.ROOT)) {
            case "cpu" -> Kind.CPU;
            case "cuda" -> Kind.CUDA;
            case "auto" -> Kind.AUTO;
            default -> throw new DsflowException("backend must be cpu, cuda, auto or cpu:device-memory=SIZE, got '"
                    + name + "'");
        };
        if (colon < 0) return new BackendName(kind, -1);
        if (kind != Kind.CPU) {
            // a GPU's budget is its own free memory; a number beside it would be a second truth
            throw new DsflowException("backend " + kind.name().toLowerCase(Locale.ROOT) + " takes no options (only"
                    + " cpu:device-memory=SIZE does), got '" + name + "'");
        }
        String option = t.substring(colon + 1), key = DEVICE_MEMORY + "=";
        if (!option.regionMatches(true, 0, key, 0, key.length())) {
            throw new DsflowException("backend cpu takes one option, device-memory=SIZE, got '" + name + "'");
        }
        String size = option.substring(key.length());
        long bytes = bytes(size);
        if (bytes < 1) {
            throw new DsflowException("backend cpu:device-memory must be a size such as 64MiB, got '" + size + "'");
        }
        return new BackendName(kind, bytes);
    }

    public boolean isCpu() {
        return kind == Kind.CPU;
    }

    /** Bytes of a size such as 4096, 512KiB, 64MiB or 2g; -1 if it is none. */
    private static long bytes(String size) {
        int digits = 0;
        while (digits < size.length() && size.charAt(digits) >= '0' && size.charAt(digits) <= '9') digits++;
        if (digits == 0 || digits > 18) return -1;
        long shift = switch (size.substring(digits).trim().toLowerCase(Locale.ROOT)) {
            case "", "b" -> 0;
            case "k", "kb", "kib" -> 10;
            case "m", "mb", "mib" -> 20;
            case "g", "gb", "gib" -> 30;
            default -> -1;
        };
        long n = Long.parseLong(size.substring(0, digits));
        if (shift < 0 || n > Long.MAX_VALUE >> shift) return -1;
        return n << shift;
    }

    /** The name in the form {@link #parse} reads (the device memory in bytes). */
    @Override
    public String toString() {
        String base = kind.name().toLowerCase(Locale.ROOT);
        return deviceMemory > 0 ? base + ":" + DEVICE_MEMORY + "=" + deviceMemory : base;
    }
}
