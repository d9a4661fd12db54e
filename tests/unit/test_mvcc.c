/* Unit tests for src/mvcc: etcd's revision semantics on LMDB. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "mvcc/mvcc.h"
#include "util/errors.h"

#include "store_fixture.h"

static int setup(void **state) { return fx_setup(state, "/tmp/ketch-mvcc-XXXXXX"); }

static ProtobufCBinaryData BN(const void *p, size_t n)
{
    return (ProtobufCBinaryData){n, (uint8_t *)p};
}

static int apply(struct fx *f, Ketchpb__InternalRequest *req, struct mvcc_result *res)
{
    int rc = mvcc_apply(f->s, ++f->index, req, &f->a, res);
    assert_int_equal(rc, 0);
    assert_int_equal(mvcc_applied_index(f->s), f->index);
    return res->err;
}

static int put_req(struct fx *f, Etcdserverpb__PutRequest *p, struct mvcc_result *res)
{
    Ketchpb__InternalRequest req = KETCHPB__INTERNAL_REQUEST__INIT;
    req.put = p;
    return apply(f, &req, res);
}

static int64_t put_kn(struct fx *f, const void *k, size_t kl, const char *v)
{
    Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
    struct mvcc_result res;
    p.key = BN(k, kl);
    p.value = B(v);
    assert_int_equal(put_req(f, &p, &res), 0);
    assert_non_null(res.put);
    return res.revision;
}

static int64_t put(struct fx *f, const char *k, const char *v) { return put_kn(f, k, strlen(k), v); }

static int del_range(struct fx *f, const char *k, const char *end, int prev,
                     struct mvcc_result *res)
{
    Etcdserverpb__DeleteRangeRequest d = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
    Ketchpb__InternalRequest req = KETCHPB__INTERNAL_REQUEST__INIT;
    d.key = B(k);
    if (end) d.range_end = strcmp(end, "\\0") == 0 ? BN("", 1) : B(end);
    d.prev_kv = prev;
    req.delete_range = &d;
    return apply(f, &req, res);
}

static int compact(struct fx *f, int64_t rev)
{
    Etcdserverpb__CompactionRequest c = ETCDSERVERPB__COMPACTION_REQUEST__INIT;
    Ketchpb__InternalRequest req = KETCHPB__INTERNAL_REQUEST__INIT;
    struct mvcc_result res;
    c.revision = rev;
    req.compaction = &c;
    int err = apply(f, &req, &res);
    if (err == 0) assert_non_null(res.compaction);
    return err;
}

/* A range request on key..end ("\0" for the from-key form). */
static Etcdserverpb__RangeRequest rreq(const char *k, const char *end)
{
    Etcdserverpb__RangeRequest r = ETCDSERVERPB__RANGE_REQUEST__INIT;
    r.key = strcmp(k, "\\0") == 0 ? BN("", 1) : B(k);
    if (end) r.range_end = strcmp(end, "\\0") == 0 ? BN("", 1) : B(end);
    return r;
}

static Etcdserverpb__RangeResponse range(struct fx *f, Etcdserverpb__RangeRequest *r, int want_err)
{
    Etcdserverpb__RangeResponse resp = ETCDSERVERPB__RANGE_RESPONSE__INIT;
    assert_int_equal(mvcc_range(f->s, r, &f->a, &resp), want_err);
    return resp;
}

static void assert_bytes(ProtobufCBinaryData b, const char *s)
{
    assert_int_equal(b.len, strlen(s));
    if (b.len) assert_memory_equal(b.data, s, b.len);
}

/* Asserts the keys of resp, given as one space-separated string. */
static void assert_keys(const Etcdserverpb__RangeResponse *resp, const char *keys)
{
    char buf[256];
    size_t o = 0;
    buf[0] = 0;
    for (size_t i = 0; i < resp->n_kvs; i++)
        o += (size_t)snprintf(buf + o, sizeof buf - o, "%s%.*s", i ? " " : "",
                              (int)resp->kvs[i]->key.len, (char *)resp->kvs[i]->key.data);
    assert_string_equal(buf, keys);
}

static Mvccpb__KeyValue *get1(struct fx *f, const char *k, int64_t rev)
{
    Etcdserverpb__RangeRequest r = rreq(k, NULL);
    r.revision = rev;
    Etcdserverpb__RangeResponse resp = range(f, &r, 0);
    assert_true(resp.n_kvs <= 1);
    assert_int_equal(resp.count, (int64_t)resp.n_kvs);
    return resp.n_kvs ? resp.kvs[0] : NULL;
}

/* ---- tests ---- */

static void test_revisions(void **state)
{
    struct fx *f = *state;
    struct mvcc_result res;
    assert_int_equal(mvcc_revision(f->s), 1);
    assert_null(get1(f, "a", 0));

    assert_int_equal(put(f, "a", "1"), 2);
    Mvccpb__KeyValue *kv = get1(f, "a", 0);
    assert_non_null(kv);
    assert_int_equal(kv->create_revision, 2);
    assert_int_equal(kv->mod_revision, 2);
    assert_int_equal(kv->version, 1);
    assert_bytes(kv->value, "1");

    assert_int_equal(put(f, "a", "2"), 3);
    kv = get1(f, "a", 0);
    assert_int_equal(kv->create_revision, 2);
    assert_int_equal(kv->mod_revision, 3);
    assert_int_equal(kv->version, 2);

    assert_int_equal(del_range(f, "a", NULL, 0, &res), 0);
    assert_int_equal(res.revision, 4);
    assert_int_equal(res.delete_range->deleted, 1);
    assert_null(get1(f, "a", 0));

    /* deleting nothing does not bump the revision */
    assert_int_equal(del_range(f, "a", NULL, 0, &res), 0);
    assert_int_equal(res.revision, 4);
    assert_int_equal(res.delete_range->deleted, 0);
    assert_int_equal(mvcc_revision(f->s), 4);

    /* re-created: new create revision, version restarts */
    assert_int_equal(put(f, "a", "3"), 5);
    kv = get1(f, "a", 0);
    assert_int_equal(kv->create_revision, 5);
    assert_int_equal(kv->mod_revision, 5);
    assert_int_equal(kv->version, 1);

    /* history */
    kv = get1(f, "a", 2);
    assert_non_null(kv);
    assert_bytes(kv->value, "1");
    assert_int_equal(kv->version, 1);
    kv = get1(f, "a", 3);
    assert_bytes(kv->value, "2");
    assert_int_equal(kv->version, 2);
    assert_null(get1(f, "a", 4));
    assert_null(get1(f, "a", 1));
    assert_bytes(get1(f, "a", 5)->value, "3");
}

static void test_future_revision(void **state)
{
    struct fx *f = *state;
    put(f, "a", "1");
    Etcdserverpb__RangeRequest r = rreq("a", NULL);
    r.revision = 3;
    range(f, &r, KERR_FUTURE_REV);
    r.revision = 2;
    assert_int_equal(range(f, &r, 0).n_kvs, 1);
    r.revision = -7; /* negative: current */
    assert_int_equal(range(f, &r, 0).n_kvs, 1);
    assert_int_equal(compact(f, 3), KERR_FUTURE_REV);
    assert_int_equal(mvcc_revision(f->s), 2);
}

static void fill_abcd(struct fx *f)
{
    put(f, "a", "z"); /* 2 */
    put(f, "b", "y"); /* 3 */
    put(f, "c", "x"); /* 4 */
    put(f, "d", "w"); /* 5 */
    put(f, "b", "v"); /* 6: b version 2 */
    put(f, "ab", "u"); /* 7 */
}

