package io.dsflow.job;

import io.dsflow.operators.DecodeOperator;
import io.dsflow.operators.DecodeSettings;
import io.dsflow.operators.InputRecord;
import io.dsflow.operators.Limits;
import io.dsflow.operators.OutputRecord;
import io.dsflow.operators.Request;
import io.dsflow.operators.RequestParser;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.core.memory.ManagedMemoryUseCase;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.datastream.SingleOutputStreamOperator;
import org.apache.flink.streaming.api.functions.ProcessFunction;
import org.apache.flink.util.Collector;
import org.apache.flink.util.OutputTag;

/**
 * The dsflow data flow, independent of where requests come from and where output goes (Kafka, a JSONL file, a test
 * collection): raw JSON requests (or Kafka's records: {@link InputRecord}) -> parse and validate (a bad record -> its
 * error record, and its final record when its ids can be read) -> keyBy(conversation_id) -> decode operator -> chunk,
 * final and error records. End commands (a tombstone, end_conversation) travel the same way as requests, keyed by
 * the conversation they end.
 */
public final class Pipeline {
    static final OutputTag<OutputRecord> PARSE_ERRORS =
            new OutputTag<>("parse-errors", TypeInformation.of(OutputRecord.class));

    /** Managed-memory weight of the decode operator (its share of the slot's managed memory, for KV caches). */
    static final int DECODE_MEMORY_WEIGHT = 100;

    private Pipeline() {
    }

    /** Every record the job emits for requests given as JSON text: decode output and the parse errors. */
    public static DataStream<OutputRecord> build(DataStream<String> requests, DecodeSettings settings) {
        return decode(requests.process(new Parse<String>(settings.limits(), RequestParser::parse)),
                requests.getParallelism(), settings);
    }

    /** Every record the job emits for a source's records (Kafka: keys, tombstones, undecodable bytes). */
    public static DataStream<OutputRecord> buildFromRecords(DataStream<InputRecord> records, DecodeSettings settings) {
        return decode(records.process(new Parse<InputRecord>(settings.limits(), RequestParser::parse)),
                records.getParallelism(), settings);
    }

    private static DataStream<OutputRecord> decode(SingleOutputStreamOperator<Request> parser, int parallelism,
                                                   DecodeSettings settings) {
        // buffer timeout 0: each token record leaves at once instead of waiting up to 100 ms for a network buffer to
        // fill (tokens are few per second per conversation, so flushing per record costs little)
        // the parser runs at its input's parallelism, so records reach keyBy in the order they were read: a rebalance
        // here could let a conversation's second turn overtake its first
        SingleOutputStreamOperator<Request> parsed = parser
                .returns(TypeInformation.of(Request.class)).name("parse requests").uid("parse")
                .setParallelism(parallelism).setBufferTimeout(0);
        SingleOutputStreamOperator<OutputRecord> decoded = parsed
                .keyBy((Request r) -> r.conversationId, Types.STRING)
                .transform("decode", TypeInformation.of(OutputRecord.class), new DecodeOperator(settings))
                .uid("decode")
                .setBufferTimeout(0);
        decoded.getTransformation().declareManagedMemoryUseCaseAtOperatorScope(ManagedMemoryUseCase.OPERATOR,
                DECODE_MEMORY_WEIGHT);
        return decoded.union(parsed.getSideOutput(PARSE_ERRORS));
    }

    /**
     * Parses each record (JSON text, or a source's {@link InputRecord}: a tombstone becomes an end command, bytes that
     * are not text an error); a bad one goes to the side output as its one error record, followed by its final record
     * when its ids can be read ({@link OutputRecord#refusal}).
     */
    static final class Parse<T> extends ProcessFunction<T, Request> {
        /** How the parser reads a T: RequestParser::parse of that type (serialisable, as the function is). */
        interface Reader<T> extends java.io.Serializable {
            RequestParser.Parsed read(RequestParser parser, T record);
        }

        private final Limits limits;
        private final Reader<T> reader;
        private transient RequestParser parser;

        Parse(Limits limits, Reader<T> reader) {
            this.limits = limits;
            this.reader = reader;
        }

        @Override
        public void processElement(T record, Context ctx, Collector<Request> out) {
            if (parser == null) parser = new RequestParser(limits);
            RequestParser.Parsed p = reader.read(parser, record);
            if (p.request() != null) out.collect(p.request());
            for (OutputRecord r : p.records()) ctx.output(PARSE_ERRORS, r);
        }
    }
}
