/* A cmocka fixture shared by the unit tests that need a real store: a fresh
 * LMDB store in a temporary directory, removed afterwards. Include after
 * <cmocka.h>. */
#ifndef KETCH_TESTS_STORE_FIXTURE_H
#define KETCH_TESTS_STORE_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mvcc/mvcc.h"
#include "util/arena.h"

struct fx {
    char dir[64];
    mvcc_store *s;
    uint64_t index; /* the last Raft index applied by the test */
    arena a;
};

/* Opens a store in a new directory made from `tmpl` ("/tmp/x-XXXXXX"). */
static inline int fx_setup(void **state, const char *tmpl)
{
    struct fx *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "%s", tmpl);
    if (mkdtemp(f->dir) == NULL) return -1;
    if (mvcc_open(&f->s, f->dir, (size_t)1 << 30) != 0) return -1;
    *state = f;
    return 0;
}

static inline int teardown(void **state)
{
    struct fx *f = *state;
    char cmd[128];
    mvcc_close(f->s);
    arena_free(&f->a);
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    if (system(cmd) != 0) return -1;
    free(f);
    return 0;
}

/* Closes and reopens the store on the same directory. */
static inline void reopen(struct fx *f)
{
    mvcc_close(f->s);
    assert_int_equal(mvcc_open(&f->s, f->dir, (size_t)1 << 30), 0);
}

static inline ProtobufCBinaryData B(const char *s)
{
    return (ProtobufCBinaryData){strlen(s), (uint8_t *)s};
}

#endif
