package io.dsflow.job.cli;

import io.dsflow.engine.cuda.CudaRuntime;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeFalse;

/** Each bad input is one line on stderr naming the cause, nothing on stdout, and a non-zero exit. */
class BadInputTest {
    @TempDir
    Path tmp;

    private static final String TINY = CliHarness.model("llama-tiny").toString();

    private static void fails(int exit, String expected, String... args) {
        CliHarness.Result r = CliHarness.run(args);
        assertEquals(exit, r.exit(), "exit code of " + Arrays.toString(args) + "; stderr: " + r.err());
        String[] lines = r.err().strip().split("\n");
        String last = lines[lines.length - 1];
        assertTrue(last.startsWith("dsflow: "), r.err());
        assertTrue(last.contains(expected), "expected '" + expected + "' in: " + last);
        assertEquals("", r.out());
    }

    @Test
    void badCommandLine() {
        fails(2, "unknown command 'frobnicate'", "frobnicate");
        fails(2, "unknown option --temprature", "generate", "--model", TINY, "--prompt-ids", "1", "--temprature", "0");
        fails(2, "--max-new-tokens needs a value", "generate", "--model", TINY, "--prompt-ids", "1", "--max-new-tokens");
        fails(2, "--max-new-tokens must be an integer", "generate", "--model", TINY, "--prompt-ids", "1", "--max-new-tokens", "lots");
        fails(2, "--model is required", "generate", "--prompt-ids", "1");
        fails(2, "exactly one of --prompt and --prompt-ids", "generate", "--model", TINY);
        fails(2, "exactly one of --prompt and --prompt-ids", "generate", "--model", TINY, "--prompt", "a", "--prompt-ids", "1");
        fails(2, "comma-separated integers", "generate", "--model", TINY, "--prompt-ids", "1,x,3");
        fails(2, "--backend must be cpu, cuda, auto or cpu:device-memory=SIZE, got 'tpu'", "generate", "--model", TINY,
                "--prompt-ids", "1", "--backend", "tpu");
    }

    /** The engine's loadgen and --through job check the load's shape by the same rules (LoadgenCommand.shape). */
    @Test
    void badLoadShapesAreRefusedTheSameWayThroughTheEngineAndTheJob() {
        for (String[] through : new String[][]{{}, {"--through", "job"}}) {
            fails(2, "--requests must be >= 1", concat(through, "loadgen", "--model", TINY, "--requests", "0"));
            fails(2, "--rate must be >= 0", concat(through, "loadgen", "--model", TINY, "--rate", "-1"));
            fails(2, "--prompt-tokens must be N or MIN-MAX", concat(through, "loadgen", "--model", TINY,
                    "--prompt-tokens", "5-2"));
        }
    }

    private static String[] concat(String[] through, String... args) {
        String[] all = Arrays.copyOf(args, args.length + through.length);
        System.arraycopy(through, 0, all, args.length, through.length);
        return all;
    }

    @Test
    void nonsenseSamplingParameters() {
        fails(1, "temperature must be", "generate", "--model", TINY, "--prompt-ids", "1", "--temperature", "-1");
        fails(1, "temperature must be", "generate", "--model", TINY, "--prompt-ids", "1", "--temperature", "NaN");
        fails(1, "top_p must be in (0, 1]", "generate", "--model", TINY, "--prompt-ids", "1", "--top-p", "0");
        fails(1, "top_p must be in (0, 1]", "generate", "--model", TINY, "--prompt-ids", "1", "--top-p", "1.5");
        fails(1, "top_k must be >= 0", "generate", "--model", TINY, "--prompt-ids", "1", "--top-k", "-2");
        fails(1, "max_new_tokens must be >= 0", "generate", "--model", TINY, "--prompt-ids", "1", "--max-new-tokens", "-5");
        fails(1, "unknown kv policy 'sparse'", "generate", "--model", TINY, "--prompt-ids", "1", "--kv-policy", "sparse");
    }

    @Test
    void tokenIdsOutsideTheVocabulary() {
        fails(1, "token id 512 is outside the vocabulary [0, 512)", "generate", "--model", TINY, "--prompt-ids", "0,512");
        fails(1, "token id -1 is outside the vocabulary", "generate", "--model", TINY, "--prompt-ids", "0,-1");
    }

    @Test
    void promptLongerThanTheModelsPositions() {
        int[] ids = new int[2049];
        String csv = String.join(",", Arrays.stream(ids).mapToObj(i -> "7").toList());
        fails(1, "the model has 2048", "generate", "--model", TINY, "--prompt-ids", csv);
    }

    @Test
    void badModelFolders() throws Exception {
        fails(1, "does not exist", "generate", "--model", tmp.resolve("none").toString(), "--prompt-ids", "1");
        Path empty = Files.createDirectories(tmp.resolve("empty"));
        fails(1, "no config.json", "generate", "--model", empty.toString(), "--prompt-ids", "1");
        Files.copy(CliHarness.model("llama-tiny").resolve("config.json"), empty.resolve("config.json"));
        fails(1, "no weights", "generate", "--model", empty.toString(), "--prompt-ids", "1");
        Files.write(empty.resolve("pytorch_model.bin"), new byte[]{(byte) 0x80, 2});
        fails(1, "only pickled weights", "generate", "--model", empty.toString(), "--prompt-ids", "1");
        Files.write(empty.resolve("model.safetensors"), new byte[]{1, 2, 3});
        fails(1, "truncated safetensors", "generate", "--model", empty.toString(), "--prompt-ids", "1");
    }

    @Test
    void cudaBackendWhereCudaIsUnavailableIsAClearErrorNamingWhy() {
        assumeFalse(CudaRuntime.available(), "CUDA is available here, so --backend cuda runs (the GPU tests cover it)");
        fails(1, "the cuda backend is not available: " + CudaRuntime.unavailableReason(),
                "generate", "--model", TINY, "--prompt-ids", "1", "--backend", "cuda");
    }

    @Test
    void aReplayOntoItsOwnInputIsRefusedAndTheInputKept() throws Exception {
        Path in = tmp.resolve("requests.jsonl");
        String line = "{\"conversation_id\":\"c\",\"request_id\":\"r\",\"prompt_ids\":[1,2],\"max_tokens\":1}\n";
        java.nio.file.Files.writeString(in, line);
        fails(2, "--output-file is the --replay-file", "run", "--replay-file", in.toString(), "--output-file",
                in.toString(), "--model", TINY);
        fails(2, "--output-file is the --replay-file", "run", "--replay-file", in.toString(), "--output-file",
                tmp.resolve(".").resolve("requests.jsonl").toString(), "--model", TINY);
        Path link = java.nio.file.Files.createSymbolicLink(tmp.resolve("link.jsonl"), in);
        fails(2, "--output-file is the --replay-file", "run", "--replay-file", in.toString(), "--output-file",
                link.toString(), "--model", TINY);
        assertEquals(line, java.nio.file.Files.readString(in), "the input is as it was");
    }
}
