package io.dsflow.job.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.StringJoiner;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Acceptance 1 of the engine core, through the command line exactly as scripts call it. */
class GenerateCommandTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    @TempDir
    Path tmp;

    @ParameterizedTest
    @ValueSource(strings = {"llama-tiny", "qwen2-tiny", "opt-tiny"})
    void goldenGreedyIdsAndLogitsThroughTheCommandLine(String model) throws Exception {
        JsonNode golden = JSON.readTree(CliHarness.model(model).resolve("golden.json").toFile());
        int i = 0;
        for (JsonNode c : golden.get("cases")) {
            StringJoiner ids = new StringJoiner(",");
            c.get("prompt_ids").forEach(n -> ids.add(n.asText()));
            Path logits = tmp.resolve(model + "-" + i++ + ".json");
            CliHarness.Result r = CliHarness.run("generate", "--model", CliHarness.model(model).toString(),
                    "--prompt-ids", ids.toString(), "--max-new-tokens", "16", "--temperature", "0", "--json",
                    "--dump-logits", logits.toString());
            assertEquals(0, r.exit(), r.err());
            JsonNode out = JSON.readTree(r.out());
            assertEquals(c.get("greedy_ids"), out.get("token_ids"));
            assertEquals(c.get("prompt_ids").size(), out.get("prompt_tokens").asInt());
            assertEquals("length", out.get("finish_reason").asText());
            assertTrue(out.get("text").isTextual());
            assertTrue(out.get("timings").get("prefill_ms").asDouble() > 0);
            assertTrue(out.get("timings").get("decode_tokens_per_s").asDouble() > 0);
            JsonNode dumped = JSON.readTree(Files.readString(logits));
            JsonNode ref = c.get("last_logits");
            assertEquals(ref.size(), dumped.size());
            double maxRef = 0, maxDiff = 0;
            for (int j = 0; j < ref.size(); j++) {
                maxRef = Math.max(maxRef, Math.abs(ref.get(j).asDouble()));
                maxDiff = Math.max(maxDiff, Math.abs(ref.get(j).asDouble() - dumped.get(j).asDouble()));
            }
            assertTrue(maxDiff <= 1e-3 * maxRef, model + ": max |diff| " + maxDiff + " vs max |ref| " + maxRef);
        }
    }

    @Test
    void textPromptIsTokenizedWithBos() throws Exception {
        CliHarness.Result r = CliHarness.run("generate", "--model", CliHarness.model("probe-retrieval").toString(),
                "--prompt", " The river grows calm after the rain.", "--max-new-tokens", "3", "--temperature", "0", "--json");
        assertEquals(0, r.exit(), r.err());
        JsonNode out = JSON.readTree(r.out());
        assertEquals(3, out.get("token_ids").size());
        assertTrue(out.get("prompt_tokens").asInt() > 5);
    }

    @Test
    void plainOutputPrintsTheText() {
        CliHarness.Result r = CliHarness.run("generate", "--model", CliHarness.model("llama-tiny").toString(),
                "--prompt-ids", "0,5,9", "--max-new-tokens", "4", "--temperature", "0.7", "--top-p", "0.9",
                "--top-k", "40", "--seed", "3");
        assertEquals(0, r.exit(), r.err());
        assertTrue(r.out().contains("4 generated"), r.out());
    }
}
