/* Unit tests for src/member/bigheap.c: libraft buffers above the threshold
 * are mappings of unlinked files (not anonymous memory), behave as memory
 * (zeroed by calloc, kept by realloc both ways) and are unmapped by
 * raft_free; smaller ones are malloc'd. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <raft.h>

#include "member/bigheap.h"

static char dir[64] = "/tmp/ketch-bigheap-XXXXXX";

/* Whether `p` lies in a mapping of a file under `dir` (a deleted one). */
static bool file_backed(const void *p)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[4400];
    bool found = false;
    while (f != NULL && fgets(line, sizeof line, f) != NULL) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && (uintptr_t)p >= lo && (uintptr_t)p < hi)
            found = strstr(line, dir) != NULL;
    }
    if (f != NULL) fclose(f);
    return found;
}

static void test_big_buffers_are_files(void **state)
{
    (void)state;
    const size_t big = 1 << 20;
    uint8_t *small = raft_malloc(1000);
    assert_non_null(small);
    assert_false(file_backed(small));

    uint8_t *p = raft_malloc(big);
    assert_non_null(p);
    assert_true(file_backed(p));
    memset(p, 0xab, big);

    uint8_t *z = raft_calloc(big / 8, 8);
    assert_non_null(z);
    assert_true(file_backed(z));
    for (size_t i = 0; i < big; i += 4096) assert_int_equal(z[i], 0);
    raft_free(z);

    /* grow and shrink: contents kept */
    p = raft_realloc(p, 2 * big);
    assert_non_null(p);
    assert_true(file_backed(p));
    assert_int_equal(p[big - 1], 0xab);
    p = raft_realloc(p, 100);
    assert_non_null(p);
    assert_false(file_backed(p));
    assert_int_equal(p[99], 0xab);
    /* a small buffer growing past the threshold moves to a file */
    memset(small, 7, 1000);
    small = raft_realloc(small, big);
    assert_true(file_backed(small));
    assert_int_equal(small[999], 7);
    raft_free(small);
    raft_free(p);
}

static void test_map_fd(void **state)
{
    (void)state;
    char path[96];
    snprintf(path, sizeof path, "%s/f", dir);
    int fd = open(path, O_CREAT | O_RDWR, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "hello", 5), 5);
    uint8_t *p = bigheap_map_fd(fd, 5);
    close(fd);
    unlink(path);
    assert_non_null(p);
    assert_memory_equal(p, "hello", 5);
    raft_free(p); /* unmapped, not free()d */
}

int main(void)
{
    if (mkdtemp(dir) == NULL) return 1;
    if (bigheap_install(dir, 1 << 20) != 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_big_buffers_are_files),
        cmocka_unit_test(test_map_fd),
    };
    int rv = cmocka_run_group_tests(tests, NULL, NULL);
    raft_heap_set_default();
    rmdir(dir);
    return rv;
}
