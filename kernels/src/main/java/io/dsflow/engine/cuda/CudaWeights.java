package io.dsflow.engine.cuda;

import io.dsflow.engine.DsflowException;
import io.dsflow.engine.model.Architecture;
import io.dsflow.engine.model.DType;
import io.dsflow.engine.model.ModelConfig;
import io.dsflow.engine.model.ModelWeights;
import io.dsflow.engine.model.SafeTensors;
import jcuda.Pointer;
import jcuda.driver.CUdeviceptr;

import java.nio.ByteBuffer;
import java.util.HashMap;
import java.util.Locale;
import java.util.Map;

import static jcuda.driver.JCudaDriver.cuMemcpyHtoD;

/**
 * A model's weights on one GPU, in bf16 (uploaded straight from the memory-mapped files; fp16 and fp32 files are
 * rounded to bf16), laid out for the forward pass's kernels:
 * <pre>
 *   embed         [vocab][wordEmbedDim]   in device memory, or in pinned host memory after placeEmbeddings(true)
 *   positionTable [maxPositions + 2][hidden] OPT's learned positions (else null)
 *   projectIn / projectOut                 OPT's embedding projections where the widths differ (else null)
 *   finalNorm, finalNormBias [hidden]; lmHead [vocab][wordEmbedDim] (the embedding table itself when tied)
 *   layers[l].qkv [qDim + 2 kvDim][hidden]: q, k and v stacked (one GEMV reads them; its rows are [q | k | v])
 *   layers[l].gateUp [2 inter][hidden]: gate and up rows interleaved (gate_i, up_i), the SwiGLU epilogue's layout
 *                  (OPT: fc1 alone)
 *   invFreq [headDim / 2] f32 RoPE inverse frequencies (null without RoPE)
 * </pre>
 * Created by {@link #load} or {@link #synthetic}; {@link #placeEmbeddings} moves the table between device and host.
 * The weights live as long as their runtime: the backend's close frees them with it.
 */
final class CudaWeights {
    private static final org.slf4j.Logger LOG = org.slf4j.LoggerFactory.getLogger(CudaWeights.class);

    /** A weight: bf16 values of a [out][in] (or [n]) tensor in device memory (the embedding table: maybe in host). */
    record Weight(CUdeviceptr ptr, long elements) {
    }

    /** One decoder layer (fields as in the class comment; biases and OPT's LayerNorm biases null where absent). */
    record Layer(Weight attnNorm, Weight attnNormBias, Weight qkv, Weight qkvBias, Weight o, Weight oBias,
                 Weight mlpNorm, Weight mlpNormBias, Weight gateUp, Weight gateUpBias, Weight down,
                 Weight downBias) {
    }

    /** Where weights come from: the parts of one device tensor (laid end to end), or random values when null. */
    private interface Source {
        Weight get(SafeTensors.Entry e, long elements, float scale);

        Weight concat(SafeTensors.Entry[] parts, long elements, float scale);

        /** gate and up ([rows][cols] each) with their rows interleaved: the layout of the SwiGLU epilogues. */
        Weight interleave(SafeTensors.Entry gate, SafeTensors.Entry up, long elements, float scale);
    }

    private final CudaRuntime gpu;
    final Weight positionTable, projectIn, projectOut, finalNorm, finalNormBias, lmHead;
    final Layer[] layers;
    final CUdeviceptr invFreq;
    private Weight embed;
    private boolean embeddingsOnHost;
    private final long weightBytes, embedBytes;

    private CudaWeights(CudaRuntime gpu, ModelConfig c, ModelWeights w, Source src) {
        this.gpu = gpu;
        int h = c.hiddenSize();
        long vocabRows = (long) c.vocabSize() * c.wordEmbedDim();
        float ws = 0.02f;
        embed = src.get(w == null ? null : w.embed, vocabRows, ws);
        positionTable = c.architecture() == Architecture.OPT ? src.get(w == null ? null : w.positions,
                (long) (c.maxPositions() + ModelConfig.OPT_POSITION_OFFSET) * h, ws) : null;
        projectIn = w != null && w.projectIn != null ? src.get(w.projectIn, 0, ws) : null;
        projectOut = w != null && w.projectOut != null ? src.get(w.projectOut, 0, ws) : null;
        boolean ln = c.architecture() == Architecture.OPT;
        finalNorm = w == null || w.finalNorm != null ? src.get(w == null ? null : w.finalNorm, h, -1) : null;
        finalNormBias = ln && (w == null || w.finalNormBias != null)
                ? src.get(w == null ? null : w.finalNormBias, h, 0) : null;
        lmHead = w != null && w.lmHead == w.embed ? embed : c.tieWordEmbeddings() ? embed
                : src.get(w == null ? null : w.lmHead, vocabRows, ws);
        layers = new Layer[c.numLayers()];
        for (int i = 0; i < layers.length; i++) layers[i] = layer(c, w == null ? null : w.layers[i], src, ln, ws);
        if (c.architecture().usesRope()) {
            float[] inv = c.rope().inverseFrequencies(c.headDim());
            invFreq = gpu.alloc(inv.length * 4L);
            cuMemcpyHtoD(invFreq, Pointer.to(inv), inv.length * 4L);
        } else {
            invFreq = null;
        }
        gpu.trim();   // the staging blocks of the interleaved uploads go back to the driver
        weightBytes = gpu.allocated();
        embedBytes = c.tieWordEmbeddings() ? 0 : (long) c.vocabSize() * c.wordEmbedDim() * 2;
    }

