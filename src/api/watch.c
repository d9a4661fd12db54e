/* etcdserverpb.Watch: one bidirectional stream carries many watchers, as
 * etcd's serverWatchStream (etcdserver/api/v3rpc/watch.go, v3.5).
 *
 * As etcd:
 *  - create: key "" means "\0"; range_end "" one key, "\0" every key >=
 *    key; a range with key >= range_end is refused ("mvcc: watcher range
 *    is empty"), so is a client-chosen ID already in use on the stream
 *    ("mvcc: duplicate watch ID provided on the WatchStream"): a response
 *    with created and canceled set, watch_id -1. ID 0 asks the server to
 *    pick: the lowest free ID counting from 0 per stream. The created
 *    response (header revision = the store revision) comes before any
 *    event of the watcher; start_revision 0 means "from the next".
 *  - cancel of a live ID: canceled response; of an unknown ID: nothing.
 *  - progress request (etcd >= 3.5.8): when every watcher of the stream is
 *    synced, one response with watch_id -1 and the store revision, no
 *    events; otherwise it is deferred until they are. A stream without
 *    watchers gets nothing.
 *  - progress_notify: every --experimental-watch-progress-notify-interval
 *    a synced watcher that sent no events since the last tick gets an
 *    empty response with its ID and the store revision.
 *  - fragment: a response of --max-request-bytes + 512 KiB or more is
 *    split into responses of whole events, all but the last with fragment
 *    set (etcd's sendFragments).
 *  - events: header revision is the events' revision (live) or the store
 *    revision (catch-up); a watcher whose start was compacted gets one
 *    response with compact_revision and canceled set (header revision 0).
 *
 * Slow clients: a watcher whose stream has more than WATCH_MAX_PENDING
 * bytes queued is not sent to; the hub marks it unsynced and catches it up
 * from the history table once the queue has drained (polled every
 * WATCH_SYNC_MS, etcd's syncWatchersLoop interval).
 *
 * A client half-close (CloseSend) does not end the stream: as etcd's
 * recvLoop returning nil on io.EOF, the watchers keep sending events until
 * the client cancels the stream or goes away. */
#include "api/watch.h"

#include "api/auth.h"
#include <stdlib.h>
#include <string.h>

#include "util/errors.h"
#include "util/log.h"
#include "watch/watch.h"

#define WATCH_SYNC_MS 100
#define WATCH_MAX_PENDING (4u << 20)
#define DEFAULT_PROGRESS_MS (10 * 60 * 1000)
#define WATCH_GRPC_OVERHEAD (512 * 1024) /* etcd v3rpc grpcOverheadBytes */

struct wstream;

struct wentry {
    struct wstream *st;
    int64_t id;
    watch_watcher *w;
    bool progress;     /* progress_notify asked */
    bool progress_due; /* etcd's sws.progress[id] */
    bool fragment;
};

struct wstream {
    api_server *s;
    grpc_call *call;
    u64map entries; /* id key (see id_key) -> struct wentry * */
    int64_t next_id;
    bool deferred_progress;
    struct wstream *prev, *next;
};

struct watch_api {
    watch_hub *hub;
    uint64_t progress_ms;
    bool timers_started, stopped;
    uv_timer_t sync_timer, progress_timer;
    struct wstream *streams;
    size_t ndeferred;
};

static uint64_t id_key(int64_t id) { return (uint64_t)id ^ 0x8000000000000000ULL; }

/* ---- sending ---- */

static size_t varint_len(size_t v)
{
    size_t n = 1;
    while (v >= 0x80) v >>= 7, n++;
    return n;
}