static void test_range_forms(void **state)
{
    struct fx *f = *state;
    fill_abcd(f);
    Etcdserverpb__RangeRequest r = rreq("a", NULL);
    Etcdserverpb__RangeResponse resp = range(f, &r, 0);
    assert_keys(&resp, "a");
    r = rreq("a", "c");
    resp = range(f, &r, 0);
    assert_keys(&resp, "a ab b");
    assert_int_equal(resp.count, 3);
    assert_false(resp.more);
    r = rreq("b", "\\0"); /* from key */
    resp = range(f, &r, 0);
    assert_keys(&resp, "b c d");
    r = rreq("\\0", "\\0"); /* everything */
    resp = range(f, &r, 0);
    assert_keys(&resp, "a ab b c d");
    r = rreq("a", "b"); /* prefix "a" */
    resp = range(f, &r, 0);
    assert_keys(&resp, "a ab");
    r = rreq("c", "a"); /* end before key */
    resp = range(f, &r, 0);
    assert_keys(&resp, "");
    assert_int_equal(resp.count, 0);
    r = rreq("zz", NULL);
    resp = range(f, &r, 0);
    assert_int_equal(resp.count, 0);

    /* past revision: at 4, a b c exist; b has its first value */
    r = rreq("a", "\\0");
    r.revision = 4;
    resp = range(f, &r, 0);
    assert_keys(&resp, "a b c");
    assert_bytes(resp.kvs[1]->value, "y");
    assert_int_equal(resp.kvs[1]->version, 1);
}

static void test_range_limit_count(void **state)
{
    struct fx *f = *state;
    fill_abcd(f);
    Etcdserverpb__RangeRequest r = rreq("a", "\\0");
    r.limit = 2;
    Etcdserverpb__RangeResponse resp = range(f, &r, 0);
    assert_keys(&resp, "a ab");
    assert_true(resp.more);
    assert_int_equal(resp.count, 5);
    r.limit = 5;
    resp = range(f, &r, 0);
    assert_int_equal(resp.n_kvs, 5);
    assert_false(resp.more);

    r.limit = 0;
    r.count_only = 1;
    resp = range(f, &r, 0);
    assert_int_equal(resp.n_kvs, 0);
    assert_int_equal(resp.count, 5);
    assert_false(resp.more);
    r.limit = 1; /* count_only with limit: still no kvs, no more */
    resp = range(f, &r, 0);
    assert_int_equal(resp.n_kvs, 0);
    assert_int_equal(resp.count, 5);
    assert_false(resp.more);

    r = rreq("a", "\\0");
    r.keys_only = 1;
    resp = range(f, &r, 0);
    assert_int_equal(resp.n_kvs, 5);
    for (size_t i = 0; i < resp.n_kvs; i++) {
        assert_int_equal(resp.kvs[i]->value.len, 0);
        assert_true(resp.kvs[i]->mod_revision > 1);
    }
    assert_int_equal(resp.kvs[2]->version, 2); /* b */
    assert_int_equal(resp.kvs[2]->create_revision, 3);
    assert_int_equal(resp.kvs[2]->mod_revision, 6);
}

static void test_range_sort(void **state)
{
    struct fx *f = *state;
    fill_abcd(f);
    Etcdserverpb__RangeRequest r = rreq("a", "\\0");
    Etcdserverpb__RangeResponse resp;

    r.sort_order = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__DESCEND;
    resp = range(f, &r, 0);
    assert_keys(&resp, "d c b ab a");

    r.sort_target = ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__VALUE;
    r.sort_order = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__ASCEND;
    resp = range(f, &r, 0); /* a=z b=v c=x d=w ab=u */
    assert_keys(&resp, "ab b d c a");

    /* target other than KEY with order NONE sorts ascending */
    r.sort_order = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__NONE;
    resp = range(f, &r, 0);
    assert_keys(&resp, "ab b d c a");

    r.sort_target = ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__MOD;
    r.sort_order = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__DESCEND;
    resp = range(f, &r, 0); /* mods a2 b6 c4 d5 ab7 */
    assert_keys(&resp, "ab b d c a");

    r.sort_target = ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__CREATE;
    resp = range(f, &r, 0); /* creates a2 b3 c4 d5 ab7 */
    assert_keys(&resp, "ab d c b a");

    /* equal versions keep key order, both directions */
    r.sort_target = ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__VERSION;
    r.sort_order = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__DESCEND;
    resp = range(f, &r, 0);
    assert_keys(&resp, "b a ab c d");
    r.sort_order = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__ASCEND;
    resp = range(f, &r, 0);
    assert_keys(&resp, "a ab c d b");

    /* sort then limit: sorted over everything, then trimmed */
    r.sort_target = ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__KEY;
    r.sort_order = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__DESCEND;
    r.limit = 2;
    resp = range(f, &r, 0);
    assert_keys(&resp, "d c");
    assert_true(resp.more);
    assert_int_equal(resp.count, 5);

    /* etcd quirk: target MOD + order NONE + limit sorts only the first
     * limit+1 keys by key */
    r.sort_target = ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__MOD;
    r.sort_order = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__NONE;
    r.limit = 2;
    resp = range(f, &r, 0); /* fetch a ab b -> by mod a2 b6 ab7 -> a b */
    assert_keys(&resp, "a b");
    assert_true(resp.more);
}

static void test_range_filters(void **state)
{
    struct fx *f = *state;
    fill_abcd(f);
    Etcdserverpb__RangeRequest r = rreq("a", "\\0");
    Etcdserverpb__RangeResponse resp;
    r.min_mod_revision = 5;
    resp = range(f, &r, 0);
    assert_keys(&resp, "ab b d");
    assert_int_equal(resp.count, 5); /* count is before filtering */
    r.max_mod_revision = 6;
    resp = range(f, &r, 0);
    assert_keys(&resp, "b d");
    r = rreq("a", "\\0");
    r.min_create_revision = 3;
    r.max_create_revision = 4;
    resp = range(f, &r, 0);
    assert_keys(&resp, "b c");
    /* filters fetch everything before limit */
    r = rreq("a", "\\0");
    r.min_mod_revision = 4;
    r.limit = 2;
    resp = range(f, &r, 0);
    assert_keys(&resp, "ab b");
    assert_true(resp.more);
    r.limit = 4;
    resp = range(f, &r, 0);
    assert_keys(&resp, "ab b c d");
    assert_false(resp.more);
}

static int leases_7(void *ctx, int64_t id)
{
    (void)ctx;
    return id == 7;
}

static void test_put_options(void **state)
{
    struct fx *f = *state;
    struct mvcc_result res;
    Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;

    /* ignore_value / ignore_lease on a missing key */
    p.key = B("k");
    p.ignore_value = 1;
    assert_int_equal(put_req(f, &p, &res), KERR_KEY_NOT_FOUND);
    p.ignore_value = 0;
    p.ignore_lease = 1;
    assert_int_equal(put_req(f, &p, &res), KERR_KEY_NOT_FOUND);
    assert_int_equal(res.revision, 1);
    assert_null(res.put);

    /* unknown lease (no lessor) */
    p = (Etcdserverpb__PutRequest)ETCDSERVERPB__PUT_REQUEST__INIT;
    p.key = B("k");
    p.value = B("v1");
    p.lease = 7;
    assert_int_equal(put_req(f, &p, &res), KERR_LEASE_NOT_FOUND);
    assert_int_equal(mvcc_revision(f->s), 1);
    mvcc_set_lease_hook(f->s, leases_7, NULL);
    assert_int_equal(put_req(f, &p, &res), 0);
    assert_int_equal(res.revision, 2);
    assert_null(res.put->prev_kv);
    p.lease = 8;
    assert_int_equal(put_req(f, &p, &res), KERR_LEASE_NOT_FOUND);

    /* ignore_value keeps the value, prev_kv returns the old one */
    p = (Etcdserverpb__PutRequest)ETCDSERVERPB__PUT_REQUEST__INIT;
    p.key = B("k");
    p.ignore_value = 1;
    p.ignore_lease = 1;
    p.prev_kv = 1;
    assert_int_equal(put_req(f, &p, &res), 0);
    assert_int_equal(res.revision, 3);
    assert_non_null(res.put->prev_kv);
    assert_bytes(res.put->prev_kv->value, "v1");
    assert_int_equal(res.put->prev_kv->lease, 7);
    assert_int_equal(res.put->prev_kv->mod_revision, 2);
    Mvccpb__KeyValue *kv = get1(f, "k", 0);
    assert_bytes(kv->value, "v1");
    assert_int_equal(kv->lease, 7);
    assert_int_equal(kv->version, 2);

    /* plain put drops the lease */
    p = (Etcdserverpb__PutRequest)ETCDSERVERPB__PUT_REQUEST__INIT;
    p.key = B("k");
    p.value = B("v2");
    assert_int_equal(put_req(f, &p, &res), 0);
    kv = get1(f, "k", 0);
    assert_int_equal(kv->lease, 0);
    assert_bytes(kv->value, "v2");
    mvcc_set_lease_hook(f->s, NULL, NULL);
}

