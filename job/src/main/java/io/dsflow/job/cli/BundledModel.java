package io.dsflow.job.cli;

import io.dsflow.cli.Args;
import io.dsflow.cli.UsageException;

import java.net.URISyntaxException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.CodeSource;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;

/**
 * Where the bundled demo model ({@code models/probe-retrieval}) is, wherever the command is started from: under
 * {@code $DSFLOW_HOME} (bin/dsflow sets it to the installation), then relative to the jar or classes folder this class
 * was loaded from ({@code job/target/dsflow.jar} or {@code job/target/classes}: two folders up), then the working
 * directory. The first folder holding a {@code config.json} wins; none is a one-line error naming where it looked.
 */
final class BundledModel {
    static final String RELATIVE = "models/probe-retrieval";

    private BundledModel() {
    }

    /** The folder {@code --model} names, else the bundled model's ({@link #locate}). */
    static Path modelDir(Args a, String command) {
        return a.has("model") ? Path.of(a.get("model", null)) : locate(command);
    }

    /** The bundled model's folder, or a {@link UsageException} naming the places looked in. */
    static Path locate(String command) {
        return locate(command, System.getenv("DSFLOW_HOME"), codeLocation(), Path.of(""));
    }

    static Path locate(String command, String home, Path code, Path workingDir) {
        Set<Path> candidates = new LinkedHashSet<>();
        if (home != null && !home.isBlank()) candidates.add(Path.of(home).resolve(RELATIVE));
        if (code != null) {
            // job/target/dsflow.jar or job/target/classes -> the project root is two folders above its folder
            Path dir = code.toAbsolutePath().getParent();
            for (int up = 0; up < 3 && dir != null; up++, dir = dir.getParent()) candidates.add(dir.resolve(RELATIVE));
        }
        candidates.add(workingDir.toAbsolutePath().resolve(RELATIVE));
        List<String> looked = new ArrayList<>();
        for (Path c : candidates) {
            Path normal = c.normalize();
            if (Files.isRegularFile(normal.resolve("config.json"))) return normal;
            looked.add(normal.toString());
        }
        throw new UsageException(command + ": the bundled model is not at " + String.join(", ", looked)
                + " (set DSFLOW_HOME to the dsflow folder, or give --model DIR)");
    }

    /** The jar or classes folder this class came from; null where the runtime does not say. */
    private static Path codeLocation() {
        try {
            CodeSource cs = BundledModel.class.getProtectionDomain().getCodeSource();
            return cs == null ? null : Path.of(cs.getLocation().toURI());
        } catch (URISyntaxException | RuntimeException e) {
            return null;
        }
    }
}
