/* v3electionpb.Election: Campaign, Proclaim, Leader, Observe (server
 * stream), Resign — etcd's v3election server (election.go) running
 * clientv3/concurrency's Election, done here inside the server
 * (concurrency.h).
 *
 * Campaign: key = name + "/" + hex(lease) (a 60 s orphaned lease is granted
 * when none is given); txn "if create_revision(key) == 0 then put(key,
 * value, lease) else get(key)"; an existing key with another value is
 * proclaimed; then wait until no key under the prefix has a smaller create
 * revision. The answer carries the header of the first txn, as etcd's.
 * Where etcd would still answer success after the candidate's key vanished
 * while it waited (lease expired or revoked), ketch answers "election: not
 * leader" as soon as the key is gone.
 *
 * Observe is state-based: after each change of the store it re-reads the
 * leader (the first-created key) and sends it if its key, creation or value
 * changed, so, as etcd promises, the latest proclamation is always sent but
 * intermediate ones that were overwritten before the check may be skipped. */
#include "api/election.h"

#include <stdlib.h>
#include <string.h>

#include "api/auth.h"
#include "api/concurrency.h"
#include "util/errors.h"
#include "util/log.h"
#include "v3election.pb-c.h"

#define ERR_NOT_LEADER "election: not leader"
#define ERR_NO_LEADER "election: no leader"
#define ERR_MISSING_LEADER_KEY "\"leader\" field must be provided"

static bool bytes_eq(conc_bytes a, conc_bytes b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0);
}

/* ---- Campaign ---- */

struct campaign_op {
    struct conc_waiter w; /* w.call: referenced until the op is freed */
    arena a;
    conc_bytes name, pfx, key, value;
    int64_t lease;
    int64_t leader_rev;
    Etcdserverpb__ResponseHeader hdr; /* of the first txn */
};

static void campaign_free(struct campaign_op *op)
{
    grpc_call_unref(op->w.call);
    arena_free(&op->a);
    free(op);
}

/* etcd's Election.Resign after a failed or cancelled campaign. */
static void campaign_resign(api_server *s, struct campaign_op *op)
{
    conc_propose_forget(s, op->key, op->leader_rev, conc_op_delete(&op->a, op->key));
    campaign_free(op);
}

static void campaign_check(api_server *s, struct conc_waiter *w)
{
    struct campaign_op *op = (struct campaign_op *)w;
    arena a = ARENA_INIT;
    Mvccpb__KeyValue *mine = NULL, *before = NULL;
    int rv = conc_get(s, &a, op->key, &mine);
    if (rv == 0 && mine != NULL && mine->create_revision == op->leader_rev)
        rv = conc_last_create_before(s, &a, op->pfx, op->leader_rev - 1, &before);
    if (rv != 0) {
        conc_unpark(s, w);
        conc_fail(w->call, rv);
        campaign_resign(s, op);
    } else if (mine == NULL || mine->create_revision != op->leader_rev) {
        conc_unpark(s, w);
        conc_fail_text(w->call, ERR_NOT_LEADER);
        campaign_free(op);
    } else if (before == NULL) {
        conc_unpark(s, w);
        V3electionpb__LeaderKey lk = V3ELECTIONPB__LEADER_KEY__INIT;
        lk.name = op->name;
        lk.key = op->key;
        lk.rev = op->leader_rev;
        lk.lease = op->lease;
        V3electionpb__CampaignResponse r = V3ELECTIONPB__CAMPAIGN_RESPONSE__INIT;
        r.header = &op->hdr;
        r.leader = &lk;
        grpc_call_reply(w->call, &r.base);
        campaign_free(op);
    }
    arena_free(&a);
}

static void campaign_dead(api_server *s, struct conc_waiter *w)
{
    conc_unpark(s, w);
    campaign_resign(s, (struct campaign_op *)w);
}

