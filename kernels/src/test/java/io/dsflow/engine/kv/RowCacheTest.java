package io.dsflow.engine.kv;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

class RowCacheTest {
    @Test
    void rowsAskedAgainAreHitsAndRowsLeaveInTheOrderTheyCame() {
        RowCache c = new RowCache(4);
        assertEquals(0, c.serve(new int[]{1, 2, 3}));   // cold: places 0-2
        assertEquals(2, c.serve(new int[]{2, 3, 4}));   // 2 and 3 held; 4 takes place 3, nothing evicted yet
        assertEquals(4, c.size());
        assertEquals(1, c.serve(new int[]{4, 5, 6}));   // the hand (at 0) evicts 1, then 2: first in, first out
        assertEquals(0, c.serve(new int[]{1, 2}));      // both were evicted; they take places 2 (3's) and 3 (4's)
        assertEquals(2, c.serve(new int[]{5, 6}));
        assertEquals(2, c.serve(new int[]{1, 2}));
    }

    @Test
    void theHandPassesOverRowsTheStepAsksFor() {
        RowCache c = new RowCache(3);
        c.serve(new int[]{1, 2, 3});                    // places 0, 1, 2; the hand back at 0
        assertEquals(1, c.serve(new int[]{1, 7}));      // 1 (place 0) is asked: 7 takes place 1, evicting 2
        assertEquals(2, c.serve(new int[]{1, 3}));      // 3 survived at place 2, 1 at 0
        assertEquals(1, c.serve(new int[]{3, 8, 9}));   // hand at 2 (3, asked): 8 takes 0, 9 takes 1
        assertEquals(0, c.serve(new int[]{1, 7}));
    }

    @Test
    void aGrownCacheKeepsWhatItHeldAndFillsItsNewPlacesInRingOrder() {
        RowCache c = new RowCache(3);
        c.serve(new int[]{1, 2, 3});
        c.growTo(5);
        assertEquals(3, c.serve(new int[]{1, 2, 3, 9, 10}));   // the hand at 0: passes 0-2 (asked), fills 3 and 4
        assertEquals(5, c.size());
        c.growTo(4);   // never shrinks
        assertEquals(5, c.slots());
        assertThrows(IllegalArgumentException.class, () -> c.serve(new int[]{1, 2, 3, 4, 5, 6}));
    }

    @Test
    void aStepOfAsManyRowsAsPlacesReplacesEveryRowItDoesNotAsk() {
        RowCache c = new RowCache(4);
        c.serve(new int[]{1, 2, 3, 4});
        assertEquals(1, c.serve(new int[]{9, 3, 8, 7}));
        assertEquals(4, c.serve(new int[]{3, 7, 8, 9}));
        assertEquals(4, c.size());
    }
}
