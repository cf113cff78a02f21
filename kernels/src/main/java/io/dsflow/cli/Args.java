package io.dsflow.cli;

import io.dsflow.engine.BackendName;
import io.dsflow.engine.DsflowException;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Command-line options of one subcommand: {@code --name value}, {@code --name=value}, repeatable options and flags.
 * Anything unknown, a missing value or a malformed number is a {@link UsageException} naming the option.
 */
public final class Args {
    private final Map<String, List<String>> values = new LinkedHashMap<>();
    /** The subcommand, for messages. */
    private final String command;

    public static Set<String> union(Set<String> a, Set<String> b) {
        java.util.Set<String> u = new java.util.HashSet<>(a);
        u.addAll(b);
        return u;
    }

    private Args(String command) {
        this.command = command;
    }

    /**
     * @param valued options that take a value
     * @param flags  options that take none
     * @throws HelpRequested where {@code --help} or {@code -h} stands where an option may (not as another's value),
     *                       whatever else is on the line
     */
    public static Args parse(String command, String[] argv, int from, Set<String> valued, Set<String> flags) {
        for (int i = from; i < argv.length; i++) {
            if (argv[i].equals("--help") || argv[i].equals("-h")) throw new HelpRequested(command);
            if (argv[i].startsWith("--") && valued.contains(argv[i].substring(2))) i++; // its value, whatever it reads
        }
        Args a = new Args(command);
        for (int i = from; i < argv.length; i++) {
            String arg = argv[i];
            if (!arg.startsWith("--")) throw new UsageException(command + ": unexpected argument '" + arg + "'");
            String name = arg.substring(2);
            String value = null;
            int eq = name.indexOf('=');
            if (eq >= 0) {
                value = name.substring(eq + 1);
                name = name.substring(0, eq);
            }
            if (flags.contains(name)) {
                if (value != null) throw new UsageException(command + ": --" + name + " takes no value");
                a.values.computeIfAbsent(name, k -> new ArrayList<>()).add("true");
            } else if (valued.contains(name)) {
                if (value == null) {
                    if (i + 1 >= argv.length) throw new UsageException(command + ": --" + name + " needs a value");
                    value = argv[++i];
                }
                a.values.computeIfAbsent(name, k -> new ArrayList<>()).add(value);
            } else {
                throw new UsageException(command + ": unknown option --" + name);
            }
        }
        return a;
    }

    public boolean has(String name) {
        return values.containsKey(name);
    }

    /** The option's value; given more than once is an error (use {@link #all} for repeatable ones). */
    public String get(String name, String fallback) {
        List<String> v = values.get(name);
        if (v == null) return fallback;
        if (v.size() > 1) throw new UsageException("--" + name + " given " + v.size() + " times");
        return v.get(0);
    }

    /**
     * --backend as given, else {@code fallback}, checked ({@link BackendName}): a bad name is a usage error before
     * anything loads.
     */
    public String getBackend(String fallback) {
        String v = get("backend", fallback);
        try {
            BackendName.parse(v);
        } catch (DsflowException e) {
            throw new UsageException(command + ": --" + e.getMessage());   // "run: --backend must be cpu, cuda, ..."
        }
        return v;
    }

    public String require(String name) {
        String v = get(name, null);
        if (v == null) throw new UsageException("--" + name + " is required");
        return v;
    }

    public List<String> all(String name) {
        return values.getOrDefault(name, List.of());
    }

    public int getInt(String name, int fallback) {
        String v = get(name, null);
        if (v == null) return fallback;
        try {
            return Integer.parseInt(v.trim());
        } catch (NumberFormatException e) {
            throw new UsageException("--" + name + " must be an integer, got '" + v + "'");
        }
    }

    public long getLong(String name, long fallback) {
        String v = get(name, null);
        if (v == null) return fallback;
        try {
            return Long.parseLong(v.trim());
        } catch (NumberFormatException e) {
            throw new UsageException("--" + name + " must be an integer, got '" + v + "'");
        }
    }

    public double getDouble(String name, double fallback) {
        String v = get(name, null);
        if (v == null) return fallback;
        try {
            return Double.parseDouble(v.trim());
        } catch (NumberFormatException e) {
            throw new UsageException("--" + name + " must be a number, got '" + v + "'");
        }
    }

    /** A comma-separated list of integers ("1,2,3"). */
    public int[] getIntList(String name) {
        String v = get(name, null);
        if (v == null) return null;
        String[] parts = v.split(",");
        int[] out = new int[parts.length];
        for (int i = 0; i < parts.length; i++) {
            try {
                out[i] = Integer.parseInt(parts[i].trim());
            } catch (NumberFormatException e) {
                throw new UsageException("--" + name + " must be comma-separated integers, got '" + parts[i].trim() + "'");
            }
        }
        return out;
    }
}
