/* Unit tests of the store's maintenance: alarms, HashKV, the compaction
 * sweep and defragmentation with applies going on. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "store_fixture.h"
#include "server/config.h"
#include "util/errors.h"

static int setup(void **state) { return fx_setup(state, "/tmp/ketch-maint-XXXXXX"); }

static int apply(struct fx *f, Ketchpb__InternalRequest *req, struct mvcc_result *res)
{
    int rc = mvcc_apply(f->s, ++f->index, req, &f->a, res);
    assert_int_equal(rc, 0);
    return res->err;
}

static int put(struct fx *f, const char *k, const char *v)
{
    Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
    Ketchpb__InternalRequest req = KETCHPB__INTERNAL_REQUEST__INIT;
    struct mvcc_result res;
    p.key = B(k);
    p.value = B(v);
    req.put = &p;
    return apply(f, &req, &res);
}

static int del(struct fx *f, const char *k, const char *end)
{
    Etcdserverpb__DeleteRangeRequest d = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
    Ketchpb__InternalRequest req = KETCHPB__INTERNAL_REQUEST__INIT;
    struct mvcc_result res;
    d.key = B(k);
    if (end) d.range_end = B(end);
    req.delete_range = &d;
    return apply(f, &req, &res);
}

static int compact(struct fx *f, int64_t rev)
{
    Etcdserverpb__CompactionRequest c = ETCDSERVERPB__COMPACTION_REQUEST__INIT;
    Ketchpb__InternalRequest req = KETCHPB__INTERNAL_REQUEST__INIT;
    struct mvcc_result res;
    c.revision = rev;
    req.compaction = &c;
    return apply(f, &req, &res);
}

static int lease_grant(struct fx *f, int64_t id)
{
    Etcdserverpb__LeaseGrantRequest g = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
    Ketchpb__InternalRequest req = KETCHPB__INTERNAL_REQUEST__INIT;
    struct mvcc_result res;
    g.id = id;
    g.ttl = 100;
    req.lease_grant = &g;
    return apply(f, &req, &res);
}

static int alarm(struct fx *f, int action, int type, uint64_t member,
                 Etcdserverpb__AlarmResponse **out)
{
    Etcdserverpb__AlarmRequest a = ETCDSERVERPB__ALARM_REQUEST__INIT;
    Ketchpb__InternalRequest req = KETCHPB__INTERNAL_REQUEST__INIT;
    struct mvcc_result res;
    a.action = action;
    a.alarm = type;
    a.memberid = member;
    req.alarm = &a;
    int err = apply(f, &req, &res);
    if (out) *out = res.alarm;
    return err;
}

static const char *get(struct fx *f, const char *k, int64_t rev)
{
    Etcdserverpb__RangeRequest r = ETCDSERVERPB__RANGE_REQUEST__INIT;
    Etcdserverpb__RangeResponse resp = ETCDSERVERPB__RANGE_RESPONSE__INIT;
    r.key = B(k);
    r.revision = rev;
    assert_int_equal(mvcc_range(f->s, &r, &f->a, &resp), 0);
    if (resp.n_kvs == 0) return NULL;
    char *v = arena_alloc(&f->a, resp.kvs[0]->value.len + 1);
    memcpy(v, resp.kvs[0]->value.data, resp.kvs[0]->value.len);
    v[resp.kvs[0]->value.len] = 0;
    return v;
}

#define GET ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__GET
#define ACTIVATE ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__ACTIVATE
#define DEACTIVATE ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__DEACTIVATE
#define NONE ETCDSERVERPB__ALARM_TYPE__NONE
#define NOSPACE ETCDSERVERPB__ALARM_TYPE__NOSPACE
#define CORRUPT ETCDSERVERPB__ALARM_TYPE__CORRUPT

static void test_alarms(void **state)
{
    struct fx *f = *state;
    Etcdserverpb__AlarmResponse *r;
    assert_int_equal(put(f, "a", "1"), 0);
    /* NONE raises nothing */
    assert_int_equal(alarm(f, ACTIVATE, NONE, 5, &r), 0);
    assert_int_equal(r->n_alarms, 0);
    assert_int_equal(alarm(f, ACTIVATE, NOSPACE, 5, &r), 0);
    assert_int_equal(r->n_alarms, 1);
    assert_int_equal(r->alarms[0]->memberid, 5);
    assert_int_equal(mvcc_revision(f->s), 2); /* alarms make no revision */
    /* capped: puts and lease grants fail, deletes and compaction work */
    assert_int_equal(put(f, "b", "2"), KERR_NO_SPACE);
    assert_int_equal(lease_grant(f, 9), KERR_NO_SPACE);
    assert_int_equal(del(f, "a", NULL), 0);
    assert_int_equal(compact(f, 2), 0);
    /* raising it again answers it; a second member's too */
    assert_int_equal(alarm(f, ACTIVATE, NOSPACE, 5, &r), 0);
    assert_int_equal(r->n_alarms, 1);
    assert_int_equal(alarm(f, ACTIVATE, CORRUPT, 3, &r), 0);
    assert_int_equal(alarm(f, GET, NONE, 0, &r), 0);
    assert_int_equal(r->n_alarms, 2);
    assert_int_equal(r->alarms[0]->alarm, NOSPACE);
    assert_int_equal(r->alarms[1]->alarm, CORRUPT);
    assert_int_equal(alarm(f, GET, CORRUPT, 0, &r), 0);
    assert_int_equal(r->n_alarms, 1);
    assert_int_equal(r->alarms[0]->memberid, 3);
    /* corrupt: every write fails */
    assert_int_equal(del(f, "x", NULL), KERR_ALARM_CORRUPT);
    /* they survive a restart */
    assert_int_equal(mvcc_flush(f->s), 0);
    reopen(f);
    assert_int_equal(mvcc_alarm_count(f->s, NOSPACE), 1);
    assert_int_equal(mvcc_alarm_count(f->s, CORRUPT), 1);
    Etcdserverpb__AlarmMember *ms;
    size_t n;
    assert_int_equal(mvcc_alarm_list(f->s, &ms, &n), 0);
    assert_int_equal(n, 2);
    free(ms);
    assert_int_equal(del(f, "x", NULL), KERR_ALARM_CORRUPT);
    /* lowering one that is not raised answers nothing */
    assert_int_equal(alarm(f, DEACTIVATE, CORRUPT, 4, &r), 0);
    assert_int_equal(r->n_alarms, 0);
    assert_int_equal(alarm(f, DEACTIVATE, CORRUPT, 3, &r), 0);
    assert_int_equal(r->n_alarms, 1);
    assert_int_equal(put(f, "b", "2"), KERR_NO_SPACE);
    assert_int_equal(alarm(f, DEACTIVATE, NOSPACE, 5, &r), 0);
    assert_int_equal(put(f, "b", "2"), 0);
    assert_int_equal(lease_grant(f, 9), 0);
    assert_int_equal(mvcc_alarm_count(f->s, NONE), 0);
}

