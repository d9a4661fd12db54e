/* etcdserverpb.Lease: LeaseGrant, LeaseRevoke, LeaseKeepAlive (stream),
 * LeaseTimeToLive, LeaseLeases; and the leader's expiry timer.
 *
 * As etcd: grants and revokes go through Raft (the proposer picks the ID
 * when the client left it 0, so the apply is deterministic); keep-alives
 * renew the leader's in-memory deadline only; the leader alone decides
 * expiry and proposes a revoke for each expired lease. */
#include "api/lease.h"

#include <stdlib.h>

#include "api/forward.h"
#include "api/maintenance.h"
#include "api/propose.h"
#include "lease/lessor.h"
#include "util/errors.h"
#include "util/log.h"

#define LEASE_TICK_MS 500
/* At most this many revokes proposed per tick (etcd: leaseRevokeRate / 2
 * per 500 ms). */
#define LEASE_REVOKES_PER_TICK 500
/* etcd's lease checkpointing (defaultLeaseCheckpointInterval, 5 min, and
 * maxLeaseCheckpointBatchSize): the leader records the remaining TTL of
 * leases longer than the interval through Raft, so that a restart or a new
 * leader continues from it instead of granting a full TTL again. */
#ifndef LEASE_CHECKPOINT_MS /* -D for tests */
#define LEASE_CHECKPOINT_MS (5 * 60 * 1000)
#endif
#define LEASE_CHECKPOINT_BATCH 1000

struct lease_api {
    lessor *lessor;
    int64_t min_ttl;
    uv_timer_t timer;
    bool timer_started;
    uint64_t next_checkpoint; /* ms */
};

static uint64_t now_ms(void) { return uv_hrtime() / 1000000; }

/* ---- proposals made by the server itself (expiry, checkpoints) ---- */

static void internal_done(void *data, int status)
{
    int64_t *id = data;
    if (status != 0)
        log_debug("lease: proposal for lease %016llx failed: %s", (unsigned long long)*id,
                  kerr_text(status));
    free(id);
}

static int propose_internal(api_server *s, Ketchpb__InternalRequest *req, int64_t id)
{
    if (s->member == NULL) return KERR_STOPPED;
    size_t len = ketchpb__internal_request__get_packed_size(req);
    uint8_t *buf = malloc(len ? len : 1);
    int64_t *data = malloc(sizeof *data);
    if (buf == NULL || data == NULL) {
        free(buf);
        free(data);
        return KERR_NOMEM;
    }
    ketchpb__internal_request__pack(req, buf);
    *data = id;
    int rv = member_propose(s->member, buf, len, internal_done, data);
    free(buf);
    if (rv != 0) free(data);
    return rv;
}

static void propose_revoke(api_server *s, int64_t id)
{
    Etcdserverpb__LeaseRevokeRequest r = ETCDSERVERPB__LEASE_REVOKE_REQUEST__INIT;
    r.id = id;
    Ketchpb__InternalRequest ir = KETCHPB__INTERNAL_REQUEST__INIT;
    ir.lease_revoke = &r;
    int rv = propose_internal(s, &ir, id);
    if (rv != 0)
        log_debug("lease: cannot propose the revoke of expired lease %016llx: %s",
                  (unsigned long long)id, kerr_text(rv));
}

/* etcd's Renew: a lease whose remaining TTL was checkpointed gets a
 * checkpoint of 0, so that a later promotion counts from the full TTL. */
static void propose_clear_checkpoint(api_server *s, int64_t id)
{
    Etcdserverpb__LeaseCheckpoint cp = ETCDSERVERPB__LEASE_CHECKPOINT__INIT;
    Etcdserverpb__LeaseCheckpoint *cps[1] = {&cp};
    Etcdserverpb__LeaseCheckpointRequest r = ETCDSERVERPB__LEASE_CHECKPOINT_REQUEST__INIT;
    cp.id = id;
    cp.remaining_ttl = 0;
    r.n_checkpoints = 1;
    r.checkpoints = cps;
    Ketchpb__InternalRequest ir = KETCHPB__INTERNAL_REQUEST__INIT;
    ir.lease_checkpoint = &r;
    propose_internal(s, &ir, id);
}

