package io.dsflow.operators;

import io.dsflow.engine.FinishReason;
import io.dsflow.engine.Tokenizer;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The token stream on its own: chunk texts, what a checkpoint gets, resuming, the final record; no Flink. */
class TokenStreamTest {
    private static Tokenizer tokenizer;

    @BeforeAll
    static void load() {
        tokenizer = new Tokenizer(DecodeOperatorHarnessTest.MODEL.resolve("tokenizer.json"));
    }

    @AfterAll
    static void close() {
        tokenizer.close();
    }

    /** Counts what the stream reports to the metrics. */
    static final class Timings implements TokenStream.Metrics {
        final List<Double> first = new ArrayList<>(), next = new ArrayList<>();

        @Override
        public void firstToken(double ms) {
            first.add(ms);
        }

        @Override
        public void nextToken(double ms) {
            next.add(ms);
        }
    }

    private static List<OutputRecord> emit(TokenStream s, String conversationId, String requestId, int fromIndex,
                                           int[] ids) {
        List<OutputRecord> chunks = new ArrayList<>();
        for (int i = 0; i < ids.length; i++) chunks.addAll(s.chunks(conversationId, requestId, fromIndex + i, ids[i]));
        return chunks;
    }

    private static String text(List<OutputRecord> chunks) {
        StringBuilder b = new StringBuilder();
        for (OutputRecord c : chunks) b.append(c.text);
        return b.toString();
    }

    @Test
    void chunkTextsAddUpToTheCompletionsTextAndCarryTheirIndexAndToken() {
        int[] ids = tokenizer.encode("The pass key is 71432. Remember it.", false);
        Timings timings = new Timings();
        TokenStream s = new TokenStream(tokenizer::decode, timings);
        s.start("r1", "c1", new int[0], List.of());
        List<OutputRecord> chunks = emit(s, "c1", "r1", 0, ids);
        assertEquals(tokenizer.decode(ids), text(chunks));
        for (int i = 0; i < ids.length; i++) {
            OutputRecord c = chunks.get(i);
            assertEquals(OutputRecord.CHUNK, c.kind);
            assertEquals("c1", c.conversationId);
            assertEquals("r1", c.requestId);
            assertEquals(i, c.index);
            assertEquals(ids[i], c.tokenId);
        }
        assertEquals(1, timings.first.size(), "one first token");
        assertEquals(ids.length - 1, timings.next.size(), "the others are inter-token latencies");
        assertEquals(ids.length, s.emitted("c1", "r1"));
    }

    @Test
    void aCheckpointGetsEveryTokenSoFarOnlyWhenNewOnesWereEmitted() {
        TokenStream s = new TokenStream(tokenizer::decode, TokenStream.Metrics.NONE);
        s.start("r1", "c1", new int[0], List.of());
        s.start("r2", "c2", new int[0], List.of());
        emit(s, "c1", "r1", 0, new int[]{40, 41, 42});
        List<TokenStream.Unsaved> first = s.takeUnsaved();
        assertEquals(1, first.size(), "r2 emitted nothing");
        assertEquals("r1", first.get(0).requestId());
        assertEquals("c1", first.get(0).conversationId());
        assertArrayEquals(new int[]{40, 41, 42}, first.get(0).tokens());
        assertEquals(List.of(), s.takeUnsaved(), "nothing new since");
        emit(s, "c1", "r1", 3, new int[]{43});
        assertArrayEquals(new int[]{40, 41, 42, 43}, s.takeUnsaved().get(0).tokens(), "all tokens, not the new ones");
    }

    @Test
    void aResumedRequestContinuesAtTheNextIndexWithTheTextAnUninterruptedStreamGives() {
        int[] ids = tokenizer.encode("Record 17: the blue door opens at noon.", false);
        int cut = ids.length / 2;
        TokenStream whole = new TokenStream(tokenizer::decode, TokenStream.Metrics.NONE);
        whole.start("r1", "c1", new int[0], List.of());
        List<OutputRecord> uninterrupted = emit(whole, "c1", "r1", 0, ids);

        TokenStream resumed = new TokenStream(tokenizer::decode, TokenStream.Metrics.NONE);
        resumed.start("r1", "c1", Arrays.copyOf(ids, cut), List.of());
        assertEquals(cut, resumed.emitted("c1", "r1"));
        List<OutputRecord> rest = emit(resumed, "c1", "r1", cut, Arrays.copyOfRange(ids, cut, ids.length));
        assertEquals(uninterrupted.subList(cut, ids.length).stream().map(c -> c.text).toList(),
                rest.stream().map(c -> c.text).toList());
    }

