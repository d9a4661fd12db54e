/* Writes: Put, DeleteRange, Txn and Compaction as etcd applies them
 * (etcdserver/apply.go, mvcc/kvstore_txn.go), and mvcc_apply, which runs
 * one Raft entry in one LMDB write transaction. */
#include <stdlib.h>

#include "mvcc/mvcc_int.h"
#include "util/errors.h"

static Etcdserverpb__ResponseHeader *new_header(arena *a, int64_t rev)
{
    Etcdserverpb__ResponseHeader *h = arena_alloc(a, sizeof *h);
    etcdserverpb__response_header__init(h);
    h->revision = rev;
    return h;
}

/* 1 if lease `id` exists (the hook if set, else the lease table), 0 if
 * not, or a negative KERR_*. */
static int lease_ok(struct op_ctx *c, int64_t id)
{
    mvcc_store *s = c->s;
    if (s->lease_exists != NULL) return s->lease_exists(s->lease_ctx, id) != 0;
    return leasetab_exists(c->txn, s, id);
}

/* etcd's applierV3backend.Put. `checked`: inside a txn, whose lease and
 * ignore_* checks ran before any op (checkRequestPut). */
int put_exec(struct op_ctx *c, const Etcdserverpb__PutRequest *p, int checked, arena *a,
             Etcdserverpb__PutResponse *resp)
{
    if (p->key.len == 0) return KERR_EMPTY_KEY;
    /* as etcd: a top-level put checks the lease before anything else */
    int rc;
    if (!checked && p->lease != 0 && (rc = lease_ok(c, p->lease)) != 1)
        return rc < 0 ? rc : KERR_LEASE_NOT_FOUND;

    Mvccpb__KeyValue *prev;
    struct krec rec;
    int exists;
    rc = kv_current(c, p->key.data, p->key.len, a, &prev, &rec, &exists);
    if (rc != 0) return rc;
    if ((p->ignore_value || p->ignore_lease) && prev == NULL) return KERR_KEY_NOT_FOUND;

    int64_t rev = c->begin_rev + 1;
    Mvccpb__KeyValue kv = MVCCPB__KEY_VALUE__INIT;
    kv.key = p->key;
    kv.value = p->ignore_value ? prev->value : p->value;
    kv.lease = p->ignore_lease ? prev->lease : p->lease;
    kv.create_revision = prev ? prev->create_revision : rev;
    kv.mod_revision = rev;
    kv.version = prev ? prev->version + 1 : 1;

    uint64_t kid = exists ? rec.kid : c->next_kid++;
    if ((rc = hist_put(c, kid, CH_PUT, &kv)) != 0) return rc;
    struct krec nrec = {kid, rev, c->nchanges, kv.create_revision, kv.version, kv.lease, 0};
    if ((rc = krec_put(c->txn, c->s, p->key.data, p->key.len, &nrec)) != 0) return rc;
    /* as etcd's storeTxnWrite.put: detach from the old lease, attach to the new */
    if ((rc = leasetab_move(c->txn, c->s, kid, p->key.data, p->key.len,
                            exists && !rec.deleted ? rec.lease : 0, kv.lease)) != 0)
        return rc;
    c->nchanges++;
    if (p->prev_kv && prev) resp->prev_kv = prev;
    return 0;
}