/* etcd's sendFragments when the watcher asked for fragments. */
static void send_resp(struct wstream *st, Etcdserverpb__WatchResponse *r, bool fragment)
{
    /* as etcd's watch server: --max-request-bytes plus gRPC's overhead allowance */
    size_t max = st->s->max_request_bytes + WATCH_GRPC_OVERHEAD;
    if (!fragment || r->n_events < 2 ||
        etcdserverpb__watch_response__get_packed_size(r) < max) {
        grpc_call_send_pb(st->call, &r->base);
        return;
    }
    Etcdserverpb__WatchResponse cur = *r;
    cur.fragment = 1;
    cur.n_events = 0;
    size_t base = etcdserverpb__watch_response__get_packed_size(&cur);
    size_t idx = 0;
    for (;;) {
        size_t start = idx, sz = base, count = 0;
        for (; idx < r->n_events; idx++) {
            size_t es = mvccpb__event__get_packed_size(r->events[idx]);
            es += 1 + varint_len(es);
            if (count >= 1 && sz + es >= max) break;
            sz += es;
            count++;
        }
        cur.events = r->events + start;
        cur.n_events = count;
        if (idx == r->n_events) cur.fragment = 0;
        grpc_call_send_pb(st->call, &cur.base);
        if (!cur.fragment) break;
    }
}

static void send_simple(struct wstream *st, int64_t rev, int64_t id, bool created, bool canceled,
                        const char *reason)
{
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    api_fill_header(st->s, &h, rev);
    Etcdserverpb__WatchResponse r = ETCDSERVERPB__WATCH_RESPONSE__INIT;
    r.header = &h;
    r.watch_id = id;
    r.created = created;
    r.canceled = canceled;
    if (reason) r.cancel_reason = (char *)reason;
    grpc_call_send_pb(st->call, &r.base);
}

/* etcd's RequestProgressAll / progressIfSync: true if it was answered. */
static bool progress_all(struct wstream *st)
{
    u64map *m = &st->entries;
    for (size_t i = 0; i < m->cap; i++)
        if (m->keys[i] && !watch_watcher_synced(((struct wentry *)m->vals[i])->w)) return false;
    if (m->len > 0) send_simple(st, mvcc_revision(st->s->store), -1, false, false, NULL);
    return true;
}

static void set_deferred(struct wstream *st, bool on)
{
    if (st->deferred_progress == on) return;
    st->deferred_progress = on;
    if (on) st->s->watch->ndeferred++;
    else st->s->watch->ndeferred--;
}

/* ---- the hub's sink ---- */

static bool sink_congested(void *user)
{
    struct wentry *e = user;
    return grpc_call_pending_bytes(e->st->call) > WATCH_MAX_PENDING;
}

static void sink_deliver(void *user, int64_t rev, Mvccpb__Event **evs, size_t n, int64_t crev)
{
    struct wentry *e = user;
    struct wstream *st = e->st;
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    api_fill_header(st->s, &h, rev);
    Etcdserverpb__WatchResponse r = ETCDSERVERPB__WATCH_RESPONSE__INIT;
    r.header = &h;
    r.watch_id = e->id;
    r.events = evs;
    r.n_events = n;
    r.compact_revision = crev;
    r.canceled = crev != 0;
    send_resp(st, &r, e->fragment);
    if (n > 0 && e->progress) e->progress_due = false;
    if (st->deferred_progress && progress_all(st)) set_deferred(st, false);
}

static const struct watch_sink sink = {sink_congested, sink_deliver};

/* ---- timers ---- */

static void sync_tick(uv_timer_t *t)
{
    struct watch_api *wa = t->data;
    watch_hub_sync(wa->hub);
    if (wa->ndeferred == 0) return;
    for (struct wstream *st = wa->streams; st; st = st->next)
        if (st->deferred_progress && progress_all(st)) set_deferred(st, false);
}

static void progress_tick(uv_timer_t *t)
{
    struct watch_api *wa = t->data;
    for (struct wstream *st = wa->streams; st; st = st->next) {
        u64map *m = &st->entries;
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->keys[i]) continue;
            struct wentry *e = m->vals[i];
            if (!e->progress) continue;
            if (e->progress_due && watch_watcher_synced(e->w))
                send_simple(st, mvcc_revision(st->s->store), e->id, false, false, NULL);
            e->progress_due = true;
        }
    }
}

static void start_timers(struct watch_api *wa, uv_loop_t *loop)
{
    if (wa->timers_started || wa->stopped) return;
    wa->timers_started = true;
    uv_timer_init(loop, &wa->sync_timer);
    uv_timer_init(loop, &wa->progress_timer);
    wa->sync_timer.data = wa->progress_timer.data = wa;
    uv_timer_start(&wa->sync_timer, sync_tick, WATCH_SYNC_MS, WATCH_SYNC_MS);
    uv_timer_start(&wa->progress_timer, progress_tick, wa->progress_ms, wa->progress_ms);
}

