/* ketchctl migrate --from <etcd endpoint> [--to <endpoint>] [--prefix P]
 * [--dest-prefix Q] [--no-follow]: moves a live etcd's keyspace into ketch,
 * as etcdctl make-mirror does, then follows it.
 *
 *  1. copy: every key under the prefix at one revision R of the source
 *     (paged Range requests pinned to R), put into the destination with its
 *     value; a key attached to a lease gets a lease of the same ID in the
 *     destination, granted with the lease's remaining TTL (TimeToLive on the
 *     source); a lease that has expired meanwhile is left out, and so are
 *     its keys;
 *  2. follow: a watch on the source from R+1 applies every later put and
 *     delete to the destination, in order, until SIGINT/SIGTERM; progress
 *     is reported every second and at the end. A put whose lease cannot be
 *     re-created (expired) is applied without it: the source's delete of
 *     the key, when the lease expires there, follows.
 * The destination defaults to --endpoints. Both are plain gRPC (h2c); this
 * file runs its own loop with one connection to each side. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client/client.h"
#include "k8s.h"

static uv_loop_t loop;
static struct client_conn *src, *dst;
static bool stopping;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- synchronous calls (copy phase) ---- */

struct sync_call {
    bool done;
    int status;
    char *message;
    uint8_t *data;
    size_t len;
};

static void on_sync(void *arg, const struct client_reply *r)
{
    struct sync_call *c = arg;
    c->status = r->status;
    c->message = strdup(r->message ? r->message : "");
    if (r->data && r->len) {
        c->data = malloc(r->len);
        memcpy(c->data, r->data, r->len);
        c->len = r->len;
    }
    c->done = true;
}

static void on_timeout(uv_timer_t *t)
{
    (void)t;
}

/* One loop iteration, woken within 50 ms even when nothing happens (so
 * that the callers' deadlines are checked). */
static void run_once(void)
{
    static uv_timer_t t;
    static bool t_ready;
    if (!t_ready) {
        uv_timer_init(&loop, &t);
        t_ready = true;
    }
    uv_timer_start(&t, on_timeout, 50, 0);
    uv_run(&loop, UV_RUN_ONCE);
}

/* Runs one unary call to completion (--command-timeout). */
static int call(struct client_conn *c, const char *path, const ProtobufCMessage *req,
                struct sync_call *out)
{
    memset(out, 0, sizeof *out);
    if (client_unary(c, path, req, on_sync, out) != 0)
        ctl_die(EXIT_BAD_CONN, "migrate: %s: connection closed", client_conn_endpoint(c));
    int64_t end = mono_ms() + g.command_timeout_ms;
    while (!out->done) {
        if (mono_ms() >= end)
            ctl_die(EXIT_BAD_CONN, "migrate: %s: context deadline exceeded", client_conn_endpoint(c));
        run_once();
    }
    return out->status;
}

static void sync_free(struct sync_call *c)
{
    free(c->message);
    free(c->data);
}

static struct client_conn *open_conn(const char *ep)
{
    struct client_conn *c;
    if (client_conn_open(&loop, ep, NULL, NULL, &c) != 0)
        ctl_die(EXIT_BAD_CONN, "migrate: bad endpoint %s", ep);
    /* a Status call proves the server answers */
    Etcdserverpb__StatusRequest sr = ETCDSERVERPB__STATUS_REQUEST__INIT;
    struct sync_call r;
    if (call(c, "/etcdserverpb.Maintenance/Status", &sr.base, &r))
        ctl_die(EXIT_BAD_CONN, "migrate: %s: %s", ep, r.message && *r.message ? r.message : "unavailable");
    sync_free(&r);
    return c;
}

/* ---- leases: source ID -> granted in the destination? ---- */

struct lease_map {
    int64_t id;
    int state; /* 1 granted, -1 expired / not grantable */
};
static struct lease_map *leases;
static size_t nleases, capleases;
static uint64_t leases_made;