/* etcd's applierV3backend.DeleteRange + storeTxnWrite.deleteRange. */
int delete_exec(struct op_ctx *c, const Etcdserverpb__DeleteRangeRequest *d, arena *a,
                Etcdserverpb__DeleteRangeResponse *resp)
{
    struct krange r = krange_make(d->key, d->range_end);
    Mvccpb__KeyValue **kvs;
    size_t n;
    int64_t count;
    int rc = range_keys(c, &r, 0, 0, 0, d->prev_kv, a, &kvs, &n, &count);
    if (rc != 0) return rc;
    int64_t rev = c->begin_rev + 1;
    for (size_t i = 0; i < n; i++) {
        struct krec rec;
        ProtobufCBinaryData key = kvs[i]->key;
        rc = krec_get(c->txn, c->s, key.data, key.len, &rec);
        if (rc != 1) return rc < 0 ? rc : KERR_CORRUPT;
        Mvccpb__KeyValue tomb = MVCCPB__KEY_VALUE__INIT;
        tomb.key = key;
        tomb.mod_revision = rev;
        if ((rc = hist_put(c, rec.kid, CH_TOMBSTONE, &tomb)) != 0) return rc;
        struct krec nrec = {rec.kid, rev, c->nchanges, 0, 0, 0, 1};
        if ((rc = krec_put(c->txn, c->s, key.data, key.len, &nrec)) != 0) return rc;
        if (rec.lease != 0 &&
            (rc = leasetab_move(c->txn, c->s, rec.kid, key.data, key.len, rec.lease, 0)) != 0)
            return rc;
        c->nchanges++;
    }
    resp->deleted = (int64_t)n;
    if (d->prev_kv && n) {
        resp->n_prev_kvs = n;
        resp->prev_kvs = kvs;
    }
    return 0;
}

/* ---- Txn ---- */

/* The branch taken by every txn on the way, in pre-order (etcd's txnPath). */
struct path {
    uint8_t *v;
    size_t n, cap, pos;
};

static int path_push(struct path *p, int b)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 8;
        uint8_t *v = realloc(p->v, cap);
        if (v == NULL) return KERR_NOMEM;
        p->v = v, p->cap = cap;
    }
    p->v[p->n++] = (uint8_t)b;
    return 0;
}

static int cmp_i64(int64_t a, int64_t b) { return a < b ? -1 : a > b; }

/* etcd's compareKV. */
static int compare_kv(const Etcdserverpb__Compare *cmp, const Mvccpb__KeyValue *kv)
{
    int r = 0;
    int64_t want = 0;
    switch (cmp->target) {
    case ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE: {
        ProtobufCBinaryData v = {0, NULL};
        if (cmp->target_union_case == ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE) v = cmp->value;
        r = bytes_cmp(kv->value.data, kv->value.len, v.data, v.len);
        break;
    }
    case ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE:
        if (cmp->target_union_case == ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION)
            want = cmp->create_revision;
        r = cmp_i64(kv->create_revision, want);
        break;
    case ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD:
        if (cmp->target_union_case == ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION)
            want = cmp->mod_revision;
        r = cmp_i64(kv->mod_revision, want);
        break;
    case ETCDSERVERPB__COMPARE__COMPARE_TARGET__VERSION:
        if (cmp->target_union_case == ETCDSERVERPB__COMPARE__TARGET_UNION_VERSION)
            want = cmp->version;
        r = cmp_i64(kv->version, want);
        break;
    case ETCDSERVERPB__COMPARE__COMPARE_TARGET__LEASE:
        if (cmp->target_union_case == ETCDSERVERPB__COMPARE__TARGET_UNION_LEASE)
            want = cmp->lease;
        r = cmp_i64(kv->lease, want);
        break;
    default:
        break;
    }
    switch (cmp->result) {
    case ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL: return r == 0;
    case ETCDSERVERPB__COMPARE__COMPARE_RESULT__NOT_EQUAL: return r != 0;
    case ETCDSERVERPB__COMPARE__COMPARE_RESULT__GREATER: return r > 0;
    case ETCDSERVERPB__COMPARE__COMPARE_RESULT__LESS: return r < 0;
    default: return 1;
    }
}

/* etcd's applyCompare: every key of the range must satisfy it; a missing
 * key compares as a zero KeyValue, except that a value compare fails. */