static void test_delete_range(void **state)
{
    struct fx *f = *state;
    struct mvcc_result res;
    fill_abcd(f); /* rev 7 */
    assert_int_equal(del_range(f, "a", "c", 1, &res), 0);
    assert_int_equal(res.revision, 8);
    assert_int_equal(res.delete_range->deleted, 3);
    assert_int_equal(res.delete_range->n_prev_kvs, 3);
    assert_bytes(res.delete_range->prev_kvs[2]->key, "b");
    assert_bytes(res.delete_range->prev_kvs[2]->value, "v");
    Etcdserverpb__RangeRequest r = rreq("\\0", "\\0");
    Etcdserverpb__RangeResponse resp = range(f, &r, 0);
    assert_keys(&resp, "c d");
    r.revision = 7;
    resp = range(f, &r, 0);
    assert_keys(&resp, "a ab b c d");
    /* from-key delete */
    assert_int_equal(del_range(f, "c", "\\0", 0, &res), 0);
    assert_int_equal(res.delete_range->deleted, 2);
    assert_int_equal(res.delete_range->n_prev_kvs, 0);
    assert_int_equal(res.revision, 9);
}

/* ---- txn ---- */

static Etcdserverpb__Compare *cmp_new(struct fx *f, const char *key, int target, int result)
{
    Etcdserverpb__Compare *c = arena_alloc(&f->a, sizeof *c);
    etcdserverpb__compare__init(c);
    c->key = B(key);
    c->target = target;
    c->result = result;
    return c;
}

static Etcdserverpb__Compare *cmp_int(struct fx *f, const char *key, int target, int result,
                                      int64_t v)
{
    Etcdserverpb__Compare *c = cmp_new(f, key, target, result);
    switch (target) {
    case ETCDSERVERPB__COMPARE__COMPARE_TARGET__VERSION:
        c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VERSION;
        c->version = v;
        break;
    case ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE:
        c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION;
        c->create_revision = v;
        break;
    case ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD:
        c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
        c->mod_revision = v;
        break;
    case ETCDSERVERPB__COMPARE__COMPARE_TARGET__LEASE:
        c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_LEASE;
        c->lease = v;
        break;
    }
    return c;
}

static Etcdserverpb__Compare *cmp_val(struct fx *f, const char *key, int result, const char *v)
{
    Etcdserverpb__Compare *c = cmp_new(f, key, ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE, result);
    c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE;
    c->value = B(v);
    return c;
}

static Etcdserverpb__RequestOp *op_put(struct fx *f, const char *k, const char *v)
{
    Etcdserverpb__RequestOp *op = arena_alloc(&f->a, sizeof *op);
    Etcdserverpb__PutRequest *p = arena_alloc(&f->a, sizeof *p);
    etcdserverpb__request_op__init(op);
    etcdserverpb__put_request__init(p);
    p->key = B(k);
    p->value = B(v);
    op->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
    op->request_put = p;
    return op;
}

static Etcdserverpb__RequestOp *op_range(struct fx *f, const char *k, const char *end)
{
    Etcdserverpb__RequestOp *op = arena_alloc(&f->a, sizeof *op);
    Etcdserverpb__RangeRequest *r = arena_alloc(&f->a, sizeof *r);
    etcdserverpb__request_op__init(op);
    *r = rreq(k, end);
    op->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
    op->request_range = r;
    return op;
}

static Etcdserverpb__RequestOp *op_del(struct fx *f, const char *k, const char *end)
{
    Etcdserverpb__RequestOp *op = arena_alloc(&f->a, sizeof *op);
    Etcdserverpb__DeleteRangeRequest *d = arena_alloc(&f->a, sizeof *d);
    etcdserverpb__request_op__init(op);
    etcdserverpb__delete_range_request__init(d);
    d->key = B(k);
    if (end) d->range_end = B(end);
    op->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
    op->request_delete_range = d;
    return op;
}

static Etcdserverpb__RequestOp *op_txn(struct fx *f, Etcdserverpb__TxnRequest *t)
{
    Etcdserverpb__RequestOp *op = arena_alloc(&f->a, sizeof *op);
    etcdserverpb__request_op__init(op);
    op->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN;
    op->request_txn = t;
    return op;
}

static Etcdserverpb__TxnRequest txn1(Etcdserverpb__Compare **c, size_t nc,
                                     Etcdserverpb__RequestOp **s, size_t ns,
                                     Etcdserverpb__RequestOp **fl, size_t nf)
{
    Etcdserverpb__TxnRequest t = ETCDSERVERPB__TXN_REQUEST__INIT;
    t.compare = c, t.n_compare = nc;
    t.success = s, t.n_success = ns;
    t.failure = fl, t.n_failure = nf;
    return t;
}

static int run_txn(struct fx *f, Etcdserverpb__TxnRequest *t, struct mvcc_result *res)
{
    Ketchpb__InternalRequest req = KETCHPB__INTERNAL_REQUEST__INIT;
    req.txn = t;
    return apply(f, &req, res);
}

/* Runs a txn of one compare with a put "ok" on success, "no" on failure;
 * returns whether it succeeded. */
static int cmp_succeeds(struct fx *f, Etcdserverpb__Compare *c)
{
    Etcdserverpb__RequestOp *s[] = {op_range(f, "zzz", NULL)};
    Etcdserverpb__RequestOp *fl[] = {op_range(f, "zzz", NULL)};
    Etcdserverpb__TxnRequest t = txn1(&c, 1, s, 1, fl, 1);
    struct mvcc_result res;
    assert_int_equal(run_txn(f, &t, &res), 0);
    /* also via the read-only path */
    Etcdserverpb__TxnResponse tr = ETCDSERVERPB__TXN_RESPONSE__INIT;
    assert_int_equal(mvcc_txn_read(f->s, &t, &f->a, &tr), 0);
    assert_int_equal(tr.succeeded, res.txn->succeeded);
    return res.txn->succeeded;
}

