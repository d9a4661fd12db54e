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