static void propose_checkpoints(api_server *s, uint64_t now)
{
    struct lease_api *la = s->lease;
    size_t max = lessor_count(la->lessor);
    if (max == 0) return;
    int64_t *ids = malloc(max * sizeof *ids), *rem = malloc(max * sizeof *rem);
    Etcdserverpb__LeaseCheckpoint *cps = malloc(max * sizeof *cps);
    Etcdserverpb__LeaseCheckpoint **cpp = malloc(max * sizeof *cpp);
    size_t n = ids && rem && cps && cpp
                   ? lessor_checkpoints(la->lessor, now, LEASE_CHECKPOINT_MS / 1000, ids, rem, max)
                   : 0;
    for (size_t i = 0; i < n; i++) {
        etcdserverpb__lease_checkpoint__init(&cps[i]);
        cps[i].id = ids[i];
        cps[i].remaining_ttl = rem[i];
        cpp[i] = &cps[i];
    }
    for (size_t off = 0; off < n; off += LEASE_CHECKPOINT_BATCH) {
        Etcdserverpb__LeaseCheckpointRequest r = ETCDSERVERPB__LEASE_CHECKPOINT_REQUEST__INIT;
        r.n_checkpoints = n - off < LEASE_CHECKPOINT_BATCH ? n - off : LEASE_CHECKPOINT_BATCH;
        r.checkpoints = cpp + off;
        Ketchpb__InternalRequest ir = KETCHPB__INTERNAL_REQUEST__INIT;
        ir.lease_checkpoint = &r;
        propose_internal(s, &ir, 0);
    }
    free(ids);
    free(rem);
    free(cps);
    free(cpp);
}

/* ---- leadership and expiry ---- */

/* Follows the member's leadership: promote on becoming leader, demote on
 * losing it. */
static void track_leadership(api_server *s)
{
    struct lease_api *la = s->lease;
    bool leader = s->member != NULL && member_is_leader(s->member);
    if (leader && !lessor_is_primary(la->lessor)) {
        /* A lone member needs no grace period; with peers, allow for the
         * old leader having renewed just before it lost leadership (etcd
         * extends by the election timeout). */
        uint64_t extend = api_cluster_size(s) > 1 ? s->election_ms : 0;
        lessor_promote(la->lessor, now_ms(), extend);
        la->next_checkpoint = now_ms() + LEASE_CHECKPOINT_MS;
        log_debug("lease: primary (%zu leases)", lessor_count(la->lessor));
    } else if (!leader && lessor_is_primary(la->lessor)) {
        lessor_demote(la->lessor);
        log_debug("lease: no longer primary");
    }
}

static void on_tick(uv_timer_t *t)
{
    api_server *s = t->data;
    struct lease_api *la = s->lease;
    track_leadership(s);
    if (!lessor_is_primary(la->lessor) || s->fatal) return;
    int64_t ids[LEASE_REVOKES_PER_TICK];
    uint64_t now = now_ms();
    size_t n = lessor_expired(la->lessor, now, ids, LEASE_REVOKES_PER_TICK);
    for (size_t i = 0; i < n; i++) {
        lessor_revoking(la->lessor, ids[i], now);
        propose_revoke(s, ids[i]);
    }
    if (now >= la->next_checkpoint) {
        la->next_checkpoint = now + LEASE_CHECKPOINT_MS;
        propose_checkpoints(s, now);
    }
}

/* ---- lifecycle ---- */

