package io.dsflow.operators;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.dsflow.engine.InvalidRequestException;
import io.dsflow.engine.kv.KvConfig;
import io.dsflow.engine.kv.KvPolicy;
import org.apache.flink.api.common.serialization.SerializerConfigImpl;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeutils.TypeSerializer;
import org.apache.flink.api.java.typeutils.PojoTypeInfo;
import org.apache.flink.core.memory.DataInputDeserializer;
import org.apache.flink.core.memory.DataOutputSerializer;
import org.junit.jupiter.api.Test;

import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;

/** A request's kv overrides: read once, applied without parsing, carried by Flink in order, written back as JSON. */
class KvOverridesTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    private static KvOverrides parse(String json) throws Exception {
        return KvOverrides.of(JSON.readTree(json));
    }

    @Test
    void optionsKeepTheRequestsOrderWithValuesAsText() throws Exception {
        KvOverrides o = parse("{\"policy\": \"dspp\", \"window\": 16, \"lambda\": 0.5, \"lookahead\": true}");
        assertArrayEquals(new String[]{"policy", "window", "lambda", "lookahead"}, o.names);
        assertArrayEquals(new String[]{"dspp", "16", "0.5", "true"}, o.values);
        assertEquals(List.of("policy", "window", "lambda", "lookahead"), List.copyOf(o.options().keySet()));
    }

    @Test
    void applyingThemIsKvConfigWithTheSameOptions() throws Exception {
        KvOverrides o = parse("{\"policy\": \"dspp\", \"window\": 16, \"k_floor\": 32}");
        KvConfig expected = KvConfig.DENSE.with(Map.of("policy", "dspp", "window", "16", "k-floor", "32"));
        assertEquals(expected, o.applyTo(KvConfig.DENSE));
        assertEquals(KvPolicy.DSPP, o.applyTo(KvConfig.DENSE).policy());
        assertEquals(16, o.applyTo(KvConfig.DENSE).window());
    }

    @Test
    void aLaterAliasOfTheSameOptionWinsAsInTheRequest() throws Exception {
        assertEquals(48, parse("{\"k_floor\": 32, \"k-floor\": 48}").applyTo(KvConfig.DENSE).kFloor());
        assertEquals(32, parse("{\"k-floor\": 48, \"k_floor\": 32}").applyTo(KvConfig.DENSE).kFloor());
    }

    @Test
    void anythingButAnObjectOfValuesIsRefusedWithItsCause() {
        assertEquals("kv must be an object",
                assertThrows(InvalidRequestException.class, () -> parse("[1, 2]")).getMessage());
        assertEquals("kv.window must be a number or a string",
                assertThrows(InvalidRequestException.class, () -> parse("{\"window\": [16]}")).getMessage());
        assertEquals("kv.sinks must be a number or a string",
                assertThrows(InvalidRequestException.class, () -> parse("{\"sinks\": null}")).getMessage());
        assertThrows(InvalidRequestException.class, () -> parse("{\"policy\": \"sparse\"}").applyTo(KvConfig.DENSE));
    }

    @Test
    void itsJsonReadsBackToTheSameOverrides() throws Exception {
        KvOverrides o = parse("{\"policy\": \"ds\", \"r\": 8, \"channels\": \"qk-group\"}");
        assertEquals("{\"policy\":\"ds\",\"r\":\"8\",\"channels\":\"qk-group\"}", o.toJson());
        assertEquals(o, KvOverrides.fromJson(o.toJson()));
        assertEquals(o.applyTo(KvConfig.DENSE), KvOverrides.fromJson(o.toJson()).applyTo(KvConfig.DENSE));
    }

    /** Between the parser and the decode operator Flink serialises the request: a POJO, no Kryo, order kept. */
    @Test
    void aRequestTravelsAsAFlinkPojoWithItsOverridesInOrder() throws Exception {
        TypeInformation<Request> type = TypeInformation.of(Request.class);
        PojoTypeInfo<Request> pojo = assertInstanceOf(PojoTypeInfo.class, type);
        assertInstanceOf(PojoTypeInfo.class, pojo.getTypeAt(pojo.getFieldIndex("kv")), "kv is a POJO field");

        Request r = new RequestParser(Limits.DEFAULT).parse("{\"conversation_id\": \"c\", \"request_id\": \"r\","
                + " \"prompt_ids\": [0, 5], \"kv\": {\"window\": 8, \"policy\": \"dspp\", \"sinks\": 2}}").request();
        TypeSerializer<Request> serializer = type.createSerializer(new SerializerConfigImpl());
        DataOutputSerializer out = new DataOutputSerializer(256);
        serializer.serialize(r, out);
        Request back = serializer.deserialize(new DataInputDeserializer(out.getCopyOfBuffer()));
        assertArrayEquals(new String[]{"window", "policy", "sinks"}, back.kv.names);
        assertEquals(r.kvConfig(KvConfig.DENSE), back.kvConfig(KvConfig.DENSE));
    }
}