static struct lease_map *lease_find(int64_t id)
{
    for (size_t i = 0; i < nleases; i++)
        if (leases[i].id == id)
            return &leases[i];
    return NULL;
}

static struct lease_map *lease_add(int64_t id, int state)
{
    if (nleases == capleases)
        leases = realloc(leases, (capleases = capleases ? 2 * capleases : 64) * sizeof *leases);
    leases[nleases] = (struct lease_map){id, state};
    return &leases[nleases++];
}

/* TimeToLive on the source, Grant with the same ID on the destination. */
static int lease_sync(int64_t id)
{
    struct lease_map *m = lease_find(id);
    if (m)
        return m->state;
    Etcdserverpb__LeaseTimeToLiveRequest tr = ETCDSERVERPB__LEASE_TIME_TO_LIVE_REQUEST__INIT;
    tr.id = id;
    struct sync_call r;
    int64_t ttl = -1;
    if (!call(src, "/etcdserverpb.Lease/LeaseTimeToLive", &tr.base, &r)) {
        Etcdserverpb__LeaseTimeToLiveResponse *t =
            etcdserverpb__lease_time_to_live_response__unpack(NULL, r.len, r.data);
        if (t) {
            ttl = t->ttl;
            etcdserverpb__lease_time_to_live_response__free_unpacked(t, NULL);
        }
    }
    sync_free(&r);
    if (ttl <= 0)
        return lease_add(id, -1)->state;
    Etcdserverpb__LeaseGrantRequest gr = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
    gr.id = id;
    gr.ttl = ttl;
    int st = call(dst, "/etcdserverpb.Lease/LeaseGrant", &gr.base, &r);
    bool exists = st && r.message && strstr(r.message, "lease already exists");
    if (st && !exists)
        fprintf(stderr, "migrate: lease %llx: %s\n", (long long)id, r.message);
    sync_free(&r);
    if (!st)
        leases_made++;
    return lease_add(id, st == 0 || exists ? 1 : -1)->state;
}

/* ---- copy ---- */

static uint64_t n_keys, n_bytes, n_skipped, n_events, n_puts, n_dels;
static int64_t last_rev;
static char *dprefix; /* replaces sprefix in destination keys (NULL: same keys) */
static size_t splen;

static void dst_key(const uint8_t *k, size_t n, ProtobufCBinaryData *out, char **freeme)
{
    *freeme = NULL;
    if (!dprefix) {
        *out = (ProtobufCBinaryData){n, (uint8_t *)k};
        return;
    }
    size_t dl = strlen(dprefix), rest = n >= splen ? n - splen : 0;
    char *b = malloc(dl + rest + 1);
    memcpy(b, dprefix, dl);
    memcpy(b + dl, k + (n - rest), rest);
    *out = (ProtobufCBinaryData){dl + rest, (uint8_t *)b};
    *freeme = b;
}

/* The copy's puts are pipelined (distinct keys of one snapshot: their order
 * does not matter); COPY_WINDOW of them in flight at most. */
#define COPY_WINDOW 64
static int copy_inflight;

static void on_copied(void *arg, const struct client_reply *r)
{
    char *key = arg;
    copy_inflight--;
    if (r->status)
        ctl_die(EXIT_ERR, "migrate: put %s: %s", key, r->message ? r->message : "");
    free(key);
}

static void copy_wait(int below)
{
    int64_t end = mono_ms() + g.command_timeout_ms;
    while (copy_inflight > below) {
        if (mono_ms() >= end)
            ctl_die(EXIT_BAD_CONN, "migrate: %s: context deadline exceeded", client_conn_endpoint(dst));
        run_once();
    }
}

