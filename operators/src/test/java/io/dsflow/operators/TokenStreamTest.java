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
        for (int i = 0; i < ids.length; i++) chunks.add(s.chunk(conversationId, requestId, fromIndex + i, ids[i]));
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
        TokenStream s = new TokenStream(tokenizer, timings);
        s.start("r1", "c1", new int[0]);
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
        TokenStream s = new TokenStream(tokenizer, TokenStream.Metrics.NONE);
        s.start("r1", "c1", new int[0]);
        s.start("r2", "c2", new int[0]);
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
        TokenStream whole = new TokenStream(tokenizer, TokenStream.Metrics.NONE);
        whole.start("r1", "c1", new int[0]);
        List<OutputRecord> uninterrupted = emit(whole, "c1", "r1", 0, ids);

        TokenStream resumed = new TokenStream(tokenizer, TokenStream.Metrics.NONE);
        resumed.start("r1", "c1", Arrays.copyOf(ids, cut));
        assertEquals(cut, resumed.emitted("c1", "r1"));
        List<OutputRecord> rest = emit(resumed, "c1", "r1", cut, Arrays.copyOfRange(ids, cut, ids.length));
        assertEquals(uninterrupted.subList(cut, ids.length).stream().map(c -> c.text).toList(),
                rest.stream().map(c -> c.text).toList());
    }

    /** Issue 22, item 1: two conversations may use one request id at once; each keeps its own tokens and text. */
    @Test
    void twoConversationsWithTheSameRequestIdKeepTheirOwnTokens() {
        TokenStream s = new TokenStream(tokenizer, TokenStream.Metrics.NONE);
        s.start("r1", "c1", new int[0]);
        s.start("r1", "c2", new int[0]);
        emit(s, "c1", "r1", 0, new int[]{40, 41});
        emit(s, "c2", "r1", 0, new int[]{50});
        assertEquals(2, s.emitted("c1", "r1"));
        assertEquals(1, s.emitted("c2", "r1"));
        OutputRecord second = s.finalRecord("c2", "r1", FinishReason.LENGTH, 3, 1);
        assertEquals("c2", second.conversationId);
        assertEquals(1, s.size(), "c1's request is still in progress");
        assertEquals("c1", s.chunk("c1", "r1", 2, 42).conversationId);
        assertThrows(IllegalStateException.class, () -> s.chunk("c1", "r9", 3, 43), "another request of c1: a bug");
        assertThrows(IllegalStateException.class, () -> s.start("r2", "c1", new int[0]), "one request a conversation");
    }

    @Test
    void theFinalRecordCarriesUsageAndTimingsAndTheRequestLeaves() throws Exception {
        TokenStream s = new TokenStream(tokenizer, TokenStream.Metrics.NONE);
        s.start("r1", "c1", new int[0]);
        emit(s, "c1", "r1", 0, new int[]{40});
        Thread.sleep(5);
        emit(s, "c1", "r1", 1, new int[]{41});
        OutputRecord fin = s.finalRecord("c1", "r1", FinishReason.LENGTH, 12, 2);
        assertEquals(OutputRecord.FINAL, fin.kind);
        assertEquals("c1", fin.conversationId);
        assertEquals(FinishReason.LENGTH.id(), fin.finishReason);
        assertEquals(12, fin.promptTokens);
        assertEquals(2, fin.completionTokens);
        assertTrue(fin.ttftMs >= 0, "ttft " + fin.ttftMs);
        assertTrue(fin.itlMs >= 5, "one gap of at least 5 ms: " + fin.itlMs);
        assertTrue(s.isEmpty());
        assertThrows(IllegalStateException.class, () -> s.chunk("c1", "r1", 2, 42));
    }
}
