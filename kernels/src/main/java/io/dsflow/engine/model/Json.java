package io.dsflow.engine.model;

import com.fasterxml.jackson.core.JsonProcessingException;

import java.io.IOException;

/** One-line descriptions of JSON read failures (Jackson's own messages span lines). */
final class Json {
    private Json() {
    }

    static String describe(IOException e) {
        if (e instanceof JsonProcessingException j && j.getLocation() != null) {
            return "invalid JSON at line " + j.getLocation().getLineNr() + ", column " + j.getLocation().getColumnNr()
                    + ": " + j.getOriginalMessage().replace('\n', ' ');
        }
        return String.valueOf(e.getMessage()).replace('\n', ' ');
    }
}