static void test_hash_kv_errors_and_sweep(void **state)
{
    struct fx *f = *state;
    uint32_t h0, h1, h2;
    int64_t cur, crev;
    for (int i = 0; i < 50; i++) {
        char k[32];
        snprintf(k, sizeof k, "k%d", i % 7);
        assert_int_equal(put(f, k, "v"), 0);
    }
    assert_int_equal(del(f, "k3", NULL), 0);
    assert_int_equal(mvcc_hash_kv(f->s, 0, &h0, &cur, &crev), 0);
    assert_int_equal(cur, 52);
    assert_int_equal(crev, -1);
    assert_int_equal(mvcc_hash_kv(f->s, 53, &h1, &cur, &crev), KERR_FUTURE_REV);
    assert_int_equal(compact(f, 30), 0);
    assert_int_equal(mvcc_hash_kv(f->s, 30, &h1, &cur, &crev), KERR_COMPACTED);
    assert_int_equal(crev, 30);
    /* the same value before, during and after the sweep */
    assert_true(mvcc_compact_pending(f->s));
    assert_int_equal(mvcc_hash_kv(f->s, 0, &h1, &cur, &crev), 0);
    assert_int_equal(mvcc_compact_step(f->s, 5), 0);
    assert_int_equal(mvcc_hash_kv(f->s, 0, &h2, &cur, &crev), 0);
    assert_int_equal(h1, h2);
    while (mvcc_compact_pending(f->s)) assert_int_equal(mvcc_compact_step(f->s, 5), 0);
    assert_int_equal(mvcc_hash_kv(f->s, 0, &h2, &cur, &crev), 0);
    assert_int_equal(h1, h2);
    /* as etcd's: what compaction removes no longer counts */
    assert_int_not_equal(h0, h1);
    /* reads at the compact revision are intact */
    assert_string_equal(get(f, "k1", 30), "v");
    assert_null(get(f, "k3", 0));
}