/* Runs a catch-up on the next loop iteration (then every WATCH_SYNC_MS). */
static void sync_soon(struct watch_api *wa)
{
    if (wa->timers_started && !wa->stopped)
        uv_timer_start(&wa->sync_timer, sync_tick, 0, WATCH_SYNC_MS);
}

/* ---- life cycle ---- */

int watch_api_init(api_server *s, uint64_t progress_ms)
{
    struct watch_api *wa = calloc(1, sizeof *wa);
    if (wa == NULL) return KERR_NOMEM;
    int rv = watch_hub_new(&wa->hub, s->store);
    if (rv != 0) {
        free(wa);
        return rv;
    }
    wa->progress_ms = progress_ms ? progress_ms : DEFAULT_PROGRESS_MS;
    s->watch = wa;
    return 0;
}

void watch_api_stop(api_server *s)
{
    struct watch_api *wa = s->watch;
    if (wa == NULL || wa->stopped) return;
    wa->stopped = true;
    if (wa->timers_started) {
        uv_close((uv_handle_t *)&wa->sync_timer, NULL);
        uv_close((uv_handle_t *)&wa->progress_timer, NULL);
    }
}

static void stream_free(struct wstream *st)
{
    struct watch_api *wa = st->s->watch;
    u64map *m = &st->entries;
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->keys[i]) continue;
        struct wentry *e = m->vals[i];
        watch_hub_cancel(wa->hub, e->w);
        free(e);
    }
    u64map_free(m);
    set_deferred(st, false);
    if (st->prev) st->prev->next = st->next;
    else wa->streams = st->next;
    if (st->next) st->next->prev = st->prev;
    free(st);
}

void watch_api_fini(api_server *s)
{
    struct watch_api *wa = s->watch;
    if (wa == NULL) return;
    while (wa->streams) stream_free(wa->streams);
    watch_hub_free(wa->hub);
    free(wa);
    s->watch = NULL;
}

/* ---- requests ---- */

static void do_create(struct wstream *st, const Etcdserverpb__WatchCreateRequest *c)
{
    api_server *s = st->s;
    static const uint8_t zero = 0;
    struct watch_opts o = {0};
    o.key = c->key.len ? c->key.data : &zero;
    o.klen = c->key.len ? c->key.len : 1;
    o.end = c->range_end.data;
    o.elen = c->range_end.len;
    o.end_kind = c->range_end.len == 0                                  ? WATCH_KEY
                 : c->range_end.len == 1 && c->range_end.data[0] == 0 ? WATCH_FROM
                                                                      : WATCH_RANGE;
    int64_t wsrev = mvcc_revision(s->store);
    const char *err = NULL;
    if (o.end_kind == WATCH_RANGE) {
        size_t n = o.klen < o.elen ? o.klen : o.elen;
        int cmp = memcmp(o.key, o.end, n);
        if (cmp > 0 || (cmp == 0 && o.klen >= o.elen)) err = "mvcc: watcher range is empty";
    }
    int64_t id = c->watch_id;
    if (err == NULL) {
        /* as etcd's isWatchPermitted: read access to the range, at create */
        ProtobufCBinaryData k = {o.klen, (uint8_t *)o.key};
        int rv = auth_api_check_range(s, st->call, k, c->range_end);
        /* the reason is the text of the gRPC error, as etcd's
         * rpctypes.ErrGRPC*.Error() */
        if (rv == KERR_INVALID_AUTH_TOKEN)
            err = "rpc error: code = Unauthenticated desc = etcdserver: invalid auth token";
        else if (rv == KERR_AUTH_OLD_REVISION)
            err = "rpc error: code = InvalidArgument desc = etcdserver: revision of auth store "
                  "is old";
        else if (rv == KERR_USER_EMPTY)
            err = "rpc error: code = InvalidArgument desc = etcdserver: user name is empty";
        else if (rv != 0)
            err = "rpc error: code = PermissionDenied desc = etcdserver: permission denied";
    }
    if (err == NULL) {
        if (id == 0) {
            while (u64map_get(&st->entries, id_key(st->next_id)) != NULL) st->next_id++;
            id = st->next_id++;
        } else if (u64map_get(&st->entries, id_key(id)) != NULL || id_key(id) == 0) {
            err = "mvcc: duplicate watch ID provided on the WatchStream";
        }
    }
    if (err != NULL) {
        send_simple(st, wsrev, -1, true, true, err);
        return;
    }
    o.start_rev = c->start_revision ? c->start_revision : wsrev + 1;
    for (size_t i = 0; i < c->n_filters; i++) {
        if (c->filters[i] == ETCDSERVERPB__WATCH_CREATE_REQUEST__FILTER_TYPE__NOPUT)
            o.filters |= WATCH_NOPUT;
        else if (c->filters[i] == ETCDSERVERPB__WATCH_CREATE_REQUEST__FILTER_TYPE__NODELETE)
            o.filters |= WATCH_NODELETE;
    }
    o.prev_kv = c->prev_kv;

    struct wentry *e = calloc(1, sizeof *e);
    if (e == NULL || u64map_put(&st->entries, id_key(id), e) != 0) {
        free(e);
        grpc_call_fail(st->call, KERR_NOMEM);
        return;
    }
    e->st = st;
    e->id = id;
    e->progress = c->progress_notify;
    e->progress_due = true;
    e->fragment = c->fragment;
    if (watch_hub_add(s->watch->hub, &o, &sink, e, &e->w) != 0) {
        u64map_del(&st->entries, id_key(id));
        free(e);
        grpc_call_fail(st->call, KERR_NOMEM);
        return;
    }
    send_simple(st, wsrev, id, true, false, NULL);
    if (!watch_watcher_synced(e->w)) sync_soon(s->watch);
}

