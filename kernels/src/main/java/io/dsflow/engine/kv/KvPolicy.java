package io.dsflow.engine.kv;

import io.dsflow.engine.InvalidRequestException;

import java.util.Locale;

/** Which KV cache policy a sequence runs under. */
public enum KvPolicy {
    /** Every query attends to every stored token. */
    DENSE,
    /** Double Sparsity as published: label cache, approximate scores over all tokens, top-k, exact attention. */
    DS,
    /** DoubleSparse++: sinks + ring window + top-k_l of the tokens between them, per-layer decaying budget. */
    DSPP;

    public static KvPolicy parse(String s) {
        try {
            return valueOf(s.trim().toUpperCase(Locale.ROOT));
        } catch (IllegalArgumentException e) {
            throw new InvalidRequestException("unknown kv policy '" + s + "' (dense, ds, dspp)");
        }
    }

    public String id() {
        return name().toLowerCase(Locale.ROOT);
    }
}