    private static Layer layer(ModelConfig c, ModelWeights.Layer l, Source src, boolean ln, float ws) {
        int h = c.hiddenSize(), inter = c.intermediateSize();
        long qkvRows = c.qDim() + 2L * c.kvDim();
        boolean qkvBias = l == null ? c.attentionBias() : l.qBias() != null;
        boolean gateUpBias = l == null ? c.mlpBias() : l.upBias() != null;
        return new Layer(
                src.get(l == null ? null : l.attnNorm(), h, -1),
                ln ? src.get(l == null ? null : l.attnNormBias(), h, 0) : null,
                src.concat(l == null ? null : new SafeTensors.Entry[]{l.q(), l.k(), l.v()}, qkvRows * h, ws),
                qkvBias ? src.concat(l == null ? null : new SafeTensors.Entry[]{l.qBias(), l.kBias(), l.vBias()},
                        qkvRows, 0) : null,
                src.get(l == null ? null : l.o(), (long) h * c.qDim(), ws),
                optional(src, l == null ? null : l.oBias(), h),
                src.get(l == null ? null : l.mlpNorm(), h, -1),
                ln ? src.get(l == null ? null : l.mlpNormBias(), h, 0) : null,
                ln ? src.get(l == null ? null : l.up(), (long) inter * h, ws)
                        : src.interleave(l == null ? null : l.gate(), l == null ? null : l.up(), 2L * inter * h, ws),
                !gateUpBias ? null : ln ? src.get(l == null ? null : l.upBias(), inter, 0)
                        : src.interleave(l == null ? null : l.gateBias(), l == null ? null : l.upBias(), 2L * inter, 0),
                src.get(l == null ? null : l.down(), (long) h * inter, ws),
                optional(src, l == null ? null : l.downBias(), h));
    }

    private static Weight optional(Source src, SafeTensors.Entry e, long n) {
        return e == null ? null : src.get(e, n, 0);
    }

    /** Uploads a model's weights. */
    static CudaWeights load(CudaRuntime gpu, ModelWeights w) {
        Map<SafeTensors.Entry, Weight> uploaded = new HashMap<>();
        return new CudaWeights(gpu, w.config, w, new Source() {
            @Override
            public Weight get(SafeTensors.Entry e, long elements, float scale) {
                return uploaded.computeIfAbsent(e, x -> upload(gpu, new SafeTensors.Entry[]{x}));
            }

            @Override
            public Weight concat(SafeTensors.Entry[] parts, long elements, float scale) {
                return upload(gpu, parts);
            }

            @Override
            public Weight interleave(SafeTensors.Entry gate, SafeTensors.Entry up, long elements, float scale) {
                Weight stacked = upload(gpu, new SafeTensors.Entry[]{gate, up});
                long[] shape = gate.shape();
                int rows = (int) shape[0];
                long cols = shape.length > 1 ? shape[1] : 1;
                CUdeviceptr p = gpu.alloc(stacked.elements() * 2);
                ActivationKernels.interleaveRows(gpu, p, stacked.ptr(), rows, cols);
                gpu.synchronize();
                gpu.free(stacked.ptr(), stacked.elements() * 2);
                return new Weight(p, stacked.elements());
            }
        });
    }

    /** Random bf16 weights of a model's shapes, made on the device (norm weights 1, biases 0): for bench. */
    static CudaWeights synthetic(CudaRuntime gpu, ModelConfig config, long seed) {
        long[] counter = {seed};
        return new CudaWeights(gpu, config, null, new Source() {
            @Override
            public Weight get(SafeTensors.Entry e, long n, float scale) {
                return random(gpu, n, counter[0]++, scale);
            }

            @Override
            public Weight concat(SafeTensors.Entry[] parts, long n, float scale) {
                return random(gpu, n, counter[0]++, scale);
            }

            @Override
            public Weight interleave(SafeTensors.Entry gate, SafeTensors.Entry up, long n, float scale) {
                return random(gpu, n, counter[0]++, scale);
            }
        });
    }

