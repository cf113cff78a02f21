package io.dsflow.engine.probe;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;

/**
 * Prompts in the format the probe-retrieval model was trained on (models/README.md): filler sentences
 * " <subject> <verb> <tail>" with a pass key or records planted at random depths, then the question, whose answer
 * follows the prompt's last words. Deterministic for a seed.
 */
public final class ProbePrompts {
    private static final String[] SUBJECTS = {"The river", "A quiet town", "The old library", "Every winter",
            "The mountain road", "A small boat", "The market square", "Our garden", "The night train", "A painter",
            "The lighthouse", "The forest"};
    private static final String[] VERBS = {"grows calm", "turns golden", "wakes early", "hums softly", "stays open",
            "looks brighter", "feels warm", "moves slowly", "shines at dusk", "waits patiently", "sings in spring",
            "drifts north"};
    private static final String[] TAILS = {"after the rain.", "near the harbor.", "under a pale sky.",
            "when the bells ring.", "for the travelers.", "beyond the hills.", "in the morning light.",
            "along the shore.", "without a sound.", "before the storm."};

    /** Filler sentences are at most this many tokens; callers size contexts in tokens through a tokenizer. */
    private ProbePrompts() {
    }

    /**
     * A probe sample.
     *
     * @param context  the text up to and including the planted facts and the filler after them
     * @param question the question and the answer's lead-in ("... The pass key is"), fed after the context
     * @param answer   the expected continuation without its leading space and final period ("58213")
     */
    public record Sample(String task, String context, String question, String answer) {
        public String prompt() {
            return context + question;
        }
    }

    public static String filler(Random rnd) {
        return " " + SUBJECTS[rnd.nextInt(SUBJECTS.length)] + " " + VERBS[rnd.nextInt(VERBS.length)] + " "
                + TAILS[rnd.nextInt(TAILS.length)];
    }

    /**
     * A pass-key sample of about {@code sentences} filler sentences with the key planted at a random depth.
     */
    public static Sample passKey(Random rnd, int sentences) {
        return passKey(rnd, sentences, 0);
    }

    /** A pass-key sample with the key planted among sentences [minDepth, sentences). */
    public static Sample passKey(Random rnd, int sentences, int minDepth) {
        String key = String.format("%05d", rnd.nextInt(100000));
        int depth = depth(rnd, sentences, minDepth);
        StringBuilder b = new StringBuilder();
        for (int i = 0; i < sentences; i++) {
            if (i == depth) b.append(" The pass key is ").append(key).append(". Remember it. ").append(key).append(" is the pass key.");
            b.append(filler(rnd));
        }
        return new Sample("passkey", b.toString(), " What is the pass key? The pass key is", key);
    }

    /**
     * A records sample: 1 to 16 records ("Record 417 holds 2093.") at random depths; the question asks one of them.
     */
    public static Sample records(Random rnd, int sentences) {
        return records(rnd, sentences, 0);
    }

    /** A records sample with every record planted among sentences [minDepth, sentences). */
    public static Sample records(Random rnd, int sentences, int minDepth) {
        int count = 1 + rnd.nextInt(16);
        List<Integer> names = new ArrayList<>();
        while (names.size() < count) {
            int name = 100 + rnd.nextInt(900);
            if (!names.contains(name)) names.add(name);
        }
        int[] values = new int[count];
        int[] depth = new int[count];
        for (int i = 0; i < count; i++) {
            values[i] = 1000 + rnd.nextInt(9000);
            depth[i] = depth(rnd, sentences, minDepth);
        }
        int asked = rnd.nextInt(count);
        StringBuilder b = new StringBuilder();
        for (int s = 0; s < sentences; s++) {
            for (int i = 0; i < count; i++) {
                if (depth[i] == s) b.append(" Record ").append(names.get(i)).append(" holds ").append(values[i]).append('.');
            }
            b.append(filler(rnd));
        }
        int name = names.get(asked);
        return new Sample("records", b.toString(), " Which value does record " + name + " hold? Record " + name + " holds",
                Integer.toString(values[asked]));
    }

    private static int depth(Random rnd, int sentences, int minDepth) {
        int lo = Math.max(0, Math.min(minDepth, sentences - 1));
        return lo + rnd.nextInt(Math.max(1, sentences - lo));
    }
}
