package io.dsflow.engine;

import io.dsflow.engine.sample.Sampler;
import io.dsflow.engine.sample.SamplingParams;

import java.util.Arrays;

/**
 * One completion in progress: it turns each logits vector of its sequence into the next token and decides when the
 * completion ends (EOS id, stop string, max tokens, last position). Step-wise, so a scheduler can advance many
 * generations in one batched decode step; {@link Engine#generate} drives one alone.
 */
public final class Generation {
    private final Sequence sequence;
    private final SamplingParams params;
    private final int[] eosIds;
    private final int maxPositions;
    /** The completion's text with its stop strings held back; null without stop strings. */
    private final CompletionText stopText;
    private int[] out = new int[16];
    private int count;
    private FinishReason finish;

    public Generation(Sequence sequence, SamplingParams params, int[] eosIds, int maxPositions, Tokenizer tokenizer) {
        if (!params.stop().isEmpty() && tokenizer == null) {
            throw new InvalidRequestException("stop strings need the model's tokenizer");
        }
        this.sequence = sequence;
        this.params = params;
        this.eosIds = eosIds.clone();
        this.maxPositions = maxPositions;
        this.stopText = params.stop().isEmpty() ? null : new CompletionText(tokenizer::decode, params.stop());
        if (params.maxNewTokens() == 0) finish = FinishReason.LENGTH;
    }

    public Sequence sequence() {
        return sequence;
    }

    /**
     * Samples the next token from the logits of the sequence's last position. Returns it, or -1 when the completion
     * ended without a new token (an EOS id, which is not part of the completion). After a token is returned the
     * generation may also be finished (max tokens, stop string, last position); if not, the token must be fed to
     * the model and the next logits given here.
     */
    public int accept(float[] logits) {
        if (finish != null) throw new IllegalStateException("generation already finished");
        return acceptToken(Sampler.sample(logits, params, count));
    }

    /** {@link #accept} with the token already sampled (by a backend, with {@link #params} at {@link #step}). */
    public int acceptToken(int token) {
        if (finish != null) throw new IllegalStateException("generation already finished");
        for (int eos : eosIds) {
            if (token == eos && !params.ignoreEos()) {
                end(FinishReason.STOP);
                return -1;
            }
        }
        if (count == out.length) out = Arrays.copyOf(out, count * 2);
        out[count++] = token;
        if (stopText != null) {
            stopText.add(token);
            if (stopText.stopped()) finish = FinishReason.STOP;
        }
        if (finish == null && (count >= params.maxNewTokens() || sequence.position() + 1 >= maxPositions)) {
            end(FinishReason.LENGTH);
        }
        return token;
    }

    private void end(FinishReason reason) {
        finish = reason;
        if (stopText != null) stopText.finish();   // what the stop strings held back is output after all
    }

    public SamplingParams params() {
        return params;
    }

    /** The completion step the next token is sampled at (tokens accepted so far). */
    public int step() {
        return count;
    }

    public boolean finished() {
        return finish != null;
    }

    public FinishReason finishReason() {
        return finish;
    }

    /**
     * Tokens sampled so far, the EOS id excluded: what the sequence was fed, including the tokens of a stop string that
     * ended the completion (they are in its cache).
     */
    public int[] tokens() {
        return Arrays.copyOf(out, count);
    }

    /**
     * The finished completion as a client sees it: {@link #tokens} without those of a stop string that ended it (the
     * token a stop string begins in stays, its text cut).
     */
    public int[] completionTokens() {
        if (finish == null) throw new IllegalStateException("the completion is still running");
        return stopText == null ? tokens() : stopText.releasedTokens();
    }

    /** The finished completion's text, cut before a stop string that ended it. */
    public String text(Tokenizer tok) {
        if (finish == null) throw new IllegalStateException("the completion is still running");
        return stopText == null ? tok.decode(tokens()) : stopText.text();
    }
}
