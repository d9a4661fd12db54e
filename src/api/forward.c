/* Forwarding to the leader: see forward.h. */
#include "api/forward.h"

#include <stdlib.h>
#include <string.h>

#include "api/propose.h"
#include "member/peer.h"
#include "util/errors.h"
#include "util/log.h"

#define RETRY_MS 20
#define REQUEST_TIMEOUT_MS 5000 /* etcd: 5 s + 2 × election timeout */

/* A forwarded unary call, from the first try until its callback. */
struct fcall {
    api_server *s;
    char *path;
    uint8_t *msg;
    size_t len;
    uint64_t deadline;
    int timeout_kerr; /* what it fails with when no leader took it in time */
    api_forward_fn cb;
    void *data;
    struct lconn *lc;   /* the connection it was last sent on */
    struct fcall *next; /* in the retry list */
};

/* A connection to the leader, or to a member that was the leader.
 *
 * When the leader changes, the connection to the old one is retired, not
 * closed: the calls in flight on it still get its answer. Closing it
 * would cancel them, and a write whose answer is lost must then wait
 * for its own entry until the request timeout (adopt_orphan in
 * propose.c), though most were never appended: a leader handing over
 * (move-leader) refuses new entries ("not leader": they are sent again,
 * to the new leader), and the entries it did append stay in the new
 * leader's log (libraft sends TimeoutNow only once the target has been
 * sent the whole log) and are answered once applied. Before, three
 * move-leaders under load failed 0-22 writes of ~1,300 this way (plain
 * build) and 70-206 on the ASan build, all after waiting 7 s. A retired
 * connection is closed once no call is in flight on it, or when it
 * fails, or at the latest a request timeout after it was retired (an old
 * leader cut off by a partition may never answer). */
struct lconn {
    api_server *s;
    struct client_conn *conn;
    peer_dial *dial; /* until the peer connection is up */
    char *url;
    uint64_t leader;
    bool connected;     /* the connection was made: calls may have been sent */
    bool failed;
    uint64_t close_by;  /* retired: uv_now() ms when it is closed anyway */
    struct lconn *next; /* in fwd_api.retired */
};

/* A linearizable read waiting for ReadIndex, then for the local apply
 * (index: the leader's store applied index). */
struct rwait {
    member_done_fn cb;
    void *data;
    bool (*ready)(void *data); /* NULL, or: done before `index` is applied */
    uint64_t deadline;
    uint64_t index; /* the leader's applied index, once known */
    struct rwait *next;
};

struct fwd_api {
    struct lconn *cur;     /* to the current leader, or NULL */
    struct lconn *retired; /* to former leaders, with calls in flight */
    bool stopped;
    uv_timer_t timer; /* retries, while `retry`, `rd_pending` or `retired` wait */
    struct fcall *retry;
    struct rwait *rd_pending;  /* for the next ReadIndex */
    bool rd_inflight;
    uv_check_t check;          /* applied-index waits */
    struct rwait *applied;     /* ReadIndex answered: wait for the apply */
};

static int kerr_from_text(const char *msg)
{
    for (int k = KERR_FIRST_ + 1; k < KERR_LAST_; k++)
        if (strcmp(kerr_text(k), msg) == 0) return k;
    return 0;
}

uint64_t api_forward_deadline(api_server *s, grpc_call *call)
{
    uint64_t d = uv_now(s->loop) + REQUEST_TIMEOUT_MS + 2ull * (s->election_ms ? s->election_ms : 1000);
    uint64_t cd = call != NULL ? grpc_call_deadline(call) : 0;
    return cd != 0 && cd < d ? cd : d;
}

/* ---- the connection to the leader ---- */

static void conn_event(struct client_conn *conn, int err, void *arg)
{
    struct lconn *lc = arg;
    (void)conn;
    if (err == 0) {
        lc->connected = true;
    } else {
        lc->failed = true;
        log_debug("forward: connection to the leader at %s: %s", lc->url, uv_strerror(err));
    }
}

static void dial_done(void *arg, int status)
{
    struct lconn *lc = arg;
    lc->dial = NULL;
    if (status == 0) {
        lc->connected = true;
    } else {
        lc->failed = true;
        log_debug("forward: connection to the leader at %s: %s", lc->url, uv_strerror(status));
    }
}

