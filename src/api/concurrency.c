/* The machinery that lock.c and election.c share: etcd's
 * clientv3/concurrency done inside the server (see concurrency.h). */
#include "api/concurrency.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/auth.h"
#include "api/lease.h"
#include "util/errors.h"
#include "util/log.h"

/* How often parked waiters are looked at without an apply: bounds how long
 * a cancelled Lock/Campaign keeps its key when nothing else is written. */
#define CONC_SWEEP_MS 200

struct conc_api {
    uv_timer_t *timer; /* malloc'd: closed and freed when the last waiter leaves */
    struct conc_waiter *head;
    int64_t checked_rev; /* store revision the waiters were last checked at */
    bool kicked;         /* a check is scheduled for the next loop turn */
    bool sweeping;       /* on_timer is walking the list */
};

/* ---- waiters ---- */

static void free_handle(uv_handle_t *h) { free(h); }

static void teardown(api_server *s)
{
    struct conc_api *c = s->conc;
    uv_timer_stop(c->timer);
    uv_close((uv_handle_t *)c->timer, free_handle);
    free(c);
    s->conc = NULL;
}

static void on_timer(uv_timer_t *t)
{
    api_server *s = t->data;
    struct conc_api *c = s->conc;
    c->kicked = false;
    int64_t rev = mvcc_revision(s->store);
    bool changed = rev != c->checked_rev;
    c->checked_rev = rev;
    c->sweeping = true;
    /* A callback unparks (and may free) only its own waiter. */
    for (struct conc_waiter *w = c->head, *next; w != NULL; w = next) {
        next = w->next;
        if (!grpc_call_alive(w->call))
            w->dead(s, w);
        else if (changed)
            w->check(s, w);
    }
    c->sweeping = false;
    if (c->head == NULL) teardown(s);
}

int conc_park(api_server *s, struct conc_waiter *w)
{
    struct conc_api *c = s->conc;
    if (c == NULL) {
        c = calloc(1, sizeof *c);
        uv_timer_t *t = malloc(sizeof *t);
        if (c == NULL || t == NULL) {
            free(c);
            free(t);
            return KERR_NOMEM;
        }
        uv_timer_init(s->loop, t);
        t->data = s;
        uv_timer_start(t, on_timer, CONC_SWEEP_MS, CONC_SWEEP_MS);
        c->timer = t;
        c->checked_rev = mvcc_revision(s->store);
        s->conc = c;
    }
    w->prev = NULL;
    w->next = c->head;
    if (c->head != NULL) c->head->prev = w;
    c->head = w;
    w->parked = true;
    w->check(s, w);
    return 0;
}

void conc_unpark(api_server *s, struct conc_waiter *w)
{
    struct conc_api *c = s->conc;
    if (!w->parked || c == NULL) return;
    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        c->head = w->next;
    if (w->next != NULL) w->next->prev = w->prev;
    w->prev = w->next = NULL;
    w->parked = false;
    if (c->head == NULL && !c->sweeping) teardown(s);
}

void conc_applied(api_server *s)
{
    struct conc_api *c = s->conc;
    if (c == NULL || c->kicked) return;
    c->kicked = true;
    uv_timer_start(c->timer, on_timer, 0, CONC_SWEEP_MS);
}

/* ---- answers ---- */

void conc_fail(grpc_call *call, int kerr) { conc_fail_text(call, kerr_text(kerr)); }

void conc_fail_text(grpc_call *call, const char *text)
{
    grpc_call_finish(call, GRPC_UNKNOWN, text);
}

/* ---- keys and reads ---- */

conc_bytes conc_prefix(arena *a, conc_bytes name)
{
    uint8_t *p = arena_alloc(a, name.len + 1);
    if (name.len) memcpy(p, name.data, name.len);
    p[name.len] = '/';
    return (conc_bytes){name.len + 1, p};
}

conc_bytes conc_lease_key(arena *a, conc_bytes pfx, int64_t lease)
{
    char hex[24];
    /* Go's %x of an int64: a sign, then the magnitude */
    int n = lease < 0 ? snprintf(hex, sizeof hex, "-%llx", (unsigned long long)-(uint64_t)lease)
                      : snprintf(hex, sizeof hex, "%llx", (unsigned long long)lease);
    uint8_t *p = arena_alloc(a, pfx.len + (size_t)n);
    if (pfx.len) memcpy(p, pfx.data, pfx.len);
    memcpy(p + pfx.len, hex, (size_t)n);
    return (conc_bytes){pfx.len + (size_t)n, p};
}

