package io.dsflow.cli;

/**
 * {@code --help} (or {@code -h}) among a command's options: {@link Args#parse} throws it before checking anything
 * else, and the dispatcher prints that command's usage line on stdout and exits 0 ({@link EngineMain#dispatch}).
 */
public final class HelpRequested extends UsageException {
    public HelpRequested(String command) {
        super(command + ": help requested");
    }
}