static void test_defrag_with_applies(void **state)
{
    struct fx *f = *state;
    static char big[8000];
    memset(big, 'b', sizeof big - 1);
    for (int i = 0; i < 200; i++) {
        char k[32];
        snprintf(k, sizeof k, "junk%03d", i);
        assert_int_equal(put(f, k, big), 0);
    }
    assert_int_equal(del(f, "junk", "junl"), 0);
    assert_int_equal(compact(f, mvcc_revision(f->s)), 0);
    while (mvcc_compact_pending(f->s)) assert_int_equal(mvcc_compact_step(f->s, 1000), 0);
    assert_int_equal(put(f, "before", "1"), 0);
    int64_t size0, used0;
    mvcc_db_size(f->s, &size0, &used0);
    uint32_t hash0;
    int64_t cur, crev;

    assert_int_equal(mvcc_defrag_begin(f->s), 0);
    assert_int_equal(mvcc_defrag_begin(f->s), KERR_BUSY);
    /* applied while the copy is being made (it may or may not see them) */
    assert_int_equal(put(f, "during-copy", "2"), 0);
    assert_int_equal(mvcc_flush(f->s), 0);
    assert_int_equal(mvcc_defrag_copy(f->s), 0);
    /* applied after the copy, replayed in steps */
    for (int i = 0; i < 100; i++) {
        char k[32];
        snprintf(k, sizeof k, "after%03d", i);
        assert_int_equal(put(f, k, "3"), 0);
    }
    assert_int_equal(mvcc_meta_put(f->s, "members", (const uint8_t *)"m1", 2), 0);
    size_t left;
    assert_int_equal(mvcc_defrag_step(f->s, 10, &left), 0);
    assert_true(left > 0);
    assert_int_equal(del(f, "after000", NULL), 0);
    assert_int_equal(mvcc_hash_kv(f->s, 0, &hash0, &cur, &crev), 0);
    assert_int_equal(mvcc_defrag_swap(f->s), 0);
    assert_false(mvcc_defrag_running(f->s));

    int64_t size1, used1;
    mvcc_db_size(f->s, &size1, &used1);
    assert_true(size1 < size0 / 4);
    uint32_t hash1;
    assert_int_equal(mvcc_hash_kv(f->s, 0, &hash1, &cur, &crev), 0);
    assert_int_equal(hash0, hash1);
    assert_int_equal(mvcc_revision(f->s), cur);
    assert_string_equal(get(f, "before", 0), "1");
    assert_string_equal(get(f, "during-copy", 0), "2");
    assert_null(get(f, "after000", 0));
    assert_string_equal(get(f, "after099", 0), "3");
    uint8_t *m;
    size_t ml;
    assert_int_equal(mvcc_meta_get(f->s, "members", &m, &ml), 0);
    assert_int_equal(ml, 2);
    free(m);
    /* writes go on, and everything survives a reopen */
    assert_int_equal(put(f, "later", "4"), 0);
    reopen(f);
    assert_string_equal(get(f, "later", 0), "4");
    assert_string_equal(get(f, "after050", 0), "3");
    /* no copy or old file left behind once cleaned up */
    mvcc_defrag_cleanup(f->s);
    char path[128];
    struct stat st;
    snprintf(path, sizeof path, "%s/defrag", f->dir);
    assert_int_not_equal(stat(path, &st), 0);
}