int lease_api_init(api_server *s, unsigned heartbeat_ms, unsigned election_ms)
{
    struct lease_api *la = calloc(1, sizeof *la);
    if (la == NULL) return KERR_NOMEM;
    la->lessor = lessor_new();
    if (la->lessor == NULL) {
        free(la);
        return KERR_NOMEM;
    }
    la->min_ttl = lessor_min_ttl(heartbeat_ms, election_ms);
    struct mvcc_lease *ls;
    size_t n;
    int rv = mvcc_lease_list(s->store, &ls, &n);
    if (rv != 0) goto err_after_lessor;
    uint64_t now = now_ms();
    for (size_t i = 0; i < n && rv == 0; i++)
        rv = lessor_add(la->lessor, ls[i].id, ls[i].ttl, ls[i].remaining, now);
    free(ls);
    if (rv != 0) goto err_after_lessor;
    s->lease = la;
    return 0;

err_after_lessor:
    lessor_free(la->lessor);
    free(la);
    return rv;
}

int lease_api_reload(api_server *s)
{
    struct lease_api *la = s->lease;
    if (la == NULL) return 0;
    lessor *l = lessor_new();
    if (l == NULL) return KERR_NOMEM;
    struct mvcc_lease *ls = NULL;
    size_t n = 0;
    int rv = mvcc_lease_list(s->store, &ls, &n);
    uint64_t now = now_ms();
    for (size_t i = 0; i < n && rv == 0; i++)
        rv = lessor_add(l, ls[i].id, ls[i].ttl, ls[i].remaining, now);
    free(ls);
    if (rv != 0) {
        lessor_free(l);
        return rv;
    }
    if (lessor_is_primary(la->lessor)) lessor_promote(l, now, 0);
    lessor_free(la->lessor);
    la->lessor = l;
    return 0;
}

void lease_api_start(api_server *s)
{
    struct lease_api *la = s->lease;
    if (la == NULL || la->timer_started) return;
    track_leadership(s);
    uv_timer_init(s->loop, &la->timer);
    la->timer.data = s;
    uv_timer_start(&la->timer, on_tick, LEASE_TICK_MS, LEASE_TICK_MS);
    la->timer_started = true;
}

void lease_api_stop(api_server *s)
{
    struct lease_api *la = s->lease;
    if (la == NULL || !la->timer_started) return;
    uv_timer_stop(&la->timer);
    uv_close((uv_handle_t *)&la->timer, NULL);
    la->timer_started = false;
}

void lease_api_fini(api_server *s)
{
    struct lease_api *la = s->lease;
    if (la == NULL) return;
    lessor_free(la->lessor);
    free(la);
    s->lease = NULL;
}

void lease_api_applied(api_server *s, const Ketchpb__InternalRequest *req,
                       const struct mvcc_result *res)
{
    struct lease_api *la = s->lease;
    if (la == NULL || req == NULL) return;
    /* a leader elected since the last tick starts its deadlines now, so a
     * lease granted right after the election gets one at once */
    track_leadership(s);
    if (req->lease_grant != NULL && res->err == 0) {
        if (lessor_add(la->lessor, req->lease_grant->id, req->lease_grant->ttl, 0, now_ms()) != 0) {
            log_error("lease: out of memory mirroring a grant; stopping");
            abort();
        }
    } else if (req->lease_revoke != NULL) {
        lessor_remove(la->lessor, req->lease_revoke->id);
    } else if (req->lease_checkpoint != NULL && res->err == 0) {
        for (size_t i = 0; i < req->lease_checkpoint->n_checkpoints; i++) {
            const Etcdserverpb__LeaseCheckpoint *cp = req->lease_checkpoint->checkpoints[i];
            lessor_checkpoint(la->lessor, cp->id, cp->remaining_ttl);
        }
    }
}

/* ---- handlers ---- */