/* Closes lc and frees it: its calls in flight end with CANCELLED, from
 * here (fcall_reply). */
static void lconn_close(struct lconn *lc)
{
    if (lc->dial != NULL) peer_dial_cancel(lc->dial);
    lc->dial = NULL;
    client_conn_close(lc->conn);
    free(lc->url);
    free(lc);
}

static void arm(struct fwd_api *f);

/* The current connection is no longer the leader's, or failed: retired
 * (see struct lconn), and closed by the timer (sweep_retired), never
 * here: this may run inside a callback of that connection, for one of
 * several calls it fails at once, and the others still need lc. */
static void retire_conn(api_server *s)
{
    struct fwd_api *f = s->fwd;
    struct lconn *lc = f->cur;
    if (lc == NULL) return;
    f->cur = NULL;
    lc->close_by = api_forward_deadline(s, NULL);
    lc->next = f->retired;
    f->retired = lc;
    arm(f);
}

/* Closes the retired connections that are done (all, with `all`). */
static void sweep_retired(api_server *s, bool all)
{
    struct fwd_api *f = s->fwd;
    uint64_t now = uv_now(s->loop);
    struct lconn **pp = &f->retired;
    while (*pp != NULL) {
        struct lconn *lc = *pp;
        if (all || lc->failed || now >= lc->close_by || client_conn_pending(lc->conn) == 0) {
            *pp = lc->next;
            lconn_close(lc); /* (its cancelled calls may retry: not on this list) */
        } else {
            pp = &lc->next;
        }
    }
}

/* The connection to the current leader, opened if needed; NULL when no
 * leader is known. It goes to the leader's peer URL (where
 * ketchpb.Internal is served), through the peer port's relay, so with
 * TLS when the --peer-* flags ask for it. */
static struct lconn *leader_conn(api_server *s)
{
    struct fwd_api *f = s->fwd;
    if (s->member == NULL || s->peer == NULL || f->stopped) return NULL;
    uint64_t leader = member_leader_id(s->member);
    char *addr = leader ? api_cluster_peer_address(s, leader) : NULL;
    if (addr == NULL) return NULL;
    if (f->cur != NULL &&
        (f->cur->leader != leader || f->cur->failed || strcmp(addr, f->cur->url) != 0))
        retire_conn(s);
    if (f->cur != NULL) {
        free(addr);
        return f->cur;
    }
    struct lconn *lc = calloc(1, sizeof *lc);
    if (lc == NULL) {
        free(addr);
        return NULL;
    }
    lc->s = s;
    lc->leader = leader;
    lc->url = addr;
    uv_os_sock_t fd;
    if (peer_net_dial(s->peer, addr, dial_done, lc, &fd, &lc->dial) != 0) {
        free(addr);
        free(lc);
        return NULL;
    }
    if (client_conn_adopt(s->loop, fd, addr, conn_event, lc, &lc->conn) != 0) {
        peer_dial_cancel(lc->dial);
        free(addr);
        free(lc);
        return NULL;
    }
    f->cur = lc;
    return lc;
}

/* ---- retries ---- */

static void tick(uv_timer_t *t);

static void arm(struct fwd_api *f)
{
    if (!uv_is_active((uv_handle_t *)&f->timer)) uv_timer_start(&f->timer, tick, RETRY_MS, RETRY_MS);
}

static void fcall_free(struct fcall *c)
{
    free(c->path);
    free(c->msg);
    free(c);
}

static void fcall_finish(struct fcall *c, int kerr, const struct client_reply *r)
{
    struct client_reply local;
    if (r == NULL) {
        local = (struct client_reply){.status = kerr_grpc_status(kerr), .message = kerr_text(kerr)};
        r = &local;
    }
    c->cb(c->s, c->data, kerr, r);
    fcall_free(c);
}

static void fcall_reply(void *arg, const struct client_reply *r);

/* Sends `c`, or queues it for a retry. */
static void fcall_try(struct fcall *c)
{
    api_server *s = c->s;
    struct fwd_api *f = s->fwd;
    if (f->stopped || s->member == NULL) return fcall_finish(c, KERR_STOPPED, NULL);
    struct lconn *lc = leader_conn(s);
    if (lc != NULL && client_unary_raw(lc->conn, c->path, c->msg, c->len, fcall_reply, c) == 0) {
        c->lc = lc;
        return;
    }
    if (uv_now(s->loop) >= c->deadline) return fcall_finish(c, c->timeout_kerr, NULL);
    c->next = f->retry;
    f->retry = c;
    arm(f);
}

