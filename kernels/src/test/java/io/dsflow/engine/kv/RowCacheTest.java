package io.dsflow.engine.kv;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

class RowCacheTest {
    @Test
    void rowsAskedAgainAreHitsAndTheLeastRecentlySelectedRowsMakeRoom() {
        RowCache c = new RowCache(4);
        assertEquals(0, c.serve(new int[]{1, 2, 3}));   // cold: all misses
        assertEquals(2, c.serve(new int[]{2, 3, 4}));   // 2 and 3 held; 4 copied in, nothing evicted yet
        assertEquals(4, c.size());
        assertEquals(1, c.serve(new int[]{4, 5, 6}));   // 1 (last selected at step 1) and 2 (at step 2) make room
        assertEquals(0, c.serve(new int[]{1, 2}));      // both were evicted
        assertEquals(2, c.serve(new int[]{5, 6}));      // the rows of the step before 1 and 2's survived
    }

    @Test
    void aStepNeverEvictsItsOwnRowsAndAGrownCacheKeepsWhatItHeld() {
        RowCache c = new RowCache(3);
        c.serve(new int[]{1, 2, 3});
        assertEquals(1, c.serve(new int[]{3, 7, 8}));   // 3 hit and refreshed: 1 and 2 go, 7 and 8 come
        c.growTo(5);
        assertEquals(3, c.serve(new int[]{3, 7, 8, 9, 10}));
        assertEquals(5, c.size());
        assertThrows(IllegalArgumentException.class, () -> c.serve(new int[]{1, 2, 3, 4, 5, 6}));
    }
}
