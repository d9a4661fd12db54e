/* Unit tests for leases: the lessor's expiry with a fake clock (src/lease)
 * and the lease tables of the store (src/mvcc/lease.c): grant, revoke,
 * attach and detach, persistence across reopen, one revision per revoke. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "lease/lessor.h"
#include "mvcc/mvcc.h"
#include "util/errors.h"

/* ---- lessor (pure, fake clock) ---- */

static void test_min_ttl(void **state)
{
    (void)state;
    /* etcd defaults: 10 ticks of 100 ms: (3*10)/2 * 100 ms = 1.5 s -> 2 s */
    assert_int_equal(lessor_min_ttl(100, 1000), 2);
    assert_int_equal(lessor_min_ttl(100, 2000), 3);
    assert_int_equal(lessor_min_ttl(50, 500), 1);
    assert_int_equal(lessor_min_ttl(10, 100), 1);
}

static void test_expiry_not_before_at(void **state)
{
    (void)state;
    lessor *l = lessor_new();
    int64_t ids[8];
    assert_non_null(l);
    assert_int_equal(lessor_add(l, 7, 10, 0, 1000), 0);
    /* not primary: no deadlines, nothing expires */
    assert_int_equal(lessor_expired(l, 1000000, ids, 8), 0);
    assert_int_equal(lessor_remaining_ms(lessor_get(l, 7), 5000), INT64_MAX);

    lessor_promote(l, 2000, 0); /* deadline 12000 */
    assert_int_equal(lessor_expired(l, 11999, ids, 8), 0);
    assert_int_equal(lessor_remaining_s(lessor_get(l, 7), 2000), 10);
    assert_int_equal(lessor_remaining_s(lessor_get(l, 7), 2001), 9); /* truncated */
    assert_int_equal(lessor_expired(l, 12000, ids, 8), 1);
    assert_int_equal(ids[0], 7);

    /* once its revoke is proposed it is not reported again before retry */
    lessor_revoking(l, 7, 12000);
    assert_int_equal(lessor_expired(l, 12001, ids, 8), 0);
    assert_int_equal(lessor_expired(l, 12000 + LESSOR_RETRY_MS, ids, 8), 1);

    /* an expired lease cannot be renewed */
    int64_t ttl;
    bool clear;
    assert_int_equal(lessor_renew(l, 7, 12000, &ttl, &clear), KERR_LEASE_NOT_FOUND);
    lessor_remove(l, 7);
    assert_null(lessor_get(l, 7));
    lessor_free(l);
}