    /** Uploads tensors end to end into one device buffer of bf16 (row-major [out][in] parts stack their rows). */
    private static Weight upload(CudaRuntime gpu, SafeTensors.Entry[] parts) {
        long total = 0;
        for (SafeTensors.Entry e : parts) total += e.elements();
        CUdeviceptr p = gpu.alloc(total * 2);
        long at = 0;
        for (SafeTensors.Entry e : parts) {
            long n = e.elements();
            ByteBuffer buf = e.map();
            if (e.dtype() == DType.BF16) {
                cuMemcpyHtoD(p.withByteOffset(at * 2), Pointer.to(buf), n * 2);  // straight from the mapping
            } else {
                int chunk = 1 << 20;
                short[] bits = new short[chunk];
                for (long i0 = 0; i0 < n; i0 += chunk) {
                    int m = (int) Math.min(chunk, n - i0);
                    for (int i = 0; i < m; i++) bits[i] = toBf16(e.dtype().read(buf, i0 + i));
                    cuMemcpyHtoD(p.withByteOffset((at + i0) * 2), Pointer.to(bits), m * 2L);
                }
            }
            at += n;
        }
        return new Weight(p, total);
    }

    /** scale > 0: uniform in [-scale, scale); scale 0: zeros; scale -1: ones (norm weights). */
    private static Weight random(CudaRuntime gpu, long n, long seed, float scale) {
        CUdeviceptr p = gpu.alloc(n * 2);
        if (scale > 0) {
            ActivationKernels.fillRandomBf16(gpu, p, n, seed, scale);
        } else {
            short v = scale == 0 ? 0 : toBf16(1f);
            short[] chunk = new short[(int) Math.min(n, 1 << 20)];
            java.util.Arrays.fill(chunk, v);
            for (long i0 = 0; i0 < n; i0 += chunk.length) {
                cuMemcpyHtoD(p.withByteOffset(i0 * 2), Pointer.to(chunk), Math.min(chunk.length, n - i0) * 2);
            }
        }
        return new Weight(p, n);
    }

    /** float32 to bf16, rounding to nearest even. */
    static short toBf16(float f) {
        int bits = Float.floatToRawIntBits(f);
        if ((bits & 0x7fffffff) > 0x7f800000) return (short) ((bits >>> 16) | 0x40);
        return (short) ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16);
    }

    /** [vocab][wordEmbedDim] bf16, in device memory or, after {@link #placeEmbeddings}(true), in pinned host memory. */
    Weight embed() {
        return embed;
    }

    /**
     * Keeps the token embedding table in pinned host memory mapped into the device ({@code host}) or in device memory.
     * A step gathers one row a token from it (8 KB for Llama-3.1-8B, over the host link), so the host costs a step a
     * few microseconds and frees the whole table on the device (1.05 GB for Llama-3.1-8B). A model whose output
     * projection is the embedding table (tied) reads it whole every step: it stays on the device.
     *
     * @return whether the table moved (captured graphs hold its old address)
     */
    boolean placeEmbeddings(boolean host) {
        if (host == embeddingsOnHost || lmHead == embed) return false;
        gpu.makeCurrent();
        gpu.synchronize();   // no step reads the old table any more
        long bytes = embed.elements() * 2;
        CUdeviceptr moved = host ? gpu.allocHost(bytes) : gpu.alloc(bytes);
        jcuda.driver.JCudaDriver.cuMemcpy(moved, embed.ptr(), bytes);
        if (host) gpu.free(embed.ptr(), bytes); else gpu.freeHost(embed.ptr(), bytes);
        embed = new Weight(moved, embed.elements());
        embeddingsOnHost = host;
        gpu.trim();   // the device block goes back to the driver, not to the pool's cache
        LOG.info(String.format(Locale.ROOT, "token embedding table (%.2f GB) moved to %s", bytes / 1e9,
                host ? "pinned host memory" : "device memory"));
        return true;
    }

    boolean embeddingsOnHost() {
        return embeddingsOnHost;
    }

    /** Bytes of the weights as uploaded (all in device memory then). */
    long bytes() {
        return weightBytes;
    }

    /** Bytes of weights a decode step reads: all of them but the embedding table, of which it gathers a few rows. */
    long bytesPerStep() {
        return weightBytes - embedBytes;
    }

    /** Fails for head sizes the attention kernels are not built for. */
    static void requireHeadDim(int d) {
        if (d % 32 != 0 || d > 256 || d == 160 || d == 192 || d == 224) {
            throw new DsflowException("the CUDA backend supports head_dim 32, 64, 96, 128 and 256, not " + d);
        }
    }
}
