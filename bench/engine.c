/* The load engine: --conns connections, --clients slots each keeping one
 * request in flight, round-robin over the connections (as etcd's benchmark
 * shares its clients over its connections). A slot's state lives in the
 * slot, so steady-state requests allocate nothing here. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

void bench_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("ketch-bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

uint64_t bench_rand(uint64_t *x)
{
    /* xorshift64* */
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    return *x * UINT64_C(2685821657736338717);
}

void bench_count_error(struct bench *b, int status, const char *message)
{
    b->errors++;
    for (int i = 0; i < b->nerrs; i++) {
        if (b->errs[i].status == status && strcmp(b->errs[i].message, message) == 0) {
            b->errs[i].count++;
            return;
        }
    }
    if (b->nerrs == BENCH_MAX_ERRS) {
        b->err_other++;
        return;
    }
    struct err_count *e = &b->errs[b->nerrs++];
    e->status = status;
    snprintf(e->message, sizeof e->message, "%s", message);
    e->count = 1;
}

void bench_record(struct bench *b, int op, uint64_t ns)
{
    client_hist_record(&b->hist[op], ns);
    b->done[op]++;
}

static void reply_cb(void *arg, const struct client_reply *r)
{
    struct slot *s = arg;
    struct bench *b = s->b;
    uint64_t now = uv_hrtime();
    b->requests++;
    if (r->status != 0)
        bench_count_error(b, r->status, r->message);
    else
        bench_record(b, s->op, now - s->t0);
    if (b->fatal)
        return;
    s->cb(s, r);
}

void bench_call(struct slot *s, int op, const char *path, const ProtobufCMessage *req, slot_cb cb)
{
    s->op = op;
    s->cb = cb;
    s->t0 = uv_hrtime();
    int rc = client_unary(s->conn, path, req, reply_cb, s);
    if (rc)
        bench_die("cannot start a request on %s (error %d)", client_conn_endpoint(s->conn), rc);
}

static void phase_end_if_idle(struct bench *b)
{
    if (b->running_slots == 0 && b->phase_active) {
        b->phase_active = 0;
        b->t_end = uv_hrtime();
        uv_timer_stop(&b->progress);
        uv_timer_stop(&b->deadline);
        uv_stop(b->loop);
    }
}

void bench_next(struct slot *s)
{
    struct bench *b = s->b;
    if (b->stopping || (b->o->total && b->started >= b->o->total)) {
        s->idle = 1;
        b->running_slots--;
        phase_end_if_idle(b);
        return;
    }
    b->started++;
    s->n++;
    b->w->start(s);
}

static uint64_t total_done(struct bench *b)
{
    return b->requests;
}

static void progress_cb(uv_timer_t *t)
{
    struct bench *b = t->data;
    uint64_t now = uv_hrtime();
    double el = (double)(now - b->t_start) / 1e9;
    uint64_t d = total_done(b);
    double rate = el > b->last_el ? (double)(d - b->last_d) / (el - b->last_el) : 0;
    if (d == b->last_progress_done) {
        b->stalled_for += 1;
        if (b->stalled_for >= b->o->timeout)
            bench_die("no progress for %.0f s (%llu requests still in flight); "
                      "is the server at %s stuck?",
                      b->stalled_for, (unsigned long long)(b->started - b->requests),
                      b->o->endpoints[0]);
    } else {
        b->stalled_for = 0;
    }
    b->last_progress_done = d;
    fprintf(stderr, "%s%7.1fs %10llu requests %9.0f req/s %6llu errors%s",
            isatty(2) ? "\r" : "", el, (unsigned long long)d, rate,
            (unsigned long long)b->errors, isatty(2) ? "" : "\n");
    b->last_d = d;
    b->last_el = el;
}

void bench_progress_start(struct bench *b)
{
    b->t_start = uv_hrtime();
    b->last_d = b->requests;
    b->last_el = 0;
    b->stalled_for = 0;
    b->last_progress_done = b->requests;
    uv_timer_start(&b->progress, progress_cb, 1000, 1000);
}

static void deadline_cb(uv_timer_t *t)
{
    struct bench *b = t->data;
    b->stopping = 1;
}

int bench_run_phase(struct bench *b, const char *label)
{
    struct bench_opts *o = b->o;
    b->stopping = 0;
    b->started = 0;
    b->phase_active = 1;
    b->running_slots = o->clients;
    b->stalled_for = 0;
    b->last_progress_done = b->requests;
    bench_progress_start(b);
    if (o->duration > 0)
        uv_timer_start(&b->deadline, deadline_cb, (uint64_t)(o->duration * 1000), 0);
    for (int i = 0; i < o->clients; i++) {
        b->slots[i].idle = 0;
        bench_next(&b->slots[i]);
    }
    uv_run(b->loop, UV_RUN_DEFAULT);
    if (b->phase_active)
        bench_die("%s: the event loop ended early", label);
    if (isatty(2))
        fputc('\n', stderr);
    return 0;
}

