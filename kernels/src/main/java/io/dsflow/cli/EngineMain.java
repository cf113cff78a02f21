package io.dsflow.cli;

import io.dsflow.engine.DsflowException;

import java.io.PrintStream;

/**
 * The engine's commands without Flink or Kafka (generate, calibrate, eval, bench, loadgen): the entry point of the lean
 * jar that travels to a GPU host. The full command line (io.dsflow.job.cli.Main in the job module) offers the same
 * commands and the streaming ones. Errors are one line on stderr: exit 2 for a bad command line, 1 otherwise.
 */
public final class EngineMain {
    private EngineMain() {
    }

    public static void main(String[] args) {
        System.exit(run(args, System.out, System.err));
    }

    public static final String USAGE = GenerateCommand.USAGE + "\n  " + CalibrateCommand.USAGE + "\n  "
            + EvalCommand.USAGE + "\n  " + BenchCommand.USAGE + "\n  " + LoadgenCommand.USAGE;

    public static int run(String[] args, PrintStream out, PrintStream err) {
        if (args.length == 0 || args[0].equals("--help") || args[0].equals("help")) {
            (args.length == 0 ? err : out).println("usage: dsflow-engine COMMAND [OPTIONS]\n\ncommands:\n  " + USAGE);
            return args.length == 0 ? 2 : 0;
        }
        return report(() -> {
            Integer r = dispatch(args, out);
            if (r == null) throw new UsageException("unknown command '" + args[0] + "' (try: help)");
            return r;
        }, err);
    }

    /**
     * Runs an engine command; null if args[0] names none. {@code --help} among its options prints its line of
     * {@link #USAGE} on stdout instead, exit 0.
     */
    public static Integer dispatch(String[] args, PrintStream out) throws Exception {
        try {
            return command(args, out);
        } catch (HelpRequested h) {
            out.println("usage: dsflow " + usageLine(args[0], USAGE));
            return 0;
        }
    }

    private static Integer command(String[] args, PrintStream out) throws Exception {
        return switch (args[0]) {
            case "generate" -> GenerateCommand.run(args, out);
            case "calibrate" -> CalibrateCommand.run(args, out);
            case "eval" -> EvalCommand.run(args, out);
            case "bench" -> BenchCommand.run(args, out);
            case "loadgen" -> LoadgenCommand.run(args, out);
            default -> null;
        };
    }

    /** The line of a usage text (one command a line) that describes {@code command}. */
    public static String usageLine(String command, String usage) {
        for (String line : usage.split("\n")) {
            if (line.strip().startsWith(command + " ")) return line.strip();
        }
        return command + " [OPTIONS]";
    }

    /** A command body that may fail. */
    public interface Body {
        int run() throws Exception;
    }

    /** Runs a command, turning failures into one line on stderr and an exit code. */
    public static int report(Body body, PrintStream err) {
        try {
            return body.run();
        } catch (UsageException e) {
            err.println("dsflow: " + oneLine(e.getMessage()));
            return 2;
        } catch (DsflowException e) {
            err.println("dsflow: error: " + oneLine(e.getMessage()));
            return 1;
        } catch (OutOfMemoryError e) {
            err.println("dsflow: error: out of heap memory (" + e.getMessage() + "); raise -Xmx through DSFLOW_JAVA_OPTS");
            return 1;
        } catch (Exception e) {
            // a failed job or I/O: the message and its root cause on one line (DSFLOW_DEBUG=1 adds the stack trace)
            Throwable root = e;
            while (root.getCause() != null && root.getCause() != root) root = root.getCause();
            if (root instanceof DsflowException) {
                err.println("dsflow: error: " + oneLine(root.getMessage()));
            } else {
                err.println("dsflow: error: " + oneLine(String.valueOf(e.getMessage()))
                        + (root != e ? " (cause: " + oneLine(String.valueOf(root)) + ")" : ""));
            }
            if (System.getenv("DSFLOW_DEBUG") != null) e.printStackTrace(err);
            return 1;
        }
    }

    static String oneLine(String message) {
        return String.valueOf(message).replace('\n', ' ').replace('\r', ' ');
    }
}
