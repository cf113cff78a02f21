package io.dsflow.engine;

/**
 * Base of every error dsflow reports to a user: the message is one line that names the cause, and the
 * command line prints it as is and exits non-zero. Subclasses say which kind of input was wrong.
 */
public class DsflowException extends RuntimeException {
    public DsflowException(String message) {
        super(message);
    }

    public DsflowException(String message, Throwable cause) {
        super(message, cause);
    }
}