static void conn_event(struct client_conn *c, int err, void *arg)
{
    struct bench *b = arg;
    if (err == 0) {
        if (++b->connected == b->o->conns)
            uv_stop(b->loop);
        return;
    }
    bench_die("cannot talk to %s: %s", client_conn_endpoint(c), uv_strerror(err));
}

static void connect_timeout_cb(uv_timer_t *t)
{
    struct bench *b = t->data;
    bench_die("timed out connecting to %s", b->o->endpoints[0]);
}

/* Opens the connections and waits until all are up. */
static void connect_all(struct bench *b)
{
    struct bench_opts *o = b->o;
    b->conns = calloc((size_t)o->conns, sizeof *b->conns);
    if (!b->conns)
        bench_die("out of memory");
    for (int i = 0; i < o->conns; i++) {
        const char *ep = o->endpoints[i % o->n_endpoints];
        int rc = client_conn_open(b->loop, ep, conn_event, b, &b->conns[i]);
        if (rc)
            bench_die("cannot connect to %s: %s", ep,
                      rc == CLIENT_EINVAL ? "bad endpoint" : rc < -1000 ? "out of memory"
                                                                        : uv_strerror(rc));
    }
    uv_timer_t t;
    uv_timer_init(b->loop, &t);
    t.data = b;
    uv_timer_start(&t, connect_timeout_cb, (uint64_t)(o->timeout * 1000), 0);
    uv_run(b->loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(b->loop, UV_RUN_NOWAIT);
}

static void drain_walk(uv_handle_t *h, void *arg)
{
    if (h != arg)
        ++*(int *)((uv_handle_t *)arg)->data;
}

static void drain_tick(uv_timer_t *t)
{
}

int bench_drain_loop(uv_loop_t *loop, int ms)
{
    /* A ticking timer bounds each uv_run, so a handle that is never closed
     * cannot make ketch-bench hang at exit. */
    uv_timer_t t;
    int left = 0;
    uv_timer_init(loop, &t);
    t.data = &left;
    uv_timer_start(&t, drain_tick, 10, 10);
    uint64_t end = uv_hrtime() + (uint64_t)ms * 1000000;
    for (;;) {
        left = 0;
        uv_walk(loop, drain_walk, &t);
        if (left == 0 || uv_hrtime() >= end)
            break;
        uv_run(loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    if (left)
        fprintf(stderr, "ketch-bench: %d handle(s) still open after %d ms at exit\n", left, ms);
    return left;
}

static const struct workload_ops *ops_for(enum workload w)
{
    switch (w) {
    case W_PUT:
        return &bench_put_ops;
    case W_RANGE:
        return &bench_range_ops;
    case W_TXN_PUT:
        return &bench_txn_put_ops;
    case W_TXN_MIXED:
        return &bench_txn_mixed_ops;
    case W_K8S:
        return &bench_k8s_ops;
    default:
        return NULL;
    }
}

int bench_main_run(struct bench_opts *o)
{
    static struct bench b; /* big (histograms): not on the stack */
    uv_loop_t loop;
    uv_loop_init(&loop);
    b.o = o;
    b.loop = &loop;
    uv_timer_init(&loop, &b.progress);
    uv_timer_init(&loop, &b.deadline);
    b.progress.data = b.deadline.data = &b;
    connect_all(&b);

    int rc;
    if (o->workload == W_WATCH_LATENCY) {
        rc = bench_watch_latency(&b);
    } else {
        b.w = ops_for(o->workload);
        b.slots = calloc((size_t)o->clients, sizeof *b.slots);
        if (!b.slots)
            bench_die("out of memory");
        uint64_t seed = o->seed ? o->seed : uv_hrtime() ^ (uint64_t)getpid() << 32;
        for (int i = 0; i < o->clients; i++) {
            struct slot *s = &b.slots[i];
            s->b = &b;
            s->idx = (unsigned)i;
            s->conn = b.conns[i % o->conns];
            s->rng = seed + (uint64_t)i * UINT64_C(0x9E3779B97F4A7C15);
            if (!s->rng)
                s->rng = 1;
            bench_rand(&s->rng);
        }
        if (b.w->setup && b.w->setup(&b))
            return 1;
        rc = bench_run_phase(&b, o->workload_name);
    }
    if (rc == 0)
        bench_report(&b, stdout);
    if (b.w && b.w->cleanup)
        b.w->cleanup(&b);
    uv_close((uv_handle_t *)&b.progress, NULL);
    uv_close((uv_handle_t *)&b.deadline, NULL);
    for (int i = 0; i < o->conns; i++)
        client_conn_close(b.conns[i]);
    int left = bench_drain_loop(&loop, 5000);
    if (o->workload == W_WATCH_LATENCY)
        bench_watch_cleanup();
    if (!left)
        uv_loop_close(&loop);
    free(b.conns);
    free(b.slots);
    return rc ? 1 : 0;
}
