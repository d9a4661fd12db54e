/* etcd's periodic corruption check (--experimental-corrupt-check-time,
 * etcdserver/corrupt.go checkHashKV): the leader hashes its store
 * (HashKV at its current revision), asks every other member for HashKV at
 * that revision over their peer URLs (ketchpb.Internal/HashKV, as etcd
 * asks /members/hashkv on the peer port, with peer TLS), hashes its own
 * store again, and raises the CORRUPT alarm through Raft for a member that
 *   - answers a revision above the leader's,
 *   - answers a compact revision above the leader's, or
 *   - has the leader's compact revision but another hash;
 * and for itself if its own hash changed while nothing was written.
 * Members that cannot answer (not caught up yet, compacted past the
 * revision, unreachable, or not within etcd's request timeout) are
 * skipped, as etcd skips them. One check at a time; a raised alarm stops
 * every write (see mvcc.h) until an operator disarms it.
 *
 * Every hash (the leader's two and the peers') is computed on libuv's
 * thread pool by maint_hash_kv_async, the code path of Maintenance.HashKV:
 * the loop goes on serving while a big store is hashed. */
#include "api/maintenance.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/cluster.h"
#include "api/propose.h"
#include "client/client.h"
#include "member/peer.h"
#include "util/errors.h"
#include "util/log.h"

#define HASH_KV_PATH "/ketchpb.Internal/HashKV"
/* etcd's ReqTimeout: 5 s + 2 election timeouts */
#define REQUEST_TIMEOUT_MS(s) (5000 + 2ull * ((s)->election_ms ? (s)->election_ms : 1000))

/* One member's answer. */
struct peer_call {
    struct corrupt_check *check;
    uint64_t id;
    struct client_conn *conn;
    bool answered; /* a HashKV response arrived */
    int64_t rev, crev;
    uint32_t hash;
};

struct corrupt_check {
    api_server *s;
    uv_timer_t timer; /* etcd's request timeout for the peers' answers */
    uint32_t hash;
    int64_t rev, crev;
    size_t pending; /* peer calls not answered yet (+1 while starting them) */
    bool stopping, alarmed;
    size_t n, cap;
    struct peer_call peers[];
};

static struct corrupt_check *running; /* the check in progress (one server per process) */

static void alarm_done(api_server *s, void *data, int err, const uint8_t *resp, size_t len)
{
    (void)s, (void)resp, (void)len;
    if (err != 0)
        log_warn("corruption check: raising CORRUPT for %016" PRIx64 " failed: %s",
                 (uint64_t)(uintptr_t)data, kerr_text(err));
}

static void mismatch(struct corrupt_check *c, uint64_t id, const char *why)
{
    log_error("corruption check: member %016" PRIx64 ": %s", id, why);
    if (c->alarmed) return;
    c->alarmed = true;
    Etcdserverpb__AlarmRequest ar = ETCDSERVERPB__ALARM_REQUEST__INIT;
    ar.action = ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__ACTIVATE;
    ar.memberid = id;
    ar.alarm = ETCDSERVERPB__ALARM_TYPE__CORRUPT;
    Ketchpb__InternalRequest ir = KETCHPB__INTERNAL_REQUEST__INIT;
    ir.alarm = &ar;
    api_propose_internal(c->s, &ir, alarm_done, (void *)(uintptr_t)id);
}

static void check_freed(uv_handle_t *h) { free(h->data); }

static void finish(struct corrupt_check *c)
{
    if (running == c) running = NULL;
    uv_close((uv_handle_t *)&c->timer, check_freed);
}

/* The leader's second hash: etcd's comparisons. */
static void rehashed(api_server *s, void *data, const struct maint_hash *h)
{
    struct corrupt_check *c = data;
    if (c->stopping || h->rv != 0) return finish(c);
    int64_t rev2 = h->current, crev2 = h->compact;
    if (h->hash != c->hash && rev2 == c->rev && crev2 == c->crev)
        mismatch(c, s->member_id, "its own hash changed while nothing was written");
    for (size_t i = 0; i < c->n; i++) {
        struct peer_call *p = &c->peers[i];
        if (!p->answered) continue;
        if (p->rev > rev2)
            mismatch(c, p->id, "its revision is above the leader's");
        else if (p->crev > crev2)
            mismatch(c, p->id, "its compact revision is above the leader's");
        else if (p->crev == c->crev && p->hash != c->hash)
            mismatch(c, p->id, "its HashKV differs from the leader's");
    }
    finish(c);
}

