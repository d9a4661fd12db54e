/* etcdserverpb.KV: Range, Put, DeleteRange, Txn, Compact.
 * Request checks are etcd's (etcdserver/api/v3rpc/key.go), made before
 * anything is proposed; the semantics live in mvcc. */
#include <stdlib.h>
#include <string.h>

#include "api/auth.h"
#include "api/kv.h"
#include "api/maintenance.h"
#include "api/propose.h"
#include "util/arena.h"
#include "util/errors.h"

/* ---- request checks ---- */

static int check_put(const Etcdserverpb__PutRequest *r)
{
    if (r->key.len == 0) return KERR_EMPTY_KEY;
    if (r->ignore_value && r->value.len != 0) return KERR_VALUE_PROVIDED;
    if (r->ignore_lease && r->lease != 0) return KERR_LEASE_PROVIDED;
    return 0;
}

static int check_txn(const Etcdserverpb__TxnRequest *r, long max_ops);

static int check_op(const Etcdserverpb__RequestOp *op, long max_ops)
{
    switch (op->request_case) {
    case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE:
        return op->request_range->key.len == 0 ? KERR_EMPTY_KEY : 0;
    case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT:
        return check_put(op->request_put);
    case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE:
        return op->request_delete_range->key.len == 0 ? KERR_EMPTY_KEY : 0;
    case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN:
        return check_txn(op->request_txn, max_ops);
    default:
        return KERR_KEY_NOT_FOUND; /* an empty op, as etcd answers it */
    }
}

static int check_txn(const Etcdserverpb__TxnRequest *r, long max_ops)
{
    long opc = (long)r->n_compare;
    if (opc < (long)r->n_success) opc = (long)r->n_success;
    if (opc < (long)r->n_failure) opc = (long)r->n_failure;
    if (opc > max_ops) return KERR_TOO_MANY_OPS;
    for (size_t i = 0; i < r->n_compare; i++)
        if (r->compare[i]->key.len == 0) return KERR_EMPTY_KEY;
    for (size_t i = 0; i < r->n_success; i++) {
        int rv = check_op(r->success[i], max_ops - opc);
        if (rv) return rv;
    }
    for (size_t i = 0; i < r->n_failure; i++) {
        int rv = check_op(r->failure[i], max_ops - opc);
        if (rv) return rv;
    }
    return 0;
}

/* etcd's checkIntervals: within one branch, a key may be put at most once
 * and not also be deleted. Intervals are [begin, end) with an empty end
 * meaning "to infinity" (etcd's StringAffineComparable), so a from-key
 * delete (end "\0") covers nothing, exactly as in etcd. */
typedef ProtobufCBinaryData bytes;
struct interval {
    bytes begin, end;
};
struct op_sets {
    bytes *puts;
    size_t n_puts, cap_puts;
    struct interval *dels;
    size_t n_dels, cap_dels;
};

static int bytes_cmp(bytes a, bytes b)
{
    size_t n = a.len < b.len ? a.len : b.len;
    int c = n ? memcmp(a.data, b.data, n) : 0;
    if (c != 0) return c;
    return a.len < b.len ? -1 : a.len > b.len;
}

static bool has_put(const struct op_sets *s, bytes k)
{
    for (size_t i = 0; i < s->n_puts; i++)
        if (bytes_cmp(s->puts[i], k) == 0) return true;
    return false;
}

static bool dels_cover(const struct op_sets *s, bytes k)
{
    for (size_t i = 0; i < s->n_dels; i++) {
        const struct interval *iv = &s->dels[i];
        if (bytes_cmp(iv->begin, k) <= 0 && (iv->end.len == 0 || bytes_cmp(k, iv->end) < 0))
            return true;
    }
    return false;
}

static void add_put(arena *a, struct op_sets *s, bytes k)
{
    if (s->n_puts == s->cap_puts) {
        size_t cap = s->cap_puts ? s->cap_puts * 2 : 8;
        bytes *n = arena_alloc(a, cap * sizeof *n);
        if (s->n_puts) memcpy(n, s->puts, s->n_puts * sizeof *n);
        s->puts = n;
        s->cap_puts = cap;
    }
    s->puts[s->n_puts++] = k;
}

static void add_del(arena *a, struct op_sets *s, struct interval iv)
{
    if (s->n_dels == s->cap_dels) {
        size_t cap = s->cap_dels ? s->cap_dels * 2 : 8;
        struct interval *n = arena_alloc(a, cap * sizeof *n);
        if (s->n_dels) memcpy(n, s->dels, s->n_dels * sizeof *n);
        s->dels = n;
        s->cap_dels = cap;
    }
    s->dels[s->n_dels++] = iv;
}

