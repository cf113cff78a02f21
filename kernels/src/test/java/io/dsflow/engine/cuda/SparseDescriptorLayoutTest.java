package io.dsflow.engine.cuda;

import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The sparse kernels' descriptors are laid out once in CUDA (sparse_rows.cuh's SP_* and SEG_* enums) and once in Java
 * (SparseRowDescriptor, SegmentDescriptor): the two must name the same fields in the same order, or the kernels read
 * one field where the host wrote another. Reads the header from the source tree (Maven runs tests in the module's
 * folder), so it runs without a GPU or nvcc.
 */
class SparseDescriptorLayoutTest {
    /** The header from the kernels module's folder (Maven), or from the repository's (a launcher run from there). */
    private static final Path HEADER = Path.of("src/main/cuda/sparse_rows.cuh");
    private static final Path FROM_REPOSITORY = Path.of("kernels").resolve(HEADER);

    /** The header without its comments (a comment may mention an enum's fields). */
    private static String header() throws IOException {
        Path path = Files.isRegularFile(HEADER) ? HEADER : FROM_REPOSITORY;
        assertTrue(Files.isRegularFile(path), "no " + HEADER + " under " + Path.of("").toAbsolutePath()
                + ": run from the kernels module's folder or the repository's");
        return Files.readString(path).replaceAll("//[^\n]*", "").replaceAll("(?s)/\\*.*?\\*/", "");
    }

    /** The names of the header's enum whose constants start with {@code prefix}, the prefix taken off, in order. */
    private static List<String> enumFields(String header, String prefix) {
        Matcher m = Pattern.compile("enum\\s*\\{([^}]*)}").matcher(header);
        List<List<String>> found = new ArrayList<>();
        while (m.find()) {
            List<String> names = Arrays.stream(m.group(1).split(",")).map(String::trim).filter(n -> !n.isEmpty())
                    .toList();
            if (names.get(0).startsWith(prefix)) found.add(names);
        }
        assertEquals(1, found.size(), "one enum of " + prefix + "* fields in " + HEADER);
        return found.get(0).stream().map(n -> {
            assertTrue(n.startsWith(prefix) && !n.contains("="), prefix + "* enum constant without a value: " + n);
            return n.substring(prefix.length());
        }).toList();
    }

    /** The value of {@code #define name N}. */
    private static int define(String header, String name) {
        Matcher m = Pattern.compile("#define\\s+" + name + "\\s+(\\d+)\\s").matcher(header);
        assertTrue(m.find(), "#define " + name + " in " + HEADER);
        return Integer.parseInt(m.group(1));
    }

    private static List<String> names(Enum<?>[] values) {
        return Arrays.stream(values).map(Enum::name).toList();
    }

    @Test
    void sparseRowDescriptorHasTheHeadersFieldsInItsOrder() throws IOException {
        String h = header();
        assertEquals(enumFields(h, "SP_"), names(SparseRowDescriptor.Field.values()), "SP_* against the Java record");
        assertEquals(define(h, "SP_FIELDS"), SparseRowDescriptor.FIELDS, "SP_FIELDS");
        assertEquals(SparseRowDescriptor.FIELDS, enumFields(h, "SP_").size(), "SP_FIELDS counts the SP_* fields");
    }

    @Test
    void segmentDescriptorHasTheHeadersFieldsInItsOrder() throws IOException {
        String h = header();
        assertEquals(enumFields(h, "SEG_"), names(SegmentDescriptor.Field.values()), "SEG_* against the Java record");
        assertEquals(define(h, "SEG_FIELDS"), SegmentDescriptor.FIELDS, "SEG_FIELDS");
        assertEquals(SegmentDescriptor.FIELDS, enumFields(h, "SEG_").size(), "SEG_FIELDS counts the SEG_* fields");
    }

    /** writeTo puts each record component at its field's place (a record and its enum written apart could differ). */
    @Test
    void recordsWriteEachComponentAtItsField() {
        int[] row = new int[SparseRowDescriptor.FIELDS + 2];
        new SparseRowDescriptor(1, 2, 3, 4, 5, 6, 7, 8, 9, true, 11).writeTo(row, 2);
        assertEquals(List.of(0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 11), Arrays.stream(row).boxed().toList());
        int[] seg = new int[SegmentDescriptor.FIELDS + 1];
        new SegmentDescriptor(1, 2, 3, 4, 5, 6).writeTo(seg, 1);
        assertEquals(List.of(0, 1, 2, 3, 4, 5, 6), Arrays.stream(seg).boxed().toList());
    }
}