static void peers_done(struct corrupt_check *c)
{
    uv_timer_stop(&c->timer);
    if (c->stopping || maint_hash_kv_async(c->s, c->s->loop, 0, rehashed, c) != 0) finish(c);
}

static void close_conn(struct peer_call *p)
{
    struct client_conn *conn = p->conn;
    p->conn = NULL;
    if (conn != NULL) client_conn_close(conn); /* may run peer_reply (CANCELLED) */
}

static void peer_reply(void *arg, const struct client_reply *r)
{
    struct peer_call *p = arg;
    struct corrupt_check *c = p->check;
    if (r->status == 0 && r->data != NULL) {
        Etcdserverpb__HashKVResponse *resp =
            etcdserverpb__hash_kvresponse__unpack(NULL, r->len, r->data);
        if (resp != NULL && resp->header != NULL) {
            p->answered = true;
            p->rev = resp->header->revision;
            p->crev = resp->compact_revision;
            p->hash = resp->hash;
        }
        if (resp != NULL) etcdserverpb__hash_kvresponse__free_unpacked(resp, NULL);
    } else {
        log_debug("corruption check: member %016" PRIx64 " did not answer HashKV at %" PRId64
                  ": %s", p->id, c->rev, r->message[0] ? r->message : "unavailable");
    }
    close_conn(p); /* allowed from its own callback */
    if (--c->pending == 0) peers_done(c);
}

static void on_timeout(uv_timer_t *t)
{
    struct corrupt_check *c = t->data;
    /* each close fails its call (CANCELLED); the last one ends the wait */
    for (size_t i = 0; i < c->n; i++) close_conn(&c->peers[i]);
}

/* The leader's first hash: ask the others for theirs at its revision. */
static void hashed(api_server *s, void *data, const struct maint_hash *h)
{
    struct corrupt_check *c = data;
    if (c->stopping || h->rv != 0 || s->member == NULL || !member_is_leader(s->member) ||
        s->peer == NULL)
        return finish(c);
    c->hash = h->hash;
    c->rev = h->current;
    c->crev = h->compact;
    c->pending = 1; /* held while the calls are started */
    Etcdserverpb__HashKVRequest req = ETCDSERVERPB__HASH_KVREQUEST__INIT;
    req.revision = c->rev;
    size_t n = api_cluster_size(s);
    for (size_t i = 0; i < n && c->n < c->cap; i++) {
        uint64_t id = s->cluster->members[i]->id;
        if (id == s->member_id) continue;
        struct peer_call *p = &c->peers[c->n];
        p->check = c;
        p->id = id;
        if (api_cluster_peer_open(s, s->peer, s->loop, id, NULL, NULL, &p->conn) != 0) {
            p->conn = NULL;
            continue;
        }
        c->n++;
        c->pending++;
        if (client_unary(p->conn, HASH_KV_PATH, &req.base, peer_reply, p) != 0) {
            close_conn(p);
            c->pending--;
        }
    }
    uv_timer_start(&c->timer, on_timeout, REQUEST_TIMEOUT_MS(s), 0);
    if (--c->pending == 0) peers_done(c);
}

void maint_corrupt_check(api_server *s)
{
    if (running != NULL || s->member == NULL || !member_is_leader(s->member) ||
        s->cluster == NULL || s->peer == NULL)
        return;
    size_t n = s->cluster->n_members;
    struct corrupt_check *c = calloc(1, sizeof *c + (n ? n : 1) * sizeof c->peers[0]);
    if (c == NULL) return;
    c->s = s;
    c->cap = n;
    uv_timer_init(s->loop, &c->timer);
    c->timer.data = c;
    running = c;
    if (maint_hash_kv_async(s, s->loop, 0, hashed, c) != 0) finish(c);
}

