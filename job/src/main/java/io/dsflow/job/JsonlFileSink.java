package io.dsflow.job;

import io.dsflow.operators.OutputRecord;
import org.apache.flink.api.connector.sink2.Sink;
import org.apache.flink.api.connector.sink2.SinkWriter;
import org.apache.flink.api.connector.sink2.WriterInitContext;

import java.io.BufferedWriter;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Writes every record as one JSON line to a file (batch replay output). Run it with parallelism 1: the file is
 * written by one writer, replaced at the start of the job.
 */
public final class JsonlFileSink implements Sink<OutputRecord> {
    private final String file;

    public JsonlFileSink(Path file) {
        this.file = file.toAbsolutePath().toString();
    }

    @Override
    public SinkWriter<OutputRecord> createWriter(WriterInitContext context) throws IOException {
        BufferedWriter w = Files.newBufferedWriter(Path.of(file), StandardCharsets.UTF_8);
        return new SinkWriter<>() {
            @Override
            public void write(OutputRecord r, Context ctx) throws IOException {
                w.write(r.toJson());
                w.write('\n');
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
