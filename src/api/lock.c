/* v3lockpb.Lock: Lock and Unlock, as etcd's v3lock server (lock.go), which
 * runs clientv3/concurrency's Mutex on behalf of the caller; here the same
 * steps run inside the server (concurrency.h):
 *
 *   1. no lease given: grant one of 60 s that nobody keeps alive (etcd's
 *      NewSession + Orphan);
 *   2. key = name + "/" + hex(lease); one txn: if create_revision(key) == 0
 *      then put(key, "", lease), get-first-created(prefix) else get(key),
 *      get-first-created(prefix);
 *   3. the lock is held when the first-created key under the prefix is ours;
 *      else wait until no key under the prefix has a smaller create
 *      revision (waitDeletes: fair, in creation order).
 *
 * If the call goes away while waiting (client cancel, deadline), the key is
 * deleted, as etcd's Mutex.Lock does. If our key disappears while waiting
 * (its lease expired or was revoked), Lock fails with etcd 3.5's "mutex:
 * session is expired" — at once, where etcd would first wait for the keys
 * before it (etcd 3.4 even answered success without a key). */
#include "api/lock.h"

#include <stdlib.h>
#include <string.h>

#include "api/auth.h"
#include "api/concurrency.h"
#include "util/errors.h"
#include "util/log.h"
#include "v3lock.pb-c.h"

#define ERR_SESSION_EXPIRED "mutex: session is expired"

struct lock_op {
    struct conc_waiter w; /* w.call: referenced until the op is freed */
    arena a;              /* name, prefix, key */
    conc_bytes pfx, key;
    int64_t lease;
    int64_t my_rev;
};

static void op_free(struct lock_op *op)
{
    grpc_call_unref(op->w.call);
    arena_free(&op->a);
    free(op);
}

static void reply(grpc_call *call, Etcdserverpb__ResponseHeader *h, conc_bytes key)
{
    V3lockpb__LockResponse r = V3LOCKPB__LOCK_RESPONSE__INIT;
    r.header = h;
    r.key = key;
    grpc_call_reply(call, &r.base);
}

static void ignore_done(api_server *s, void *data, int err, const uint8_t *resp, size_t len)
{
    (void)s, (void)data, (void)resp, (void)len;
    if (err != 0) log_debug("lock: releasing an abandoned key failed: %s", kerr_text(err));
}

/* etcd's Mutex.Lock on a failed wait: m.Unlock (a plain delete). */
static void abandon(api_server *s, struct lock_op *op)
{
    int rv = conc_propose_delete(s, NULL, op->key, ignore_done, NULL);
    if (rv != 0) log_debug("lock: cannot release an abandoned key: %s", kerr_text(rv));
    op_free(op);
}

/* ---- waiting (waitDeletes) ---- */

static void wait_check(api_server *s, struct conc_waiter *w)
{
    struct lock_op *op = (struct lock_op *)w;
    arena a = ARENA_INIT;
    Mvccpb__KeyValue *mine = NULL, *before = NULL;
    int rv = conc_get(s, &a, op->key, &mine);
    if (rv == 0 && mine != NULL && mine->create_revision == op->my_rev)
        rv = conc_last_create_before(s, &a, op->pfx, op->my_rev - 1, &before);
    if (rv != 0) {
        conc_unpark(s, w);
        conc_fail(w->call, rv);
        abandon(s, op);
    } else if (mine == NULL || mine->create_revision != op->my_rev) {
        conc_unpark(s, w);
        conc_fail_text(w->call, ERR_SESSION_EXPIRED);
        op_free(op);
    } else if (before == NULL) {
        conc_unpark(s, w);
        Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
        api_fill_header(s, &h, mvcc_revision(s->store));
        reply(w->call, &h, op->key);
        op_free(op);
    }
    arena_free(&a);
}

static void wait_dead(api_server *s, struct conc_waiter *w)
{
    conc_unpark(s, w);
    abandon(s, (struct lock_op *)w);
}

/* ---- the txn ---- */

static void txn_done(api_server *s, void *data, int err, const uint8_t *resp, size_t len)
{
    struct lock_op *op = data;
    grpc_call *call = op->w.call;
    if (err != 0) {
        conc_fail(call, err);
        op_free(op);
        return;
    }
    Etcdserverpb__TxnResponse *t = conc_txn_unpack(resp, len);
    if (t == NULL) {
        conc_fail(call, KERR_INTERNAL);
        return abandon(s, op);
    }
    op->my_rev = t->header ? t->header->revision : 0;
    Mvccpb__KeyValue **kvs;
    if (!t->succeeded && conc_txn_range(t, 0, &kvs) > 0) op->my_rev = kvs[0]->create_revision;
    size_t n_owner = conc_txn_range(t, 1, &kvs);
    if (!grpc_call_alive(call)) {
        abandon(s, op);
    } else if (n_owner == 0 || kvs[0]->create_revision == op->my_rev) {
        reply(call, t->header, op->key);
        op_free(op);
    } else {
        op->w.check = wait_check;
        op->w.dead = wait_dead;
        int rv = conc_park(s, &op->w);
        if (rv != 0) {
            conc_fail(call, rv);
            abandon(s, op);
        }
    }
    etcdserverpb__txn_response__free_unpacked(t, NULL);
}