void lease_api_prepare_grant(api_server *s, Etcdserverpb__LeaseGrantRequest *req)
{
    /* etcd's EtcdServer.LeaseGrant: a positive ID from the request-ID
     * generator (we also skip IDs in use); etcd's lessor raises the TTL
     * to the minimum at apply, we do it here so that the apply does not
     * depend on this member's flags. */
    while (req->id == 0) {
        int64_t id = (int64_t)(++s->next_request_id & (uint64_t)INT64_MAX);
        if (id != 0 && lessor_get(s->lease->lessor, id) == NULL) req->id = id;
    }
    if (req->ttl < s->lease->min_ttl) req->ttl = s->lease->min_ttl;
}

void lease_grant(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    api_server *s = ctx;
    Etcdserverpb__LeaseGrantRequest *req =
        etcdserverpb__lease_grant_request__unpack(NULL, len, msg);
    if (req == NULL) return api_fail_unmarshal(call);
    int rv;
    if (s->lease == NULL) {
        grpc_call_fail(call, KERR_STOPPED);
    } else if ((rv = maint_quota_check(s, maint_cost_lease())) != 0) {
        /* as etcd's quotaLeaseServer, around the lease server */
        grpc_call_fail(call, rv);
    } else if (req->ttl > MVCC_MAX_LEASE_TTL) {
        grpc_call_fail(call, KERR_LEASE_TTL_TOO_LARGE);
    } else {
        lease_api_prepare_grant(s, req);
        Ketchpb__InternalRequest ir = KETCHPB__INTERNAL_REQUEST__INIT;
        ir.lease_grant = req;
        api_propose(s, call, &ir);
    }
    etcdserverpb__lease_grant_request__free_unpacked(req, NULL);
}

void lease_revoke(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    Etcdserverpb__LeaseRevokeRequest *req =
        etcdserverpb__lease_revoke_request__unpack(NULL, len, msg);
    if (req == NULL) return api_fail_unmarshal(call);
    Ketchpb__InternalRequest ir = KETCHPB__INTERNAL_REQUEST__INIT;
    ir.lease_revoke = req;
    api_propose(ctx, call, &ir);
    etcdserverpb__lease_revoke_request__free_unpacked(req, NULL);
}

/* One keep-alive on the leader: fills `r`, or returns a KERR_* code
 * (KERR_NOT_LEADER on a follower). As etcd's leaseKeepAlive, an unknown
 * (or expired) lease is answered with TTL 0, not an error. */
static int renew(api_server *s, const Etcdserverpb__LeaseKeepAliveRequest *req,
                 Etcdserverpb__ResponseHeader *h, Etcdserverpb__LeaseKeepAliveResponse *r)
{
    /* header first, as etcd: its revision is not newer than the renewal */
    api_fill_header(s, h, mvcc_revision(s->store));
    r->header = h;
    r->id = req->id;
    int64_t ttl = 0;
    bool clear = false;
    int rv = s->lease == NULL ? KERR_STOPPED
                              : lessor_renew(s->lease->lessor, req->id, now_ms(), &ttl, &clear);
    if (rv != 0 && rv != KERR_LEASE_NOT_FOUND) return rv;
    r->ttl = rv == 0 ? ttl : 0;
    if (clear) propose_clear_checkpoint(s, req->id);
    return 0;
}

/* A keep-alive stream's call data: the number of renewals forwarded to the
 * leader and not answered yet (<< 1), and whether the client half-closed
 * (bit 0). As etcd, every request received before the half-close gets its
 * answer before the stream ends; without this a follower ended the stream
 * at once and the forwarded answer was dropped (found by test_faults). */
static uintptr_t ka_state(const grpc_call *call) { return (uintptr_t)grpc_call_get_data(call); }
static void ka_set(grpc_call *call, uintptr_t v) { grpc_call_set_data(call, (void *)v); }