static void fcall_reply(void *arg, const struct client_reply *r)
{
    struct fcall *c = arg;
    api_server *s = c->s;
    struct fwd_api *f = s->fwd;
    if (r->status == 0) return fcall_finish(c, 0, r);
    int kerr = kerr_from_text(r->message);
    bool again = kerr == KERR_NOT_LEADER || kerr == KERR_NO_LEADER;
    if (kerr == 0 && (r->status == CLIENT_STATUS_UNAVAILABLE || r->status == CLIENT_STATUS_CANCELLED)) {
        /* Lost on the way. Never connected: nothing was sent, try again;
         * otherwise the leader may have applied it: as etcd, the client
         * learns the leader changed. */
        bool unsent = !c->lc->connected;
        c->lc->failed = true;
        if (unsent && f != NULL && !f->stopped) again = true;
        else kerr = f == NULL || f->stopped ? KERR_STOPPED : KERR_LEADER_CHANGED;
        if (!again) return fcall_finish(c, kerr, NULL);
    }
    if (again && f != NULL && !f->stopped && uv_now(s->loop) < c->deadline) {
        c->next = f->retry;
        f->retry = c;
        arm(f);
        return;
    }
    if (again) return fcall_finish(c, f == NULL || f->stopped ? KERR_STOPPED : c->timeout_kerr, NULL);
    fcall_finish(c, kerr, r);
}

int api_forward_unary(api_server *s, const char *path, const uint8_t *msg, size_t len,
                      uint64_t deadline, api_forward_fn cb, void *data)
{
    struct fwd_api *f = s->fwd;
    if (f == NULL || f->stopped || s->member == NULL) return KERR_STOPPED;
    struct fcall *c = calloc(1, sizeof *c);
    if (c == NULL) return KERR_NOMEM;
    c->s = s;
    c->path = strdup(path);
    c->msg = malloc(len ? len : 1);
    if (c->path == NULL || c->msg == NULL) {
        fcall_free(c);
        return KERR_NOMEM;
    }
    if (len) memcpy(c->msg, msg, len);
    c->len = len;
    c->deadline = deadline ? deadline : api_forward_deadline(s, NULL);
    /* As etcd: raft's Propose (and ProposeConfChange) block while there is
     * no leader, and etcd hands the context error back untranslated; a
     * ReadIndex or a lease call that finds no leader is "request timed
     * out" (requestCurrentIndex, LeaseRenew). */
    c->timeout_kerr = strcmp(path, "/ketchpb.Internal/Propose") == 0 ||
                              strncmp(path, "/etcdserverpb.Cluster/Member", 28) == 0
                          ? KERR_PROPOSE_DEADLINE
                          : KERR_TIMEOUT;
    c->cb = cb;
    c->data = data;
    struct lconn *lc = leader_conn(s);
    if (lc != NULL && client_unary_raw(lc->conn, c->path, c->msg, c->len, fcall_reply, c) == 0) {
        c->lc = lc;
        return 0;
    }
    /* no leader yet: from the timer, so cb never runs inside this call */
    c->next = f->retry;
    f->retry = c;
    arm(f);
    return 0;
}

/* ---- ReadIndex ---- */

static void fire(struct rwait *w, int err)
{
    while (w != NULL) {
        struct rwait *next = w->next;
        member_done_fn cb = w->cb;
        void *data = w->data;
        free(w);
        cb(data, err);
        w = next;
    }
}

static void on_check(uv_check_t *h);
static void rd_send(api_server *s);

static void rd_reply(api_server *s, void *data, int kerr, const struct client_reply *r)
{
    struct fwd_api *f = s->fwd;
    struct rwait *batch = data;
    Ketchpb__ReadIndexResponse *resp = NULL;
    if (f != NULL) f->rd_inflight = false;
    if (kerr == 0 && r->status == 0)
        resp = ketchpb__read_index_response__unpack(NULL, r->len, r->data);
    if (resp == NULL || f == NULL) {
        fire(batch, f == NULL ? KERR_STOPPED : kerr != 0 ? kerr : KERR_INTERNAL);
    } else {
        uint64_t index = resp->index;
        ketchpb__read_index_response__free_unpacked(resp, NULL);
        while (batch != NULL) {
            struct rwait *next = batch->next;
            batch->index = index;
            batch->next = f->applied;
            f->applied = batch;
            batch = next;
        }
        if (!uv_is_active((uv_handle_t *)&f->check)) uv_check_start(&f->check, on_check);
    }
    if (f != NULL && !f->stopped) rd_send(s); /* the reads that arrived meanwhile */
}