static void campaign_wait(api_server *s, struct campaign_op *op)
{
    op->w.check = campaign_check;
    op->w.dead = campaign_dead;
    int rv = conc_park(s, &op->w);
    if (rv != 0) {
        conc_fail(op->w.call, rv);
        campaign_resign(s, op);
    }
}

static void proclaim_done(api_server *s, void *data, int err, const uint8_t *resp, size_t len)
{
    struct campaign_op *op = data;
    Etcdserverpb__TxnResponse *t = err == 0 ? conc_txn_unpack(resp, len) : NULL;
    if (t == NULL || !t->succeeded) {
        /* etcd: Proclaim failed → Resign, answer the error */
        if (err != 0)
            conc_fail(op->w.call, err);
        else
            conc_fail_text(op->w.call, t == NULL ? kerr_text(KERR_INTERNAL) : ERR_NOT_LEADER);
        campaign_resign(s, op);
    } else if (!grpc_call_alive(op->w.call)) {
        campaign_resign(s, op);
    } else {
        campaign_wait(s, op);
    }
    if (t != NULL) etcdserverpb__txn_response__free_unpacked(t, NULL);
}

static void campaign_txn_done(api_server *s, void *data, int err, const uint8_t *resp, size_t len)
{
    struct campaign_op *op = data;
    if (err != 0) {
        conc_fail(op->w.call, err);
        campaign_free(op);
        return;
    }
    Etcdserverpb__TxnResponse *t = conc_txn_unpack(resp, len);
    if (t == NULL || t->header == NULL) {
        conc_fail(op->w.call, KERR_INTERNAL);
        if (t != NULL) etcdserverpb__txn_response__free_unpacked(t, NULL);
        campaign_free(op);
        return;
    }
    op->hdr = *t->header;
    op->hdr.base = (ProtobufCMessage)PROTOBUF_C_MESSAGE_INIT(&etcdserverpb__response_header__descriptor);
    op->leader_rev = t->header->revision;
    Mvccpb__KeyValue **kvs;
    bool reproclaim = false;
    if (!t->succeeded && conc_txn_range(t, 0, &kvs) > 0) {
        op->leader_rev = kvs[0]->create_revision;
        reproclaim = !bytes_eq(kvs[0]->value, op->value);
    }
    etcdserverpb__txn_response__free_unpacked(t, NULL);
    if (!grpc_call_alive(op->w.call)) return campaign_resign(s, op);
    if (!reproclaim) return campaign_wait(s, op);
    Etcdserverpb__RequestOp *put = conc_op_put(&op->a, op->key, op->value, op->lease);
    int rv = conc_propose_txn(s, op->w.call, op->key, op->leader_rev, &put, 1, NULL, 0, proclaim_done, op);
    if (rv != 0) {
        conc_fail(op->w.call, rv);
        campaign_resign(s, op);
    }
}

static void campaign_txn(api_server *s, struct campaign_op *op)
{
    arena *a = &op->a;
    Etcdserverpb__RequestOp *then = conc_op_put(a, op->key, op->value, op->lease);
    Etcdserverpb__RequestOp *els = conc_op_get(a, op->key);
    int rv = conc_propose_txn(s, op->w.call, op->key, 0, &then, 1, &els, 1, campaign_txn_done, op);
    if (rv != 0) {
        conc_fail(op->w.call, rv);
        campaign_free(op);
    }
}

static void campaign_grant_done(api_server *s, void *data, int err, const uint8_t *resp,
                                size_t len)
{
    (void)resp, (void)len;
    struct campaign_op *op = data;
    if (err != 0) {
        conc_fail(op->w.call, err);
        campaign_free(op);
    } else if (!grpc_call_alive(op->w.call)) {
        campaign_free(op); /* the lease is orphaned and expires, as in etcd */
    } else {
        campaign_txn(s, op);
    }
}

