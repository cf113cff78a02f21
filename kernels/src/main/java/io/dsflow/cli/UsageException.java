package io.dsflow.cli;

import io.dsflow.engine.DsflowException;

/** A bad command line: unknown option, missing or malformed value. Exit code 2. */
public class UsageException extends DsflowException {
    public UsageException(String message) {
        super(message);
    }
}
