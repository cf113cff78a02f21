package io.dsflow.engine;

import io.dsflow.engine.CompletionText.Piece;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Stop strings held back while they may still match, never output, not counted (issue 22, item 6). */
class CompletionTextTest {

    /** Token id i decodes to WORDS[i]; ids 7 then 8 are the two halves of one two-byte character. */
    private static final String[] WORDS = {"Hello", " world", ".", " end.", "a<|", "x|", ">b", "", "", "xa", "c", "ab"};

    private static String decode(int[] ids) {
        StringBuilder b = new StringBuilder();
        for (int i = 0; i < ids.length; i++) {
            if (ids[i] == 7) {
                boolean whole = i + 1 < ids.length && ids[i + 1] == 8;
                b.append(whole ? "é" : "\uFFFD");
                if (whole) i++;
            } else if (ids[i] == 8) {
                b.append('\uFFFD');   // the second half alone
            } else {
                b.append(WORDS[ids[i]]);
            }
        }
        return b.toString();
    }

    private static CompletionText text(String... stops) {
        return new CompletionText(CompletionTextTest::decode, List.of(stops));
    }

    /** Adds the tokens in order; returns every piece released (the last call's result included). */
    private static List<Piece> addAll(CompletionText t, int... ids) {
        List<Piece> out = new ArrayList<>();
        for (int id : ids) out.addAll(t.add(id));
        return out;
    }

    @Test
    void withoutStopStringsEveryTokenIsReleasedAtOnceWithItsText() {
        CompletionText t = text();
        assertEquals(List.of(new Piece(0, 0, "Hello")), t.add(0));
        assertEquals(List.of(new Piece(1, 1, " world")), t.add(1));
        assertEquals(List.of(new Piece(2, 2, ".")), t.add(2));
        assertEquals("Hello world.", t.text());
        assertEquals(3, t.releasedCount());
    }

    @Test
    void aStopStringInsideATokenCutsItsTextAndEndsTheCompletion() {
        CompletionText t = text(".");
        List<Piece> out = addAll(t, 0, 1, 3);
        assertTrue(t.stopped());
        assertEquals(List.of(new Piece(0, 0, "Hello"), new Piece(1, 1, " world"), new Piece(2, 3, " end")), out);
        assertEquals("Hello world end", t.text());
        assertEquals(3, t.releasedCount());
    }

    @Test
    void aTokenThatIsTheStopStringIsNeitherOutputNorCounted() {
        CompletionText t = text(".");
        List<Piece> out = addAll(t, 0, 2);
        assertTrue(t.stopped());
        assertEquals(List.of(new Piece(0, 0, "Hello")), out);
        assertEquals(1, t.releasedCount());
        assertEquals(1, t.releasedTokens().length);
    }

    @Test
    void aStopStringSpreadOverTokensIsHeldUntilItMatchesThenDropped() {
        CompletionText t = text("<|x|>");
        assertEquals(List.of(), t.add(4), "'a<|' may begin the stop string");
        assertEquals(List.of(), t.add(5), "'a<|x|' still may");
        List<Piece> out = t.add(6);
        assertTrue(t.stopped());
        assertEquals(List.of(new Piece(0, 4, "a")), out, "only the text before the stop string is output");
        assertEquals("a", t.text());
    }

    @Test
    void heldTokensAreReleasedInOrderOnceTheyCannotMatch() {
        CompletionText t = text("ab");
        assertEquals(List.of(), t.add(9), "'xa' ends with the stop string's first character");
        assertEquals(List.of(new Piece(0, 9, "xa"), new Piece(1, 10, "c")), t.add(10));
        assertFalse(t.stopped());
        assertEquals("xac", t.text());
    }

    @Test
    void onlyTheHeldEndIsKeptBack() {
        CompletionText t = text("<|x|>");
        assertEquals(List.of(new Piece(0, 0, "Hello")), t.add(0));
        assertEquals(List.of(), t.add(4));
    }

    @Test
    void finishReleasesWhatWasHeld() {
        CompletionText t = text("ab");
        assertEquals(List.of(new Piece(0, 0, "Hello")), t.add(0));
        assertEquals(List.of(), t.add(9));
        assertEquals(List.of(new Piece(1, 9, "xa")), t.finish());
        assertEquals("Helloxa", t.text());
        assertEquals(2, t.releasedCount());
    }

    @Test
    void theEarliestOfTwoStopStringsWins() {
        CompletionText t = text("end", "world end");
        addAll(t, 0, 1, 3);
        assertTrue(t.stopped());
        assertEquals("Hello ", t.text());
    }

    @Test
    void aTokenInsideAMultiByteCharacterIsHeldWithTheTokenThatCompletesIt() {
        CompletionText t = text("é");
        assertEquals(List.of(new Piece(0, 0, "Hello")), t.add(0));
        assertEquals(List.of(), t.add(7), "half a character: no text yet");
        assertEquals(List.of(), t.add(8));
        assertTrue(t.stopped());
        assertEquals(1, t.releasedCount(), "both halves belong to the stop string");
    }

    @Test
    void aMultiByteCharacterThatIsNotAStopIsReleasedWhole() {
        CompletionText t = text(".");
        assertEquals(List.of(), t.add(7));
        assertEquals(List.of(new Piece(0, 7, ""), new Piece(1, 8, "é")), t.add(8));
    }

    @Test
    void aResumedCompletionContinuesAtTheNextIndex() {
        CompletionText t = new CompletionText(CompletionTextTest::decode, List.of("."), new int[]{0, 1});
        assertEquals(2, t.releasedCount());
        List<Piece> out = t.add(3);
        assertEquals(List.of(new Piece(2, 3, " end")), out);
        assertEquals(3, t.releasedCount());
    }
}