static void rd_send(api_server *s)
{
    struct fwd_api *f = s->fwd;
    if (f->rd_inflight || f->rd_pending == NULL) return;
    struct rwait *batch = f->rd_pending;
    f->rd_pending = NULL;
    uint64_t deadline = 0;
    for (struct rwait *w = batch; w != NULL; w = w->next)
        if (w->deadline > deadline) deadline = w->deadline;
    Ketchpb__ReadIndexRequest req = KETCHPB__READ_INDEX_REQUEST__INIT;
    uint8_t buf[16];
    size_t len = ketchpb__read_index_request__pack(&req, buf);
    if (api_forward_unary(s, "/ketchpb.Internal/ReadIndex", buf, len, deadline, rd_reply, batch) != 0) {
        /* out of memory: try again from the timer (which fails them at
         * their deadlines if this persists) */
        struct rwait *last = batch;
        while (last->next != NULL) last = last->next;
        last->next = f->rd_pending;
        f->rd_pending = batch;
        arm(f);
        return;
    }
    f->rd_inflight = true;
}

int api_forward_read_index(api_server *s, uint64_t deadline, member_done_fn cb, void *data)
{
    struct fwd_api *f = s->fwd;
    if (f == NULL || f->stopped) return KERR_STOPPED;
    struct rwait *w = calloc(1, sizeof *w);
    if (w == NULL) return KERR_NOMEM;
    w->cb = cb;
    w->data = data;
    w->deadline = deadline;
    w->next = f->rd_pending;
    f->rd_pending = w;
    rd_send(s);
    return 0;
}

int api_forward_wait_applied(api_server *s, uint64_t index, uint64_t deadline, member_done_fn cb,
                             void *data)
{
    return api_forward_wait_until(s, index, deadline, NULL, cb, data);
}

int api_forward_wait_until(api_server *s, uint64_t index, uint64_t deadline,
                           bool (*ready)(void *data), member_done_fn cb, void *data)
{
    struct fwd_api *f = s->fwd;
    if (f == NULL || f->stopped) return KERR_STOPPED;
    struct rwait *w = calloc(1, sizeof *w);
    if (w == NULL) return KERR_NOMEM;
    w->cb = cb;
    w->data = data;
    w->ready = ready;
    w->deadline = deadline;
    w->index = index;
    w->next = f->applied;
    f->applied = w;
    if (!uv_is_active((uv_handle_t *)&f->check)) uv_check_start(&f->check, on_check);
    return 0;
}

static void on_check(uv_check_t *h)
{
    api_server *s = h->data;
    struct fwd_api *f = s->fwd;
    /* the store's applied index: entries with a command (see
     * internal_read_index) */
    uint64_t applied = mvcc_applied_index(s->store);
    uint64_t now = uv_now(s->loop);
    struct rwait **pp = &f->applied, *ready = NULL, *late = NULL;
    while (*pp != NULL) {
        struct rwait *w = *pp;
        bool done = w->index <= applied || (w->ready != NULL && w->ready(w->data));
        if (done || now >= w->deadline) {
            *pp = w->next;
            if (done) {
                w->next = ready;
                ready = w;
            } else {
                w->next = late;
                late = w;
            }
        } else {
            pp = &w->next;
        }
    }
    if (f->applied == NULL) uv_check_stop(&f->check);
    fire(ready, 0);
    fire(late, KERR_TIMEOUT);
}