static int apply_compare(struct op_ctx *c, const Etcdserverpb__Compare *cmp, int *ok)
{
    arena tmp = ARENA_INIT;
    struct krange r = krange_make(cmp->key, cmp->range_end);
    Mvccpb__KeyValue **kvs;
    size_t n;
    int64_t count;
    int want_value = cmp->target == ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE;
    int rc = range_keys(c, &r, 0, 0, 0, want_value, &tmp, &kvs, &n, &count);
    *ok = 0;
    if (rc == 0) {
        if (n == 0) {
            Mvccpb__KeyValue zero = MVCCPB__KEY_VALUE__INIT;
            *ok = !want_value && compare_kv(cmp, &zero);
        } else {
            *ok = 1;
            for (size_t i = 0; i < n && *ok; i++) *ok = compare_kv(cmp, kvs[i]);
        }
    }
    arena_free(&tmp);
    return rc;
}

static Etcdserverpb__RequestOp **branch(const Etcdserverpb__TxnRequest *rt, int ok, size_t *n)
{
    *n = ok ? rt->n_success : rt->n_failure;
    return ok ? rt->success : rt->failure;
}

static int is_txn_op(const Etcdserverpb__RequestOp *op)
{
    return op->request_case == ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN &&
           op->request_txn != NULL;
}

/* etcd's compareToPath: every compare on the way is evaluated before any
 * op runs. */
static int compare_to_path(struct op_ctx *c, const Etcdserverpb__TxnRequest *rt, struct path *p)
{
    int ok = 1, rc;
    for (size_t i = 0; i < rt->n_compare && ok; i++)
        if ((rc = apply_compare(c, rt->compare[i], &ok)) != 0) return rc;
    if ((rc = path_push(p, ok)) != 0) return rc;
    size_t n;
    Etcdserverpb__RequestOp **ops = branch(rt, ok, &n);
    for (size_t i = 0; i < n; i++)
        if (is_txn_op(ops[i]) && (rc = compare_to_path(c, ops[i]->request_txn, p)) != 0) return rc;
    return 0;
}

typedef int (*check_fn)(struct op_ctx *c, const Etcdserverpb__RequestOp *op);

static int check_put(struct op_ctx *c, const Etcdserverpb__RequestOp *op)
{
    if (op->request_case != ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT || !op->request_put)
        return 0;
    const Etcdserverpb__PutRequest *p = op->request_put;
    if (p->ignore_value || p->ignore_lease) {
        struct krec rec;
        int rc = krec_get(c->txn, c->s, p->key.data, p->key.len, &rec);
        if (rc < 0) return rc;
        if (rc == 0 || rec.deleted) return KERR_KEY_NOT_FOUND;
    }
    if (p->lease != 0) {
        int rc = lease_ok(c, p->lease);
        if (rc != 1) return rc < 0 ? rc : KERR_LEASE_NOT_FOUND;
    }
    return 0;
}

static int check_range(struct op_ctx *c, const Etcdserverpb__RequestOp *op)
{
    if (op->request_case != ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE ||
        !op->request_range)
        return 0;
    int64_t rev = op->request_range->revision;
    /* as etcd's checkRequestRange, including its quirk that a negative
     * revision below the compact revision (-1 before any) is compacted */
    if (rev == 0) return 0;
    if (rev > c->begin_rev) return KERR_FUTURE_REV;
    if (rev < c->s->compact_rev) return KERR_COMPACTED;
    return 0;
}

static int check_requests(struct op_ctx *c, const Etcdserverpb__TxnRequest *rt, struct path *p,
                          check_fn f)
{
    size_t n;
    Etcdserverpb__RequestOp **ops = branch(rt, p->v[p->pos++], &n);
    for (size_t i = 0; i < n; i++) {
        int rc = is_txn_op(ops[i]) ? check_requests(c, ops[i]->request_txn, p, f) : f(c, ops[i]);
        if (rc != 0) return rc;
    }
    return 0;
}