static void put_sync(const Mvccpb__KeyValue *kv)
{
    Etcdserverpb__PutRequest pr = ETCDSERVERPB__PUT_REQUEST__INIT;
    char *fk;
    dst_key(kv->key.data, kv->key.len, &pr.key, &fk);
    pr.value = kv->value;
    if (kv->lease) {
        if (lease_sync(kv->lease) < 0) {
            n_skipped++;
            free(fk);
            return;
        }
        pr.lease = kv->lease;
    }
    copy_wait(COPY_WINDOW - 1);
    char *shown = strndup((const char *)kv->key.data, kv->key.len);
    if (client_unary(dst, "/etcdserverpb.KV/Put", &pr.base, on_copied, shown))
        ctl_die(EXIT_BAD_CONN, "migrate: %s: connection closed", client_conn_endpoint(dst));
    copy_inflight++;
    free(fk);
    n_keys++;
    n_bytes += kv->key.len + kv->value.len;
}

static void report(const char *what);

static int64_t copy_all(const char *prefix)
{
    int64_t last_report = mono_ms();
    size_t el;
    char *end;
    const uint8_t *k0;
    size_t k0len;
    if (*prefix) {
        end = prefix_end((const uint8_t *)prefix, strlen(prefix), &el);
        k0 = (const uint8_t *)prefix;
        k0len = strlen(prefix);
    } else {
        end = strdup("");
        el = 1; /* "\0": every key */
        k0 = (const uint8_t *)"";
        k0len = 1;
    }
    uint8_t *from = malloc(k0len + 1);
    memcpy(from, k0, k0len);
    size_t fromlen = k0len;
    int64_t rev = 0;
    for (;;) {
        Etcdserverpb__RangeRequest rr = ETCDSERVERPB__RANGE_REQUEST__INIT;
        rr.key = (ProtobufCBinaryData){fromlen, from};
        rr.range_end = (ProtobufCBinaryData){el, (uint8_t *)end};
        rr.limit = 500;
        rr.revision = rev;
        struct sync_call r;
        if (call(src, "/etcdserverpb.KV/Range", &rr.base, &r))
            ctl_die(EXIT_ERR, "migrate: range on %s: %s", client_conn_endpoint(src), r.message);
        Etcdserverpb__RangeResponse *resp = etcdserverpb__range_response__unpack(NULL, r.len, r.data);
        sync_free(&r);
        if (!resp)
            ctl_die(EXIT_ERR, "migrate: cannot decode the source's reply");
        if (!rev)
            rev = resp->header ? resp->header->revision : 0;
        for (size_t i = 0; i < resp->n_kvs; i++)
            put_sync(resp->kvs[i]);
        bool more = resp->more && resp->n_kvs;
        if (more) {
            const Mvccpb__KeyValue *lastkv = resp->kvs[resp->n_kvs - 1];
            free(from);
            fromlen = lastkv->key.len + 1;
            from = malloc(fromlen);
            memcpy(from, lastkv->key.data, lastkv->key.len);
            from[lastkv->key.len] = 0; /* the next key after the last one */
        }
        etcdserverpb__range_response__free_unpacked(resp, NULL);
        if (stopping) { /* SIGINT / SIGTERM during the copy */
            copy_wait(0);
            report("interrupted during the copy");
            ctl_die(EXIT_INTERRUPTED, "migrate: interrupted: the copy is incomplete");
        }
        if (mono_ms() - last_report >= 1000) {
            last_rev = rev;
            report("copying");
            last_report = mono_ms();
        }
        if (!more)
            break;
    }
    copy_wait(0);
    free(from);
    free(end);
    return rev;
}

/* ---- follow: watch the source, apply in order ---- */

struct op {
    bool del;
    Mvccpb__KeyValue *kv; /* owned copy: key, value, lease, mod_revision */
};
static struct op *q;
static size_t qhead, qlen, qcap;
static bool inflight;

static void pump(void);

/* Up to BATCH consecutive events on distinct keys go in one Txn (etcd
 * refuses a key twice in one txn); batches are sent one at a time, so the
 * destination sees the source's order. */
#define BATCH 128
struct batch {
    size_t n;
    struct op ops[BATCH];
};

