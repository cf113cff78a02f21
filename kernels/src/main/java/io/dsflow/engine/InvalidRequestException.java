package io.dsflow.engine;

/** A request the model cannot serve as given: a prompt too long, a token id outside the vocabulary, nonsense sampling. */
public class InvalidRequestException extends DsflowException {
    public InvalidRequestException(String message) {
        super(message);
    }
}
