/* Unit tests for whole-store snapshots (cluster catch-up): mvcc_copy_fd /
 * mvcc_file_applied / mvcc_replace, and the watch hub following a store
 * that was replaced (watch_hub_resync): a watcher gets the revisions the
 * copy brought, from its history, then live ones again. */
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "mvcc/mvcc.h"
#include "util/errors.h"
#include "watch/watch.h"

struct owner {
    size_t n;
    char log[1024]; /* "key@rev " per event */
    int64_t compact;
};

static bool sink_congested(void *user) { (void)user; return false; }

static void sink_deliver(void *user, int64_t rev, Mvccpb__Event **evs, size_t n, int64_t crev)
{
    struct owner *o = user;
    (void)rev;
    if (crev) o->compact = crev;
    for (size_t i = 0; i < n; i++) {
        char b[64];
        snprintf(b, sizeof b, "%.*s@%lld ", (int)evs[i]->kv->key.len,
                 (const char *)evs[i]->kv->key.data, (long long)evs[i]->kv->mod_revision);
        strncat(o->log, b, sizeof o->log - strlen(o->log) - 1);
        o->n++;
    }
}

static const struct watch_sink sink = {sink_congested, sink_deliver};

struct fx {
    char a_dir[64], b_dir[64], copy[96];
    mvcc_store *a, *b; /* a: the member behind; b: the leader */
    uint64_t a_index, b_index;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    strcpy(f->a_dir, "/tmp/ketch-catchup-a-XXXXXX");
    strcpy(f->b_dir, "/tmp/ketch-catchup-b-XXXXXX");
    if (mkdtemp(f->a_dir) == NULL || mkdtemp(f->b_dir) == NULL) return -1;
    snprintf(f->copy, sizeof f->copy, "%s/copy.mdb", f->a_dir);
    if (mvcc_open(&f->a, f->a_dir, (size_t)1 << 28) != 0) return -1;
    if (mvcc_open(&f->b, f->b_dir, (size_t)1 << 28) != 0) return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    char cmd[200];
    mvcc_close(f->a);
    mvcc_close(f->b);
    snprintf(cmd, sizeof cmd, "rm -rf %s %s", f->a_dir, f->b_dir);
    if (system(cmd) != 0) return -1;
    free(f);
    return 0;
}

static ProtobufCBinaryData B(const char *s) { return (ProtobufCBinaryData){strlen(s), (uint8_t *)s}; }

static void put(mvcc_store *s, uint64_t *index, const char *k, const char *v)
{
    Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
    p.key = B(k), p.value = B(v);
    Ketchpb__InternalRequest r = KETCHPB__INTERNAL_REQUEST__INIT;
    r.put = &p;
    arena a = ARENA_INIT;
    struct mvcc_result res;
    assert_int_equal(mvcc_apply(s, ++*index, &r, &a, &res), 0);
    assert_int_equal(res.err, 0);
    arena_free(&a);
}