static int check_intervals(arena *a, Etcdserverpb__RequestOp **ops, size_t n,
                           struct op_sets *out)
{
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < n; i++) {
        if (ops[i]->request_case != ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE)
            continue;
        const Etcdserverpb__DeleteRangeRequest *d = ops[i]->request_delete_range;
        struct interval iv = {d->key, d->range_end};
        if (d->range_end.len == 0) {
            /* a point: [key, key+"\0") */
            uint8_t *e = arena_alloc(a, d->key.len + 1);
            memcpy(e, d->key.data, d->key.len);
            e[d->key.len] = 0;
            iv.end = (bytes){d->key.len + 1, e};
        }
        add_del(a, out, iv);
    }
    for (size_t i = 0; i < n; i++) {
        if (ops[i]->request_case != ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN) continue;
        const Etcdserverpb__TxnRequest *t = ops[i]->request_txn;
        struct op_sets then, els;
        int rv = check_intervals(a, t->success, t->n_success, &then);
        if (rv) return rv;
        rv = check_intervals(a, t->failure, t->n_failure, &els);
        if (rv) return rv;
        for (size_t j = 0; j < then.n_puts; j++) {
            if (has_put(out, then.puts[j]) || dels_cover(out, then.puts[j]))
                return KERR_DUPLICATE_KEY;
            add_put(a, out, then.puts[j]);
        }
        for (size_t j = 0; j < els.n_puts; j++) {
            /* then/else are exclusive: a key put in both is fine */
            if (has_put(out, els.puts[j]) && !has_put(&then, els.puts[j]))
                return KERR_DUPLICATE_KEY;
            if (dels_cover(out, els.puts[j])) return KERR_DUPLICATE_KEY;
            /* etcd's puts is a set: a key put in both branches is one entry */
            if (!has_put(out, els.puts[j])) add_put(a, out, els.puts[j]);
        }
        for (size_t j = 0; j < then.n_dels; j++) add_del(a, out, then.dels[j]);
        for (size_t j = 0; j < els.n_dels; j++) add_del(a, out, els.dels[j]);
    }
    for (size_t i = 0; i < n; i++) {
        if (ops[i]->request_case != ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT) continue;
        bytes k = ops[i]->request_put->key;
        if (has_put(out, k) || dels_cover(out, k)) return KERR_DUPLICATE_KEY;
        add_put(a, out, k);
    }
    return 0;
}

static bool txn_is_read_only(const Etcdserverpb__TxnRequest *t)
{
    Etcdserverpb__RequestOp **branches[2] = {t->success, t->failure};
    size_t counts[2] = {t->n_success, t->n_failure};
    for (int b = 0; b < 2; b++) {
        for (size_t i = 0; i < counts[b]; i++) {
            const Etcdserverpb__RequestOp *op = branches[b][i];
            if (op->request_case == ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE) continue;
            if (op->request_case == ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN &&
                txn_is_read_only(op->request_txn))
                continue;
            return false;
        }
    }
    return true;
}

/* As etcd's isTxnSerializable: every range in it asked to be serializable. */
static bool txn_is_serializable(const Etcdserverpb__TxnRequest *t)
{
    Etcdserverpb__RequestOp **branches[2] = {t->success, t->failure};
    size_t counts[2] = {t->n_success, t->n_failure};
    for (int b = 0; b < 2; b++) {
        for (size_t i = 0; i < counts[b]; i++) {
            const Etcdserverpb__RequestOp *op = branches[b][i];
            if (op->request_case == ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE &&
                !op->request_range->serializable)
                return false;
            if (op->request_case == ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN &&
                !txn_is_serializable(op->request_txn))
                return false;
        }
    }
    return true;
}

/* ---- handlers ---- */

/* Sends `resp` with a filled header at the current revision. */
static void reply_read(api_server *s, grpc_call *call, ProtobufCMessage *resp,
                       Etcdserverpb__ResponseHeader **hdr_field)
{
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    api_fill_header(s, &h, mvcc_revision(s->store));
    *hdr_field = &h;
    grpc_call_reply(call, resp);
    *hdr_field = NULL;
}

static void range_exec(api_server *s, grpc_call *call, const ProtobufCMessage *m)
{
    const Etcdserverpb__RangeRequest *req = (const Etcdserverpb__RangeRequest *)m;
    arena a = ARENA_INIT;
    Etcdserverpb__RangeResponse resp = ETCDSERVERPB__RANGE_RESPONSE__INIT;
    int rv = auth_api_check_range(s, call, req->key, req->range_end);
    if (rv == 0) rv = mvcc_range(s->store, req, &a, &resp);
    if (rv != 0)
        grpc_call_fail(call, rv);
    else
        reply_read(s, call, &resp.base, &resp.header);
    arena_free(&a);
}

