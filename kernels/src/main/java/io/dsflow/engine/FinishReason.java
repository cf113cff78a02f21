package io.dsflow.engine;

/** Why a completion ended (OpenAI's names). */
public enum FinishReason {
    /** an end-of-sequence token or a stop string */
    STOP,
    /** max tokens reached, or the model's last position */
    LENGTH,
    /** the request failed */
    ERROR;

    public String id() {
        return name().toLowerCase(java.util.Locale.ROOT);
    }
}