conc_bytes conc_prefix_end(arena *a, conc_bytes pfx)
{
    uint8_t *e = arena_dup(a, pfx.data, pfx.len);
    for (size_t i = pfx.len; i-- > 0;) {
        if (e[i] < 0xff) {
            e[i]++;
            return (conc_bytes){i + 1, e};
        }
    }
    /* every byte 0xff: to the end of the keyspace, as etcd's "\0" */
    static uint8_t zero = 0;
    return (conc_bytes){1, &zero};
}

static int range_one(api_server *s, arena *a, Etcdserverpb__RangeRequest *req,
                     Mvccpb__KeyValue **kv)
{
    Etcdserverpb__RangeResponse resp = ETCDSERVERPB__RANGE_RESPONSE__INIT;
    int rv = mvcc_range(s->store, req, a, &resp);
    *kv = rv == 0 && resp.n_kvs > 0 ? resp.kvs[0] : NULL;
    return rv;
}

int conc_first_create(api_server *s, arena *a, conc_bytes pfx, Mvccpb__KeyValue **kv)
{
    Etcdserverpb__RangeRequest req = ETCDSERVERPB__RANGE_REQUEST__INIT;
    req.key = pfx;
    req.range_end = conc_prefix_end(a, pfx);
    req.sort_order = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__ASCEND;
    req.sort_target = ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__CREATE;
    req.limit = 1;
    return range_one(s, a, &req, kv);
}

int conc_last_create_before(api_server *s, arena *a, conc_bytes pfx, int64_t max_create,
                            Mvccpb__KeyValue **kv)
{
    Etcdserverpb__RangeRequest req = ETCDSERVERPB__RANGE_REQUEST__INIT;
    req.key = pfx;
    req.range_end = conc_prefix_end(a, pfx);
    req.sort_order = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__DESCEND;
    req.sort_target = ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__CREATE;
    req.limit = 1;
    req.max_create_revision = max_create;
    return range_one(s, a, &req, kv);
}

int conc_get(api_server *s, arena *a, conc_bytes key, Mvccpb__KeyValue **kv)
{
    Etcdserverpb__RangeRequest req = ETCDSERVERPB__RANGE_REQUEST__INIT;
    req.key = key;
    return range_one(s, a, &req, kv);
}

/* ---- proposals ---- */

static Etcdserverpb__RequestOp *new_op(arena *a)
{
    Etcdserverpb__RequestOp *op = arena_alloc(a, sizeof *op);
    etcdserverpb__request_op__init(op);
    return op;
}

Etcdserverpb__RequestOp *conc_op_put(arena *a, conc_bytes key, conc_bytes value, int64_t lease)
{
    Etcdserverpb__PutRequest *p = arena_alloc(a, sizeof *p);
    etcdserverpb__put_request__init(p);
    p->key = key;
    p->value = value;
    p->lease = lease;
    Etcdserverpb__RequestOp *op = new_op(a);
    op->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
    op->request_put = p;
    return op;
}

Etcdserverpb__RequestOp *conc_op_get(arena *a, conc_bytes key)
{
    Etcdserverpb__RangeRequest *r = arena_alloc(a, sizeof *r);
    etcdserverpb__range_request__init(r);
    r->key = key;
    Etcdserverpb__RequestOp *op = new_op(a);
    op->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
    op->request_range = r;
    return op;
}

Etcdserverpb__RequestOp *conc_op_get_first(arena *a, conc_bytes pfx)
{
    Etcdserverpb__RequestOp *op = conc_op_get(a, pfx);
    Etcdserverpb__RangeRequest *r = op->request_range;
    r->range_end = conc_prefix_end(a, pfx);
    r->sort_order = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__ASCEND;
    r->sort_target = ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__CREATE;
    r->limit = 1;
    return op;
}