static void test_txn_compares(void **state)
{
    struct fx *f = *state;
    enum { EQ = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL,
           NE = ETCDSERVERPB__COMPARE__COMPARE_RESULT__NOT_EQUAL,
           GT = ETCDSERVERPB__COMPARE__COMPARE_RESULT__GREATER,
           LT = ETCDSERVERPB__COMPARE__COMPARE_RESULT__LESS,
           VER = ETCDSERVERPB__COMPARE__COMPARE_TARGET__VERSION,
           CRE = ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE,
           MOD = ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD,
           LEA = ETCDSERVERPB__COMPARE__COMPARE_TARGET__LEASE };
    put(f, "a", "m"); /* 2 */
    put(f, "a", "n"); /* 3: version 2 */
    put(f, "b", "m"); /* 4 */

    assert_true(cmp_succeeds(f, cmp_val(f, "a", EQ, "n")));
    assert_false(cmp_succeeds(f, cmp_val(f, "a", EQ, "m")));
    assert_true(cmp_succeeds(f, cmp_val(f, "a", GT, "m")));
    assert_true(cmp_succeeds(f, cmp_val(f, "a", LT, "o")));
    assert_true(cmp_succeeds(f, cmp_val(f, "a", NE, "x")));
    /* a value compare on a missing key always fails */
    assert_false(cmp_succeeds(f, cmp_val(f, "nokey", NE, "x")));
    assert_false(cmp_succeeds(f, cmp_val(f, "nokey", EQ, "")));

    assert_true(cmp_succeeds(f, cmp_int(f, "a", VER, EQ, 2)));
    assert_true(cmp_succeeds(f, cmp_int(f, "a", VER, GT, 1)));
    assert_false(cmp_succeeds(f, cmp_int(f, "a", VER, LT, 2)));
    assert_true(cmp_succeeds(f, cmp_int(f, "a", CRE, EQ, 2)));
    assert_true(cmp_succeeds(f, cmp_int(f, "a", MOD, EQ, 3)));
    assert_false(cmp_succeeds(f, cmp_int(f, "a", MOD, NE, 3)));
    assert_true(cmp_succeeds(f, cmp_int(f, "a", LEA, EQ, 0)));
    /* missing key = zero KeyValue: create_revision 0 */
    assert_true(cmp_succeeds(f, cmp_int(f, "nokey", CRE, EQ, 0)));
    assert_true(cmp_succeeds(f, cmp_int(f, "nokey", VER, LT, 1)));

    /* a compare over a range holds for every key in it */
    Etcdserverpb__Compare *c = cmp_int(f, "a", MOD, GT, 2);
    c->range_end = B("c"); /* a mod 3, b mod 4 */
    assert_true(cmp_succeeds(f, c));
    c = cmp_int(f, "a", MOD, LT, 4);
    c->range_end = B("c");
    assert_false(cmp_succeeds(f, c));
    c = cmp_val(f, "a", EQ, "m");
    c->range_end = BN("", 1);
    assert_false(cmp_succeeds(f, c));

    /* all compares must hold */
    Etcdserverpb__Compare *two[] = {cmp_val(f, "a", EQ, "n"), cmp_val(f, "b", EQ, "x")};
    Etcdserverpb__TxnRequest t = txn1(two, 2, NULL, 0, NULL, 0);
    struct mvcc_result res;
    assert_int_equal(run_txn(f, &t, &res), 0);
    assert_false(res.txn->succeeded);
    assert_int_equal(res.revision, 4); /* nothing changed */
}

static void test_txn_branches(void **state)
{
    struct fx *f = *state;
    struct mvcc_result res;
    put(f, "a", "1"); /* 2 */

    Etcdserverpb__Compare *c = cmp_val(f, "a", ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL, "1");
    Etcdserverpb__RequestOp *s[] = {op_put(f, "x", "s1"), op_range(f, "x", NULL),
                                    op_put(f, "x", "s2"), op_del(f, "a", NULL),
                                    op_range(f, "a", "\\0")};
    Etcdserverpb__RequestOp *fl[] = {op_put(f, "y", "f")};
    Etcdserverpb__TxnRequest t = txn1(&c, 1, s, 5, fl, 1);
    assert_int_equal(run_txn(f, &t, &res), 0);
    Etcdserverpb__TxnResponse *tr = res.txn;
    assert_true(tr->succeeded);
    assert_int_equal(res.revision, 3); /* one revision for the whole txn */
    assert_int_equal(tr->n_responses, 5);
    assert_int_equal(tr->responses[0]->response_case,
                     ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_PUT);
    assert_int_equal(tr->responses[0]->response_put->header->revision, 3);
    /* read-your-writes */
    Etcdserverpb__RangeResponse *rr = tr->responses[1]->response_range;
    assert_int_equal(rr->n_kvs, 1);
    assert_bytes(rr->kvs[0]->value, "s1");
    assert_int_equal(rr->kvs[0]->mod_revision, 3);
    assert_int_equal(rr->header->revision, 3);
    assert_int_equal(tr->responses[3]->response_delete_range->deleted, 1);
    rr = tr->responses[4]->response_range;
    assert_keys(rr, "x");
    assert_bytes(rr->kvs[0]->value, "s2");
    assert_int_equal(rr->kvs[0]->version, 2); /* two puts in one txn */
    assert_int_equal(rr->kvs[0]->create_revision, 3);

    Mvccpb__KeyValue *kv = get1(f, "x", 0);
    assert_int_equal(kv->version, 2);
    assert_int_equal(kv->mod_revision, 3);
    assert_null(get1(f, "a", 0));
    assert_null(get1(f, "y", 0));
    /* at revision 2 the txn's changes are invisible */
    assert_null(get1(f, "x", 2));
    assert_bytes(get1(f, "a", 2)->value, "1");

    /* now the compare fails: failure branch */
    assert_int_equal(run_txn(f, &t, &res), 0);
    assert_false(res.txn->succeeded);
    assert_int_equal(res.txn->n_responses, 1);
    assert_int_equal(res.revision, 4);
    assert_bytes(get1(f, "y", 0)->value, "f");

    /* read-only txn: revision unchanged, range header = current */
    Etcdserverpb__RequestOp *ro[] = {op_range(f, "y", NULL)};
    Etcdserverpb__TxnRequest t2 = txn1(NULL, 0, ro, 1, NULL, 0);
    assert_int_equal(run_txn(f, &t2, &res), 0);
    assert_int_equal(res.revision, 4);
    assert_int_equal(res.txn->responses[0]->response_range->header->revision, 4);
    /* deleting nothing in a txn does not bump either */
    Etcdserverpb__RequestOp *dn[] = {op_del(f, "nothing", NULL)};
    Etcdserverpb__TxnRequest t3 = txn1(NULL, 0, dn, 1, NULL, 0);
    assert_int_equal(run_txn(f, &t3, &res), 0);
    assert_int_equal(res.revision, 4);
    assert_int_equal(res.txn->responses[0]->response_delete_range->header->revision, 4);
    /* a write op through the read path is refused */
    Etcdserverpb__TxnResponse rtr = ETCDSERVERPB__TXN_RESPONSE__INIT;
    assert_int_equal(mvcc_txn_read(f->s, &t, &f->a, &rtr), KERR_BAD_REQUEST);
}

static void test_txn_nested(void **state)
{
    struct fx *f = *state;
    struct mvcc_result res;
    put(f, "a", "1"); /* 2 */
    /* the inner compare sees the state before the outer ops ran:
     * inner: a == "1" -> put b=inner-ok, else put b=inner-fail */
    Etcdserverpb__Compare *ic = cmp_val(f, "a", ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL, "1");
    Etcdserverpb__RequestOp *is[] = {op_put(f, "b", "inner-ok"), op_range(f, "a", NULL)};
    Etcdserverpb__RequestOp *ifl[] = {op_put(f, "b", "inner-fail")};
    Etcdserverpb__TxnRequest inner = txn1(&ic, 1, is, 2, ifl, 1);
    Etcdserverpb__RequestOp *os[] = {op_put(f, "a", "2"), op_txn(f, &inner), op_put(f, "c", "3")};
    Etcdserverpb__TxnRequest outer = txn1(NULL, 0, os, 3, NULL, 0);
    assert_int_equal(run_txn(f, &outer, &res), 0);
    assert_int_equal(res.revision, 3);
    assert_true(res.txn->succeeded);
    assert_int_equal(res.txn->n_responses, 3);
    Etcdserverpb__TxnResponse *it = res.txn->responses[1]->response_txn;
    assert_non_null(it);
    assert_true(it->succeeded);
    assert_int_equal(it->n_responses, 2);
    assert_bytes(it->responses[1]->response_range->kvs[0]->value, "2");
    assert_bytes(get1(f, "b", 0)->value, "inner-ok");
    assert_bytes(get1(f, "c", 0)->value, "3");
    /* sub-revisions: a, b, c written in order at revision 3 */
    assert_int_equal(get1(f, "c", 0)->mod_revision, 3);

    /* the inner failure branch, and a second nested txn after it, each
     * consume their own place in the path */
    Etcdserverpb__Compare *c2 = cmp_val(f, "a", ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL, "1");
    Etcdserverpb__RequestOp *s2[] = {op_put(f, "d", "yes")};
    Etcdserverpb__RequestOp *f2[] = {op_put(f, "d", "no")};
    Etcdserverpb__TxnRequest in2 = txn1(&c2, 1, s2, 1, f2, 1);
    Etcdserverpb__Compare *c3 = cmp_val(f, "a", ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL, "2");
    Etcdserverpb__RequestOp *s3[] = {op_put(f, "e", "yes")};
    Etcdserverpb__RequestOp *f3[] = {op_put(f, "e", "no")};
    Etcdserverpb__TxnRequest in3 = txn1(&c3, 1, s3, 1, f3, 1);
    Etcdserverpb__RequestOp *os2[] = {op_txn(f, &in2), op_txn(f, &in3)};
    Etcdserverpb__TxnRequest out2 = txn1(NULL, 0, NULL, 0, os2, 2); /* no compare: success */
    assert_int_equal(run_txn(f, &out2, &res), 0);
    assert_int_equal(res.txn->n_responses, 0);
    assert_int_equal(res.revision, 3);
    Etcdserverpb__TxnRequest out3 = txn1(NULL, 0, os2, 2, NULL, 0);
    assert_int_equal(run_txn(f, &out3, &res), 0);
    assert_false(res.txn->responses[0]->response_txn->succeeded);
    assert_true(res.txn->responses[1]->response_txn->succeeded);
    assert_bytes(get1(f, "d", 0)->value, "no");
    assert_bytes(get1(f, "e", 0)->value, "yes");
    assert_int_equal(res.revision, 4);
}