void maint_corrupt_stop(void)
{
    struct corrupt_check *c = running;
    if (c == NULL) return;
    /* a hash on the pool ends on its own, then only frees the check;
     * closing the connections fails their calls with CANCELLED, and the
     * last one ends the check */
    c->stopping = true;
    for (size_t i = 0; i < c->n; i++) close_conn(&c->peers[i]);
}

/* ---- the start-up check (--experimental-initial-corrupt-check) ---- */

struct init_peer {
    struct init_check *check;
    uint64_t id;
    const char *url; /* the peer URL asked, for the log */
    struct client_conn *conn;
    bool done;
};

struct init_check {
    api_server *s;
    peer_net *pn; /* dial only, on the private loop */
    int hash_rv;  /* this member's hash: 0, or why it failed */
    uint32_t hash;
    int64_t rev, crev;
    size_t pending, mismatches;
    uint64_t timeout_ms;
    uv_timer_t timer;
    size_t n;
    struct init_peer peers[];
};

static void init_close_conn(struct init_peer *p)
{
    struct client_conn *conn = p->conn;
    p->conn = NULL;
    if (conn != NULL) client_conn_close(conn); /* may run init_reply (CANCELLED) */
}

static void init_reply(void *arg, const struct client_reply *r)
{
    struct init_peer *p = arg;
    struct init_check *c = p->check;
    if (p->done) return;
    p->done = true;
    uint64_t self = c->s->member_id;
    Etcdserverpb__HashKVResponse *resp = NULL;
    if (r->status == 0 && r->data != NULL)
        resp = etcdserverpb__hash_kvresponse__unpack(NULL, r->len, r->data);
    if (resp != NULL && resp->header != NULL) {
        int64_t prev = resp->header->revision;
        if (resp->hash != c->hash) {
            if (resp->compact_revision == c->crev) {
                log_error("found different hash values from remote peer: local-member-id=%" PRIx64
                          " local-member-revision=%" PRId64 " local-member-compact-revision=%" PRId64
                          " local-member-hash=%" PRIu32 " remote-peer-id=%" PRIx64
                          " remote-peer-endpoints=%s remote-peer-revision=%" PRId64
                          " remote-peer-compact-revision=%" PRId64 " remote-peer-hash=%" PRIu32,
                          self, c->rev, c->crev, c->hash, p->id, p->url, prev,
                          resp->compact_revision, resp->hash);
                c->mismatches++;
            } else {
                log_warn("found different compact revision values from remote peer: "
                         "local-member-id=%" PRIx64 " local-member-revision=%" PRId64
                         " local-member-compact-revision=%" PRId64 " remote-peer-id=%" PRIx64
                         " remote-peer-endpoints=%s remote-peer-compact-revision=%" PRId64,
                         self, c->rev, c->crev, p->id, p->url, resp->compact_revision);
            }
        }
    } else if (r->status == GRPC_OUT_OF_RANGE && strstr(r->message, "future") != NULL) {
        log_warn("cannot fetch hash from slow remote peer: local-member-id=%" PRIx64
                 " local-member-revision=%" PRId64 " remote-peer-id=%" PRIx64
                 " remote-peer-endpoints=%s error=\"%s\"",
                 self, c->rev, p->id, p->url, r->message);
    } else if (r->status == GRPC_OUT_OF_RANGE && strstr(r->message, "compacted") != NULL) {
        log_warn("cannot fetch hash from remote peer; local member is behind: "
                 "local-member-id=%" PRIx64 " local-member-revision=%" PRId64
                 " remote-peer-id=%" PRIx64 " remote-peer-endpoints=%s error=\"%s\"",
                 self, c->rev, p->id, p->url, r->message);
    } else {
        log_warn("failed hash kv request: local-member-id=%" PRIx64 " requested-revision=%" PRId64
                 " remote-peer-endpoint=%s error=\"%s\"",
                 self, c->rev, p->url,
                 r->status == 0 ? "bad response" : r->message[0] ? r->message : "unavailable");
    }
    if (resp != NULL) etcdserverpb__hash_kvresponse__free_unpacked(resp, NULL);
    c->pending--;
    if (c->pending == 0) uv_timer_stop(&c->timer);
}

/* Closing a connection from inside its own reply callback is allowed, but
 * the timer closes them all, when the calls are done or the time is up. */