static void free_op(struct op *o)
{
    free(o->kv->key.data);
    free(o->kv->value.data);
    free(o->kv);
}

static void on_applied(void *arg, const struct client_reply *r)
{
    struct batch *b = arg;
    if (r->status) {
        fprintf(stderr, "migrate: applying %zu events from %.*s: %s\n", b->n, (int)b->ops[0].kv->key.len,
                (const char *)b->ops[0].kv->key.data, r->message ? r->message : "");
        if (r->status == CLIENT_STATUS_UNAVAILABLE)
            ctl_die(EXIT_BAD_CONN, "migrate: lost the destination");
    } else {
        for (size_t i = 0; i < b->n; i++) {
            n_events++;
            if (b->ops[i].del)
                n_dels++;
            else
                n_puts++;
            last_rev = b->ops[i].kv->mod_revision;
        }
    }
    for (size_t i = 0; i < b->n; i++)
        free_op(&b->ops[i]);
    free(b);
    inflight = false;
    pump();
}

static int64_t pending_lease; /* synced by the main loop, outside callbacks */

static bool same_key(const Mvccpb__KeyValue *a, const Mvccpb__KeyValue *b)
{
    return a->key.len == b->key.len && !memcmp(a->key.data, b->key.data, a->key.len);
}

/* Sends the next batch. A put with a lease not seen yet waits until the
 * main loop has synced the lease (libuv's loop must not be run from its
 * callbacks). */
static void pump(void)
{
    if (inflight || !qlen)
        return;
    struct batch *b = calloc(1, sizeof *b);
    size_t bytes = 0;
    while (b->n < qlen && b->n < BATCH) {
        const struct op *h = &q[(qhead + b->n) % qcap];
        bytes += h->kv->key.len + h->kv->value.len + 16;
        if (b->n && bytes > (1u << 20)) /* under --max-request-bytes (1.5 MiB by default) */
            break;
        if (!h->del && h->kv->lease && !lease_find(h->kv->lease)) {
            if (!b->n)
                pending_lease = h->kv->lease;
            break;
        }
        bool dup = false;
        for (size_t i = 0; i < b->n && !dup; i++)
            dup = same_key(b->ops[i].kv, h->kv);
        if (dup)
            break;
        b->ops[b->n++] = *h;
    }
    if (!b->n) {
        free(b);
        return;
    }
    qhead = (qhead + b->n) % qcap;
    qlen -= b->n;
    Etcdserverpb__RequestOp *ops = calloc(b->n, sizeof *ops);
    Etcdserverpb__RequestOp **opp = calloc(b->n, sizeof *opp);
    Etcdserverpb__PutRequest *puts = calloc(b->n, sizeof *puts);
    Etcdserverpb__DeleteRangeRequest *dels = calloc(b->n, sizeof *dels);
    char **keys = calloc(b->n, sizeof *keys);
    for (size_t i = 0; i < b->n; i++) {
        const struct op *o = &b->ops[i];
        etcdserverpb__request_op__init(&ops[i]);
        opp[i] = &ops[i];
        if (o->del) {
            etcdserverpb__delete_range_request__init(&dels[i]);
            dst_key(o->kv->key.data, o->kv->key.len, &dels[i].key, &keys[i]);
            ops[i].request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
            ops[i].request_delete_range = &dels[i];
        } else {
            etcdserverpb__put_request__init(&puts[i]);
            dst_key(o->kv->key.data, o->kv->key.len, &puts[i].key, &keys[i]);
            puts[i].value = o->kv->value;
            if (o->kv->lease && lease_find(o->kv->lease)->state > 0)
                puts[i].lease = o->kv->lease;
            ops[i].request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
            ops[i].request_put = &puts[i];
        }
    }
    Etcdserverpb__TxnRequest tr = ETCDSERVERPB__TXN_REQUEST__INIT;
    tr.n_success = b->n;
    tr.success = opp;
    int rc = client_unary(dst, "/etcdserverpb.KV/Txn", &tr.base, on_applied, b);
    for (size_t i = 0; i < b->n; i++)
        free(keys[i]);
    free(keys);
    free(ops);
    free(opp);
    free(puts);
    free(dels);
    if (rc)
        ctl_die(EXIT_BAD_CONN, "migrate: lost the destination");
    inflight = true;
}