static void test_txn_errors(void **state)
{
    struct fx *f = *state;
    struct mvcc_result res;
    put(f, "a", "1"); /* 2 */
    /* an ignore_value put on a missing key fails the whole txn, before
     * any op ran */
    Etcdserverpb__RequestOp *s[] = {op_put(f, "x", "1"), op_put(f, "missing", "")};
    s[1]->request_put->ignore_value = 1;
    Etcdserverpb__TxnRequest t = txn1(NULL, 0, s, 2, NULL, 0);
    assert_int_equal(run_txn(f, &t, &res), KERR_KEY_NOT_FOUND);
    assert_null(res.txn);
    assert_int_equal(res.revision, 2);
    assert_null(get1(f, "x", 0));
    /* unknown lease */
    Etcdserverpb__RequestOp *s2[] = {op_put(f, "x", "1"), op_put(f, "y", "")};
    s2[1]->request_put->lease = 99;
    t = txn1(NULL, 0, s2, 2, NULL, 0);
    assert_int_equal(run_txn(f, &t, &res), KERR_LEASE_NOT_FOUND);
    assert_null(get1(f, "x", 0));
    /* a bad op in the branch not taken does not matter */
    Etcdserverpb__Compare *c = cmp_val(f, "a", ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL, "1");
    Etcdserverpb__RequestOp *ok[] = {op_put(f, "x", "1")};
    t = txn1(&c, 1, ok, 1, s2, 2);
    assert_int_equal(run_txn(f, &t, &res), 0);
    assert_int_equal(res.revision, 3);
    /* future / compacted revisions in a txn range */
    Etcdserverpb__RequestOp *r[] = {op_put(f, "z", "1"), op_range(f, "a", NULL)};
    r[1]->request_range->revision = 4;
    t = txn1(NULL, 0, r, 2, NULL, 0);
    assert_int_equal(run_txn(f, &t, &res), KERR_FUTURE_REV);
    assert_null(get1(f, "z", 0));
    assert_int_equal(compact(f, 3), 0);
    r[1]->request_range->revision = 2;
    assert_int_equal(run_txn(f, &t, &res), KERR_COMPACTED);
    assert_int_equal(mvcc_revision(f->s), 3);
    /* failing entries still advance the applied index */
    assert_int_equal(mvcc_applied_index(f->s), f->index);
}

static void test_compaction(void **state)
{
    struct fx *f = *state;
    struct mvcc_result res;
    put(f, "a", "1"); /* 2 */
    put(f, "a", "2"); /* 3 */
    put(f, "b", "1"); /* 4 */
    del_range(f, "b", NULL, 0, &res); /* 5 */
    put(f, "c", "1"); /* 6 */
    put(f, "a", "3"); /* 7 */
    put(f, "d", "1"); /* 8 */
    del_range(f, "d", NULL, 0, &res); /* 9 */

    assert_int_equal(mvcc_compact_revision(f->s), 0);
    assert_int_equal(compact(f, 6), 0);
    assert_int_equal(mvcc_compact_revision(f->s), 6);
    assert_int_equal(mvcc_revision(f->s), 9); /* compaction does not bump */
    assert_int_equal(compact(f, 6), KERR_COMPACTED);
    assert_int_equal(compact(f, 5), KERR_COMPACTED);
    assert_int_equal(compact(f, 10), KERR_FUTURE_REV);

    Etcdserverpb__RangeRequest r = rreq("\\0", "\\0");
    r.revision = 5;
    range(f, &r, KERR_COMPACTED);
    /* at the compact revision everything is still readable */
    r.revision = 6;
    Etcdserverpb__RangeResponse resp = range(f, &r, 0);
    assert_keys(&resp, "a c");
    assert_bytes(resp.kvs[0]->value, "2");
    assert_int_equal(resp.kvs[0]->version, 2);
    r.revision = 8;
    resp = range(f, &r, 0);
    assert_keys(&resp, "a c d");
    assert_bytes(resp.kvs[0]->value, "3");
    r.revision = 0;
    resp = range(f, &r, 0);
    assert_keys(&resp, "a c");

    /* compacting past the tombstone of d forgets d; re-creating it starts
     * a new life */
    assert_int_equal(compact(f, 9), 0);
    r.revision = 9;
    resp = range(f, &r, 0);
    assert_keys(&resp, "a c");
    assert_int_equal(resp.count, 2);
    assert_int_equal(put(f, "d", "2"), 10);
    Mvccpb__KeyValue *kv = get1(f, "d", 0);
    assert_int_equal(kv->version, 1);
    assert_int_equal(kv->create_revision, 10);
    kv = get1(f, "a", 9);
    assert_int_equal(kv->mod_revision, 7);
    assert_int_equal(kv->create_revision, 2);
    assert_int_equal(kv->version, 3);
    /* a put after compaction continues the kept version count */
    put(f, "a", "4");
    assert_int_equal(get1(f, "a", 0)->version, 4);

    /* the space of compacted history is reclaimed in the tables */
    int64_t size, in_use;
    mvcc_db_size(f->s, &size, &in_use);
    assert_true(size > 0);
    assert_true(in_use > 0 && in_use <= size);
}

static void test_compaction_removes_history(void **state)
{
    struct fx *f = *state;
    /* many versions of one key: after compaction only the newest remains,
     * and reads at the compact revision still work */
    for (int i = 0; i < 200; i++) {
        char v[16];
        snprintf(v, sizeof v, "v%d", i);
        put(f, "k", v);
    }
    static char big[4000];
    memset(big, 'x', sizeof big - 1);
    for (int i = 0; i < 100; i++) put(f, "big", big);
    assert_int_equal(mvcc_revision(f->s), 301);
    assert_bytes(get1(f, "k", 100)->value, "v98");
    int64_t size0, used0, size1, used1;
    mvcc_db_size(f->s, &size0, &used0);
    assert_int_equal(compact(f, 150), 0);
    assert_bytes(get1(f, "k", 150)->value, "v148");
    assert_int_equal(get1(f, "k", 150)->version, 149);
    assert_bytes(get1(f, "k", 151)->value, "v149");
    assert_int_equal(compact(f, 300), 0);
    /* the apply only schedules the sweep; it runs in bounded steps */
    assert_true(mvcc_compact_pending(f->s));
    int steps = 0;
    while (mvcc_compact_pending(f->s)) {
        assert_int_equal(mvcc_compact_step(f->s, 50), 0);
        steps++;
    }
    assert_true(steps >= 6);
    mvcc_db_size(f->s, &size1, &used1);
    /* ~99 of the 100 4 KB values are gone from the tables */
    assert_true(used1 < used0 - 90 * 4096);
    assert_true(size1 >= size0);
    assert_int_equal(get1(f, "big", 0)->version, 100);
    assert_bytes(get1(f, "k", 300)->value, "v199");
    assert_int_equal(get1(f, "k", 300)->version, 200);
    Etcdserverpb__RangeRequest r = rreq("k", NULL);
    r.revision = 299;
    range(f, &r, KERR_COMPACTED);
}