void election_campaign(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    api_server *s = ctx;
    V3electionpb__CampaignRequest *req = v3electionpb__campaign_request__unpack(NULL, len, msg);
    if (req == NULL) return api_fail_unmarshal(call);
    int arv = auth_api_check_conc(s, call, req->name, true);
    if (arv != 0) {
        conc_fail(call, arv);
        v3electionpb__campaign_request__free_unpacked(req, NULL);
        return;
    }
    struct campaign_op *op = calloc(1, sizeof *op);
    if (op == NULL) {
        conc_fail(call, KERR_NOMEM);
        v3electionpb__campaign_request__free_unpacked(req, NULL);
        return;
    }
    op->a = (arena)ARENA_INIT;
    op->w.call = call;
    grpc_call_ref(call);
    op->name = (conc_bytes){req->name.len, arena_dup(&op->a, req->name.data, req->name.len)};
    op->value = (conc_bytes){req->value.len, arena_dup(&op->a, req->value.data, req->value.len)};
    op->pfx = conc_prefix(&op->a, req->name);
    op->lease = req->lease;
    v3electionpb__campaign_request__free_unpacked(req, NULL);
    if (op->lease == 0) {
        int rv = conc_grant_session(s, &op->lease, campaign_grant_done, op);
        if (rv != 0) {
            conc_fail(call, rv);
            campaign_free(op);
            return;
        }
        op->key = conc_lease_key(&op->a, op->pfx, op->lease);
        return;
    }
    op->key = conc_lease_key(&op->a, op->pfx, op->lease);
    campaign_txn(s, op);
}

/* ---- Proclaim and Resign: one guarded txn on the leader key ---- */

struct guarded_op {
    grpc_call *call; /* referenced */
    arena a;
    conc_bytes key, value;
    int64_t rev, lease;
    bool resign; /* else proclaim */
};

static void guarded_free(struct guarded_op *op)
{
    grpc_call_unref(op->call);
    arena_free(&op->a);
    free(op);
}

static void guarded_done(api_server *s, void *data, int err, const uint8_t *resp, size_t len)
{
    (void)s;
    struct guarded_op *op = data;
    Etcdserverpb__TxnResponse *t = err == 0 ? conc_txn_unpack(resp, len) : NULL;
    if (err != 0 || t == NULL) {
        conc_fail(op->call, err != 0 ? err : KERR_INTERNAL);
    } else if (!op->resign && !t->succeeded) {
        conc_fail_text(op->call, ERR_NOT_LEADER);
    } else if (op->resign) {
        V3electionpb__ResignResponse r = V3ELECTIONPB__RESIGN_RESPONSE__INIT;
        r.header = t->header;
        grpc_call_reply(op->call, &r.base);
    } else {
        V3electionpb__ProclaimResponse r = V3ELECTIONPB__PROCLAIM_RESPONSE__INIT;
        r.header = t->header;
        grpc_call_reply(op->call, &r.base);
    }
    if (t != NULL) etcdserverpb__txn_response__free_unpacked(t, NULL);
    guarded_free(op);
}

static void guarded_txn(api_server *s, struct guarded_op *op)
{
    Etcdserverpb__RequestOp *then = op->resign ? conc_op_delete(&op->a, op->key)
                                               : conc_op_put(&op->a, op->key, op->value, op->lease);
    int rv = conc_propose_txn(s, op->call, op->key, op->rev, &then, 1, NULL, 0, guarded_done, op);
    if (rv != 0) {
        conc_fail(op->call, rv);
        guarded_free(op);
    }
}

static void guarded_grant_done(api_server *s, void *data, int err, const uint8_t *resp,
                               size_t len)
{
    (void)resp, (void)len;
    struct guarded_op *op = data;
    if (err != 0) {
        conc_fail(op->call, err);
        guarded_free(op);
    } else {
        guarded_txn(s, op);
    }
}