static int is_read_only(const Etcdserverpb__TxnRequest *rt)
{
    for (int b = 0; b < 2; b++) {
        size_t n;
        Etcdserverpb__RequestOp **ops = branch(rt, b, &n);
        for (size_t i = 0; i < n; i++) {
            switch (ops[i]->request_case) {
            case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT:
            case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE:
                return 0;
            case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN:
                if (ops[i]->request_txn && !is_read_only(ops[i]->request_txn)) return 0;
                break;
            default:
                break;
            }
        }
    }
    return 1;
}

/* etcd's newTxnResp + applyTxn: runs the chosen branch's ops in order;
 * nested responses carry a header with the revision etcd puts there (none
 * for a nested txn). */
static int apply_txn(struct op_ctx *c, const Etcdserverpb__TxnRequest *rt, struct path *p,
                     arena *a, Etcdserverpb__TxnResponse *tr)
{
    int ok = p->v[p->pos++];
    size_t n;
    Etcdserverpb__RequestOp **ops = branch(rt, ok, &n);
    tr->succeeded = ok;
    tr->n_responses = n;
    tr->responses = n ? arena_calloc(a, n, sizeof *tr->responses) : NULL;
    for (size_t i = 0; i < n; i++) {
        const Etcdserverpb__RequestOp *op = ops[i];
        Etcdserverpb__ResponseOp *ro = arena_alloc(a, sizeof *ro);
        etcdserverpb__response_op__init(ro);
        tr->responses[i] = ro;
        int rc = 0;
        switch (op->request_case) {
        case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE: {
            if (!op->request_range) break;
            Etcdserverpb__RangeResponse *r = arena_alloc(a, sizeof *r);
            etcdserverpb__range_response__init(r);
            rc = range_apply(c, op->request_range, a, r);
            r->header = new_header(a, ctx_rev(c));
            ro->response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE;
            ro->response_range = r;
            break;
        }
        case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT: {
            if (!op->request_put) break;
            if (!c->write) return KERR_BAD_REQUEST;
            Etcdserverpb__PutResponse *r = arena_alloc(a, sizeof *r);
            etcdserverpb__put_response__init(r);
            rc = put_exec(c, op->request_put, 1, a, r);
            r->header = new_header(a, c->begin_rev + 1);
            ro->response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_PUT;
            ro->response_put = r;
            break;
        }
        case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE: {
            if (!op->request_delete_range) break;
            if (!c->write) return KERR_BAD_REQUEST;
            Etcdserverpb__DeleteRangeResponse *r = arena_alloc(a, sizeof *r);
            etcdserverpb__delete_range_response__init(r);
            rc = delete_exec(c, op->request_delete_range, a, r);
            r->header = new_header(a, ctx_rev(c));
            ro->response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE;
            ro->response_delete_range = r;
            break;
        }
        case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN: {
            if (!op->request_txn) break;
            Etcdserverpb__TxnResponse *r = arena_alloc(a, sizeof *r);
            etcdserverpb__txn_response__init(r);
            r->header = new_header(a, 0);
            rc = apply_txn(c, op->request_txn, p, a, r);
            ro->response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_TXN;
            ro->response_txn = r;
            break;
        }
        default:
            break;
        }
        if (rc != 0) return rc;
    }
    return 0;
}

int txn_exec(struct op_ctx *c, const Etcdserverpb__TxnRequest *req, arena *a,
             Etcdserverpb__TxnResponse *resp)
{
    struct path p = {0};
    int write = !is_read_only(req);
    int rc = compare_to_path(c, req, &p);
    if (rc == 0 && write) {
        p.pos = 0;
        rc = check_requests(c, req, &p, check_put);
    }
    if (rc == 0) {
        p.pos = 0;
        rc = check_requests(c, req, &p, check_range);
    }
    if (rc == 0) {
        p.pos = 0;
        rc = apply_txn(c, req, &p, a, resp);
    }
    free(p.v);
    return rc;
}