static void do_cancel(struct wstream *st, int64_t id)
{
    struct wentry *e = u64map_del(&st->entries, id_key(id));
    if (e == NULL) return;
    watch_hub_cancel(st->s->watch->hub, e->w);
    free(e);
    send_simple(st, mvcc_revision(st->s->store), id, false, true, NULL);
}

/* The client sent its last request: nothing changes for its watchers. */
static void watch_half_close(grpc_call *call, void *ctx)
{
    (void)call;
    (void)ctx;
}

void watch_watch(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    api_server *s = ctx;
    struct wstream *st = grpc_call_get_data(call);
    if (st == NULL) {
        if (s->watch == NULL || s->watch->stopped) {
            grpc_call_fail(call, KERR_STOPPED);
            return;
        }
        st = calloc(1, sizeof *st);
        if (st == NULL) {
            grpc_call_fail(call, KERR_NOMEM);
            return;
        }
        st->s = s;
        st->call = call;
        st->next = s->watch->streams;
        if (st->next) st->next->prev = st;
        s->watch->streams = st;
        grpc_call_set_data(call, st);
        grpc_call_set_half_close(call, watch_half_close);
        start_timers(s->watch, s->loop);
    }
    Etcdserverpb__WatchRequest *req = etcdserverpb__watch_request__unpack(NULL, len, msg);
    if (req == NULL) {
        api_fail_unmarshal(call);
        return;
    }
    switch (req->request_union_case) {
    case ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST:
        if (req->create_request) do_create(st, req->create_request);
        break;
    case ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CANCEL_REQUEST:
        if (req->cancel_request) do_cancel(st, req->cancel_request->watch_id);
        break;
    case ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_PROGRESS_REQUEST:
        if (req->progress_request && !st->deferred_progress && !progress_all(st))
            set_deferred(st, true);
        break;
    default:
        break; /* as etcd: ignored */
    }
    etcdserverpb__watch_request__free_unpacked(req, NULL);
}

void watch_watch_close(grpc_call *call, void *ctx)
{
    (void)ctx;
    struct wstream *st = grpc_call_get_data(call);
    if (st != NULL) {
        grpc_call_set_data(call, NULL);
        stream_free(st);
    }
    if (grpc_call_alive(call)) grpc_call_finish(call, GRPC_OK, NULL);
}

void watch_api_store_replaced(api_server *s, int64_t old_rev)
{
    struct watch_api *wa = s->watch;
    if (wa == NULL || wa->hub == NULL) return;
    watch_hub_resync(wa->hub, old_rev + 1);
    watch_hub_sync(wa->hub);
}