static void propose_txn(api_server *s, struct lock_op *op)
{
    arena *a = &op->a;
    Etcdserverpb__RequestOp *then[2] = {conc_op_put(a, op->key, (conc_bytes){0, NULL}, op->lease),
                                        conc_op_get_first(a, op->pfx)};
    Etcdserverpb__RequestOp *els[2] = {conc_op_get(a, op->key), conc_op_get_first(a, op->pfx)};
    int rv = conc_propose_txn(s, op->w.call, op->key, 0, then, 2, els, 2, txn_done, op);
    if (rv != 0) {
        conc_fail(op->w.call, rv);
        op_free(op);
    }
}

static void grant_done(api_server *s, void *data, int err, const uint8_t *resp, size_t len)
{
    (void)resp, (void)len;
    struct lock_op *op = data;
    if (err != 0) {
        conc_fail(op->w.call, err);
        op_free(op);
    } else if (!grpc_call_alive(op->w.call)) {
        op_free(op); /* the lease is orphaned and expires, as in etcd */
    } else {
        propose_txn(s, op);
    }
}

void lock_lock(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    api_server *s = ctx;
    V3lockpb__LockRequest *req = v3lockpb__lock_request__unpack(NULL, len, msg);
    if (req == NULL) return api_fail_unmarshal(call);
    int arv = auth_api_check_conc(s, call, req->name, true);
    if (arv != 0) {
        conc_fail(call, arv);
        v3lockpb__lock_request__free_unpacked(req, NULL);
        return;
    }
    struct lock_op *op = calloc(1, sizeof *op);
    if (op == NULL) {
        conc_fail(call, KERR_NOMEM);
        v3lockpb__lock_request__free_unpacked(req, NULL);
        return;
    }
    op->a = (arena)ARENA_INIT;
    op->w.call = call;
    grpc_call_ref(call);
    op->pfx = conc_prefix(&op->a, req->name);
    op->lease = req->lease;
    v3lockpb__lock_request__free_unpacked(req, NULL);
    if (op->lease != 0) {
        op->key = conc_lease_key(&op->a, op->pfx, op->lease);
        return propose_txn(s, op);
    }
    int rv = conc_grant_session(s, &op->lease, grant_done, op);
    if (rv != 0) {
        conc_fail(call, rv);
        op_free(op);
        return;
    }
    op->key = conc_lease_key(&op->a, op->pfx, op->lease);
}

/* ---- Unlock: a delete of the key ---- */

static void unlock_done(api_server *s, void *data, int err, const uint8_t *resp, size_t len)
{
    (void)s;
    grpc_call *call = data;
    Etcdserverpb__DeleteRangeResponse *d =
        err == 0 ? etcdserverpb__delete_range_response__unpack(NULL, len, resp) : NULL;
    if (d == NULL) {
        conc_fail(call, err != 0 ? err : KERR_INTERNAL);
    } else {
        V3lockpb__UnlockResponse r = V3LOCKPB__UNLOCK_RESPONSE__INIT;
        r.header = d->header;
        grpc_call_reply(call, &r.base);
        etcdserverpb__delete_range_response__free_unpacked(d, NULL);
    }
    grpc_call_unref(call);
}

void lock_unlock(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    api_server *s = ctx;
    V3lockpb__UnlockRequest *req = v3lockpb__unlock_request__unpack(NULL, len, msg);
    if (req == NULL) return api_fail_unmarshal(call);
    /* etcd's Unlock is a Delete of the key: write access to it */
    int arv = 0;
    if (req->key.len && mvcc_auth_enabled(s->store)) {
        char *user;
        uint64_t rev;
        arv = auth_api_info(s, call, &user, &rev);
        if (arv == 0)
            arv = mvcc_auth_check(s->store, user, rev, req->key.data, req->key.len, NULL, 0, 1);
        free(user);
    }
    if (req->key.len == 0) {
        conc_fail(call, KERR_EMPTY_KEY);
    } else if (arv != 0) {
        conc_fail(call, arv);
    } else {
        grpc_call_ref(call);
        int rv = conc_propose_delete(s, call, req->key, unlock_done, call);
        if (rv != 0) {
            conc_fail(call, rv);
            grpc_call_unref(call);
        }
    }
    v3lockpb__unlock_request__free_unpacked(req, NULL);
}