static void test_hash_kv_job(void **state)
{
    struct fx *f = *state;
    assert_int_equal(put(f, "a", "1"), 0);
    assert_int_equal(put(f, "b", "2"), 0);
    uint32_t h0, h1, h2;
    int64_t cur, crev;
    assert_int_equal(mvcc_hash_kv(f->s, 0, &h0, &cur, &crev), 0);
    struct mvcc_hash_job *job;
    assert_int_equal(mvcc_hash_kv_start(f->s, 0, &job, &cur, &crev), 0);
    assert_int_equal(cur, 3);
    /* applies after the snapshot are not in it */
    assert_int_equal(put(f, "c", "3"), 0);
    /* a defrag cannot swap under it */
    assert_int_equal(mvcc_defrag_begin(f->s), 0);
    assert_int_equal(mvcc_defrag_copy(f->s), 0);
    assert_int_equal(mvcc_defrag_swap(f->s), KERR_BUSY);
    assert_int_equal(mvcc_hash_kv_run(job, &h1), 0);
    assert_int_equal(h0, h1);
    mvcc_hash_kv_end(job);
    assert_int_equal(mvcc_defrag_swap(f->s), 0);
    assert_int_equal(mvcc_hash_kv(f->s, 3, &h2, &cur, &crev), 0);
    assert_int_equal(h0, h2);
    assert_int_equal(mvcc_hash_kv_start(f->s, 9, &job, &cur, &crev), KERR_FUTURE_REV);
}

static void test_defrag_abort(void **state)
{
    struct fx *f = *state;
    assert_int_equal(put(f, "a", "1"), 0);
    assert_int_equal(mvcc_defrag_begin(f->s), 0);
    assert_int_equal(mvcc_defrag_copy(f->s), 0);
    assert_int_equal(put(f, "b", "2"), 0);
    mvcc_defrag_abort(f->s);
    assert_false(mvcc_defrag_running(f->s));
    assert_int_equal(put(f, "c", "3"), 0);
    reopen(f);
    assert_string_equal(get(f, "b", 0), "2");
    assert_string_equal(get(f, "c", 0), "3");
}

static void test_compaction_retention(void **state)
{
    (void)state;
    struct config c = {0};
    uint64_t v;
    char periodic[] = "periodic", revision[] = "revision";
    struct { char *mode, *ret; int rc; uint64_t want; } cases[] = {
        {periodic, "0", 0, 0},
        {periodic, "1", 0, 3600000},      /* a plain number is hours */
        {periodic, "30m", 0, 1800000},
        {periodic, "1h30m", 0, 5400000},
        {periodic, "1s", 0, 1000},
        {revision, "1000", 0, 1000},      /* a revision count */
        {periodic, "soon", -1, 0},
        {periodic, "-1", -1, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        c.auto_compaction_mode = cases[i].mode;
        c.auto_compaction_retention = cases[i].ret;
        v = 0;
        assert_int_equal(config_compaction_retention(&c, &v), cases[i].rc);
        if (cases[i].rc == 0) assert_int_equal(v, cases[i].want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_alarms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hash_kv_errors_and_sweep, setup, teardown),
        cmocka_unit_test_setup_teardown(test_defrag_with_applies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_defrag_abort, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hash_kv_job, setup, teardown),
        cmocka_unit_test(test_compaction_retention),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