/* A follower's keep-alive came back from the leader: pass it on. */
static void keep_alive_forwarded(api_server *s, void *data, int kerr, const struct client_reply *r)
{
    grpc_call *call = data;
    (void)s, (void)kerr;
    uintptr_t st = ka_state(call);
    if (st >= 2) st -= 2;
    ka_set(call, st);
    if (r->status == 0) {
        grpc_call_send(call, r->data ? r->data : (const uint8_t *)"", r->len);
        if (st == 1 && grpc_call_alive(call)) grpc_call_finish(call, GRPC_OK, NULL);
    } else {
        grpc_call_finish(call, r->status, r->message);
    }
    grpc_call_unref(call);
}

/* etcd's leaseKeepAlive: one answer per request; on a follower, as etcd's
 * LeaseRenew, the renewal is forwarded to the leader. */
void lease_keep_alive(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    api_server *s = ctx;
    Etcdserverpb__LeaseKeepAliveRequest *req =
        etcdserverpb__lease_keep_alive_request__unpack(NULL, len, msg);
    if (req == NULL) return api_fail_unmarshal(call);
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    Etcdserverpb__LeaseKeepAliveResponse r = ETCDSERVERPB__LEASE_KEEP_ALIVE_RESPONSE__INIT;
    int rv = renew(s, req, &h, &r);
    if (rv == KERR_NOT_LEADER) {
        grpc_call_ref(call);
        rv = api_forward_unary(s, "/ketchpb.Internal/LeaseKeepAlive", msg, len,
                               api_forward_deadline(s, NULL), keep_alive_forwarded, call);
        if (rv != 0) {
            grpc_call_unref(call);
        } else {
            ka_set(call, ka_state(call) + 2);
            goto out;
        }
    }
    if (rv == 0) grpc_call_send_pb(call, &r.base);
    else grpc_call_fail(call, rv);
out:
    etcdserverpb__lease_keep_alive_request__free_unpacked(req, NULL);
}

/* ketchpb.Internal/LeaseKeepAlive: one forwarded renewal (leader side). */
void internal_lease_keep_alive(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    api_server *s = ctx;
    Etcdserverpb__LeaseKeepAliveRequest *req =
        etcdserverpb__lease_keep_alive_request__unpack(NULL, len, msg);
    if (req == NULL) return api_fail_unmarshal(call);
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    Etcdserverpb__LeaseKeepAliveResponse r = ETCDSERVERPB__LEASE_KEEP_ALIVE_RESPONSE__INIT;
    int rv = renew(s, req, &h, &r);
    if (rv == KERR_NOT_LEADER && s->member != NULL && member_leader_id(s->member) == 0)
        rv = KERR_NO_LEADER;
    if (rv == 0) grpc_call_reply(call, &r.base);
    else grpc_call_fail(call, rv);
    etcdserverpb__lease_keep_alive_request__free_unpacked(req, NULL);
}

void lease_keep_alive_close(grpc_call *call, void *ctx)
{
    (void)ctx;
    /* the client half-closed: end the stream as etcd does (status OK),
     * once the renewals forwarded to the leader are answered */
    if (ka_state(call) >= 2) {
        ka_set(call, ka_state(call) | 1);
        return;
    }
    if (grpc_call_alive(call)) grpc_call_finish(call, GRPC_OK, NULL);
}

static void ttl_exec(api_server *s, grpc_call *call, const ProtobufCMessage *m)
{
    const Etcdserverpb__LeaseTimeToLiveRequest *req =
        (const Etcdserverpb__LeaseTimeToLiveRequest *)m;
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    api_fill_header(s, &h, mvcc_revision(s->store));
    Etcdserverpb__LeaseTimeToLiveResponse r = ETCDSERVERPB__LEASE_TIME_TO_LIVE_RESPONSE__INIT;
    r.header = &h;
    r.id = req->id;
    const struct lessor_lease *e = lessor_get(s->lease->lessor, req->id);
    if (e == NULL) {
        /* etcd's v3rpc turns ErrLeaseNotFound into TTL -1 */
        r.ttl = -1;
        grpc_call_reply(call, &r.base);
        return;
    }
    r.ttl = lessor_remaining_s(e, now_ms());
    r.grantedttl = e->ttl;
    arena a = ARENA_INIT;
    if (req->keys) {
        int rv = mvcc_lease_keys(s->store, req->id, &a, &r.keys, &r.n_keys);
        if (rv != 0) {
            grpc_call_fail(call, rv);
            arena_free(&a);
            return;
        }
    }
    grpc_call_reply(call, &r.base);
    arena_free(&a);
}

