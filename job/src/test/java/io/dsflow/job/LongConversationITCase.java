package io.dsflow.job;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Issue 26, acceptance 4 in small (the full run: `dsflow long-conversation`, docs/results): one conversation of 12
 * turns through the embedded job under a capacity of 512 tokens grows to about 3,000 tokens of text; every turn is
 * served, the checkpoint and the live heap stay flat once the cache is full, and the pass key planted in the turn
 * before the last is answered.
 */
class LongConversationITCase {
    @Test
    void aConversationGrowingPastItsCacheIsServedWithFlatCheckpointsAndRemembersItsLastTurns() throws Exception {
        LongConversation.Report r = LongConversation.run(Conversations.MODEL.toString(), "cpu", "dspp", 512, 12, 250,
                2, 5, System.out);
        System.out.print(r.summary());
        assertEquals(12, r.served(), "every turn served");
        assertEquals(0, r.errors());
        assertTrue(r.textTokens() > 2_900, "the text grew past the cache: " + r.textTokens());
        assertTrue(r.afterTheCacheFilled().size() >= 2, "marks after the cache filled: " + r.marks());
        assertTrue(r.afterTheCacheFilled().get(0).checkpointBytes() > 0, "checkpoints measured: " + r.marks());
        assertTrue(r.flat(), r.summary());
        assertTrue(r.answered(), r.summary());
    }
}
