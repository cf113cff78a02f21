package io.dsflow.cli;

import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.kv.KvPolicy;
import io.dsflow.engine.model.ModelConfig;
import io.dsflow.engine.model.SyntheticModels;
import org.junit.jupiter.api.Test;

import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * The cache bytes bench divides by a step's time (its GB/step and share of the copy bandwidth), worked out by hand for
 * llama-3.1-8b (32 layers, 32 / 8 heads of 128) at context 32768 with dspp's defaults: S = 4, W = 64, two dense layers,
 * r = 16, budgets that sum to 30 x 1980 over the sparse layers, 32700 candidates.
 */
class BenchBytesTest {
    private static final ModelConfig LLAMA = SyntheticModels.get("llama-3.1-8b");
    private static final double DENSE_LAYER = 2.0 * 32768 * 1024 * 2;   // keys and values, bf16

    @Test
    void denseReadsEveryKeyAndValue() {
        assertEquals(32 * DENSE_LAYER, BenchCommand.cacheBytesPerStep(LLAMA, KvConfig.DENSE, 32768));
    }

    @Test
    void perHeadSelectionWith16BitLabels() {
        KvConfig kv = KvConfig.defaults(KvPolicy.DSPP).with(Map.of("gqa", "per_head", "label-bits", "16"));
        double labels = 30.0 * 32700 * 32 * 16 * 2;
        double rows = 32.0 * 128 * 2 * 2 * 30 * (4 + 1980 + 64);   // each query head its own rows
        assertEquals(2 * DENSE_LAYER + labels + rows, BenchCommand.cacheBytesPerStep(LLAMA, kv, 32768));
    }

    @Test
    void sharedSelectionWith8BitLabelsReadsRowsPerKvHeadAndLabelsWithTheirScales() {
        KvConfig kv = KvConfig.defaults(KvPolicy.DSPP).with(Map.of("gqa", "mean", "label-bits", "8"));
        double labels = 30.0 * 32700 * 32 * (16 + 2);   // int8 values and an fp16 scale per token and head
        double rows = 8.0 * 128 * 2 * 2 * 30 * (4 + 1980 + 64);   // a kv head's rows read once for its group
        assertEquals(2 * DENSE_LAYER + labels + rows, BenchCommand.cacheBytesPerStep(LLAMA, kv, 32768));
    }

    @Test
    void fourBitLabelsAreHalfABytePerChannelAndTheirScale() {
        KvConfig kv = KvConfig.defaults(KvPolicy.DSPP).with(Map.of("gqa", "mean", "label-bits", "4"));
        double labels = 30.0 * 32700 * 32 * (8 + 2);   // int4 values two a byte and an fp16 scale per token and head
        double rows = 8.0 * 128 * 2 * 2 * 30 * (4 + 1980 + 64);
        assertEquals(2 * DENSE_LAYER + labels + rows, BenchCommand.cacheBytesPerStep(LLAMA, kv, 32768));
    }
}
