package io.dsflow.engine.model;

import io.dsflow.engine.DsflowException;

/** A model folder that cannot be used: missing, unreadable, unsupported or corrupt. */
public class ModelLoadException extends DsflowException {
    public ModelLoadException(String message) {
        super(message);
    }

    public ModelLoadException(String message, Throwable cause) {
        super(message, cause);
    }
}
