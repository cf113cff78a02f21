package io.dsflow.engine.kv;

import io.dsflow.engine.DsflowException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class ChannelConfigTest {
    @TempDir
    Path tmp;

    @Test
    void writeThenReadEachStatistic() {
        ChannelConfig qk = SparseInvariantsTest.randomChannels(1), q = SparseInvariantsTest.randomChannels(2);
        int[][][] kOrder = new int[4][2][];
        for (int l = 0; l < 4; l++) for (int g = 0; g < 2; g++) kOrder[l][g] = SparseInvariantsTest.randomChannels(3).order(l, g);
        Path f = tmp.resolve("channels.json");
        ChannelConfig.write(f, qk, q, new ChannelConfig(kOrder));
        ChannelConfig readQk = ChannelConfig.read(f, KvConfig.ChannelSource.QK, 4, 6, 2, 18);
        ChannelConfig readK = ChannelConfig.read(f, KvConfig.ChannelSource.K, 4, 6, 2, 18);
        for (int l = 0; l < 4; l++) {
            for (int h = 0; h < 6; h++) {
                assertArrayEquals(qk.order(l, h), readQk.order(l, h));
                assertArrayEquals(kOrder[l][h / 3], readK.order(l, h), "k_proj rows are per kv head, shared by the group");
            }
        }
    }

    /** The layout the reference DoubleSparse code writes (config/offline_calibration.py): all three keys per layer. */
    @Test
    void readsTheReferenceFormat() throws Exception {
        StringBuilder json = new StringBuilder("{");
        for (int l = 0; l < 2; l++) {
            json.append(l == 0 ? "" : ",");
            json.append("\"model.layers.").append(l).append(".self_attn.q_proj\": [[3, 1, 0, 2], [0, 1, 2, 3]],");
            json.append("\"model.layers.").append(l).append(".self_attn.k_proj\": [[2, 3, 1, 0]],");
            json.append("\"model.layers.").append(l).append(".self_attn.qk_proj\": [[1, 0, 3, 2], [3, 2, 1, 0]]");
        }
        Path f = Files.writeString(tmp.resolve("ref.json"), json.append("}").toString());
        ChannelConfig c = ChannelConfig.read(f, KvConfig.ChannelSource.QK, 2, 2, 1, 4);
        assertArrayEquals(new int[]{1, 0}, c.top(1, 0, 2));
        assertArrayEquals(new int[]{3, 2, 1}, c.top(0, 1, 3));
        assertArrayEquals(new int[]{2, 3}, ChannelConfig.read(f, KvConfig.ChannelSource.K, 2, 2, 1, 4).top(0, 1, 2));
    }

    @Test
    void badFilesAreNamed() throws Exception {
        Path missingKey = Files.writeString(tmp.resolve("a.json"), "{\"model.layers.0.self_attn.q_proj\": [[0,1]]}");
        DsflowException e = assertThrows(DsflowException.class, () -> ChannelConfig.read(missingKey, KvConfig.ChannelSource.QK, 1, 1, 1, 2));
        assertTrue(e.getMessage().contains("qk_proj"), e.getMessage());
        Path notPerm = Files.writeString(tmp.resolve("b.json"), "{\"model.layers.0.self_attn.qk_proj\": [[0,0]]}");
        e = assertThrows(DsflowException.class, () -> ChannelConfig.read(notPerm, KvConfig.ChannelSource.QK, 1, 1, 1, 2));
        assertTrue(e.getMessage().contains("not a permutation"), e.getMessage());
        Path rows = Files.writeString(tmp.resolve("c.json"), "{\"model.layers.0.self_attn.qk_proj\": [[0,1],[1,0],[0,1]]}");
        e = assertThrows(DsflowException.class, () -> ChannelConfig.read(rows, KvConfig.ChannelSource.QK, 1, 4, 2, 2));
        assertTrue(e.getMessage().contains("3 rows"), e.getMessage());
    }

    /** qk-group: a kv head's list by the rank sums of its heads' lists (ties by channel), given to each of them. */
    @Test
    void groupedListsMergeTheGroupsRanks() throws Exception {
        int[][][] order = {{{0, 1, 2, 3}, {1, 0, 3, 2}, {3, 2, 1, 0}, {3, 2, 0, 1}}};
        ChannelConfig c = new ChannelConfig(order).grouped(2);
        // heads 0, 1: rank sums 1, 1, 5, 5; heads 2, 3: 5, 5, 2, 0
        for (int h = 0; h < 2; h++) assertArrayEquals(new int[]{0, 1, 2, 3}, c.order(0, h));
        for (int h = 2; h < 4; h++) assertArrayEquals(new int[]{3, 2, 0, 1}, c.order(0, h));
        assertTrue(c.sharedByGroups(2, 4));
        assertTrue(!new ChannelConfig(order).sharedByGroups(2, 1));
        Path f = tmp.resolve("g.json");
        ChannelConfig.write(f, new ChannelConfig(order), new ChannelConfig(order), new ChannelConfig(new int[][][]{{{0, 1, 2, 3}, {0, 1, 2, 3}}}));
        ChannelConfig read = ChannelConfig.read(f, KvConfig.ChannelSource.QK_GROUP, 1, 4, 2, 4);
        for (int h = 0; h < 4; h++) assertArrayEquals(c.order(0, h), read.order(0, h), "read from qk_proj, then grouped");
    }

    /** The k statistic's rows are per kv head: a cache takes them a query head each, as read() expands a file's. */
    @Test
    void kRowsPerKvHeadAreGivenToEachHeadOfTheGroup() {
        int[][][] perKv = {{{2, 0, 1}, {1, 2, 0}}};
        ChannelConfig c = new ChannelConfig(perKv).perQueryHead(4);
        for (int h = 0; h < 4; h++) assertArrayEquals(perKv[0][h / 2], c.order(0, h));
        ChannelConfig perHead = SparseInvariantsTest.randomChannels(3);
        assertTrue(perHead.perQueryHead(SparseInvariantsTest.HEADS) == perHead, "a row per head already: unchanged");
    }

    @Test
    void statisticOrdersLargestFirst() {
        double[][][] stat = {{{0.1, 5, 3, 5}}};
        assertArrayEquals(new int[]{1, 3, 2, 0}, ChannelConfig.fromStatistic(stat).order(0, 0));
    }
}