static void test_long_keys(void **state)
{
    struct fx *f = *state;
    enum { L = 10 * 1024 };
    static char k1[L], k2[L], k3[L + 1], k500[500], k501[501];
    memset(k1, 'p', L);
    memcpy(k2, k1, L);
    memcpy(k3, k1, L);
    k1[L - 1] = 'b'; /* shares 10 KB - 1 bytes with k2 */
    k2[L - 1] = 'a';
    k3[L] = 'c';     /* k1 < ... order: k2 (..a) < k1 (..b) < k3 (..pc) */
    memset(k500, 'p', 500);
    memset(k501, 'p', 501);

    int64_t r1 = put_kn(f, k1, L, "one");
    put_kn(f, k2, L, "two");
    put_kn(f, k3, L + 1, "three");
    put_kn(f, k500, 500, "500");
    put_kn(f, k501, 501, "501");
    put(f, "p", "short");
    put(f, "q", "after");
    put_kn(f, k1, L, "one-again");

    Etcdserverpb__RangeRequest r = rreq("p", "q");
    Etcdserverpb__RangeResponse resp = range(f, &r, 0);
    assert_int_equal(resp.count, 6);
    size_t want_len[] = {1, 500, 501, L, L, L + 1};
    const char *want_val[] = {"short", "500", "501", "two", "one-again", "three"};
    assert_int_equal(resp.n_kvs, 6);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(resp.kvs[i]->key.len, want_len[i]);
        assert_bytes(resp.kvs[i]->value, want_val[i]);
    }
    assert_memory_equal(resp.kvs[3]->key.data, k2, L);
    assert_memory_equal(resp.kvs[4]->key.data, k1, L);
    assert_int_equal(resp.kvs[4]->version, 2);
    assert_int_equal(resp.kvs[4]->create_revision, r1);

    /* a range starting inside the bucket */
    Etcdserverpb__RangeRequest r2 = ETCDSERVERPB__RANGE_REQUEST__INIT;
    r2.key = BN(k1, L);
    r2.range_end = BN("", 1);
    resp = range(f, &r2, 0);
    assert_int_equal(resp.n_kvs, 3); /* k1, k3, q */
    assert_int_equal(resp.kvs[0]->key.len, L);
    assert_int_equal(resp.kvs[1]->key.len, L + 1);
    assert_bytes(resp.kvs[2]->key, "q");
    /* single long key, at an old revision */
    r2.range_end = BN(NULL, 0);
    r2.revision = r1;
    resp = range(f, &r2, 0);
    assert_int_equal(resp.n_kvs, 1);
    assert_bytes(resp.kvs[0]->value, "one");
    /* a range ending inside the bucket: [k500, k1) */
    Etcdserverpb__RangeRequest r3 = ETCDSERVERPB__RANGE_REQUEST__INIT;
    r3.key = BN(k500, 500);
    r3.range_end = BN(k1, L);
    resp = range(f, &r3, 0);
    assert_int_equal(resp.n_kvs, 3); /* k500 k501 k2 */
    assert_int_equal(resp.kvs[2]->key.len, L);
    assert_memory_equal(resp.kvs[2]->key.data, k2, L);

    /* delete one long key; compaction forgets it, the others stay */
    Etcdserverpb__DeleteRangeRequest d = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
    Ketchpb__InternalRequest req = KETCHPB__INTERNAL_REQUEST__INIT;
    struct mvcc_result res;
    d.key = BN(k2, L);
    d.prev_kv = 1;
    req.delete_range = &d;
    assert_int_equal(apply(f, &req, &res), 0);
    assert_int_equal(res.delete_range->deleted, 1);
    assert_int_equal(res.delete_range->prev_kvs[0]->key.len, L);
    assert_int_equal(compact(f, mvcc_revision(f->s)), 0);
    resp = range(f, &r, 0);
    assert_int_equal(resp.n_kvs, 5);
    assert_int_equal(resp.kvs[3]->key.len, L);
    assert_memory_equal(resp.kvs[3]->key.data, k1, L);

    /* a big value */
    static char big[1536 * 1024];
    memset(big, 'v', sizeof big - 1);
    big[sizeof big - 1] = 0;
    put_kn(f, k3, L + 1, big);
    reopen(f);
    Etcdserverpb__RangeRequest r4 = ETCDSERVERPB__RANGE_REQUEST__INIT;
    r4.key = BN(k3, L + 1);
    resp = range(f, &r4, 0);
    assert_int_equal(resp.n_kvs, 1);
    assert_int_equal(resp.kvs[0]->value.len, sizeof big - 1);
}

static void test_reopen(void **state)
{
    struct fx *f = *state;
    struct mvcc_result res;
    put(f, "a", "1"); /* 2 */
    put(f, "a", "2"); /* 3 */
    put(f, "b", "1"); /* 4 */
    assert_int_equal(compact(f, 3), 0);
    assert_int_equal(mvcc_apply(f->s, ++f->index, NULL, &f->a, &res), 0);
    assert_int_equal(res.err, 0);
    assert_int_equal(res.revision, 4);
    uint64_t idx = f->index;
    assert_int_equal(mvcc_sync(f->s), 0);
    reopen(f);
    assert_int_equal(mvcc_revision(f->s), 4);
    assert_int_equal(mvcc_compact_revision(f->s), 3);
    assert_int_equal(mvcc_applied_index(f->s), idx);
    assert_bytes(get1(f, "a", 0)->value, "2");
    assert_bytes(get1(f, "a", 3)->value, "2");
    Etcdserverpb__RangeRequest r = rreq("a", NULL);
    r.revision = 2;
    range(f, &r, KERR_COMPACTED);
    assert_int_equal(compact(f, 3), KERR_COMPACTED);
    /* new keys get fresh ids: no clash with the old ones */
    assert_int_equal(put(f, "c", "1"), 5);
    assert_bytes(get1(f, "b", 4)->value, "1");
    assert_null(get1(f, "c", 4));
    assert_int_equal(get1(f, "a", 0)->version, 2);
}

/* Random puts, deletes and compactions over short and long keys, checked
 * against a model that keeps a full snapshot per revision. */
enum { MK = 8, MOPS = 400 };
struct mstate {
    int exists;
    int64_t create, mod, version;
    char value[16];
};