static void init_timeout(uv_timer_t *t)
{
    struct init_check *c = t->data;
    for (size_t i = 0; i < c->n; i++) init_close_conn(&c->peers[i]);
}

static void init_poll(uv_prepare_t *h)
{
    struct init_check *c = h->data;
    if (c->pending == 0) {
        uv_prepare_stop(h);
        init_timeout(&c->timer);
    }
}

/* This member's hash is known: ask the others. */
static void init_hashed(api_server *s, void *data, const struct maint_hash *h)
{
    struct init_check *c = data;
    c->hash_rv = h->rv;
    if (h->rv == 0) {
        c->hash = h->hash;
        c->rev = h->current;
        c->crev = h->compact;
        uv_loop_t *loop = c->timer.loop;
        Etcdserverpb__HashKVRequest req = ETCDSERVERPB__HASH_KVREQUEST__INIT;
        req.revision = c->rev;
        size_t n = api_cluster_size(s);
        for (size_t i = 0; i < n; i++) {
            const Ketchpb__ClusterMember *m = s->cluster->members[i];
            if (m->id == s->member_id) continue;
            if (m->n_peer_urls == 0) {
                log_warn("initial corruption check: peer %016" PRIx64 " has no peer URL; skipped",
                         m->id);
                continue;
            }
            struct init_peer *p = &c->peers[c->n++];
            p->check = c;
            p->id = m->id;
            p->url = m->peer_urls[0];
            if (api_cluster_peer_open(s, c->pn, loop, m->id, NULL, NULL, &p->conn) != 0) {
                p->conn = NULL;
                p->done = true;
                log_warn("initial corruption check: cannot reach peer %s; skipped", p->url);
                continue;
            }
            c->pending++;
            if (client_unary(p->conn, HASH_KV_PATH, &req.base, init_reply, p) != 0) {
                p->done = true;
                c->pending--;
            }
        }
        uv_timer_start(&c->timer, init_timeout, c->timeout_ms, 0);
    }
    if (--c->pending == 0) uv_timer_stop(&c->timer);
}

int maint_initial_check(api_server *s, tls_ctx *peer_client_tls, uint64_t timeout_ms)
{
    size_t n = api_cluster_size(s);
    log_info("starting initial corruption check: local-member-id=%" PRIx64 " timeout=%" PRIu64
             "ms",
             s->member_id, timeout_ms);
    struct init_check *c = calloc(1, sizeof *c + (n ? n : 1) * sizeof c->peers[0]);
    if (c == NULL) return -1;
    c->s = s;
    c->timeout_ms = timeout_ms;
    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0) {
        free(c);
        return -1;
    }
    if (peer_net_new(&c->pn, &loop, NULL, peer_client_tls, NULL, NULL) != 0) {
        uv_loop_close(&loop);
        free(c);
        return -1;
    }
    uv_timer_init(&loop, &c->timer);
    c->timer.data = c;
    uv_prepare_t prep;
    uv_prepare_init(&loop, &prep);
    prep.data = c;
    /* init_poll ends the loop once nothing is pending: this member's hash
     * (on the pool), then the peers' answers (or the timer) */
    c->pending = 1;
    int rv = maint_hash_kv_async(s, &loop, 0, init_hashed, c);
    if (rv != 0) {
        c->hash_rv = rv;
    } else {
        uv_prepare_start(&prep, init_poll);
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    uv_close((uv_handle_t *)&c->timer, NULL);
    uv_close((uv_handle_t *)&prep, NULL);
    peer_net_free(c->pn); /* ends the links still open */
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0) log_warn("initial corruption check: loop not closed cleanly");
    size_t mismatches = c->mismatches;
    rv = c->hash_rv;
    free(c);
    if (rv != 0) {
        fprintf(stderr, "ketch: %" PRIx64 " failed to fetch hash (%s)\n", s->member_id,
                kerr_text(rv));
        return -1;
    }
    if (mismatches > 0) {
        log_error("%" PRIx64 " found data inconsistency with peers", s->member_id);
        return -1;
    }
    log_info("initial corruption checking passed; no corruption: local-member-id=%" PRIx64,
             s->member_id);
    return 0;
}