static void guarded_start(api_server *s, grpc_call *call, const V3electionpb__LeaderKey *lk,
                          conc_bytes value, bool resign)
{
    if (lk == NULL) return conc_fail_text(call, ERR_MISSING_LEADER_KEY);
    struct guarded_op *op = calloc(1, sizeof *op);
    if (op == NULL) return conc_fail(call, KERR_NOMEM);
    op->a = (arena)ARENA_INIT;
    op->call = call;
    grpc_call_ref(call);
    op->key = (conc_bytes){lk->key.len, arena_dup(&op->a, lk->key.data, lk->key.len)};
    op->value = (conc_bytes){value.len, arena_dup(&op->a, value.data, value.len)};
    op->rev = lk->rev;
    op->lease = lk->lease;
    op->resign = resign;
    /* A proclamation without a lease gets a fresh session lease, exactly as
     * etcd's server does (its session grants one). Resign puts nothing, so
     * the lease etcd would grant there is not granted. */
    if (!resign && op->lease == 0) {
        int rv = conc_grant_session(s, &op->lease, guarded_grant_done, op);
        if (rv != 0) {
            conc_fail(call, rv);
            guarded_free(op);
        }
        return;
    }
    guarded_txn(s, op);
}

void election_proclaim(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    V3electionpb__ProclaimRequest *req = v3electionpb__proclaim_request__unpack(NULL, len, msg);
    if (req == NULL) return api_fail_unmarshal(call);
    int arv = req->leader ? auth_api_check_conc(ctx, call, req->leader->name, true) : 0;
    if (arv != 0) {
        conc_fail(call, arv);
        v3electionpb__proclaim_request__free_unpacked(req, NULL);
        return;
    }
    guarded_start(ctx, call, req->leader, req->value, false);
    v3electionpb__proclaim_request__free_unpacked(req, NULL);
}

void election_resign(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    V3electionpb__ResignRequest *req = v3electionpb__resign_request__unpack(NULL, len, msg);
    if (req == NULL) return api_fail_unmarshal(call);
    int arv = req->leader ? auth_api_check_conc(ctx, call, req->leader->name, true) : 0;
    if (arv != 0) {
        conc_fail(call, arv);
        v3electionpb__resign_request__free_unpacked(req, NULL);
        return;
    }
    guarded_start(ctx, call, req->leader, (conc_bytes){0, NULL}, true);
    v3electionpb__resign_request__free_unpacked(req, NULL);
}

/* ---- Leader ---- */

static void leader_exec(api_server *s, grpc_call *call, const ProtobufCMessage *m)
{
    const V3electionpb__LeaderRequest *req = (const V3electionpb__LeaderRequest *)m;
    arena a = ARENA_INIT;
    Mvccpb__KeyValue *kv = NULL;
    int rv = conc_first_create(s, &a, conc_prefix(&a, req->name), &kv);
    if (rv != 0) {
        conc_fail(call, rv);
    } else if (kv == NULL) {
        conc_fail_text(call, ERR_NO_LEADER);
    } else {
        Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
        api_fill_header(s, &h, mvcc_revision(s->store));
        V3electionpb__LeaderResponse r = V3ELECTIONPB__LEADER_RESPONSE__INIT;
        r.header = &h;
        r.kv = kv;
        grpc_call_reply(call, &r.base);
    }
    arena_free(&a);
}

void election_leader(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    V3electionpb__LeaderRequest *req = v3electionpb__leader_request__unpack(NULL, len, msg);
    if (req == NULL) return api_fail_unmarshal(call);
    int arv = auth_api_check_conc(ctx, call, req->name, false);
    if (arv != 0) {
        conc_fail(call, arv);
        v3electionpb__leader_request__free_unpacked(req, NULL);
        return;
    }
    /* etcd's election server reads with a linearizable Get */
    api_read(ctx, call, &req->base, false, leader_exec);
}

/* ---- Observe ---- */

struct observe_op {
    struct conc_waiter w; /* w.call: referenced until the op is freed */
    arena a;
    conc_bytes pfx;
    bool sent;     /* a leader was sent */
    bool have;     /* the last check saw a leader (last_* valid) */
    uint8_t *last_key;
    size_t last_key_len;
    int64_t last_create, last_mod;
};

