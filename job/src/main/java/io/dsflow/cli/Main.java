package io.dsflow.cli;

import io.dsflow.engine.DsflowException;

import java.io.PrintStream;

/**
 * The dsflow command line (bin/dsflow, or java -jar job/target/dsflow.jar). Every error a user can cause is one line
 * on stderr and a non-zero exit: 2 for a bad command line, 1 for a bad model folder or request.
 */
public final class Main {
    private Main() {
    }

    public static void main(String[] args) {
        System.exit(run(args, System.out, System.err));
    }

    /** Runs a command; returns the process exit code. */
    public static int run(String[] args, PrintStream out, PrintStream err) {
        if (args.length == 0 || args[0].equals("--help") || args[0].equals("help")) {
            (args.length == 0 ? err : out).println(usage());
            return args.length == 0 ? 2 : 0;
        }
        try {
            return switch (args[0]) {
                case "generate" -> GenerateCommand.run(args, out);
                case "calibrate" -> CalibrateCommand.run(args, out);
                case "eval" -> EvalCommand.run(args, out);
                case "demo" -> DemoCommand.run(args, out);
                case "run" -> RunCommand.run(args, out);
                case "overhead" -> OverheadCommand.run(args, out);
                default -> throw new UsageException("unknown command '" + args[0] + "' (try: dsflow help)");
            };
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

    private static String oneLine(String message) {
        return String.valueOf(message).replace('\n', ' ').replace('\r', ' ');
    }

    static String usage() {
        return "usage: dsflow COMMAND [OPTIONS]\n\ncommands:\n  " + GenerateCommand.USAGE + "\n  "
                + CalibrateCommand.USAGE + "\n  " + EvalCommand.USAGE + "\n  " + DemoCommand.USAGE + "\n  "
                + RunCommand.USAGE + "\n  " + OverheadCommand.USAGE + "\n";
    }
}