static void enqueue(bool del, const Mvccpb__KeyValue *kv)
{
    if (qlen == qcap) {
        size_t nc = qcap ? 2 * qcap : 256;
        struct op *n = malloc(nc * sizeof *n);
        for (size_t i = 0; i < qlen; i++)
            n[i] = q[(qhead + i) % qcap];
        free(q);
        q = n;
        qcap = nc;
        qhead = 0;
    }
    Mvccpb__KeyValue *c = calloc(1, sizeof *c);
    c->key.data = malloc(kv->key.len + 1);
    memcpy(c->key.data, kv->key.data, kv->key.len);
    c->key.len = kv->key.len;
    c->value.data = malloc(kv->value.len + 1);
    if (kv->value.len)
        memcpy(c->value.data, kv->value.data, kv->value.len);
    c->value.len = kv->value.len;
    c->lease = kv->lease;
    c->mod_revision = kv->mod_revision;
    q[(qhead + qlen) % qcap] = (struct op){del, c};
    qlen++;
}

static bool watch_ended;
static char *watch_error;

static void on_watch_msg(void *arg, const uint8_t *data, size_t len)
{
    Etcdserverpb__WatchResponse *w = etcdserverpb__watch_response__unpack(NULL, len, data);
    if (!w)
        return;
    if (w->compact_revision) {
        watch_error = strdup("the source compacted the revisions to follow from: copy again");
        watch_ended = true;
    } else if (w->canceled) {
        watch_error = strdup(w->cancel_reason && *w->cancel_reason ? w->cancel_reason : "watch canceled by the source");
        watch_ended = true;
    }
    for (size_t i = 0; i < w->n_events; i++)
        if (w->events[i]->kv)
            enqueue(w->events[i]->type == MVCCPB__EVENT__EVENT_TYPE__DELETE, w->events[i]->kv);
    etcdserverpb__watch_response__free_unpacked(w, NULL);
    pump();
}

static void on_watch_close(void *arg, const struct client_reply *r)
{
    if (!stopping && !watch_error)
        watch_error = strdup(r->message && *r->message ? r->message : "the source closed the watch");
    watch_ended = true;
}

static void on_signal(uv_signal_t *s, int signum)
{
    stopping = true;
    uv_stop(&loop);
}

static void report(const char *what)
{
    fprintf(stdout, "migrate: %s: %llu keys copied (%llu bytes, %llu leases, %llu skipped), %llu "
                    "events followed (%llu puts, %llu deletes), at revision %lld\n",
            what, (unsigned long long)n_keys, (unsigned long long)n_bytes,
            (unsigned long long)leases_made, (unsigned long long)n_skipped,
            (unsigned long long)n_events, (unsigned long long)n_puts, (unsigned long long)n_dels,
            (long long)last_rev);
    fflush(stdout);
}

static void on_tick(uv_timer_t *t)
{
    static uint64_t last_events = UINT64_MAX;
    if (n_events != last_events) {
        report("following");
        last_events = n_events;
    }
}

/* The lease a followed put carried, copied once no transaction is in flight. */
static void sync_pending_lease(void)
{
    if (pending_lease && !inflight) {
        int64_t id = pending_lease;
        pending_lease = 0;
        lease_sync(id);
        pump();
    }
}

