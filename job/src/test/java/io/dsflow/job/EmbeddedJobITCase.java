package io.dsflow.job;

import org.junit.jupiter.api.Test;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Properties;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

class EmbeddedJobITCase {
    /**
     * The embedded job checkpoints to files, not to the JobManager's memory (which refuses a state over 5 MB: on an
     * H100, 256 running conversations of 2K tokens checkpointed 15 MB, the checkpoint failed and the job restarted),
     * and removes its checkpoint folder when it closes.
     */
    @Test
    void checkpointsGoToATemporaryFolderRemovedAtClose() throws Exception {
        Properties p = new Properties();
        p.setProperty("model.dir", Conversations.MODEL.toString());
        p.setProperty("backend", "cpu");
        Path folder;
        try (EmbeddedJob job = EmbeddedJob.start(p, "128m", true)) {
            folder = job.checkpointFolder();
            long deadline = System.nanoTime() + 60_000_000_000L;
            while (!hasCompletedCheckpoint(folder) && System.nanoTime() < deadline) Thread.sleep(200);
            assertTrue(hasCompletedCheckpoint(folder), "a completed checkpoint (chk-N/_metadata) under " + folder);
        }
        assertFalse(Files.exists(folder), folder + " removed at close");
    }

    private static boolean hasCompletedCheckpoint(Path folder) throws Exception {
        try (Stream<Path> files = Files.walk(folder)) {
            return files.anyMatch(f -> f.getFileName().toString().equals("_metadata"));
        }
    }
}
