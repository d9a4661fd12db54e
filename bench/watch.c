/* watch-latency (etcd/tools/benchmark/cmd/watch_latency.go): --streams watch
 * streams with --watchers-per-stream watchers each, all on one key; then
 * --put-total puts at --put-rate per second. Recorded: each put's latency,
 * and for each watcher and put, the time from the put being sent to the
 * event arriving. Unlike etcd's tool the puts are sent at the rate without
 * waiting for the events of the previous put (an open loop), so a slow
 * watch path shows up as latency instead of as a lower put rate.
 *
 * The put's sequence number travels in the first 8 bytes of the value. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

#define PATH_PUT "/etcdserverpb.KV/Put"
#define PATH_WATCH "/etcdserverpb.Watch/Watch"

enum { OP_PUT, OP_WATCH };

const struct workload_ops bench_watch_ops = {.ops = {"put", "watch"}, .nops = 2};

struct wstream {
    struct bench *b;
    struct client_stream *s;
    int created;
    int open;
};

static struct {
    struct bench *b;
    struct wstream *streams;
    int nstreams;
    int created, want_created;
    uint64_t *put_t0; /* by sequence number */
    uint8_t *key, *val;
    int sent, put_done;
    uint64_t events, want_events;
    uint64_t t_puts;
    uv_timer_t tick;
    int finished;
} w;

static void finish(void)
{
    if (w.finished)
        return;
    w.finished = 1;
    w.b->t_end = uv_hrtime();
    uv_timer_stop(&w.tick);
    uv_timer_stop(&w.b->progress);
    uv_stop(w.b->loop);
}

static void check_done(void)
{
    if (w.put_done == w.b->o->put_total && w.events >= w.want_events)
        finish();
}

static void put_cb(void *arg, const struct client_reply *r)
{
    uint64_t seq = (uint64_t)(uintptr_t)arg;
    struct bench *b = w.b;
    b->requests++;
    if (r->status)
        bench_count_error(b, r->status, r->message);
    else
        bench_record(b, OP_PUT, uv_hrtime() - w.put_t0[seq]);
    w.put_done++;
    if (r->status) /* its events will never come */
        w.want_events -= (uint64_t)w.want_created;
    check_done();
}

static void send_put(void)
{
    struct bench *b = w.b;
    uint64_t seq = (uint64_t)w.sent++;
    memcpy(w.val, &seq, 8);
    Etcdserverpb__PutRequest req = ETCDSERVERPB__PUT_REQUEST__INIT;
    req.key.data = w.key;
    req.key.len = (size_t)b->o->key_size;
    req.value.data = w.val;
    req.value.len = (size_t)b->o->val_size;
    w.put_t0[seq] = uv_hrtime();
    b->started++;
    int rc = client_unary(b->conns[seq % (uint64_t)b->o->conns], PATH_PUT, &req.base, put_cb,
                          (void *)(uintptr_t)seq);
    if (rc)
        bench_die("cannot send a put (error %d)", rc);
}

/* Sends the puts that are due by now at --put-rate. */
static void tick_cb(uv_timer_t *t)
{
    struct bench_opts *o = w.b->o;
    double el = (double)(uv_hrtime() - w.t_puts) / 1e9;
    int due = o->put_rate > 0 ? (int)(el * o->put_rate) + 1 : o->put_total;
    if (due > o->put_total)
        due = o->put_total;
    while (w.sent < due)
        send_put();
    if (w.sent == o->put_total)
        uv_timer_stop(t);
}

static void start_puts(void)
{
    fprintf(stderr, "ketch-bench: %d watchers ready; putting\n", w.created);
    w.want_events = (uint64_t)w.created * (uint64_t)w.b->o->put_total;
    w.want_created = w.created;
    bench_progress_start(w.b);
    w.t_puts = w.b->t_start;
    uint64_t period = w.b->o->put_rate > 0 && w.b->o->put_rate < 1000
                          ? (uint64_t)(1000 / w.b->o->put_rate)
                          : 1;
    if (period == 0)
        period = 1;
    uv_timer_start(&w.tick, tick_cb, 0, period);
}