int mvcc_txn_read(mvcc_store *s, const Etcdserverpb__TxnRequest *req, arena *a,
                  Etcdserverpb__TxnResponse *resp)
{
    if (!is_read_only(req)) return KERR_BAD_REQUEST;
    struct op_ctx c = {.s = s, .begin_rev = s->rev, .next_kid = s->next_kid};
    int rc = store_rtxn_begin(s, &c.txn);
    if (rc != 0) return rc;
    rc = txn_exec(&c, req, a, resp);
    store_rtxn_end(s);
    return rc;
}

/* ---- apply ---- */

/* Errors that mean "this request fails", as opposed to a broken store. */
static int is_request_error(int rc)
{
    switch (rc) {
    case KERR_EMPTY_KEY:
    case KERR_KEY_NOT_FOUND:
    case KERR_COMPACTED:
    case KERR_FUTURE_REV:
    case KERR_LEASE_NOT_FOUND:
    case KERR_LEASE_EXIST:
    case KERR_LEASE_TTL_TOO_LARGE:
    case KERR_BAD_REQUEST:
    case KERR_NO_SPACE:
    case KERR_ROOT_USER_NOT_EXIST:
    case KERR_ROOT_ROLE_NOT_EXIST:
    case KERR_USER_ALREADY_EXIST:
    case KERR_USER_EMPTY:
    case KERR_USER_NOT_FOUND:
    case KERR_ROLE_ALREADY_EXIST:
    case KERR_ROLE_NOT_FOUND:
    case KERR_ROLE_EMPTY:
    case KERR_AUTH_FAILED:
    case KERR_PERMISSION_NOT_GIVEN:
    case KERR_PERMISSION_DENIED:
    case KERR_ROLE_NOT_GRANTED:
    case KERR_PERMISSION_NOT_GRANTED:
    case KERR_AUTH_NOT_ENABLED:
    case KERR_INVALID_AUTH_MGMT:
    case KERR_AUTH_OLD_REVISION:
    case KERR_ALARM_CORRUPT:
        return 1;
    default:
        return 0;
    }
}

static int exec_request(struct op_ctx *c, const Ketchpb__InternalRequest *req, arena *a,
                        struct mvcc_result *out, int64_t *compact_to)
{
    int rc;
    /* as etcd's authApplierV3: permissions first, against the auth state
     * of this point of the log */
    if ((rc = auth_check_request(c, req)) != 0) return rc;
    if ((rc = auth_exec(c, req, a, out)) != 1) return rc;
    if (req->alarm) return alarm_exec(c, req->alarm, a, out);
    /* as etcd's applierV3Corrupt and applierV3Capped (a raised CORRUPT
     * alarm stops every write; NOSPACE stops what makes the store grow) */
    mvcc_store *s = c->s;
    if (s->alarm_corrupt > 0 &&
        (req->put || req->delete_range || req->txn || req->compaction || req->lease_grant ||
         req->lease_revoke))
        return KERR_ALARM_CORRUPT;
    if (s->alarm_nospace > 0 &&
        (req->put || (req->txn && !is_read_only(req->txn)) || req->lease_grant))
        return KERR_NO_SPACE;
    if (req->put) {
        out->put = arena_alloc(a, sizeof *out->put);
        etcdserverpb__put_response__init(out->put);
        return put_exec(c, req->put, 0, a, out->put);
    }
    if (req->delete_range) {
        out->delete_range = arena_alloc(a, sizeof *out->delete_range);
        etcdserverpb__delete_range_response__init(out->delete_range);
        return delete_exec(c, req->delete_range, a, out->delete_range);
    }
    if (req->txn) {
        out->txn = arena_alloc(a, sizeof *out->txn);
        etcdserverpb__txn_response__init(out->txn);
        return txn_exec(c, req->txn, a, out->txn);
    }
    if (req->compaction) {
        /* as etcd's updateCompactRev */
        int64_t rev = req->compaction->revision;
        if (rev <= c->s->compact_rev) return KERR_COMPACTED;
        if (rev > c->begin_rev) return KERR_FUTURE_REV;
        if ((rc = store_compact(c, rev)) != 0) return rc;
        *compact_to = rev;
        out->compaction = arena_alloc(a, sizeof *out->compaction);
        etcdserverpb__compaction_response__init(out->compaction);
        return 0;
    }
    if (req->lease_grant) {
        out->lease_grant = arena_alloc(a, sizeof *out->lease_grant);
        etcdserverpb__lease_grant_response__init(out->lease_grant);
        return leasetab_grant(c, req->lease_grant, a, out->lease_grant);
    }
    if (req->lease_revoke) {
        out->lease_revoke = arena_alloc(a, sizeof *out->lease_revoke);
        etcdserverpb__lease_revoke_response__init(out->lease_revoke);
        return leasetab_revoke(c, req->lease_revoke, a, out->lease_revoke);
    }
    if (req->lease_checkpoint) {
        out->lease_checkpoint = arena_alloc(a, sizeof *out->lease_checkpoint);
        etcdserverpb__lease_checkpoint_response__init(out->lease_checkpoint);
        return leasetab_checkpoint(c, req->lease_checkpoint);
    }
    return KERR_BAD_REQUEST;
}

