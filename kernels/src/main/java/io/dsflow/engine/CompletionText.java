package io.dsflow.engine;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.function.Function;

/**
 * The text of a completion as it streams, token by token, with its stop strings held back: what a client may be shown
 * of each token, and when. OpenAI's contract (and what users expect of {@code stop}): the stop string is never part of
 * the output and its tokens are not counted, so a token whose text could still turn out to start a stop string is held
 * until the tokens after it decide.
 * <ul>
 *   <li>{@link #add} takes the completion's next token and returns the tokens now certain to be output ({@link Piece}:
 *       index in the completion, id, the text it adds), in order; with no stop strings that is always the token itself;
 *   <li>once the text contains a stop string the completion is {@link #stopped}: the tokens before it are released,
 *       the one it begins in with its text cut before it, the rest dropped;
 *   <li>{@link #finish} releases what is still held when the completion ends otherwise (EOS, length).
 * </ul>
 * Text is decoded incrementally: a token's text is decode(a few tokens before it .. it) minus decode(those before it),
 * constant work a token; a token that ends inside a multi-byte character adds nothing until the character is whole
 * (the same rule as Hugging Face's text streamers). The engine ({@link Generation}) and the decode operator's token
 * stream both use this class, so {@code generate} and the streamed chunks agree on every stop.
 */
public final class CompletionText {

    /** A token released for output: its index in the completion, its id and the text it adds. */
    public record Piece(int index, int tokenId, String text) {
    }

    private final Function<int[], String> decode;
    private final List<String> stops;
    private final int longestStop;
    /** The completion's tokens so far, released or held. */
    private int[] tokens = new int[16];
    private int count;
    /** Incremental decoding: the text of token n is decode(prefix..n) minus decode(prefix..read). */
    private int prefixOffset, readOffset;
    /** Tokens decoded but not yet released, and their texts run together. */
    private final List<Piece> held = new ArrayList<>();
    private final StringBuilder heldText = new StringBuilder();
    private final StringBuilder released = new StringBuilder();
    private int releasedCount;
    private boolean stopped;

    /**
     * @param decode the tokenizer's decode (special tokens left out)
     * @param stops  the stop strings, none empty
     */
    public CompletionText(Function<int[], String> decode, List<String> stops) {
        this(decode, stops, new int[0]);
    }

    /**
     * A completion that resumes having already released {@code releasedBefore} (after a restore): they give the
     * decoding its context, and the next token added has index {@code releasedBefore.length}.
     */
    public CompletionText(Function<int[], String> decode, List<String> stops, int[] releasedBefore) {
        this.decode = decode;
        this.stops = List.copyOf(stops);
        this.longestStop = stops.stream().mapToInt(String::length).max().orElse(0);
        tokens = Arrays.copyOf(releasedBefore, Math.max(16, releasedBefore.length * 2));
        count = releasedBefore.length;
        releasedCount = count;
        prefixOffset = Math.max(0, count - 1);   // one token of context for the next text
        readOffset = count;
    }

    /** Adds the completion's next token; returns the tokens now certain to be output (none while held back). */
    public List<Piece> add(int tokenId) {
        if (stopped) throw new IllegalStateException("the completion already stopped");
        if (count == tokens.length) tokens = Arrays.copyOf(tokens, count * 2);
        tokens[count++] = tokenId;
        Piece p = new Piece(count - 1, tokenId, nextText());
        if (stops.isEmpty()) return release(List.of(p));
        held.add(p);
        heldText.append(p.text());
        int at = earliestStop();
        if (at >= 0) {
            stopped = true;
            return releaseBefore(at);
        }
        return releaseSafe();
    }

    /** The completion ended other than by a stop string: every token held is released. */
    public List<Piece> finish() {
        if (stopped) return List.of();
        List<Piece> all = new ArrayList<>(held);
        held.clear();
        heldText.setLength(0);
        return release(all);
    }

    /** Whether the text reached a stop string (the completion ends; nothing more is released). */
    public boolean stopped() {
        return stopped;
    }

    /** Tokens added so far, released or held (the next token's index). */
    public int addedCount() {
        return count;
    }

    /** Tokens released so far (after a stop, the completion's length as the client sees it). */
    public int releasedCount() {
        return releasedCount;
    }

    /** The tokens released so far. */
    public int[] releasedTokens() {
        return Arrays.copyOf(tokens, releasedCount);
    }

    /** The text released so far. */
    public String text() {
        return released.toString();
    }

    private String nextText() {
        String before = decode.apply(Arrays.copyOfRange(tokens, prefixOffset, readOffset));
        String now = decode.apply(Arrays.copyOfRange(tokens, prefixOffset, count));
        if (now.length() <= before.length() || now.endsWith("\uFFFD") || !now.startsWith(before)) return "";
        prefixOffset = readOffset;
        readOffset = count;
        return now.substring(before.length());
    }

    /** Where the first stop string begins in the held text, -1 if none does yet. */
    private int earliestStop() {
        int first = -1;
        for (String s : stops) {
            int at = heldText.indexOf(s);
            if (at >= 0 && (first < 0 || at < first)) first = at;
        }
        return first;
    }

    /** The completion stopped at {@code at} of the held text: what comes before it is released, the rest dropped. */
    private List<Piece> releaseBefore(int at) {
        List<Piece> out = new ArrayList<>();
        int start = 0;
        for (Piece p : held) {
            if (start >= at) break;
            int end = start + p.text().length();
            out.add(end <= at ? p : new Piece(p.index(), p.tokenId(), p.text().substring(0, at - start)));
            start = end;
            if (end >= at) break;
        }
        held.clear();
        heldText.setLength(0);
        return release(out);
    }

    /**
     * Releases the held tokens whose text cannot be part of a stop string: all but those whose text lies in the longest
     * end of the held text that begins some stop string. A token with no text yet (inside a multi-byte character) is
     * held with the tokens after it.
     */
    private List<Piece> releaseSafe() {
        int safe = heldText.length() - longestSuffixStartingAStop();
        int last = -1, end = 0, chars = 0;   // the last token to release, and the text up to its end
        for (int i = 0; i < held.size(); i++) {
            end += held.get(i).text().length();
            if (end > safe) break;
            if (!held.get(i).text().isEmpty()) {
                last = i;
                chars = end;
            }
        }
        if (last < 0) return List.of();
        List<Piece> out = new ArrayList<>(held.subList(0, last + 1));
        held.subList(0, last + 1).clear();
        heldText.delete(0, chars);
        return release(out);
    }

    /** The length of the longest end of the held text that is the beginning of a stop string (shorter than it). */
    private int longestSuffixStartingAStop() {
        int max = Math.min(heldText.length(), longestStop - 1);
        for (int n = max; n > 0; n--) {
            String tail = heldText.substring(heldText.length() - n);
            for (String s : stops) if (s.length() > n && s.startsWith(tail)) return n;
        }
        return 0;
    }

    private List<Piece> release(List<Piece> pieces) {
        for (Piece p : pieces) released.append(p.text());
        releasedCount += pieces.size();
        return pieces;
    }
}
