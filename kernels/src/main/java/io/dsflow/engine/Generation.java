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
    private final Tokenizer tokenizer;   // needed only with stop strings
    private int[] out = new int[16];
    private int count;
    private FinishReason finish;
    private String stoppedText;

    public Generation(Sequence sequence, SamplingParams params, int[] eosIds, int maxPositions, Tokenizer tokenizer) {
        if (!params.stop().isEmpty() && tokenizer == null) {
            throw new InvalidRequestException("stop strings need the model's tokenizer");
        }
        this.sequence = sequence;
        this.params = params;
        this.eosIds = eosIds.clone();
        this.maxPositions = maxPositions;
        this.tokenizer = tokenizer;
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
            if (token == eos) {
                finish = FinishReason.STOP;
                return -1;
            }
        }
        if (count == out.length) out = Arrays.copyOf(out, count * 2);
        out[count++] = token;
        if (!params.stop().isEmpty()) {
            String text = tokenizer.decode(tokens());
            for (String s : params.stop()) {
                int at = text.indexOf(s);
                if (at >= 0 && (stoppedText == null || at < stoppedText.length())) stoppedText = text.substring(0, at);
            }
            if (stoppedText != null) finish = FinishReason.STOP;
        }
        if (finish == null && (count >= params.maxNewTokens() || sequence.position() + 1 >= maxPositions)) {
            finish = FinishReason.LENGTH;
        }
        return token;
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

    /** Tokens of the completion so far (the EOS id excluded). */
    public int[] tokens() {
        return Arrays.copyOf(out, count);
    }

    /** The completion's text, cut before a stop string that ended it. */
    public String text(Tokenizer tok) {
        return stoppedText != null ? stoppedText : tok.decode(tokens());
    }
}
