package io.dsflow.job;

import io.dsflow.operators.OutputRecord;
import org.apache.flink.api.connector.sink2.Sink;
import org.apache.flink.api.connector.sink2.SinkWriter;
import org.apache.flink.api.connector.sink2.WriterInitContext;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.BufferedWriter;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Writes every record as one JSON line to a file (batch replay output). Run it with parallelism 1: the file is
 * written by one writer, replaced at the start of the job. While it writes it logs a progress line at most every
 * 10 s (requests finished of those expected, tokens, tokens/s), so a long replay is not silent.
 */
public final class JsonlFileSink implements Sink<OutputRecord> {
    private static final Logger LOG = LoggerFactory.getLogger(JsonlFileSink.class);
    static final long PROGRESS_EVERY_NS = 10_000_000_000L;
    private final String file;
    private final long expectedRequests;
    private final long progressEveryNs;

    /** @param expectedRequests the requests of the replay, for the progress lines (0: unknown) */
    public JsonlFileSink(Path file, long expectedRequests) {
        this(file, expectedRequests, PROGRESS_EVERY_NS);
    }

    JsonlFileSink(Path file, long expectedRequests, long progressEveryNs) {
        this.file = file.toAbsolutePath().toString();
        this.expectedRequests = expectedRequests;
        this.progressEveryNs = progressEveryNs;
    }

    @Override
    public SinkWriter<OutputRecord> createWriter(WriterInitContext context) throws IOException {
        BufferedWriter w = Files.newBufferedWriter(Path.of(file), StandardCharsets.UTF_8);
        long start = System.nanoTime();
        return new SinkWriter<>() {
            long finals, errors, tokens, lastReport = start;

            @Override
            public void write(OutputRecord r, Context ctx) throws IOException {
                w.write(r.toJson());
                w.write('\n');
                if (OutputRecord.CHUNK.equals(r.kind)) tokens++;
                else if (OutputRecord.FINAL.equals(r.kind)) finals++;
                else errors++;
                long now = System.nanoTime();
                if (now - lastReport >= progressEveryNs) {
                    lastReport = now;
                    LOG.info("replay: {} of {} requests finished, {} error records, {} tokens, {} tokens/s", finals,
                            expectedRequests > 0 ? expectedRequests : "?", errors, tokens,
                            String.format(java.util.Locale.ROOT, "%.1f", tokens / ((now - start) / 1e9)));
                }
            }

            @Override
            public void flush(boolean endOfInput) throws IOException {
                w.flush();
            }

            @Override
            public void close() throws IOException {
                w.close();
            }
        };
    }
}
