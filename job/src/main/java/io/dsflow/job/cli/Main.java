package io.dsflow.job.cli;

import io.dsflow.cli.EngineMain;
import io.dsflow.cli.HelpRequested;
import io.dsflow.cli.UsageException;

import java.io.PrintStream;

/**
 * The dsflow command line (bin/dsflow, or java -jar job/target/dsflow.jar): the streaming commands (demo, run,
 * overhead) and the engine's (generate, calibrate, eval, bench; see {@link EngineMain}). Every error a user can cause
 * is one line on stderr and a non-zero exit: 2 for a bad command line, 1 for a bad model folder or request.
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
        return EngineMain.report(() -> {
            try {
                return command(args, out, err);
            } catch (HelpRequested h) {
                // --help among a command's options: its usage line on stdout, exit 0
                out.println("usage: dsflow " + EngineMain.usageLine(args[0], usage()));
                return 0;
            }
        }, err);
    }

    private static int command(String[] args, PrintStream out, PrintStream err) throws Exception {
        return switch (args[0]) {
            case "demo" -> DemoCommand.run(args, out);
            case "run" -> RunCommand.run(args, out);
            case "overhead" -> OverheadCommand.run(args, out, err);
            case "soak" -> SoakCommand.run(args, out);
            case "long-conversation" -> LongConversationCommand.run(args, out);
            case "loadgen" -> JobLoadgenCommand.run(args, out, err);
            default -> {
                Integer r = EngineMain.dispatch(args, out);
                if (r == null) throw new UsageException("unknown command '" + args[0] + "' (try: dsflow help)");
                yield r;
            }
        };
    }

    static String usage() {
        return "usage: dsflow COMMAND [OPTIONS]\n\ncommands:\n  " + DemoCommand.USAGE + "\n  " + RunCommand.USAGE
                + "\n  " + OverheadCommand.USAGE + "\n  " + SoakCommand.USAGE + "\n  "
                + LongConversationCommand.USAGE + "\n  " + JobLoadgenCommand.USAGE + "\n  " + EngineMain.USAGE + "\n";
    }
}