static void observe_free(api_server *s, struct observe_op *op)
{
    conc_unpark(s, &op->w);
    grpc_call_set_data(op->w.call, NULL);
    grpc_call_unref(op->w.call);
    free(op->last_key);
    arena_free(&op->a);
    free(op);
}

static void observe_check(api_server *s, struct conc_waiter *w)
{
    struct observe_op *op = (struct observe_op *)w;
    arena a = ARENA_INIT;
    Mvccpb__KeyValue *kv = NULL;
    int rv = conc_first_create(s, &a, op->pfx, &kv);
    if (rv != 0 || kv == NULL) {
        op->have = false;
        arena_free(&a);
        /* etcd's observe ends its stream when a Get fails (last: finishing
         * may run the close callback, which frees op) */
        if (rv != 0) grpc_call_finish(w->call, GRPC_OK, NULL);
        return;
    }
    bool same_key = op->have && kv->key.len == op->last_key_len &&
                    memcmp(kv->key.data, op->last_key, kv->key.len) == 0 &&
                    kv->create_revision == op->last_create;
    if (same_key && kv->mod_revision == op->last_mod) {
        arena_free(&a);
        return;
    }
    /* Header revision as etcd's observe: the Get's header for a leader
     * found by reading, the event's revision for a proclamation seen on the
     * leader key or for the first put after a time without a leader. */
    int64_t rev = mvcc_revision(s->store);
    if (op->sent && (same_key || !op->have)) rev = kv->mod_revision;
    uint8_t *k = malloc(kv->key.len ? kv->key.len : 1);
    if (k == NULL) {
        arena_free(&a);
        return;
    }
    if (kv->key.len) memcpy(k, kv->key.data, kv->key.len);
    free(op->last_key);
    op->last_key = k;
    op->last_key_len = kv->key.len;
    op->last_create = kv->create_revision;
    op->last_mod = kv->mod_revision;
    op->have = op->sent = true;
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    api_fill_header(s, &h, rev);
    V3electionpb__LeaderResponse r = V3ELECTIONPB__LEADER_RESPONSE__INIT;
    r.header = &h;
    r.kv = kv;
    grpc_call_send_pb(w->call, &r.base);
    arena_free(&a);
}

static void observe_dead(api_server *s, struct conc_waiter *w)
{
    observe_free(s, (struct observe_op *)w);
}

void election_observe(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    api_server *s = ctx;
    if (grpc_call_get_data(call) != NULL) return; /* one request per stream */
    V3electionpb__LeaderRequest *req = v3electionpb__leader_request__unpack(NULL, len, msg);
    if (req == NULL) return api_fail_unmarshal(call);
    int arv = auth_api_check_conc(s, call, req->name, false);
    if (arv != 0) {
        conc_fail(call, arv);
        v3electionpb__leader_request__free_unpacked(req, NULL);
        return;
    }
    struct observe_op *op = calloc(1, sizeof *op);
    if (op == NULL) {
        conc_fail(call, KERR_NOMEM);
        v3electionpb__leader_request__free_unpacked(req, NULL);
        return;
    }
    op->a = (arena)ARENA_INIT;
    op->w.call = call;
    op->w.check = observe_check;
    op->w.dead = observe_dead;
    grpc_call_ref(call);
    grpc_call_set_data(call, op);
    op->pfx = conc_prefix(&op->a, req->name);
    v3electionpb__leader_request__free_unpacked(req, NULL);
    int rv = conc_park(s, &op->w);
    if (rv != 0) {
        conc_fail(call, rv);
        observe_free(s, op);
    }
}

void election_observe_close(grpc_call *call, void *ctx)
{
    /* The client half-closes right after its one request: keep streaming
     * (the sweep notices when the call dies). Otherwise the stream is gone. */
    struct observe_op *op = grpc_call_get_data(call);
    if (op != NULL && !grpc_call_alive(call)) observe_free(ctx, op);
}
