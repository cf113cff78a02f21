package io.dsflow.engine.cuda;

import io.dsflow.engine.DsflowException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Where the CUDA backend looks for cuBLAS (no GPU needed: only files are looked at, none is loaded). */
class CublasLocateTest {
    @TempDir
    Path tmp;

    private Path touch(String relative) throws IOException {
        Path p = tmp.resolve(relative);
        Files.createDirectories(p.getParent());
        return Files.createFile(p);
    }

    @Test
    void cuda13IsTakenBefore12WhereverEachIsWhereTheDriverRunsIt() throws IOException {
        Path old = touch("toolkit/libcublas.so.12");
        Path wheel = touch("wheel/nvidia/cu13/lib/libcublas.so.13");
        assertEquals(wheel, Cublas.locate(null, List.of(old.getParent(), wheel.getParent()), 13000));
        assertEquals(old, Cublas.locate(null, List.of(old.getParent(), tmp), 13000));
        assertNull(Cublas.locate(null, List.of(tmp), 13000));
        // a CUDA 12 driver cannot run cuBLAS 13: the .so.12 is taken even where a .so.13 comes first
        assertEquals(old, Cublas.locate(null, List.of(wheel.getParent(), old.getParent()), 12080));
    }

    @Test
    void dsflowCublasNamesAFileAFolderOrOff() throws IOException {
        Path lib = touch("custom/libcublas.so.13");
        Path elsewhere = touch("other/libcublas.so.13");
        assertEquals(lib, Cublas.locate(lib.toString(), List.of(elsewhere.getParent()), 13000));
        assertEquals(lib, Cublas.locate(lib.getParent().toString(), List.of(elsewhere.getParent()), 13000));
        assertNull(Cublas.locate("off", List.of(elsewhere.getParent()), 13000));
        DsflowException e = assertThrows(DsflowException.class,
                () -> Cublas.locate(tmp.resolve("missing").toString(), List.of(), 13000));
        assertTrue(e.getMessage().contains("DSFLOW_CUBLAS"), e.getMessage());
    }

    @Test
    void ldLibraryPathComesFirstAndPipWheelsAreSearched() throws IOException {
        Path ld = Files.createDirectories(tmp.resolve("ld"));
        Path home = tmp.resolve("home");
        Path wheel = Files.createDirectories(home.resolve(".local/lib/python3.12/site-packages/nvidia/cublas/lib"));
        List<Path> folders = Cublas.searchFolders(ld + "::/no/such/folder", home.toString());
        assertEquals(ld, folders.get(0));
        assertTrue(folders.contains(wheel), folders.toString());
        assertTrue(folders.stream().allMatch(Files::isDirectory), folders.toString());
    }
}