static void copy_b(struct fx *f)
{
    int fd = open(f->copy, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    assert_true(fd >= 0);
    assert_int_equal(mvcc_copy_fd(f->b, fd), 0);
    close(fd);
}

static void test_copy_is_the_last_commit(void **state)
{
    struct fx *f = *state;
    uint64_t applied = 99;
    put(f->b, &f->b_index, "k1", "v1");
    put(f->b, &f->b_index, "k2", "v2");
    assert_int_equal(mvcc_flush(f->b), 0);
    put(f->b, &f->b_index, "k3", "v3"); /* applied, not committed */
    copy_b(f);
    assert_int_equal(mvcc_file_applied(f->copy, &applied), 0);
    assert_int_equal(applied, 2);
    assert_int_equal(mvcc_file_applied("/nonexistent/copy.mdb", &applied), KERR_CORRUPT);
}

static void test_replace_then_watch_catches_up(void **state)
{
    struct fx *f = *state;
    watch_hub *h;
    watch_watcher *w;
    struct owner o = {0};

    /* both members applied the first entry */
    put(f->a, &f->a_index, "k0", "x");
    put(f->b, &f->b_index, "k0", "x");
    assert_int_equal(watch_hub_new(&h, f->a), 0);
    struct watch_opts opt = {0};
    opt.key = (const uint8_t *)"k", opt.klen = 1;
    opt.end = (const uint8_t *)"l", opt.elen = 1;
    opt.end_kind = WATCH_RANGE;
    opt.start_rev = mvcc_revision(f->a) + 1; /* 3 */
    assert_int_equal(watch_hub_add(h, &opt, &sink, &o, &w), 0);
    assert_true(watch_watcher_synced(w));

    /* the leader goes on (revisions 3..5); a applied the first of those
     * entries too (its watcher saw it), but did not commit it: the copy
     * replaces that batch */
    put(f->b, &f->b_index, "k1", "1");
    put(f->b, &f->b_index, "k2", "2");
    put(f->b, &f->b_index, "k3", "3");
    assert_int_equal(mvcc_flush(f->b), 0);
    put(f->a, &f->a_index, "k1", "1");
    assert_string_equal(o.log, "k1@3 ");
    copy_b(f);

    int64_t old_rev = mvcc_revision(f->a);
    /* a reader on another thread (a pin): refused, nothing changed */
    mvcc_pin(f->a);
    assert_int_equal(mvcc_replace(f->a, f->copy, 0), KERR_BUSY);
    assert_int_equal(access(f->copy, F_OK), 0);
    assert_int_equal(mvcc_revision(f->a), old_rev);
    /* the caller's own pin (its reader is done) does not count */
    assert_int_equal(mvcc_replace(f->a, f->copy, 1), 0);
    mvcc_unpin(f->a);
    assert_int_equal(access(f->copy, F_OK), -1); /* renamed into place */
    assert_int_equal(mvcc_revision(f->a), 5);
    assert_int_equal(mvcc_applied_index(f->a), 4);
    watch_hub_resync(h, old_rev + 1);
    assert_false(watch_watcher_synced(w));
    assert_int_equal(watch_hub_sync(h), 0);
    assert_string_equal(o.log, "k1@3 k2@4 k3@5 "); /* no gap, no repeat */

    /* live again, with the store's hooks intact */
    f->a_index = 4;
    put(f->a, &f->a_index, "k4", "4");
    assert_string_equal(o.log, "k1@3 k2@4 k3@5 k4@6 ");
    assert_int_equal(mvcc_flush(f->a), 0);
    watch_hub_free(h);
}

/* A reader on another thread (a HashKV on libuv's pool) while a snapshot
 * is installed: the install waits for it to leave, then swaps (it used to
 * refuse with KERR_BUSY, and the server exited). */
struct reader {
    mvcc_store *s;
    int entered[2]; /* pipe: the reader holds the store */
    atomic_int left;
};

static void *reader_thread(void *arg)
{
    struct reader *r = arg;
    mvcc_reader_enter(r->s);
    char c = 1;
    if (write(r->entered[1], &c, 1) != 1) abort();
    /* long enough for the install to find the store in use */
    struct timespec d = {0, 200 * 1000 * 1000};
    nanosleep(&d, NULL);
    atomic_store(&r->left, 1);
    mvcc_reader_exit(r->s);
    return NULL;
}

static void test_replace_waits_for_readers(void **state)
{
    struct fx *f = *state;
    put(f->a, &f->a_index, "k0", "x");
    put(f->b, &f->b_index, "k0", "x");
    put(f->b, &f->b_index, "k1", "y");
    assert_int_equal(mvcc_flush(f->b), 0);
    copy_b(f);

    struct reader r = {.s = f->a};
    assert_int_equal(pipe(r.entered), 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, reader_thread, &r), 0);
    char c;
    assert_int_equal(read(r.entered[0], &c, 1), 1);
    assert_int_equal(mvcc_replace(f->a, f->copy, 0), 0);
    assert_int_equal(atomic_load(&r.left), 1); /* swapped only once it left */
    pthread_join(th, NULL);
    close(r.entered[0]);
    close(r.entered[1]);
    assert_int_equal(mvcc_revision(f->a), 3);
    assert_int_equal(mvcc_applied_index(f->a), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_copy_is_the_last_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replace_then_watch_catches_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replace_waits_for_readers, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
