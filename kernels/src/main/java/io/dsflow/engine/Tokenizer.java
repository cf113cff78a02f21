package io.dsflow.engine;

import ai.djl.huggingface.tokenizers.Encoding;
import ai.djl.huggingface.tokenizers.HuggingFaceTokenizer;
import io.dsflow.engine.model.ModelLoadException;

import java.io.IOException;
import java.nio.file.Path;

/**
 * The model's tokenizer.json through DJL's Rust tokenizers, offline, never truncating (DJL's default truncates to
 * 512 tokens when the folder has no tokenizer_config.json).
 */
public final class Tokenizer implements AutoCloseable {
    static {
        // Without this DJL looks for a CUDA build of its native library on GPU hosts and tries to download it.
        if (System.getProperty("ai.djl.offline") == null) System.setProperty("ai.djl.offline", "true");
    }

    private final HuggingFaceTokenizer tokenizer;

    public Tokenizer(Path tokenizerJson) {
        try {
            tokenizer = HuggingFaceTokenizer.builder().optTokenizerPath(tokenizerJson)
                    .optTruncation(false).optPadding(false).build();
        } catch (IOException | RuntimeException e) {
            throw new ModelLoadException("cannot load " + tokenizerJson + ": " + e.getMessage(), e);
        }
    }

    /** Token ids of {@code text}; with {@code addSpecialTokens} the tokenizer's template (such as a leading BOS) applies. */
    public int[] encode(String text, boolean addSpecialTokens) {
        Encoding enc = tokenizer.encode(text, addSpecialTokens, false);
        long[] ids = enc.getIds();
        int[] out = new int[ids.length];
        for (int i = 0; i < ids.length; i++) out[i] = (int) ids[i];
        return out;
    }

    /** Text of {@code ids}, special tokens left out. */
    public String decode(int[] ids) {
        long[] l = new long[ids.length];
        for (int i = 0; i < ids.length; i++) l[i] = ids[i];
        return tokenizer.decode(l, true);
    }

    @Override
    public void close() {
        tokenizer.close();
    }
}