void kv_range(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    api_server *s = ctx;
    Etcdserverpb__RangeRequest *req = etcdserverpb__range_request__unpack(NULL, len, msg);
    if (req == NULL) return api_fail_unmarshal(call);
    if (req->key.len == 0) {
        grpc_call_fail(call, KERR_EMPTY_KEY);
        etcdserverpb__range_request__free_unpacked(req, NULL);
        return;
    }
    api_read(s, call, &req->base, req->serializable, range_exec);
}

void kv_put(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    Etcdserverpb__PutRequest *req = etcdserverpb__put_request__unpack(NULL, len, msg);
    if (req == NULL) return api_fail_unmarshal(call);
    int rv = check_put(req);
    if (rv == 0) rv = maint_quota_check(ctx, maint_cost_put(req));
    if (rv != 0) {
        grpc_call_fail(call, rv);
    } else {
        Ketchpb__InternalRequest ir = KETCHPB__INTERNAL_REQUEST__INIT;
        ir.put = req;
        api_propose(ctx, call, &ir);
    }
    etcdserverpb__put_request__free_unpacked(req, NULL);
}

void kv_delete_range(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    Etcdserverpb__DeleteRangeRequest *req =
        etcdserverpb__delete_range_request__unpack(NULL, len, msg);
    if (req == NULL) return api_fail_unmarshal(call);
    if (req->key.len == 0) {
        grpc_call_fail(call, KERR_EMPTY_KEY);
    } else {
        Ketchpb__InternalRequest ir = KETCHPB__INTERNAL_REQUEST__INIT;
        ir.delete_range = req;
        api_propose(ctx, call, &ir);
    }
    etcdserverpb__delete_range_request__free_unpacked(req, NULL);
}

static void txn_read_exec(api_server *s, grpc_call *call, const ProtobufCMessage *m)
{
    const Etcdserverpb__TxnRequest *req = (const Etcdserverpb__TxnRequest *)m;
    arena a = ARENA_INIT;
    Etcdserverpb__TxnResponse resp = ETCDSERVERPB__TXN_RESPONSE__INIT;
    int rv = auth_api_check_txn(s, call, req);
    if (rv == 0) rv = mvcc_txn_read(s->store, req, &a, &resp);
    if (rv != 0)
        grpc_call_fail(call, rv);
    else
        reply_read(s, call, &resp.base, &resp.header);
    arena_free(&a);
}

void kv_txn(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    api_server *s = ctx;
    Etcdserverpb__TxnRequest *req = etcdserverpb__txn_request__unpack(NULL, len, msg);
    if (req == NULL) return api_fail_unmarshal(call);
    int rv = check_txn(req, (long)s->max_txn_ops);
    if (rv == 0) {
        /* Checked after the request itself, as etcd: avoids quadratic work. */
        arena a = ARENA_INIT;
        struct op_sets sets;
        rv = check_intervals(&a, req->success, req->n_success, &sets);
        if (rv == 0) rv = check_intervals(&a, req->failure, req->n_failure, &sets);
        arena_free(&a);
    }
    /* as etcd's quotaKVServer.Txn (a txn without puts costs nothing) */
    if (rv == 0) rv = maint_quota_check(s, maint_cost_txn(req));
    if (rv != 0) {
        grpc_call_fail(call, rv);
        etcdserverpb__txn_request__free_unpacked(req, NULL);
        return;
    }
    if (txn_is_read_only(req)) {
        /* As etcd: a txn that only reads is served like a linearizable
         * range, without a Raft entry. */
        api_read(s, call, &req->base, txn_is_serializable(req), txn_read_exec);
        return;
    }
    Ketchpb__InternalRequest ir = KETCHPB__INTERNAL_REQUEST__INIT;
    ir.txn = req;
    api_propose(s, call, &ir);
    etcdserverpb__txn_request__free_unpacked(req, NULL);
}

void kv_compact(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    Etcdserverpb__CompactionRequest *req =
        etcdserverpb__compaction_request__unpack(NULL, len, msg);
    if (req == NULL) return api_fail_unmarshal(call);
    Ketchpb__InternalRequest ir = KETCHPB__INTERNAL_REQUEST__INIT;
    ir.compaction = req;
    api_propose(ctx, call, &ir);
    etcdserverpb__compaction_request__free_unpacked(req, NULL);
}