static void tick(uv_timer_t *t)
{
    api_server *s = t->data;
    struct fwd_api *f = s->fwd;
    struct fcall *list = f->retry;
    f->retry = NULL;
    /* oldest first */
    struct fcall *rev = NULL;
    while (list != NULL) {
        struct fcall *next = list->next;
        list->next = rev;
        rev = list;
        list = next;
    }
    while (rev != NULL) {
        struct fcall *next = rev->next;
        rev->next = NULL;
        fcall_try(rev);
        rev = next;
    }
    if (!f->rd_inflight) {
        /* reads that could not even be sent: fail the late ones */
        uint64_t now = uv_now(s->loop);
        struct rwait **pp = &f->rd_pending, *late = NULL;
        while (*pp != NULL) {
            struct rwait *w = *pp;
            if (now >= w->deadline) {
                *pp = w->next;
                w->next = late;
                late = w;
            } else {
                pp = &w->next;
            }
        }
        fire(late, KERR_TIMEOUT);
        rd_send(s);
    }
    sweep_retired(s, false);
    if (f->retry == NULL && (f->rd_pending == NULL || f->rd_inflight) && f->retired == NULL)
        uv_timer_stop(t);
}

/* ---- lifecycle ---- */

int api_forward_init(api_server *s)
{
    struct fwd_api *f = calloc(1, sizeof *f);
    if (f == NULL) return KERR_NOMEM;
    uv_timer_init(s->loop, &f->timer);
    uv_check_init(s->loop, &f->check);
    f->timer.data = f->check.data = s;
    s->fwd = f;
    return 0;
}

void api_forward_stop(api_server *s)
{
    struct fwd_api *f = s->fwd;
    if (f == NULL || f->stopped) return;
    f->stopped = true;
    /* forwarded calls in flight end with KERR_STOPPED */
    retire_conn(s);
    sweep_retired(s, true);
    while (f->retry != NULL) {
        struct fcall *c = f->retry;
        f->retry = c->next;
        fcall_finish(c, KERR_STOPPED, NULL);
    }
    struct rwait *w = f->rd_pending;
    f->rd_pending = NULL;
    fire(w, KERR_STOPPED);
    w = f->applied;
    f->applied = NULL;
    fire(w, KERR_STOPPED);
    uv_timer_stop(&f->timer);
    uv_check_stop(&f->check);
    uv_close((uv_handle_t *)&f->timer, NULL);
    uv_close((uv_handle_t *)&f->check, NULL);
}

void api_forward_fini(api_server *s)
{
    free(s->fwd);
    s->fwd = NULL;
}

/* ---- the leader's side ---- */

void internal_propose(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    api_server *s = ctx;
    Ketchpb__InternalRequest *req = ketchpb__internal_request__unpack(NULL, len, msg);
    if (req == NULL) {
        grpc_call_fail(call, KERR_BAD_REQUEST);
        return;
    }
    api_propose_local(s, call, req);
    ketchpb__internal_request__free_unpacked(req, NULL);
}

/* ReadIndex on the leader (after the Raft thesis, 6.4): a barrier
 * confirms that this member still leads and that everything committed
 * before the request arrived is applied here; the answer is then the
 * store's applied index, the last entry that carried a command. Barrier
 * entries are left out on purpose: a follower learns that they committed
 * only with the next heartbeat, and it does not need them for the read. */
struct read_index {
    grpc_call *call;
    api_server *s;
};

static void read_index_done(void *data, int status)
{
    struct read_index *ri = data;
    api_server *s = ri->s;
    if (status != 0) {
        grpc_call_fail(ri->call, status);
    } else {
        Ketchpb__ReadIndexResponse r = KETCHPB__READ_INDEX_RESPONSE__INIT;
        r.index = mvcc_applied_index(s->store);
        grpc_call_reply(ri->call, &r.base);
    }
    grpc_call_unref(ri->call);
    free(ri);
}

void internal_read_index(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    api_server *s = ctx;
    (void)msg, (void)len;
    if (s->member == NULL || s->fwd == NULL) return grpc_call_fail(call, KERR_STOPPED);
    if (!member_is_leader(s->member))
        return grpc_call_fail(call, member_leader_id(s->member) ? KERR_NOT_LEADER : KERR_NO_LEADER);
    struct read_index *ri = malloc(sizeof *ri);
    if (ri == NULL) return grpc_call_fail(call, KERR_NOMEM);
    ri->call = call;
    ri->s = s;
    grpc_call_ref(call);
    int rv = member_read_barrier(s->member, read_index_done, ri);
    if (rv != 0) {
        grpc_call_fail(call, rv);
        grpc_call_unref(call);
        free(ri);
    }
}
