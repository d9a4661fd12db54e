/* etcd's periodic corruption check (--experimental-corrupt-check-time,
 * etcdserver/corrupt.go checkHashKV): the leader hashes its store
 * (HashKV at its current revision), asks every other member for HashKV at
 * that revision over their client URLs, and raises the CORRUPT alarm
 * through Raft for a member that
 *   - answers a revision above the leader's,
 *   - answers a compact revision above the leader's, or
 *   - has the leader's compact revision but another hash;
 * and for itself if its own hash changed while nothing was written.
 * Members that cannot answer (not caught up yet, unreachable) are skipped,
 * as etcd skips them. One check at a time; a raised alarm stops every
 * write (see mvcc.h) until an operator disarms it. */
#include "api/maintenance.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/propose.h"
#include "client/client.h"
#include "util/errors.h"
#include "util/log.h"

struct peer_call {
    struct corrupt_check *check;
    uint64_t id;
    struct client_conn *conn;
};

struct corrupt_check {
    api_server *s;
    uint32_t hash;
    int64_t rev, crev;
    size_t pending;
    bool alarmed;
    size_t n;
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

static void check_done(struct corrupt_check *c)
{
    api_server *s = c->s;
    /* etcd's own check: the same revision and compaction, another hash */
    if (s->store != NULL && mvcc_revision(s->store) == c->rev &&
        mvcc_compact_revision(s->store) == (c->crev < 0 ? 0 : c->crev)) {
        uint32_t h2;
        int64_t cur, crev;
        if (mvcc_hash_kv(s->store, 0, &h2, &cur, &crev) == 0 && h2 != c->hash)
            mismatch(c, s->member_id, "its own hash changed while nothing was written");
    }
    if (running == c) running = NULL;
    free(c);
}

static void peer_reply(void *arg, const struct client_reply *r)
{
    struct peer_call *p = arg;
    struct corrupt_check *c = p->check;
    if (r->status == 0 && r->data != NULL && c->s->store != NULL) {
        Etcdserverpb__HashKVResponse *resp =
            etcdserverpb__hash_kvresponse__unpack(NULL, r->len, r->data);
        if (resp != NULL && resp->header != NULL) {
            int64_t rev2 = mvcc_revision(c->s->store);
            int64_t crev2 = c->s->store ? mvcc_compact_revision(c->s->store) : 0;
            if (crev2 == 0) crev2 = -1;
            if (resp->header->revision > rev2)
                mismatch(c, p->id, "its revision is above the leader's");
            else if (resp->compact_revision > crev2)
                mismatch(c, p->id, "its compact revision is above the leader's");
            else if (resp->compact_revision == c->crev && resp->hash != c->hash)
                mismatch(c, p->id, "its HashKV differs from the leader's");
        }
        if (resp != NULL) etcdserverpb__hash_kvresponse__free_unpacked(resp, NULL);
    }
    struct client_conn *conn = p->conn;
    p->conn = NULL;
    /* (NULL when maint_corrupt_stop is closing it) */
    if (conn != NULL) client_conn_close(conn);
    if (--c->pending == 0) check_done(c);
}

void maint_corrupt_check(api_server *s)
{
    if (running != NULL || s->member == NULL || !member_is_leader(s->member) ||
        s->cluster == NULL)
        return;
    size_t n = s->cluster->n_members;
    struct corrupt_check *c = calloc(1, sizeof *c + n * sizeof c->peers[0]);
    if (c == NULL) return;
    c->s = s;
    int64_t cur;
    if (mvcc_hash_kv(s->store, 0, &c->hash, &cur, &c->crev) != 0) {
        free(c);
        return;
    }
    c->rev = cur;
    running = c;
    c->pending = 1; /* held while the calls are started */
    Etcdserverpb__HashKVRequest req = ETCDSERVERPB__HASH_KVREQUEST__INIT;
    req.revision = c->rev;
    for (size_t i = 0; i < n; i++) {
        uint64_t id = s->cluster->members[i]->id;
        const char *url = api_cluster_client_url(s, id);
        if (id == s->member_id || url == NULL) continue;
        struct peer_call *p = &c->peers[c->n++];
        p->check = c;
        p->id = id;
        if (client_conn_open(s->loop, url, NULL, NULL, &p->conn) != 0) {
            p->conn = NULL;
            continue;
        }
        c->pending++;
        if (client_unary(p->conn, "/etcdserverpb.Maintenance/HashKV", &req.base, peer_reply, p) !=
            0) {
            struct client_conn *conn = p->conn;
            p->conn = NULL;
            client_conn_close(conn);
            c->pending--;
        }
    }
    if (--c->pending == 0) check_done(c);
}

void maint_corrupt_stop(void)
{
    struct corrupt_check *c = running;
    if (c == NULL) return;
    /* closing fails each call with CANCELLED (peer_reply runs from inside
     * client_conn_close), and the last one frees the check: take the
     * connections out first */
    size_t n = 0;
    struct client_conn **conns = calloc(c->n ? c->n : 1, sizeof *conns);
    if (conns == NULL) return;
    for (size_t i = 0; i < c->n; i++) {
        conns[n] = c->peers[i].conn;
        c->peers[i].conn = NULL;
        if (conns[n] != NULL) n++;
    }
    for (size_t i = 0; i < n; i++) client_conn_close(conns[i]);
    free(conns);
}

/* ---- the start-up check (--experimental-initial-corrupt-check) ---- */

struct init_peer {
    struct init_check *check;
    uint64_t id;
    const char *url;
    struct client_conn *conn;
    bool done;
};

struct init_check {
    api_server *s;
    uint32_t hash;
    int64_t rev, crev;
    size_t pending, mismatches;
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

/* Closing a connection from inside its own reply callback is not allowed:
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

int maint_initial_check(api_server *s, uint64_t timeout_ms)
{
    size_t n = s->cluster != NULL ? s->cluster->n_members : 0;
    log_info("starting initial corruption check: local-member-id=%" PRIx64 " timeout=%" PRIu64
             "ms",
             s->member_id, timeout_ms);
    struct init_check *c = calloc(1, sizeof *c + (n ? n : 1) * sizeof c->peers[0]);
    if (c == NULL) return -1;
    c->s = s;
    int64_t cur;
    int rv = mvcc_hash_kv(s->store, 0, &c->hash, &cur, &c->crev);
    if (rv != 0) {
        fprintf(stderr, "ketch: %" PRIx64 " failed to fetch hash (%s)\n", s->member_id,
                kerr_text(rv));
        free(c);
        return -1;
    }
    c->rev = cur;
    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0) {
        free(c);
        return -1;
    }
    uv_timer_init(&loop, &c->timer);
    c->timer.data = c;
    uv_prepare_t prep;
    uv_prepare_init(&loop, &prep);
    prep.data = c;
    Etcdserverpb__HashKVRequest req = ETCDSERVERPB__HASH_KVREQUEST__INIT;
    req.revision = c->rev;
    for (size_t i = 0; i < n; i++) {
        uint64_t id = s->cluster->members[i]->id;
        const char *url = api_cluster_client_url(s, id);
        if (id == s->member_id) continue;
        if (url == NULL) {
            log_warn("initial corruption check: peer %016" PRIx64 " has no client URL yet; skipped",
                     id);
            continue;
        }
        if (strncmp(url, "https://", 8) == 0) {
            log_warn("initial corruption check: peer %016" PRIx64 " (%s) serves TLS; skipped", id,
                     url);
            continue;
        }
        struct init_peer *p = &c->peers[c->n++];
        p->check = c;
        p->id = id;
        p->url = url;
        if (client_conn_open(&loop, url, NULL, NULL, &p->conn) != 0) {
            p->conn = NULL;
            p->done = true;
            log_warn("initial corruption check: cannot reach peer %s; skipped", url);
            continue;
        }
        c->pending++;
        if (client_unary(p->conn, "/etcdserverpb.Maintenance/HashKV", &req.base, init_reply, p) !=
            0) {
            p->done = true;
            c->pending--;
        }
    }
    if (c->pending > 0) {
        uv_timer_start(&c->timer, init_timeout, timeout_ms, 0);
        uv_prepare_start(&prep, init_poll);
    } else {
        init_timeout(&c->timer);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&c->timer, NULL);
    uv_close((uv_handle_t *)&prep, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0) log_warn("initial corruption check: loop not closed cleanly");
    size_t mismatches = c->mismatches;
    free(c);
    if (mismatches > 0) {
        log_error("%" PRIx64 " found data inconsistency with peers", s->member_id);
        return -1;
    }
    log_info("initial corruption checking passed; no corruption: local-member-id=%" PRIx64,
             s->member_id);
    return 0;
}