int cmd_migrate(int argc, char **argv)
{
    const char *from = "", *to = "", *prefix = "", *dest_prefix = "";
    bool no_follow = false;
    struct flag fl[] = {{"from", 0, F_STR, &from, false},
                        {"to", 0, F_STR, &to, false},
                        {"prefix", 0, F_STR, &prefix, false},
                        {"dest-prefix", 0, F_STR, &dest_prefix, false},
                        {"no-follow", 0, F_BOOL, &no_follow, false},
                        FEND};
    ctl_parse(argc, argv, fl);
    ctl_init_display();
    if (!*from)
        ctl_die(EXIT_BAD_ARGS, "migrate needs --from <etcd endpoint>");
    if (!*to)
        to = g.endpoints[0];
    if ((g.cacert && *g.cacert) || (g.cert && *g.cert) || (g.key && *g.key) ||
        !strncmp(from, "https://", 8) || !strncmp(to, "https://", 8))
        ctl_die(EXIT_BAD_ARGS, "migrate: TLS is not supported yet (plain http endpoints only)");
    if (g.user && *g.user)
        ctl_die(EXIT_BAD_ARGS, "migrate: authentication (--user) is not supported yet");
    if (*dest_prefix) {
        dprefix = strdup(dest_prefix);
        splen = strlen(prefix);
    }
    signal(SIGPIPE, SIG_IGN);
    uv_loop_init(&loop);
    src = open_conn(from);
    dst = open_conn(to);
    fprintf(stdout, "migrate: copying %s%s%s from %s to %s\n", *prefix ? "keys under " : "every key",
            *prefix ? prefix : "", "", from, to);
    fflush(stdout);
    static uv_signal_t sint, sterm;
    uv_signal_init(&loop, &sint);
    uv_signal_start(&sint, on_signal, SIGINT);
    uv_signal_init(&loop, &sterm);
    uv_signal_start(&sterm, on_signal, SIGTERM);
    int64_t rev = copy_all(prefix);
    last_rev = rev;
    report("copied");
    if (no_follow)
        return 0;

    /* follow from rev+1 */
    Etcdserverpb__WatchCreateRequest cr = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
    size_t el;
    char *end;
    if (*prefix) {
        end = prefix_end((const uint8_t *)prefix, strlen(prefix), &el);
        cr.key = (ProtobufCBinaryData){strlen(prefix), (uint8_t *)prefix};
    } else {
        end = strdup("");
        el = 1;
        cr.key = (ProtobufCBinaryData){1, (uint8_t *)""};
    }
    cr.range_end = (ProtobufCBinaryData){el, (uint8_t *)end};
    cr.start_revision = rev + 1;
    Etcdserverpb__WatchRequest wr = ETCDSERVERPB__WATCH_REQUEST__INIT;
    wr.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
    wr.create_request = &cr;
    struct client_stream *ws;
    if (client_stream_open(src, "/etcdserverpb.Watch/Watch", on_watch_msg, on_watch_close, NULL, &ws) ||
        client_stream_send(ws, &wr.base))
        ctl_die(EXIT_BAD_CONN, "migrate: cannot watch %s", from);
    fprintf(stdout, "migrate: following %s from revision %lld (Ctrl-C to stop)\n", from, (long long)rev + 1);
    fflush(stdout);
    uv_timer_t tick;
    uv_timer_init(&loop, &tick);
    uv_timer_start(&tick, on_tick, 1000, 1000);
    while (!stopping && !watch_ended) {
        uv_run(&loop, UV_RUN_ONCE);
        sync_pending_lease();
    }
    /* apply what was received before stopping */
    int64_t drain_end = mono_ms() + g.command_timeout_ms;
    stopping = false;
    while ((inflight || qlen) && mono_ms() < drain_end && !watch_error) {
        uv_timer_start(&tick, on_tick, 50, 1000);
        uv_run(&loop, UV_RUN_ONCE);
        sync_pending_lease();
    }
    report(watch_error ? "failed" : "stopped");
    if (watch_error)
        ctl_die(EXIT_ERR, "migrate: %s", watch_error);
    free(end);
    return 0;
}
