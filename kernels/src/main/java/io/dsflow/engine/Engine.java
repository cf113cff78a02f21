package io.dsflow.engine;

import io.dsflow.engine.cpu.CpuBackend;
import io.dsflow.engine.cuda.CudaBackend;
import io.dsflow.engine.cuda.CudaRuntime;
import io.dsflow.engine.kv.ChannelConfig;
import io.dsflow.engine.kv.KvCache;
import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.kv.KvPolicy;
import io.dsflow.engine.model.ModelConfig;
import io.dsflow.engine.model.ModelFolder;
import io.dsflow.engine.model.ModelWeights;
import io.dsflow.engine.model.SyntheticModels;
import io.dsflow.engine.sample.SamplingParams;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.EnumMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * A loaded model on a backend, with its tokenizer: makes sequences, prefills prompts, runs batched decode steps.
 * <ul>
 *   <li>{@link #load} opens the folder, checks it, converts the weights for the backend and logs what was loaded;</li>
 *   <li>{@link #prefill} and {@link #decode} check their inputs and throw {@link InvalidRequestException};</li>
 *   <li>one thread drives an engine at a time; {@link #close} frees the backend.</li>
 * </ul>
 */
public final class Engine implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(Engine.class);

    /** The channel file a model folder may carry (DoubleSparse format). */
    public static final String CHANNEL_FILE = "channels.json";

    private final ModelFolder folder;
    private final Backend backend;
    private Tokenizer tokenizer;
    private Path channelFile;
    /** The calibration run when a sparse cache needs channels and there is no channel file: blocks and their tokens. */
    private int calibrationSamples = Calibration.DEFAULT_SAMPLES, calibrationBlock = Calibration.DEFAULT_BLOCK;
    private final Map<KvConfig.ChannelSource, ChannelConfig> channels = new EnumMap<>(KvConfig.ChannelSource.class);

    public Engine(ModelFolder folder, Backend backend) {
        this.folder = folder;
        this.backend = backend;
    }

    /**
     * Opens {@code model}: a Hugging Face folder ({@link #load}), or {@code synthetic:NAME}, a published model's shapes
     * with random weights made on the GPU ({@link #synthetic}), so an 8B-shaped engine runs where no checkpoint can be
     * carried.
     */
    public static Engine open(String model, String backendName, int device) {
        if (model.startsWith(SyntheticModels.PREFIX)) {
            return synthetic(model.substring(SyntheticModels.PREFIX.length()), backendName, device);
        }
        return load(Path.of(model), backendName, device);
    }

    /**
     * A published model's shapes ({@link SyntheticModels}) with random weights made on CUDA device {@code device}: no
     * tokenizer (prompts are token ids) and fixed random heavy channels for ds/dspp (calibrating random weights would
     * measure nothing). For throughput measurements, never for text.
     */
    public static Engine synthetic(String name, String backendName, int device) {
        ModelConfig c = SyntheticModels.get(name);
        if (BackendName.parse(backendName).isCpu() || !CudaRuntime.available()) {
            throw new DsflowException("synthetic:" + name + " needs the cuda backend"
                    + (CudaRuntime.available() ? "" : " (" + CudaRuntime.unavailableReason() + ")"));
        }
        long t0 = System.nanoTime();
        CudaBackend backend = CudaBackend.synthetic(c, device, 1);
        LOG.info(String.format(Locale.ROOT, "model loaded: %s, synthetic:%s (random weights), %.1f GB bf16 weights,"
                        + " backend %s, in %.2f s", c, name, backend.weightBytes() / 1e9, backend.description(),
                (System.nanoTime() - t0) / 1e9));
        return new Engine(null, backend);
    }

    /**
     * Loads a model folder onto a backend ({@link BackendName}: "cpu", "cuda", "auto": cuda where it is available, else
     * cpu; or "cpu:device-memory=SIZE"); GPU 0.
     */
    public static Engine load(Path modelDir, String backendName) {
        return load(modelDir, backendName, 0);
    }

    /** Loads a model folder onto a backend, on CUDA device {@code device} where the backend is a GPU. */
    public static Engine load(Path modelDir, String backendName, int device) {
        BackendName name = BackendName.parse(backendName);   // a bad name fails before the weights are read
        long t0 = System.nanoTime();
        ModelFolder folder = ModelFolder.open(modelDir);
        ModelWeights weights = new ModelWeights(folder);
        Backend backend = switch (name.kind()) {
            case CPU -> new CpuBackend(weights, name.deviceMemory());
            case CUDA -> {
                if (!CudaRuntime.available()) {
                    throw new DsflowException("the cuda backend is not available: " + CudaRuntime.unavailableReason());
                }
                yield CudaBackend.load(weights, device);
            }
            case AUTO -> {
                if (CudaRuntime.available()) yield CudaBackend.load(weights, device);
                LOG.info("backend auto: using the cpu ({})", CudaRuntime.unavailableReason());
                yield new CpuBackend(weights);
            }
        };
        ModelConfig c = folder.config();
        LOG.info(String.format(Locale.ROOT, "model loaded: %s from %s, %.1f MB %s weights, backend %s, in %.2f s",
                c, modelDir, folder.weightBytes() / 1e6,
                folder.storedDtype().name().toLowerCase(Locale.ROOT), backend.description(),
                (System.nanoTime() - t0) / 1e9));
        return new Engine(folder, backend);
    }

    public ModelConfig config() {
        return backend.config();
    }

    public Backend backend() {
        return backend;
    }

    /** The model's folder; null for a synthetic model. */
    public ModelFolder folder() {
        return folder;
    }

    /** The model's tokenizer, loaded on first use; a synthetic model has none (its prompts are token ids). */
    public synchronized Tokenizer tokenizer() {
        if (folder == null) {
            throw new InvalidRequestException("a synthetic model has no tokenizer: give prompt token ids");
        }
        if (tokenizer == null) tokenizer = new Tokenizer(folder.tokenizerFile());
        return tokenizer;
    }

    public Sequence newSequence(KvPolicy policy) {
        return newSequence(KvConfig.defaults(policy));
    }

    public Sequence newSequence(KvConfig kv) {
        return new Sequence(backend.newCache(kv, kv.sparse() ? channels(kv.channelSource()) : null));
    }

    /** Use this channel file for ds/dspp instead of the folder's channels.json (or calibrating). */
    public synchronized void useChannelFile(Path file) {
        if (!Files.isRegularFile(file)) throw new DsflowException("channel file " + file + " does not exist");
        channelFile = file;
        channels.clear();
    }

    /**
     * The size of the calibration {@link #channels} runs where there is no channel file: {@code samples} blocks of
     * {@code blockLen} tokens (capped by the model's positions). The default, 8 blocks of 2048, is what the channels
     * are measured with; tests of the calibrating path on tiny models take fewer.
     */
    public synchronized void calibrateWith(int samples, int blockLen) {
        if (samples < 2) throw new DsflowException("calibration needs 2 blocks or more (one per half), not " + samples);
        if (blockLen < 2) throw new DsflowException("calibration blocks need 2 tokens or more, not " + blockLen);
        calibrationSamples = samples;
        calibrationBlock = blockLen;
    }

    /**
     * The heavy channels for a statistic: from the channel file given, else the folder's channels.json, else
     * calibrated now on the backend, on probe-format text (logged, since it takes a while).
     */
    public synchronized ChannelConfig channels(KvConfig.ChannelSource source) {
        ChannelConfig c = channels.get(source);
        if (c != null) return c;
        ModelConfig m = config();
        Path file = channelFile != null ? channelFile : folder == null ? null : folder.dir().resolve(CHANNEL_FILE);
        if (file == null) {
            c = ChannelConfig.random(m.numLayers(), m.numHeads(), m.headDim(), 17);
            if (source == KvConfig.ChannelSource.QK_GROUP) c = c.grouped(m.numKvHeads());
            LOG.info("channels: a fixed random order (synthetic model)");
        } else if (Files.isRegularFile(file)) {
            c = ChannelConfig.read(file, source, m.numLayers(), m.numHeads(), m.numKvHeads(), m.headDim());
            LOG.info("channels: {} statistic from {}", source.name().toLowerCase(Locale.ROOT).replace('_', '-'), file);
        } else {
            int blockLen = Math.min(calibrationBlock, m.maxPositions());
            LOG.info("no {} in {}: calibrating the heavy channels first on {} ({} blocks of {} tokens of"
                    + " probe-format text; run 'dsflow calibrate' to keep a file)", CHANNEL_FILE, folder.dir(),
                    backend.description(), calibrationSamples, blockLen);
            Calibration.Result r = Calibration.run(this,
                    Calibration.probeBlocks(tokenizer(), calibrationSamples, blockLen, 1));
            for (KvConfig.ChannelSource s : KvConfig.ChannelSource.values()) {
                channels.put(s, r.all().channels(s).perQueryHead(m.numHeads()));   // k's rows are per kv head
            }
            c = channels.get(source);
        }
        channels.put(source, c);
        return c;
    }

    /** Feeds tokens (a prompt, or a follow-up turn) to a sequence; returns the logits of the last one. */
    public float[] prefill(Sequence seq, int[] tokens) {
        checkTokens(seq, tokens);
        float[] logits = null;
        for (int at = 0, step = longestStep(seq); at < tokens.length; at += step) {
            int[] chunk = at == 0 && tokens.length <= step ? tokens
                    : Arrays.copyOfRange(tokens, at, (int) Math.min(tokens.length, (long) at + step));
            logits = backend.forward(new Batch().add(seq.cache(), chunk, seq.position()))[0];
            seq.advance(chunk);
        }
        return logits;
    }

    /** One decode step for many sequences at their own positions: tokens[i] is fed to seqs[i]; logits in order. */
    public float[][] decode(List<Sequence> seqs, int[] tokens) {
        Batch batch = new Batch();
        for (int i = 0; i < seqs.size(); i++) {
            int[] one = {tokens[i]};
            checkTokens(seqs.get(i), one);
            batch.add(seqs.get(i).cache(), one, seqs.get(i).position());
        }
        float[][] logits = backend.forward(batch);
        for (int i = 0; i < seqs.size(); i++) seqs.get(i).advance(new int[]{tokens[i]});
        return logits;
    }

    /**
     * Bytes a cache of {@code tokens} tokens takes on this engine's backend under a policy (the CPU keeps float32
     * keys, values and labels): what the decode operator reserves from Flink's managed memory per conversation.
     */
    public long estimateCacheBytes(KvConfig kv, long tokens) {
        return backend.cacheBytes(kv, tokens);
    }

    /** Checks tokens can be fed to a sequence (ids in the vocabulary, positions left); throws InvalidRequestException. */
    public void checkTokens(Sequence seq, int[] tokens) {
        ModelConfig c = config();
        if (tokens.length == 0) throw new InvalidRequestException("the prompt is empty");
        for (int t : tokens) {
            if (t < 0 || t >= c.vocabSize()) {
                throw new InvalidRequestException("token id " + t + " is outside the vocabulary [0, " + c.vocabSize() + ")");
            }
        }
        // positions that follow the cache never run out; its steps are kept to longestStep
        if (!seq.cache().positionsWithinCache() && (long) seq.position() + tokens.length > c.maxPositions()) {
            throw new InvalidRequestException("the prompt needs positions up to " + (seq.position() + tokens.length)
                    + " but the model has " + c.maxPositions() + " (max_position_embeddings)");
        }
    }

    /**
     * The most tokens one forward pass may feed a sequence: unlimited for an unbounded cache. A bounded one takes a
     * quarter of its window at most: a step's rows are all appended before they attend, so the first row of a step of n
     * past the capacity sees n - 1 fewer window tokens than it would fed alone (the last sees them all). Where
     * positions follow the cache (KvCache#positionsWithinCache), a step must also fit in what the capacity leaves of
     * the model's positions.
     */
    public int longestStep(Sequence seq) {
        KvCache cache = seq.cache();
        if (cache.tokenLimit() == 0) return Integer.MAX_VALUE;
        int step = Math.max(1, (cache.tokenLimit() - cache.sinkTokens()) / 4);
        if (cache.positionsWithinCache()) step = Math.min(step, config().maxPositions() - cache.tokenLimit());
        return step;
    }

    public Generation startGeneration(Sequence seq, SamplingParams params) {
        int maxPositions = seq.cache().positionsWithinCache() ? Integer.MAX_VALUE : config().maxPositions();
        return new Generation(seq, params, config().eosTokenIds(), maxPositions,
                params.stop().isEmpty() ? null : tokenizer());
    }

    /** Prefills a prompt into a fresh sequence and generates its completion. */
    public GenerationResult generate(int[] prompt, SamplingParams params, KvPolicy policy) {
        return generate(prompt, params, KvConfig.defaults(policy));
    }

    public GenerationResult generate(int[] prompt, SamplingParams params, KvConfig kv) {
        Sequence seq = newSequence(kv);
        Generation gen = startGeneration(seq, params);
        long t0 = System.nanoTime();
        float[] logits = prefill(seq, prompt);
        double prefillMs = (System.nanoTime() - t0) / 1e6;
        float[] promptLogits = logits;
        long decodeNanos = 0;
        int decodeSteps = 0;
        int token = gen.finished() ? -1 : gen.accept(logits);
        while (token >= 0 && !gen.finished()) {
            // decode steps sample on the backend (on a GPU only the id comes back)
            long t1 = System.nanoTime();
            checkTokens(seq, new int[]{token});
            int next = backend.forwardSampled(new Batch().add(seq.cache(), new int[]{token}, seq.position()),
                    new SamplingParams[]{params}, new int[]{gen.step()})[0];
            seq.advance(new int[]{token});
            decodeNanos += System.nanoTime() - t1;
            decodeSteps++;
            token = gen.acceptToken(next);
        }
        double tps = decodeSteps == 0 ? 0 : decodeSteps / (decodeNanos / 1e9);
        seq.cache().release();
        return new GenerationResult(gen.completionTokens(), gen.text(tokenizer()), gen.finishReason(), prompt.length,
                promptLogits, prefillMs, tps);
    }

    @Override
    public void close() {
        backend.close();
        if (tokenizer != null) tokenizer.close();
    }
}