static int key_cmp(const void *a, const void *b)
{
    const ProtobufCBinaryData *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->data, y->data, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

static void test_model(void **state)
{
    struct fx *f = *state;
    static char longk[4][700];
    static char k500[500];
    ProtobufCBinaryData keys[MK];
    for (int i = 0; i < 4; i++) {
        memset(longk[i], 'm', sizeof longk[i]);
        longk[i][600 + i] = (char)('a' + (i * 7) % 4); /* differ late */
        keys[i] = BN(longk[i], 601 + i % 2 * 99);
    }
    memset(k500, 'm', sizeof k500);
    keys[4] = BN(k500, 500);
    keys[5] = B("m");
    keys[6] = B("a");
    keys[7] = B("zz");
    qsort(keys, MK, sizeof keys[0], key_cmp);

    static struct mstate snap[MOPS + 2][MK];
    memset(snap, 0, sizeof snap);
    int64_t rev = 1, crev = 0;
    srand(12345);
    for (int op = 0; op < MOPS; op++) {
        int r = rand() % 10, k = rand() % MK;
        struct mvcc_result res;
        memcpy(snap[rev + 1], snap[rev], sizeof snap[rev]);
        if (r < 6) {
            Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
            char v[16];
            snprintf(v, sizeof v, "v%d", op);
            p.key = keys[k];
            p.value = B(v);
            assert_int_equal(put_req(f, &p, &res), 0);
            struct mstate *m = &snap[rev + 1][k];
            m->version = m->exists ? m->version + 1 : 1;
            m->create = m->exists ? m->create : rev + 1;
            m->mod = rev + 1;
            m->exists = 1;
            strcpy(m->value, v);
            rev++;
        } else if (r < 8) {
            Etcdserverpb__DeleteRangeRequest d = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
            Ketchpb__InternalRequest req = KETCHPB__INTERNAL_REQUEST__INIT;
            int k2 = k + rand() % 3;
            d.key = keys[k];
            if (k2 > k && k2 < MK) d.range_end = keys[k2];
            req.delete_range = &d;
            assert_int_equal(apply(f, &req, &res), 0);
            int n = 0;
            for (int i = k; i < (k2 > k && k2 < MK ? k2 : k + 1); i++)
                if (snap[rev + 1][i].exists) {
                    memset(&snap[rev + 1][i], 0, sizeof snap[0][0]);
                    n++;
                }
            assert_int_equal(res.delete_range->deleted, n);
            if (n) rev++;
        } else if (r == 8 && rev > crev + 1) {
            int64_t c = crev + 1 + rand() % (rev - crev);
            assert_int_equal(compact(f, c), 0);
            crev = c;
        }
        assert_int_equal(mvcc_revision(f->s), rev);
        /* check a random readable revision, and the current one */
        for (int t = 0; t < 2; t++) {
            int64_t at = t ? rev : (crev > 1 ? crev : 1) + rand() % (rev - (crev > 1 ? crev : 1) + 1);
            Etcdserverpb__RangeRequest rq = rreq("\\0", "\\0");
            rq.revision = at;
            Etcdserverpb__RangeResponse resp = range(f, &rq, 0);
            size_t j = 0;
            for (int i = 0; i < MK; i++) {
                struct mstate *m = &snap[at][i];
                if (!m->exists) continue;
                assert_true(j < resp.n_kvs);
                Mvccpb__KeyValue *kv = resp.kvs[j++];
                assert_int_equal(kv->key.len, keys[i].len);
                assert_memory_equal(kv->key.data, keys[i].data, keys[i].len);
                assert_bytes(kv->value, m->value);
                assert_int_equal(kv->create_revision, m->create);
                assert_int_equal(kv->mod_revision, m->mod);
                assert_int_equal(kv->version, m->version);
            }
            assert_int_equal(j, resp.n_kvs);
            assert_int_equal(resp.count, (int64_t)j);
        }
        if (crev > 1) {
            Etcdserverpb__RangeRequest rq = rreq("\\0", "\\0");
            rq.revision = crev - 1;
            range(f, &rq, KERR_COMPACTED);
        }
        if (op == MOPS / 2) reopen(f);
    }
}

/* ---- group commit: applies are batched in one LMDB write txn ---- */

/* A put then a range at a future revision: fails after it wrote. */
static int failing_txn(struct fx *f, const char *k)
{
    struct mvcc_result res;
    Etcdserverpb__RequestOp *r[] = {op_put(f, k, "1"), op_range(f, "a", NULL)};
    r[1]->request_range->revision = mvcc_revision(f->s) + 5;
    Etcdserverpb__TxnRequest t = txn1(NULL, 0, r, 2, NULL, 0);
    return run_txn(f, &t, &res);
}

static void test_batch_failed_request(void **state)
{
    struct fx *f = *state;
    assert_int_equal(mvcc_flush(f->s), 0);
    put(f, "a", "1"); /* 2 */
    put(f, "b", "1"); /* 3 */
    assert_int_equal(mvcc_batch_pending(f->s), 2);
    assert_int_equal(failing_txn(f, "z"), KERR_FUTURE_REV);
    assert_int_equal(mvcc_batch_pending(f->s), 3);
    /* only the failed request's changes are gone */
    assert_null(get1(f, "z", 0));
    assert_bytes(get1(f, "a", 0)->value, "1");
    assert_bytes(get1(f, "b", 0)->value, "1");
    assert_int_equal(mvcc_revision(f->s), 3);
    assert_int_equal(mvcc_applied_index(f->s), f->index);
    put(f, "c", "1"); /* 4: the batch goes on after the failure */
    assert_int_equal(get1(f, "c", 0)->mod_revision, 4);
    assert_int_equal(mvcc_flush(f->s), 0);
    assert_int_equal(mvcc_batch_pending(f->s), 0);
    reopen(f);
    assert_null(get1(f, "z", 0));
    assert_bytes(get1(f, "a", 0)->value, "1");
    assert_bytes(get1(f, "b", 0)->value, "1");
    assert_bytes(get1(f, "c", 0)->value, "1");
    assert_int_equal(mvcc_revision(f->s), 4);
    assert_int_equal(mvcc_applied_index(f->s), f->index);
}

static void test_batch_reads_see_applies(void **state)
{
    struct fx *f = *state;
    struct mvcc_result res;
    assert_int_equal(mvcc_flush(f->s), 0);
    uint64_t durable = mvcc_durable_index(f->s);
    put(f, "a", "1"); /* 2 */
    put(f, "a", "2"); /* 3 */
    Etcdserverpb__LeaseGrantRequest g = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
    Ketchpb__InternalRequest req = KETCHPB__INTERNAL_REQUEST__INIT;
    g.id = 7, g.ttl = 10;
    req.lease_grant = &g;
    assert_int_equal(apply(f, &req, &res), 0);
    Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
    p.key = B("l"), p.value = B("v"), p.lease = 7;
    assert_int_equal(put_req(f, &p, &res), 0); /* 4 */
    assert_true(mvcc_batch_pending(f->s) > 0);
    assert_int_equal(mvcc_durable_index(f->s), durable);
    /* ranges, at the current and at an older revision */
    assert_bytes(get1(f, "a", 0)->value, "2");
    assert_bytes(get1(f, "a", 2)->value, "1");
    /* txn reads */
    Etcdserverpb__RequestOp *ops[] = {op_range(f, "a", NULL)};
    Etcdserverpb__TxnRequest t = txn1(NULL, 0, ops, 1, NULL, 0);
    Etcdserverpb__TxnResponse tr = ETCDSERVERPB__TXN_RESPONSE__INIT;
    assert_int_equal(mvcc_txn_read(f->s, &t, &f->a, &tr), 0);
    assert_int_equal(tr.n_responses, 1);
    assert_bytes(tr.responses[0]->response_range->kvs[0]->value, "2");
    /* events */
    Mvccpb__Event **evs;
    size_t n;
    int64_t next;
    assert_int_equal(mvcc_events(f->s, 2, 4, 0, &f->a, &evs, &n, &next), 0);
    assert_int_equal(n, 3);
    assert_int_equal(next, 5);
    assert_bytes(evs[2]->kv->key, "l");
    /* leases */
    struct mvcc_lease *ls;
    assert_int_equal(mvcc_lease_list(f->s, &ls, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(ls[0].id, 7);
    free(ls);
    ProtobufCBinaryData *keys;
    assert_int_equal(mvcc_lease_keys(f->s, 7, &f->a, &keys, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(keys[0].len, 1);
    /* db size (commits the batch) */
    int64_t size, in_use;
    mvcc_db_size(f->s, &size, &in_use);
    assert_true(in_use > 0 && in_use <= size);
    assert_int_equal(mvcc_durable_index(f->s), f->index);
}

/* Runs `fn` in a child process on its own store (the parent's is closed),
 * which then dies without closing it, as a crash would; returns the index
 * the child applied last. */
static uint64_t crash_child(struct fx *f, void (*fn)(struct fx *))
{
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    mvcc_close(f->s);
    f->s = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        if (mvcc_open(&f->s, f->dir, (size_t)1 << 30) != 0) _exit(2);
        f->index = mvcc_applied_index(f->s);
        fn(f);
        if (write(pfd[1], &f->index, sizeof f->index) != sizeof f->index) _exit(3);
        _exit(0); /* no mvcc_close: the open batch is not committed */
    }
    close(pfd[1]);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    uint64_t idx = 0;
    assert_int_equal(read(pfd[0], &idx, sizeof idx), sizeof idx);
    close(pfd[0]);
    assert_int_equal(mvcc_open(&f->s, f->dir, (size_t)1 << 30), 0);
    return idx;
}

static uint64_t flushed_index;

static void child_unflushed(struct fx *f)
{
    put(f, "a", "1");
    put(f, "b", "1");
    if (mvcc_flush(f->s) != 0) _exit(4);
    flushed_index = f->index;
    put(f, "a", "2");
    put(f, "c", "1");
    if (mvcc_batch_pending(f->s) != 2 || mvcc_durable_index(f->s) != flushed_index) _exit(5);
}

static void child_flushed(struct fx *f)
{
    child_unflushed(f);
    if (mvcc_flush(f->s) != 0) _exit(6);
    if (mvcc_batch_pending(f->s) != 0 || mvcc_durable_index(f->s) != f->index) _exit(7);
}

static void test_batch_crash_without_flush(void **state)
{
    struct fx *f = *state;
    uint64_t last = crash_child(f, child_unflushed);
    /* the child's last flush was after its 2nd put (index 2) */
    assert_int_equal(last, 4);
    assert_int_equal(mvcc_applied_index(f->s), 2);
    assert_int_equal(mvcc_revision(f->s), 3);
    assert_bytes(get1(f, "a", 0)->value, "1");
    assert_bytes(get1(f, "b", 0)->value, "1");
    assert_null(get1(f, "c", 0));
    /* the member replays from there: the same entries give the same store */
    f->index = mvcc_applied_index(f->s);
    put(f, "a", "2");
    put(f, "c", "1");
    assert_int_equal(mvcc_revision(f->s), 5);
    assert_int_equal(get1(f, "a", 0)->version, 2);
}

static void test_batch_flush_is_durable(void **state)
{
    struct fx *f = *state;
    uint64_t last = crash_child(f, child_flushed);
    assert_int_equal(mvcc_applied_index(f->s), last);
    assert_int_equal(mvcc_durable_index(f->s), last);
    assert_int_equal(mvcc_revision(f->s), 5);
    assert_bytes(get1(f, "a", 0)->value, "2");
    assert_bytes(get1(f, "c", 0)->value, "1");
    assert_int_equal(mvcc_batch_pending(f->s), 0);
}

static void test_batch_max(void **state)
{
    struct fx *f = *state;
    assert_int_equal(mvcc_flush(f->s), 0);
    for (int i = 0; i < MVCC_BATCH_MAX - 1; i++) put(f, "k", "v");
    assert_int_equal(mvcc_batch_pending(f->s), MVCC_BATCH_MAX - 1);
    put(f, "k", "v"); /* the batch is full: committed */
    assert_int_equal(mvcc_batch_pending(f->s), 0);
    assert_int_equal(mvcc_durable_index(f->s), f->index);
}

/* kB of file-backed resident memory of this process (RssFile). */
static long rss_file_kb(void)
{
    FILE *fp = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (fp && fgets(line, sizeof line, fp))
        if (sscanf(line, "RssFile: %ld", &kb) == 1) break;
    if (fp) fclose(fp);
    return kb;
}

static uint64_t fake_now;
static uint64_t fake_clock(void *ctx)
{
    (void)ctx;
    return fake_now;
}

/* Reads every big/ value through the map (~48 MB of pages) and checks it. */
static void read_big(struct fx *f, int n, size_t vlen)
{
    Etcdserverpb__RangeRequest r = rreq("big/", "big0");
    Etcdserverpb__RangeResponse resp = range(f, &r, 0);
    assert_int_equal(resp.count, n);
    assert_int_equal(resp.kvs[n - 1]->value.len, vlen);
    assert_int_equal(resp.kvs[7]->value.data[0], 'x');
    arena_free(&f->a);
}

/* issue 6: the pages of data.mdb a read maps stay resident (RssFile) until
 * the store unmaps them; the data stays readable after. The check of the
 * RSS (/proc/self/statm) runs once a second, or at once after 1024
 * committed requests or 8 MiB of file growth: not at every commit. */
static void test_map_trim(void **state)
{
    struct fx *f = *state;
    enum { N = 1500, VLEN = 32 * 1024 };
    fake_now = 1000000;
    mvcc_set_clock(f->s, fake_clock, NULL);
    char *v = malloc(VLEN + 1);
    memset(v, 'x', VLEN);
    v[VLEN] = 0;
    char k[32];
    for (int i = 0; i < N; i++) {
        snprintf(k, sizeof k, "big/%05d", i);
        put(f, k, v);
        arena_free(&f->a);
    }
    assert_int_equal(mvcc_flush(f->s), 0);
    assert_int_equal(mvcc_map_trim(f->s, 1), 1);
    long before = rss_file_kb();
    read_big(f, N, VLEN);
    long read = rss_file_kb();
    assert_true(read - before > 40 * 1024);
    /* a small commit within the second: no check, the pages stay mapped */
    fake_now += 999;
    put(f, "small", "v");
    assert_int_equal(mvcc_flush(f->s), 0);
    assert_true(rss_file_kb() - before > 40 * 1024);
    /* a second after the last check: over the 32 MiB budget, unmapped */
    fake_now += 1;
    put(f, "small", "v");
    assert_int_equal(mvcc_flush(f->s), 0);
    long after = rss_file_kb();
    assert_true(read - after > 40 * 1024);
    /* and everything reads back the same */
    read_big(f, N, VLEN);
    assert_true(rss_file_kb() - after > 40 * 1024);
    /* the file growing by 8 MiB (here 9.4 MiB of new values) makes the
     * next commit check at once, with the clock standing still */
    for (int i = 0; i < 300; i++) {
        snprintf(k, sizeof k, "grow/%05d", i);
        put(f, k, v);
        arena_free(&f->a);
    }
    assert_int_equal(mvcc_flush(f->s), 0);
    long grown = rss_file_kb();
    assert_true(read - grown > 40 * 1024);
    read_big(f, N, VLEN);
    assert_true(rss_file_kb() - grown > 40 * 1024);
    /* so do 1024 requests committed since the last check, small ones too */
    for (int i = 0; i < 1023; i++) {
        snprintf(k, sizeof k, "n/%05d", i);
        put(f, k, "v");
        arena_free(&f->a);
    }
    assert_int_equal(mvcc_flush(f->s), 0);
    assert_true(rss_file_kb() - grown > 40 * 1024); /* 1023: not yet */
    put(f, "n/last", "v");
    assert_int_equal(mvcc_flush(f->s), 0);
    assert_true(read - rss_file_kb() > 40 * 1024);
    read_big(f, N, VLEN);
    free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_revisions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_future_revision, setup, teardown),
        cmocka_unit_test_setup_teardown(test_range_forms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_range_limit_count, setup, teardown),
        cmocka_unit_test_setup_teardown(test_range_sort, setup, teardown),
        cmocka_unit_test_setup_teardown(test_range_filters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_options, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_range, setup, teardown),
        cmocka_unit_test_setup_teardown(test_txn_compares, setup, teardown),
        cmocka_unit_test_setup_teardown(test_txn_branches, setup, teardown),
        cmocka_unit_test_setup_teardown(test_txn_nested, setup, teardown),
        cmocka_unit_test_setup_teardown(test_txn_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compaction_removes_history, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_model, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_failed_request, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_reads_see_applies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_crash_without_flush, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_flush_is_durable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_max, setup, teardown),
        cmocka_unit_test_setup_teardown(test_map_trim, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
