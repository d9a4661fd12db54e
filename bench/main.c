/* ketch-bench: see bench.h and `ketch-bench --help`. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

/* ---- ready: retry a Range until the endpoint answers ---- */

static struct {
    uv_loop_t *loop;
    const char *endpoint;
    struct client_conn *conn;
    uv_timer_t retry, give_up;
    int ok;
    char last[256];
    uint64_t t0;
} rd;

static void attempt(uv_timer_t *t);

static void retry_later(void)
{
    if (rd.conn) {
        client_conn_close(rd.conn);
        rd.conn = NULL;
    }
    uv_timer_start(&rd.retry, attempt, 5, 0);
}

static void ready_reply(void *arg, const struct client_reply *r)
{
    if (r->status == 0) {
        rd.ok = 1;
        uv_stop(rd.loop);
        return;
    }
    snprintf(rd.last, sizeof rd.last, "status %d: %s", r->status, r->message);
    retry_later();
}

static void ready_event(struct client_conn *c, int err, void *arg)
{
    if (err == 0)
        return;
    snprintf(rd.last, sizeof rd.last, "%s", uv_strerror(err));
    retry_later();
}

static void attempt(uv_timer_t *t)
{
    int rc = client_conn_open(rd.loop, rd.endpoint, ready_event, NULL, &rd.conn);
    if (rc) {
        rd.conn = NULL;
        snprintf(rd.last, sizeof rd.last, "cannot connect (error %d)", rc);
        uv_timer_start(&rd.retry, attempt, 5, 0);
        return;
    }
    Etcdserverpb__RangeRequest req = ETCDSERVERPB__RANGE_REQUEST__INIT;
    req.key.data = (uint8_t *)"ketch-bench-ready";
    req.key.len = strlen("ketch-bench-ready");
    if (client_unary(rd.conn, "/etcdserverpb.KV/Range", &req.base, ready_reply, NULL))
        retry_later();
}

static void give_up_cb(uv_timer_t *t)
{
    uv_stop(rd.loop);
}

int bench_ready(struct bench_opts *o)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    rd.loop = &loop;
    rd.endpoint = o->endpoints[0];
    rd.t0 = uv_hrtime();
    uv_timer_init(&loop, &rd.retry);
    uv_timer_init(&loop, &rd.give_up);
    uv_timer_start(&rd.give_up, give_up_cb, (uint64_t)(o->timeout * 1000), 0);
    attempt(&rd.retry);
    uv_run(&loop, UV_RUN_DEFAULT);
    double ms = (double)(uv_hrtime() - rd.t0) / 1e6;
    if (rd.conn)
        client_conn_close(rd.conn);
    uv_close((uv_handle_t *)&rd.retry, NULL);
    uv_close((uv_handle_t *)&rd.give_up, NULL);
    if (!bench_drain_loop(&loop, 5000))
        uv_loop_close(&loop);
    if (!rd.ok) {
        fprintf(stderr, "ketch-bench: %s not ready after %.0f s (last: %s)\n", rd.endpoint,
                o->timeout, rd.last[0] ? rd.last : "no answer");
        return 1;
    }
    if (o->json)
        printf("{\"ready_ms\":%.1f}\n", ms);
    else
        fprintf(stderr, "ketch-bench: %s ready after %.1f ms\n", rd.endpoint, ms);
    return 0;
}

int main(int argc, char **argv)
{
    struct bench_opts o;
    char err[4096];
    int rc = bench_parse_args(argc, argv, &o, err, sizeof err);
    if (rc == 1) {
        fputs(err, stdout);
        return 0;
    }
    if (rc) {
        fprintf(stderr, "ketch-bench: %s\n", err);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    rc = o.workload == W_READY ? bench_ready(&o) : bench_main_run(&o);
    bench_opts_free(&o);
    return rc;
}