Etcdserverpb__RequestOp *conc_op_delete(arena *a, conc_bytes key)
{
    Etcdserverpb__DeleteRangeRequest *d = arena_alloc(a, sizeof *d);
    etcdserverpb__delete_range_request__init(d);
    d->key = key;
    Etcdserverpb__RequestOp *op = new_op(a);
    op->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
    op->request_delete_range = d;
    return op;
}

/* Proposes `ir` as `caller`'s (checked at apply against its permissions,
 * as etcd's lock and election servers act through a client carrying the
 * caller's token), or as the server's own when caller is NULL. */
static int propose_for(api_server *s, grpc_call *caller, Ketchpb__InternalRequest *ir,
                       api_propose_fn cb, void *data)
{
    if (caller == NULL) return api_propose_internal(s, ir, cb, data);
    char *user;
    int rv = auth_api_stamp(s, caller, ir, &user);
    if (rv == 0) rv = api_propose_as(s, ir, cb, data);
    free(user);
    return rv;
}

int conc_propose_txn(api_server *s, grpc_call *caller, conc_bytes key, int64_t create_rev,
                     Etcdserverpb__RequestOp **ops_then, size_t n_then,
                     Etcdserverpb__RequestOp **ops_else, size_t n_else, api_propose_fn cb,
                     void *data)
{
    Etcdserverpb__Compare cmp = ETCDSERVERPB__COMPARE__INIT;
    Etcdserverpb__Compare *cmps[1] = {&cmp};
    cmp.result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL;
    cmp.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE;
    cmp.key = key;
    cmp.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION;
    cmp.create_revision = create_rev;
    Etcdserverpb__TxnRequest txn = ETCDSERVERPB__TXN_REQUEST__INIT;
    txn.n_compare = 1;
    txn.compare = cmps;
    txn.n_success = n_then;
    txn.success = ops_then;
    txn.n_failure = n_else;
    txn.failure = ops_else;
    Ketchpb__InternalRequest ir = KETCHPB__INTERNAL_REQUEST__INIT;
    ir.txn = &txn;
    return propose_for(s, caller, &ir, cb, data);
}

int conc_propose_delete(api_server *s, grpc_call *caller, conc_bytes key, api_propose_fn cb,
                        void *data)
{
    Etcdserverpb__DeleteRangeRequest d = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
    d.key = key;
    Ketchpb__InternalRequest ir = KETCHPB__INTERNAL_REQUEST__INIT;
    ir.delete_range = &d;
    return propose_for(s, caller, &ir, cb, data);
}

static void forget_done(api_server *s, void *data, int err, const uint8_t *resp, size_t len)
{
    (void)s, (void)data, (void)resp, (void)len;
    if (err != 0) log_debug("lock/election: clean-up proposal failed: %s", kerr_text(err));
}

void conc_propose_forget(api_server *s, conc_bytes key, int64_t create_rev,
                         Etcdserverpb__RequestOp *op)
{
    int rv = conc_propose_txn(s, NULL, key, create_rev, &op, 1, NULL, 0, forget_done, NULL);
    if (rv != 0) log_debug("lock/election: cannot propose a clean-up: %s", kerr_text(rv));
}

int conc_grant_session(api_server *s, int64_t *id, api_propose_fn cb, void *data)
{
    if (s->lease == NULL) return KERR_STOPPED;
    Etcdserverpb__LeaseGrantRequest g = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
    g.ttl = CONC_SESSION_TTL;
    lease_api_prepare_grant(s, &g);
    *id = g.id;
    Ketchpb__InternalRequest ir = KETCHPB__INTERNAL_REQUEST__INIT;
    ir.lease_grant = &g;
    return api_propose_internal(s, &ir, cb, data);
}

Etcdserverpb__TxnResponse *conc_txn_unpack(const uint8_t *resp, size_t len)
{
    return etcdserverpb__txn_response__unpack(NULL, len, resp);
}

size_t conc_txn_range(const Etcdserverpb__TxnResponse *t, size_t i, Mvccpb__KeyValue ***kvs)
{
    *kvs = NULL;
    if (i >= t->n_responses ||
        t->responses[i]->response_case != ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE)
        return 0;
    *kvs = t->responses[i]->response_range->kvs;
    return t->responses[i]->response_range->n_kvs;
}