int mvcc_apply(mvcc_store *s, uint64_t index, const Ketchpb__InternalRequest *req, arena *a,
               struct mvcc_result *out)
{
    memset(out, 0, sizeof *out);
    struct op_ctx c = {.s = s, .begin_rev = s->rev, .next_kid = s->next_kid, .write = 1};
    int64_t compact_to = -2;
    MDB_txn *batch;
    int rc = store_wtxn(s, &batch);
    if (rc != 0) return rc;
    if (s->defrag != NULL) defrag_log_apply(s, index, req);
    if (req != NULL) {
        /* the request runs in a child txn: a failure drops only its changes */
        if ((rc = mdb_txn_begin(s->env, batch, 0, &c.txn)) != 0) return mdb_to_kerr(rc);
        rc = exec_request(&c, req, a, out, &compact_to);
        if (rc != 0) {
            mdb_txn_abort(c.txn);
            if (!is_request_error(rc)) return rc < 0 ? rc : mdb_to_kerr(rc);
            out->put = NULL, out->delete_range = NULL, out->txn = NULL, out->compaction = NULL;
            out->lease_grant = NULL, out->lease_revoke = NULL, out->lease_checkpoint = NULL;
            out->auth = NULL;
            out->alarm = NULL;
            out->err = rc;
            c.nchanges = 0;
            c.next_kid = s->next_kid;
            compact_to = -2;
        } else if ((rc = mdb_txn_commit(c.txn)) != 0) {
            return mdb_to_kerr(rc);
        } else if (out->auth != NULL && (rc = auth_load(batch, s)) != 0) {
            return rc;
        } else if (out->alarm != NULL && (rc = alarm_load(batch, s)) != 0) {
            return rc;
        }
    }
    int64_t rev = ctx_rev(&c);
    if ((rc = meta_put_u64(batch, s, "applied_index", index)) != 0) return rc;
    if (c.nchanges > 0 && ((rc = meta_put_u64(batch, s, "revision", (uint64_t)rev)) != 0 ||
                           (rc = meta_put_u64(batch, s, "next_kid", c.next_kid)) != 0))
        return rc;
    s->batch_n++;
    s->applied = index;
    s->rev = rev;
    s->next_kid = c.next_kid;
    if (compact_to != -2) {
        s->compact_rev = compact_to;
        compact_scheduled(s, compact_to);
    }
    out->revision = rev;
    /* at the end of the request, as etcd notifies watchers at the end of
     * the txn; the hook reads through the batch txn */
    if (c.nchanges > 0) events_notify(s, rev);
    if (s->batch_n >= MVCC_BATCH_MAX && (rc = mvcc_flush(s)) != 0) return rc;
    return 0;
}
