/* Unit tests for src/watch (the hub) over a real mvcc store in a temp dir,
 * with a recording sink instead of gRPC streams: key / prefix / from-key
 * matching, filters, prev_kv, revision order, catch-up from history,
 * compacted starts, congestion (unsynced, then caught up). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "mvcc/mvcc.h"
#include "util/errors.h"
#include "watch/watch.h"

/* ---- a recording sink ---- */

#define MAXREC 4096
struct rec {
    int64_t rev, compact;
    size_t n;
    char keys[256]; /* "P:key:mod[:prev]" per event, space separated */
};

struct owner {
    bool congested;
    size_t nrec;
    struct rec recs[64];
};

static bool sink_congested(void *user) { return ((struct owner *)user)->congested; }

static void sink_deliver(void *user, int64_t rev, Mvccpb__Event **evs, size_t n, int64_t crev)
{
    struct owner *o = user;
    assert_true(o->nrec < 64);
    struct rec *r = &o->recs[o->nrec++];
    memset(r, 0, sizeof *r);
    r->rev = rev, r->compact = crev, r->n = n;
    for (size_t i = 0; i < n; i++) {
        char buf[96];
        const Mvccpb__KeyValue *kv = evs[i]->kv;
        int m = snprintf(buf, sizeof buf, "%s%c:%.*s:%lld", i ? " " : "",
                         evs[i]->type == MVCCPB__EVENT__EVENT_TYPE__PUT ? 'P' : 'D',
                         (int)kv->key.len, (const char *)kv->key.data, (long long)kv->mod_revision);
        if (evs[i]->prev_kv)
            snprintf(buf + m, sizeof buf - (size_t)m, ":%.*s", (int)evs[i]->prev_kv->value.len,
                     (const char *)evs[i]->prev_kv->value.data);
        strncat(r->keys, buf, sizeof r->keys - strlen(r->keys) - 1);
    }
}

static const struct watch_sink sink = {sink_congested, sink_deliver};

/* ---- fixture ---- */

struct fx {
    char dir[64];
    mvcc_store *s;
    watch_hub *h;
    uint64_t index;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    strcpy(f->dir, "/tmp/ketch-watch-XXXXXX");
    if (mkdtemp(f->dir) == NULL) return -1;
    if (mvcc_open(&f->s, f->dir, (size_t)1 << 28) != 0) return -1;
    if (watch_hub_new(&f->h, f->s) != 0) return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    char cmd[128];
    watch_hub_free(f->h);
    mvcc_close(f->s);
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    if (system(cmd) != 0) return -1;
    free(f);
    return 0;
}

static ProtobufCBinaryData B(const char *s) { return (ProtobufCBinaryData){strlen(s), (uint8_t *)s}; }

static void apply(struct fx *f, Ketchpb__InternalRequest *req)
{
    arena a = ARENA_INIT;
    struct mvcc_result res;
    assert_int_equal(mvcc_apply(f->s, ++f->index, req, &a, &res), 0);
    assert_int_equal(res.err, 0);
    arena_free(&a);
}

static void put(struct fx *f, const char *k, const char *v)
{
    Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
    p.key = B(k), p.value = B(v);
    Ketchpb__InternalRequest r = KETCHPB__INTERNAL_REQUEST__INIT;
    r.put = &p;
    apply(f, &r);
}

static void del(struct fx *f, const char *k, const char *end)
{
    Etcdserverpb__DeleteRangeRequest d = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
    d.key = B(k), d.range_end = B(end);
    Ketchpb__InternalRequest r = KETCHPB__INTERNAL_REQUEST__INIT;
    r.delete_range = &d;
    apply(f, &r);
}

static void compact(struct fx *f, int64_t rev)
{
    Etcdserverpb__CompactionRequest c = ETCDSERVERPB__COMPACTION_REQUEST__INIT;
    c.revision = rev;
    Ketchpb__InternalRequest r = KETCHPB__INTERNAL_REQUEST__INIT;
    r.compaction = &c;
    apply(f, &r);
}

static watch_watcher *add(struct fx *f, struct owner *o, const char *key, const char *end,
                          int kind, int64_t start, unsigned filters, bool prev)
{
    struct watch_opts opt = {0};
    opt.key = (const uint8_t *)key, opt.klen = strlen(key);
    opt.end = (const uint8_t *)end, opt.elen = end ? strlen(end) : 0;
    opt.end_kind = kind;
    opt.start_rev = start ? start : mvcc_revision(f->s) + 1;
    opt.filters = filters;
    opt.prev_kv = prev;
    watch_watcher *w;
    assert_int_equal(watch_hub_add(f->h, &opt, &sink, o, &w), 0);
    return w;
}

/* ---- tests ---- */

static void test_match_forms(void **state)
{
    struct fx *f = *state;
    struct owner key = {0}, pre = {0}, from = {0}, none = {0};
    add(f, &key, "foo", NULL, WATCH_KEY, 0, 0, false);
    add(f, &pre, "fo", "fp", WATCH_RANGE, 0, 0, false);
    add(f, &from, "fop", NULL, WATCH_FROM, 0, 0, false);
    add(f, &none, "zzz", NULL, WATCH_KEY, 0, 0, false);
    put(f, "foo", "1");  /* rev 2 */
    put(f, "fop", "2");  /* rev 3 */
    put(f, "g", "3");    /* rev 4 */
    del(f, "foo", "");   /* rev 5 */
    assert_int_equal(key.nrec, 2);
    assert_string_equal(key.recs[0].keys, "P:foo:2");
    assert_int_equal(key.recs[0].rev, 2);
    assert_string_equal(key.recs[1].keys, "D:foo:5");
    assert_int_equal(pre.nrec, 3);
    assert_string_equal(pre.recs[1].keys, "P:fop:3");
    assert_int_equal(from.nrec, 2);
    assert_string_equal(from.recs[1].keys, "P:g:4");
    assert_int_equal(none.nrec, 0);
}