static void ttl_forwarded(api_server *s, void *data, int kerr, const struct client_reply *r)
{
    grpc_call *call = data;
    (void)s, (void)kerr;
    if (r->status == 0) {
        grpc_call_send(call, r->data ? r->data : (const uint8_t *)"", r->len);
        grpc_call_finish(call, GRPC_OK, NULL);
    } else {
        grpc_call_finish(call, r->status, r->message);
    }
    grpc_call_unref(call);
}

void lease_time_to_live(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    api_server *s = ctx;
    Etcdserverpb__LeaseTimeToLiveRequest *req =
        etcdserverpb__lease_time_to_live_request__unpack(NULL, len, msg);
    if (req == NULL) return api_fail_unmarshal(call);
    if (s->lease == NULL) {
        grpc_call_fail(call, KERR_STOPPED);
        etcdserverpb__lease_time_to_live_request__free_unpacked(req, NULL);
        return;
    }
    if (s->member != NULL && !member_is_leader(s->member)) {
        /* only the leader knows the remaining TTL: ask it (as etcd) */
        etcdserverpb__lease_time_to_live_request__free_unpacked(req, NULL);
        grpc_call_ref(call);
        if (api_forward_unary(s, "/etcdserverpb.Lease/LeaseTimeToLive", msg, len,
                              api_forward_deadline(s, call), ttl_forwarded, call) != 0) {
            grpc_call_fail(call, KERR_STOPPED);
            grpc_call_unref(call);
        }
        return;
    }
    track_leadership(s);
    /* as etcd: the leader answers once it has applied what it committed */
    api_read(s, call, &req->base, false, ttl_exec);
}

static void leases_exec(api_server *s, grpc_call *call, const ProtobufCMessage *m)
{
    (void)m;
    if (s->lease == NULL) return grpc_call_fail(call, KERR_STOPPED);
    int64_t *ids;
    size_t n;
    int rv = lessor_list(s->lease->lessor, &ids, &n);
    if (rv != 0) return grpc_call_fail(call, rv);
    Etcdserverpb__LeaseStatus *st = n ? calloc(n, sizeof *st) : NULL;
    Etcdserverpb__LeaseStatus **stp = n ? calloc(n, sizeof *stp) : NULL;
    if (n && (st == NULL || stp == NULL)) {
        free(st);
        free(stp);
        free(ids);
        return grpc_call_fail(call, KERR_NOMEM);
    }
    for (size_t i = 0; i < n; i++) {
        etcdserverpb__lease_status__init(&st[i]);
        st[i].id = ids[i];
        stp[i] = &st[i];
    }
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    api_fill_header(s, &h, mvcc_revision(s->store));
    Etcdserverpb__LeaseLeasesResponse r = ETCDSERVERPB__LEASE_LEASES_RESPONSE__INIT;
    r.header = &h;
    r.n_leases = n;
    r.leases = stp;
    grpc_call_reply(call, &r.base);
    free(stp);
    free(st);
    free(ids);
}

void lease_leases(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    Etcdserverpb__LeaseLeasesRequest *req =
        etcdserverpb__lease_leases_request__unpack(NULL, len, msg);
    if (req == NULL) return api_fail_unmarshal(call);
    /* as etcd: this member's lessor, without a ReadIndex (but after its
     * own writes: a lease granted through it is listed) */
    api_read(ctx, call, &req->base, true, leases_exec);
}