    /** Issue 22, item 1: two conversations may use one request id at once; each keeps its own tokens and text. */
    @Test
    void twoConversationsWithTheSameRequestIdKeepTheirOwnTokens() {
        TokenStream s = new TokenStream(tokenizer::decode, TokenStream.Metrics.NONE);
        s.start("r1", "c1", new int[0], List.of());
        s.start("r1", "c2", new int[0], List.of());
        emit(s, "c1", "r1", 0, new int[]{40, 41});
        emit(s, "c2", "r1", 0, new int[]{50});
        assertEquals(2, s.emitted("c1", "r1"));
        assertEquals(1, s.emitted("c2", "r1"));
        OutputRecord second = last(s.finish("c2", "r1", FinishReason.LENGTH, 3));
        assertEquals("c2", second.conversationId);
        assertEquals(1, s.size(), "c1's request is still in progress");
        assertEquals("c1", s.chunks("c1", "r1", 2, 42).get(0).conversationId);
        assertThrows(IllegalStateException.class, () -> s.chunks("c1", "r9", 3, 43), "another request of c1: a bug");
        assertThrows(IllegalStateException.class, () -> s.start("r2", "c1", new int[0], List.of()), "one request a conversation");
    }

    @Test
    void theFinalRecordCarriesUsageAndTimingsAndTheRequestLeaves() throws Exception {
        TokenStream s = new TokenStream(tokenizer::decode, TokenStream.Metrics.NONE);
        s.start("r1", "c1", new int[0], List.of());
        emit(s, "c1", "r1", 0, new int[]{40});
        Thread.sleep(5);
        emit(s, "c1", "r1", 1, new int[]{41});
        OutputRecord fin = last(s.finish("c1", "r1", FinishReason.LENGTH, 12));
        assertEquals(OutputRecord.FINAL, fin.kind);
        assertEquals("c1", fin.conversationId);
        assertEquals(FinishReason.LENGTH.id(), fin.finishReason);
        assertEquals(12, fin.promptTokens);
        assertEquals(2, fin.completionTokens);
        assertTrue(fin.ttftMs >= 0, "ttft " + fin.ttftMs);
        assertTrue(fin.itlMs >= 5, "one gap of at least 5 ms: " + fin.itlMs);
        assertTrue(s.isEmpty());
        assertThrows(IllegalStateException.class, () -> s.chunks("c1", "r1", 2, 42));
    }

    private static OutputRecord last(List<OutputRecord> records) {
        return records.get(records.size() - 1);
    }

    /**
     * Issue 22, item 6: with stop ["."] no chunk carries the stop string, the tokens after it are never emitted, the
     * usage counts only the tokens emitted, and a checkpoint never holds a token still held back.
     */
    @Test
    void aStopStringIsHeldBackNeverEmittedAndNotCounted() {
        int[] ids = tokenizer.encode("The pass key is 71432. Remember it.", false);
        String full = tokenizer.decode(ids);
        TokenStream s = new TokenStream(tokenizer::decode, TokenStream.Metrics.NONE);
        s.start("r1", "c1", new int[0], List.of("."));
        List<OutputRecord> chunks = new ArrayList<>();
        int fed = 0;
        for (; fed < ids.length; fed++) {
            chunks.addAll(s.chunks("c1", "r1", fed, ids[fed]));
            for (TokenStream.Unsaved u : s.takeUnsaved()) {
                assertEquals(s.emitted("c1", "r1"), u.tokens().length, "a checkpoint gets the emitted tokens only");
            }
            if (tokenizer.decode(Arrays.copyOf(ids, fed + 1)).contains(".")) break;   // the engine stops here
        }
        List<OutputRecord> end = s.finish("c1", "r1", FinishReason.STOP, 9);
        chunks.addAll(end.subList(0, end.size() - 1));
        assertEquals(full.substring(0, full.indexOf('.')), text(chunks), "the text up to the stop string");
        assertTrue(chunks.stream().noneMatch(c -> c.text.contains(".")), "no chunk carries the stop string");
        assertEquals(chunks.size(), last(end).completionTokens, "usage counts the chunks emitted");
        assertTrue(chunks.size() <= fed, "the stop string's own token is not emitted");
        for (int i = 0; i < chunks.size(); i++) assertEquals(i, chunks.get(i).index);
    }

    @Test
    void whatAStopStringHeldIsEmittedWhenTheCompletionEndsOtherwise() {
        int[] ids = tokenizer.encode("The pass key is 71432", false);
        TokenStream s = new TokenStream(tokenizer::decode, TokenStream.Metrics.NONE);
        s.start("r1", "c1", new int[0], List.of("71432 and more"));
        List<OutputRecord> chunks = emit(s, "c1", "r1", 0, ids);
        assertTrue(chunks.size() < ids.length, "the tokens that may begin the stop string are held");
        List<OutputRecord> end = s.finish("c1", "r1", FinishReason.LENGTH, 5);
        chunks.addAll(end.subList(0, end.size() - 1));
        assertEquals(tokenizer.decode(ids), text(chunks));
        assertEquals(ids.length, last(end).completionTokens);
    }
}
