package io.dsflow.job;

import io.dsflow.operators.OutputRecord;
import org.apache.flink.api.connector.sink2.SinkWriter;
import org.apache.logging.log4j.LogManager;
import org.apache.logging.log4j.core.LogEvent;
import org.apache.logging.log4j.core.Logger;
import org.apache.logging.log4j.core.appender.AbstractAppender;
import org.apache.logging.log4j.core.config.Property;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Issue 22, item 10: a replay is not silent until it ends. The replay's sink logs a progress line (requests finished of
 * those in the file, error records, tokens, tokens/s) at its interval while it writes, and writes every record.
 */
class JsonlFileSinkTest {
    @TempDir
    Path tmp;

    private static OutputRecord record(String kind, String id, int index) {
        OutputRecord r = new OutputRecord();
        r.kind = kind;
        r.requestId = id;
        r.conversationId = "c-" + id;
        r.index = index;
        r.text = "x";
        r.finishReason = "length";
        return r;
    }

    @Test
    void logsProgressWhileItWrites() throws Exception {
        List<String> lines = new CopyOnWriteArrayList<>();
        AbstractAppender capture = new AbstractAppender("capture", null, null, true, Property.EMPTY_ARRAY) {
            @Override
            public void append(LogEvent event) {
                lines.add(event.getMessage().getFormattedMessage());
            }
        };
        capture.start();
        Logger logger = (Logger) LogManager.getLogger(JsonlFileSink.class);
        logger.addAppender(capture);
        Path out = tmp.resolve("out.jsonl");
        try {
            SinkWriter<OutputRecord> w = new JsonlFileSink(out, 3, 0).createWriter(null);
            w.write(record(OutputRecord.CHUNK, "r1", 0), null);
            w.write(record(OutputRecord.CHUNK, "r1", 1), null);
            w.write(record(OutputRecord.FINAL, "r1", 0), null);
            w.flush(true);
            w.close();
        } finally {
            logger.removeAppender(capture);
        }
        assertEquals(3, Files.readAllLines(out).size(), "every record is written");
        assertTrue(lines.stream().anyMatch(l -> l.startsWith("replay: 1 of 3 requests finished, 0 error records, 2 tokens, ")),
                "a progress line: " + lines);
    }
}