static void on_msg(void *arg, const uint8_t *data, size_t len)
{
    struct wstream *ws = arg;
    uint64_t now = uv_hrtime();
    Etcdserverpb__WatchResponse *r = etcdserverpb__watch_response__unpack(NULL, len, data);
    if (!r) {
        bench_count_error(w.b, -1, "cannot decode WatchResponse");
        return;
    }
    if (r->created) {
        ws->created++;
        if (++w.created == w.want_created)
            start_puts();
    }
    if (r->canceled)
        bench_count_error(w.b, -1, r->cancel_reason && *r->cancel_reason ? r->cancel_reason
                                                                          : "watch canceled");
    for (size_t i = 0; i < r->n_events; i++) {
        const Mvccpb__Event *ev = r->events[i];
        if (!ev->kv || ev->kv->value.len < 8)
            continue;
        uint64_t seq;
        memcpy(&seq, ev->kv->value.data, 8);
        if (seq >= (uint64_t)w.sent)
            continue; /* a put of an earlier run on the same key */
        bench_record(w.b, OP_WATCH, now - w.put_t0[seq]);
        w.b->requests++;
        w.events++;
    }
    etcdserverpb__watch_response__free_unpacked(r, NULL);
    check_done();
}

static void on_close(void *arg, const struct client_reply *r)
{
    struct wstream *ws = arg;
    ws->open = 0;
    if (!w.finished) {
        bench_count_error(w.b, r->status, r->message[0] ? r->message : "watch stream ended");
        bench_die("watch stream ended early: status %d %s", r->status, r->message);
    }
}

int bench_watch_latency(struct bench *b)
{
    struct bench_opts *o = b->o;
    b->w = &bench_watch_ops;
    memset(&w, 0, sizeof w);
    w.b = b;
    w.nstreams = o->streams;
    w.want_created = o->streams * o->watchers_per_stream;
    w.streams = calloc((size_t)o->streams, sizeof *w.streams);
    w.put_t0 = calloc((size_t)o->put_total, sizeof *w.put_t0);
    w.key = malloc((size_t)o->key_size);
    w.val = calloc(1, (size_t)o->val_size);
    if (!w.streams || !w.put_t0 || !w.key || !w.val)
        bench_die("out of memory");
    uint64_t x = o->seed ? o->seed : uv_hrtime();
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < o->key_size; i++)
        w.key[i] = (uint8_t)hex[bench_rand(&x) % 16];
    uv_timer_init(b->loop, &w.tick);

    Etcdserverpb__WatchCreateRequest cr = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
    cr.key.data = w.key;
    cr.key.len = (size_t)o->key_size;
    Etcdserverpb__WatchRequest wr = ETCDSERVERPB__WATCH_REQUEST__INIT;
    wr.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
    wr.create_request = &cr;
    for (int i = 0; i < o->streams; i++) {
        struct wstream *ws = &w.streams[i];
        ws->b = b;
        int rc = client_stream_open(b->conns[i % o->conns], PATH_WATCH, on_msg, on_close, ws,
                                    &ws->s);
        if (rc)
            bench_die("cannot open a watch stream (error %d)", rc);
        ws->open = 1;
        for (int j = 0; j < o->watchers_per_stream; j++)
            if (client_stream_send(ws->s, &wr.base))
                bench_die("cannot send a watch create request");
    }
    /* Stall check while waiting for the watchers, too. */
    bench_progress_start(b);
    uv_run(b->loop, UV_RUN_DEFAULT);
    if (!w.finished)
        bench_die("watch-latency: the event loop ended early");
    if (isatty(2))
        fputc('\n', stderr);
    for (int i = 0; i < o->streams; i++)
        if (w.streams[i].open)
            client_stream_cancel(w.streams[i].s);
    uv_close((uv_handle_t *)&w.tick, NULL);
    /* Let the cancels go out and the streams end before closing. */
    uv_run(b->loop, UV_RUN_NOWAIT);
    return 0;
}

void bench_watch_cleanup(void)
{
    free(w.streams);
    free(w.put_t0);
    free(w.key);
    free(w.val);
}