static void test_one_revision_one_delivery(void **state)
{
    struct fx *f = *state;
    put(f, "a/1", "x");
    put(f, "a/2", "y");
    struct owner o = {0};
    add(f, &o, "a/", "a0", WATCH_RANGE, 0, 0, true);
    del(f, "a/", "a0"); /* one revision, two events */
    assert_int_equal(o.nrec, 1);
    assert_int_equal(o.recs[0].n, 2);
    assert_string_equal(o.recs[0].keys, "D:a/1:4:x D:a/2:4:y");
}

static void test_filters_and_prev(void **state)
{
    struct fx *f = *state;
    struct owner noput = {0}, nodel = {0};
    add(f, &noput, "k", NULL, WATCH_KEY, 0, WATCH_NOPUT, true);
    add(f, &nodel, "k", NULL, WATCH_KEY, 0, WATCH_NODELETE, true);
    put(f, "k", "1"); /* 2: a create, no prev */
    put(f, "k", "2"); /* 3 */
    del(f, "k", "");  /* 4 */
    assert_int_equal(noput.nrec, 1);
    assert_string_equal(noput.recs[0].keys, "D:k:4:2");
    assert_int_equal(nodel.nrec, 2);
    assert_string_equal(nodel.recs[0].keys, "P:k:2");
    assert_string_equal(nodel.recs[1].keys, "P:k:3:1");
}

static void test_catch_up_then_live(void **state)
{
    struct fx *f = *state;
    put(f, "c", "1");     /* 2 */
    put(f, "other", "x"); /* 3 */
    put(f, "c", "2");     /* 4 */
    del(f, "c", "");      /* 5 */
    struct owner o = {0};
    watch_watcher *w = add(f, &o, "c", NULL, WATCH_KEY, 2, 0, false);
    assert_false(watch_watcher_synced(w));
    assert_int_equal(o.nrec, 0); /* never inside add */
    put(f, "c", "3");            /* 6: not offered while unsynced */
    assert_int_equal(o.nrec, 0);
    assert_int_equal(watch_hub_sync(f->h), 0);
    assert_true(watch_watcher_synced(w));
    /* as etcd: one catch-up response, header = store revision */
    assert_int_equal(o.nrec, 1);
    assert_int_equal(o.recs[0].rev, 6);
    assert_string_equal(o.recs[0].keys, "P:c:2 P:c:4 D:c:5 P:c:6");
    put(f, "c", "4");
    assert_int_equal(o.nrec, 2);
    assert_string_equal(o.recs[1].keys, "P:c:7");
}

static void test_compacted_start(void **state)
{
    struct fx *f = *state;
    for (int i = 0; i < 5; i++) put(f, "k", "v"); /* 2..6 */
    compact(f, 5);
    struct owner old = {0}, at = {0};
    watch_watcher *w1 = add(f, &old, "k", NULL, WATCH_KEY, 3, 0, false);
    add(f, &at, "k", NULL, WATCH_KEY, 5, 0, false);
    watch_hub_sync(f->h);
    assert_int_equal(old.nrec, 1);
    assert_int_equal(old.recs[0].compact, 5);
    assert_int_equal(old.recs[0].rev, 0);
    assert_false(watch_watcher_synced(w1));
    assert_int_equal(at.nrec, 1);
    assert_string_equal(at.recs[0].keys, "P:k:5 P:k:6");
    put(f, "k", "v"); /* 7 */
    assert_int_equal(old.nrec, 1);
    assert_int_equal(at.nrec, 2);
    watch_hub_cancel(f->h, w1);
    assert_int_equal(watch_hub_count(f->h), 1);
}

static void test_congested_catches_up(void **state)
{
    struct fx *f = *state;
    struct owner o = {0};
    watch_watcher *w = add(f, &o, "s", NULL, WATCH_KEY, 0, 0, false);
    put(f, "s", "1"); /* 2 */
    o.congested = true;
    put(f, "s", "2"); /* 3 */
    put(f, "s", "3"); /* 4 */
    assert_false(watch_watcher_synced(w));
    assert_int_equal(watch_hub_sync(f->h), 1); /* still congested */
    o.congested = false;
    assert_int_equal(watch_hub_sync(f->h), 0);
    assert_int_equal(o.nrec, 2);
    assert_string_equal(o.recs[0].keys, "P:s:2");
    assert_string_equal(o.recs[1].keys, "P:s:3 P:s:4");
}

static void test_many_key_watchers(void **state)
{
    struct fx *f = *state;
    enum { N = 10000 };
    static struct owner os[N / 100];
    static char keys[N][16];
    memset(os, 0, sizeof os);
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "key%05d", i % 1000);
        add(f, &os[i / 100], keys[i], NULL, WATCH_KEY, 0, 0, false);
    }
    put(f, "key00042", "x");
    /* 10 watchers on key00042: i = 42, 1042, ..., 9042 -> owners 0, 10, ..., 90 */
    size_t total = 0;
    for (int i = 0; i < N / 100; i++) total += os[i].nrec;
    assert_int_equal(total, 10);
    assert_int_equal(os[10].nrec, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_match_forms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_revision_one_delivery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_filters_and_prev, setup, teardown),
        cmocka_unit_test_setup_teardown(test_catch_up_then_live, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compacted_start, setup, teardown),
        cmocka_unit_test_setup_teardown(test_congested_catches_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_key_watchers, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