static void test_renew_and_order(void **state)
{
    (void)state;
    lessor *l = lessor_new();
    int64_t ids[8], ttl;
    bool clear;
    assert_int_equal(lessor_renew(l, 1, 0, &ttl, &clear), KERR_NOT_LEADER);
    lessor_promote(l, 0, 0);
    assert_int_equal(lessor_add(l, 1, 5, 0, 0), 0);  /* due 5000 */
    assert_int_equal(lessor_add(l, 2, 3, 0, 0), 0);  /* due 3000 */
    assert_int_equal(lessor_add(l, 3, 60, 0, 0), 0); /* due 60000 */
    assert_int_equal(lessor_renew(l, 99, 0, &ttl, &clear), KERR_LEASE_NOT_FOUND);

    int64_t *list;
    size_t n;
    assert_int_equal(lessor_list(l, &list, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(list[0], 2);
    assert_int_equal(list[1], 1);
    assert_int_equal(list[2], 3);
    free(list);

    /* renewing lease 1 at 4000 moves it to 9000 */
    assert_int_equal(lessor_renew(l, 1, 4000, &ttl, &clear), 0);
    assert_int_equal(ttl, 5);
    assert_false(clear);
    assert_int_equal(lessor_expired(l, 5000, ids, 8), 1);
    assert_int_equal(ids[0], 2);
    assert_int_equal(lessor_expired(l, 8999, ids, 8), 1);
    assert_int_equal(lessor_expired(l, 9000, ids, 8), 2);
    assert_int_equal(ids[0], 2);
    assert_int_equal(ids[1], 1);
    /* at most max */
    assert_int_equal(lessor_expired(l, 100000, ids, 1), 1);
    assert_int_equal(ids[0], 2);

    /* demotion drops deadlines; promotion gives fresh ones from now */
    lessor_demote(l);
    assert_int_equal(lessor_expired(l, 100000, ids, 8), 0);
    lessor_promote(l, 100000, 1000);
    assert_int_equal(lessor_expired(l, 100000 + 1000 + 2999, ids, 8), 0);
    assert_int_equal(lessor_expired(l, 100000 + 1000 + 3000, ids, 8), 1);

    /* a checkpointed remaining TTL is what promotion counts from; renewal
     * clears it and asks for a checkpoint of 0 */
    lessor_checkpoint(l, 3, 7);
    lessor_promote(l, 200000, 0);
    assert_int_equal(lessor_remaining_s(lessor_get(l, 3), 200000), 7);
    assert_int_equal(lessor_renew(l, 3, 200000, &ttl, &clear), 0);
    assert_true(clear);
    assert_int_equal(ttl, 60);
    assert_int_equal(lessor_remaining_s(lessor_get(l, 3), 200000), 60);
    lessor_free(l);
}

static void test_checkpoints(void **state)
{
    (void)state;
    lessor *l = lessor_new();
    int64_t ids[4], rem[4];
    assert_int_equal(lessor_add(l, 1, 600, 0, 0), 0);
    assert_int_equal(lessor_add(l, 2, 100, 0, 0), 0); /* not longer than 300 s: skipped */
    assert_int_equal(lessor_checkpoints(l, 0, 300, ids, rem, 4), 0); /* not primary */
    lessor_promote(l, 0, 1000);
    /* at 1.5 s: 600 s + 1 s grace - 1.5 s = 599.5 s -> 600 (rounded up, capped at the TTL) */
    assert_int_equal(lessor_checkpoints(l, 1500, 300, ids, rem, 4), 1);
    assert_int_equal(ids[0], 1);
    assert_int_equal(rem[0], 600);
    assert_int_equal(lessor_checkpoints(l, 101500, 300, ids, rem, 4), 1);
    assert_int_equal(rem[0], 500);
    /* applied: a new primary counts from it */
    lessor_checkpoint(l, 1, rem[0]);
    lessor_remove(l, 2);
    lessor_demote(l);
    lessor_promote(l, 200000, 0);
    assert_int_equal(lessor_remaining_s(lessor_get(l, 1), 200000), 500);
    int64_t ids2[4];
    assert_int_equal(lessor_expired(l, 200000 + 499999, ids2, 4), 0);
    assert_int_equal(lessor_expired(l, 200000 + 500000, ids2, 4), 1);
    lessor_free(l);
}

/* ---- store ---- */

#include "store_fixture.h"

static int setup(void **state) { return fx_setup(state, "/tmp/ketch-lease-XXXXXX"); }

static int apply(struct fx *f, Ketchpb__InternalRequest *req, struct mvcc_result *res)
{
    assert_int_equal(mvcc_apply(f->s, ++f->index, req, &f->a, res), 0);
    return res->err;
}

static int do_grant(struct fx *f, int64_t id, int64_t ttl)
{
    Etcdserverpb__LeaseGrantRequest g = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
    Ketchpb__InternalRequest req = KETCHPB__INTERNAL_REQUEST__INIT;
    struct mvcc_result res;
    g.id = id;
    g.ttl = ttl;
    req.lease_grant = &g;
    int rc = apply(f, &req, &res);
    if (rc == 0) {
        assert_non_null(res.lease_grant);
        assert_int_equal(res.lease_grant->id, id);
        assert_int_equal(res.lease_grant->ttl, ttl);
    }
    return rc;
}

static int do_revoke(struct fx *f, int64_t id, int64_t *rev)
{
    Etcdserverpb__LeaseRevokeRequest r = ETCDSERVERPB__LEASE_REVOKE_REQUEST__INIT;
    Ketchpb__InternalRequest req = KETCHPB__INTERNAL_REQUEST__INIT;
    struct mvcc_result res;
    r.id = id;
    req.lease_revoke = &r;
    int rc = apply(f, &req, &res);
    if (rev) *rev = res.revision;
    return rc;
}

static int put(struct fx *f, const char *k, int64_t lease, int ignore_lease)
{
    Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
    Ketchpb__InternalRequest req = KETCHPB__INTERNAL_REQUEST__INIT;
    struct mvcc_result res;
    p.key = B(k);
    p.value = B("v");
    p.lease = lease;
    p.ignore_lease = ignore_lease;
    req.put = &p;
    return apply(f, &req, &res);
}

static void del(struct fx *f, const char *k)
{
    Etcdserverpb__DeleteRangeRequest d = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
    Ketchpb__InternalRequest req = KETCHPB__INTERNAL_REQUEST__INIT;
    struct mvcc_result res;
    d.key = B(k);
    req.delete_range = &d;
    assert_int_equal(apply(f, &req, &res), 0);
}

/* The keys of lease id joined by ',' */
static const char *keys_of(struct fx *f, int64_t id)
{
    static char buf[256];
    ProtobufCBinaryData *keys;
    size_t n;
    assert_int_equal(mvcc_lease_keys(f->s, id, &f->a, &keys, &n), 0);
    buf[0] = 0;
    for (size_t i = 0; i < n; i++) {
        if (i) strcat(buf, ",");
        strncat(buf, (const char *)keys[i].data, keys[i].len);
    }
    return buf;
}

static int64_t lease_of(struct fx *f, const char *k, int *found)
{
    Etcdserverpb__RangeRequest r = ETCDSERVERPB__RANGE_REQUEST__INIT;
    Etcdserverpb__RangeResponse resp = ETCDSERVERPB__RANGE_RESPONSE__INIT;
    r.key = B(k);
    assert_int_equal(mvcc_range(f->s, &r, &f->a, &resp), 0);
    *found = resp.n_kvs == 1;
    return resp.n_kvs ? resp.kvs[0]->lease : 0;
}

static void test_grant_errors(void **state)
{
    struct fx *f = *state;
    assert_int_equal(do_grant(f, 0, 10), KERR_LEASE_NOT_FOUND);
    assert_int_equal(do_grant(f, 5, MVCC_MAX_LEASE_TTL + 1), KERR_LEASE_TTL_TOO_LARGE);
    assert_int_equal(do_grant(f, 5, MVCC_MAX_LEASE_TTL), 0);
    assert_int_equal(do_grant(f, 5, 10), KERR_LEASE_EXIST);
    assert_int_equal(do_grant(f, -3, 10), 0); /* any non-zero ID, as etcd */
    assert_int_equal(do_revoke(f, 6, NULL), KERR_LEASE_NOT_FOUND);
    /* grants and failed revokes do not make revisions */
    assert_int_equal(mvcc_revision(f->s), 1);
    assert_int_equal(mvcc_applied_index(f->s), f->index);

    struct mvcc_lease *ls;
    size_t n;
    assert_int_equal(mvcc_lease_list(f->s, &ls, &n), 0);
    assert_int_equal(n, 2);
    free(ls);
}

static void test_attach_detach_persist(void **state)
{
    struct fx *f = *state;
    int found;
    assert_int_equal(put(f, "x", 9, 0), KERR_LEASE_NOT_FOUND); /* unknown lease */
    assert_int_equal(do_grant(f, 1, 100), 0);
    assert_int_equal(do_grant(f, 2, 200), 0);
    assert_int_equal(put(f, "a", 1, 0), 0);
    assert_int_equal(put(f, "b", 1, 0), 0);
    assert_int_equal(put(f, "c", 2, 0), 0);
    assert_string_equal(keys_of(f, 1), "a,b");
    assert_string_equal(keys_of(f, 2), "c");

    /* moving b from lease 1 to lease 2 detaches it from 1 */
    assert_int_equal(put(f, "b", 2, 0), 0);
    assert_string_equal(keys_of(f, 1), "a");
    assert_string_equal(keys_of(f, 2), "b,c");
    /* ignore_lease keeps the lease */
    assert_int_equal(put(f, "b", 0, 1), 0);
    assert_int_equal(lease_of(f, "b", &found), 2);
    assert_string_equal(keys_of(f, 2), "b,c");
    /* a plain put drops it */
    assert_int_equal(put(f, "c", 0, 0), 0);
    assert_string_equal(keys_of(f, 2), "b");
    /* a delete detaches */
    del(f, "b");
    assert_string_equal(keys_of(f, 2), "");
    assert_int_equal(put(f, "b", 2, 0), 0);

    reopen(f);
    assert_string_equal(keys_of(f, 1), "a");
    assert_string_equal(keys_of(f, 2), "b");
    struct mvcc_lease *ls;
    size_t n;
    assert_int_equal(mvcc_lease_list(f->s, &ls, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(ls[0].id, 1);
    assert_int_equal(ls[0].ttl, 100);
    assert_int_equal(ls[1].id, 2);
    assert_int_equal(ls[1].ttl, 200);
    free(ls);

    /* checkpoints persist too; unknown leases are skipped */
    Etcdserverpb__LeaseCheckpoint cp1 = ETCDSERVERPB__LEASE_CHECKPOINT__INIT;
    Etcdserverpb__LeaseCheckpoint cp2 = ETCDSERVERPB__LEASE_CHECKPOINT__INIT;
    Etcdserverpb__LeaseCheckpoint *cps[2] = {&cp1, &cp2};
    Etcdserverpb__LeaseCheckpointRequest cr = ETCDSERVERPB__LEASE_CHECKPOINT_REQUEST__INIT;
    Ketchpb__InternalRequest req = KETCHPB__INTERNAL_REQUEST__INIT;
    struct mvcc_result res;
    cp1.id = 2, cp1.remaining_ttl = 42;
    cp2.id = 77, cp2.remaining_ttl = 1;
    cr.n_checkpoints = 2, cr.checkpoints = cps;
    req.lease_checkpoint = &cr;
    assert_int_equal(apply(f, &req, &res), 0);
    reopen(f);
    assert_int_equal(mvcc_lease_list(f->s, &ls, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(ls[1].remaining, 42);
    assert_int_equal(ls[0].remaining, 0);
    free(ls);

    /* revoke persists, with its deletes */
    int64_t rev;
    assert_int_equal(do_revoke(f, 2, &rev), 0);
    reopen(f);
    assert_int_equal(mvcc_lease_list(f->s, &ls, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(ls[0].id, 1);
    free(ls);
    lease_of(f, "b", &found);
    assert_false(found);
    lease_of(f, "a", &found);
    assert_true(found);
    assert_int_equal(mvcc_revision(f->s), rev);
}

static void test_revoke_one_revision(void **state)
{
    struct fx *f = *state;
    assert_int_equal(do_grant(f, 1, 100), 0);
    /* a long key (> the LMDB key limit) too */
    char longk[3000];
    memset(longk, 'z', sizeof longk - 1);
    longk[sizeof longk - 1] = 0;
    assert_int_equal(put(f, "k3", 1, 0), 0);
    assert_int_equal(put(f, longk, 1, 0), 0);
    assert_int_equal(put(f, "k1", 1, 0), 0);
    assert_int_equal(put(f, "k2", 1, 0), 0);
    assert_int_equal(put(f, "other", 0, 0), 0);
    int64_t before = mvcc_revision(f->s), rev;
    assert_int_equal(do_revoke(f, 1, &rev), 0);
    assert_int_equal(rev, before + 1);
    assert_int_equal(mvcc_revision(f->s), before + 1);

    /* every key deleted at that revision, in key order (sub 0, 1, 2, 3) */
    Etcdserverpb__RangeRequest r = ETCDSERVERPB__RANGE_REQUEST__INIT;
    Etcdserverpb__RangeResponse resp = ETCDSERVERPB__RANGE_RESPONSE__INIT;
    r.key = B("\0");
    r.key.len = 1;
    r.range_end = r.key;
    assert_int_equal(mvcc_range(f->s, &r, &f->a, &resp), 0);
    assert_int_equal(resp.n_kvs, 1);
    assert_memory_equal(resp.kvs[0]->key.data, "other", 5);
    /* at the revision before, all were there */
    Etcdserverpb__RangeResponse old = ETCDSERVERPB__RANGE_RESPONSE__INIT;
    r.revision = before;
    assert_int_equal(mvcc_range(f->s, &r, &f->a, &old), 0);
    assert_int_equal(old.n_kvs, 5);
    assert_string_equal(keys_of(f, 1), "");
    assert_int_equal(do_revoke(f, 1, NULL), KERR_LEASE_NOT_FOUND);
    /* the lease is gone: puts with it fail again */
    assert_int_equal(put(f, "k1", 1, 0), KERR_LEASE_NOT_FOUND);

    /* a lease without keys: revoke makes no revision */
    assert_int_equal(do_grant(f, 2, 100), 0);
    before = mvcc_revision(f->s);
    assert_int_equal(do_revoke(f, 2, &rev), 0);
    assert_int_equal(rev, before);
}

static void test_txn_attach(void **state)
{
    struct fx *f = *state;
    assert_int_equal(do_grant(f, 4, 100), 0);
    Etcdserverpb__PutRequest p1 = ETCDSERVERPB__PUT_REQUEST__INIT;
    Etcdserverpb__PutRequest p2 = ETCDSERVERPB__PUT_REQUEST__INIT;
    Etcdserverpb__RequestOp o1 = ETCDSERVERPB__REQUEST_OP__INIT;
    Etcdserverpb__RequestOp o2 = ETCDSERVERPB__REQUEST_OP__INIT;
    Etcdserverpb__RequestOp *ops[2] = {&o1, &o2};
    Etcdserverpb__TxnRequest t = ETCDSERVERPB__TXN_REQUEST__INIT;
    Ketchpb__InternalRequest req = KETCHPB__INTERNAL_REQUEST__INIT;
    struct mvcc_result res;
    p1.key = B("t1"), p1.lease = 4;
    p2.key = B("t2"), p2.lease = 5; /* unknown: the whole txn fails */
    o1.request_case = o2.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
    o1.request_put = &p1, o2.request_put = &p2;
    t.n_success = 2, t.success = ops;
    req.txn = &t;
    assert_int_equal(apply(f, &req, &res), KERR_LEASE_NOT_FOUND);
    assert_string_equal(keys_of(f, 4), "");
    p2.lease = 4;
    assert_int_equal(apply(f, &req, &res), 0);
    assert_string_equal(keys_of(f, 4), "t1,t2");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_min_ttl),
        cmocka_unit_test(test_expiry_not_before_at),
        cmocka_unit_test(test_renew_and_order),
        cmocka_unit_test(test_checkpoints),
        cmocka_unit_test_setup_teardown(test_grant_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_attach_detach_persist, setup, teardown),
        cmocka_unit_test_setup_teardown(test_revoke_one_revision, setup, teardown),
        cmocka_unit_test_setup_teardown(test_txn_attach, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
