package io.dsflow.cli;

import io.dsflow.engine.DsflowException;

/** A bad command line: unknown option, missing or malformed value. Exit code 2. */
final class UsageException extends DsflowException {
    UsageException(String message) {
        super(message);
    }
}
