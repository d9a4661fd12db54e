/* Unit tests for src/client (histogram, endpoints, a real round trip with
 * /usr/bin/etcd when it is installed) and ketch-bench's pure functions
 * (bench/opts.c is compiled into this test, as it is not in libketch.a). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../bench/opts.c"
#include "client/client.h"
#include "rpc.pb-c.h"

/* ---- histogram ---- */

static void test_hist_buckets(void **state)
{
    /* Every value lies in its bucket, buckets are ordered, width <= 1/64. */
    uint64_t prev_max = 0;
    for (unsigned i = 0; i < CLIENT_HIST_BUCKETS; i++) {
        uint64_t hi = client_hist_bucket_max(i);
        if (i)
            assert_true(hi > prev_max);
        assert_int_equal(client_hist_index(hi), i);
        assert_int_equal(client_hist_index(prev_max + (i ? 1 : 0)), i);
        uint64_t lo = i ? prev_max + 1 : 0;
        if (lo >= 64)
            assert_true((double)(hi - lo + 1) / (double)lo <= 1.0 / 64 + 1e-12);
        prev_max = hi;
    }
    for (uint64_t v = 1; v < (UINT64_C(1) << 40); v = v * 3 + 1) {
        unsigned i = client_hist_index(v);
        assert_true(client_hist_bucket_max(i) >= v);
        assert_true(i == 0 || client_hist_bucket_max(i - 1) < v);
    }
    /* Huge values are clamped into the last bucket. */
    assert_int_equal(client_hist_index(UINT64_MAX), CLIENT_HIST_BUCKETS - 1);
}

static void test_hist_quantiles(void **state)
{
    static struct client_hist h;
    client_hist_reset(&h);
    assert_int_equal(client_hist_quantile(&h, 0.5), 0);
    for (uint64_t v = 1; v <= 100000; v++)
        client_hist_record(&h, v * 1000); /* 1 us .. 100 ms */
    assert_int_equal(h.count, 100000);
    assert_int_equal(h.min, 1000);
    assert_int_equal(h.max, 100000000);
    static const double qs[] = {0.5, 0.9, 0.99, 0.999};
    for (size_t i = 0; i < 4; i++) {
        double want = qs[i] * 100000 * 1000;
        double got = (double)client_hist_quantile(&h, qs[i]);
        assert_true(got >= want);
        assert_true(got <= want * (1 + 1.0 / 64));
    }
    assert_int_equal(client_hist_quantile(&h, 1), h.max);
    assert_int_equal(client_hist_quantile(&h, 0), h.min);
    assert_true(client_hist_mean(&h) > 50000000.0 && client_hist_mean(&h) < 50001000.0);
    /* stddev of uniform 1..N (x1000) is about N/sqrt(12) */
    double sd = client_hist_stddev(&h) / 1000;
    assert_true(sd > 28860 && sd < 28870);

    static struct client_hist a, b;
    client_hist_reset(&a);
    client_hist_reset(&b);
    for (uint64_t v = 1; v <= 100000; v++)
        client_hist_record(v % 2 ? &a : &b, v * 1000);
    client_hist_merge(&a, &b);
    assert_int_equal(a.count, h.count);
    assert_int_equal(a.min, h.min);
    assert_int_equal(a.max, h.max);
    assert_int_equal(client_hist_quantile(&a, 0.99), client_hist_quantile(&h, 0.99));
}

static void test_hist_single_and_bins(void **state)
{
    static struct client_hist h;
    client_hist_reset(&h);
    client_hist_record(&h, 777777);
    /* Quantiles are clamped to the exact min and max. */
    assert_int_equal(client_hist_quantile(&h, 0.5), 777777);
    assert_int_equal(client_hist_quantile(&h, 0.999), 777777);
    double bounds[10];
    uint64_t counts[10];
    assert_int_equal(client_hist_bins(&h, 10, bounds, counts), 1);
    assert_int_equal(counts[0], 1);

    client_hist_reset(&h);
    for (uint64_t v = 0; v < 1000; v++)
        client_hist_record(&h, 1000000 + v * 1000);
    assert_int_equal(client_hist_bins(&h, 10, bounds, counts), 10);
    uint64_t sum = 0;
    for (int i = 0; i < 10; i++) {
        sum += counts[i];
        assert_true(counts[i] > 60 && counts[i] < 140); /* roughly uniform */
    }
    assert_int_equal(sum, 1000);
    assert_true(bounds[9] == (double)h.max);
}

/* ---- bench/opts.c ---- */

static void test_varint(void **state)
{
    uint8_t b[8];
    bench_put_varint(b, 8, 0);
    assert_int_equal(b[0], 0);
    bench_put_varint(b, 8, 1); /* Go: PutVarint(1) = 0x02 */
    assert_int_equal(b[0], 0x02);
    bench_put_varint(b, 8, -1);
    assert_int_equal(b[0], 0x01);
    bench_put_varint(b, 8, 300); /* zig-zag 600 = 0xd8 0x04 */
    assert_int_equal(b[0], 0xd8);
    assert_int_equal(b[1], 0x04);
    assert_int_equal(b[2], 0);
    bench_put_varint(b, 1, 300); /* truncated, no overflow */
    assert_int_equal(b[0], 0xd8);
}

static int parse(struct bench_opts *o, char *err, const char *first, ...)
{
    char *argv[32] = {"ketch-bench"};
    int argc = 1;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a; a = va_arg(ap, const char *))
        argv[argc++] = (char *)a;
    va_end(ap);
    return bench_parse_args(argc, argv, o, err, 256);
}

static void test_args(void **state)
{
    struct bench_opts o;
    char err[256];
    assert_int_equal(parse(&o, err, "put", NULL), 0);
    assert_int_equal(o.workload, W_PUT);
    assert_int_equal(o.n_endpoints, 1);
    assert_string_equal(o.endpoints[0], "127.0.0.1:2379");
    assert_int_equal(o.conns, 1);
    assert_int_equal(o.clients, 1);
    assert_int_equal(o.total, 10000);
    assert_int_equal(o.key_size, 8);
    assert_int_equal(o.val_size, 8);
    assert_int_equal(o.key_space_size, 1);
    bench_opts_free(&o);

    assert_int_equal(parse(&o, err, "--endpoints", "127.0.0.1:1,http://[::1]:2", "put",
                           "--total=20k", "--clients", "100", "--conns", "10", "--json",
                           "--sequential-keys", "--key-space-size", "1000", NULL),
                     0);
    assert_int_equal(o.n_endpoints, 2);
    assert_string_equal(o.endpoints[1], "http://[::1]:2");
    assert_int_equal(o.total, 20000);
    assert_int_equal(o.clients, 100);
    assert_int_equal(o.conns, 10);
    assert_true(o.json && o.sequential_keys);
    assert_int_equal(o.key_space_size, 1000);
    bench_opts_free(&o);

    assert_int_equal(parse(&o, err, "range", "a", "b", "--consistency", "s", "--limit", "5",
                           "--duration", "2.5", NULL),
                     0);
    assert_string_equal(o.range_key, "a");
    assert_string_equal(o.range_end, "b");
    assert_int_equal(o.consistency, 's');
    assert_int_equal(o.limit, 5);
    assert_int_equal(o.total, 0); /* --duration alone: unbounded count */
    assert_true(o.duration == 2.5);
    bench_opts_free(&o);

    assert_int_equal(parse(&o, err, "watch-latency", "--watchers", "25", "--streams", "5", NULL), 0);
    assert_int_equal(o.key_size, 32);
    assert_int_equal(o.watchers_per_stream, 5);
    bench_opts_free(&o);

    /* more conns than clients would leave connections idle */
    assert_int_equal(parse(&o, err, "put", "--conns", "10", NULL), 0);
    assert_int_equal(o.conns, 1);
    bench_opts_free(&o);

    assert_int_equal(parse(&o, err, "--help", NULL), 1);
    assert_int_equal(parse(&o, err, NULL), -1);
    assert_non_null(strstr(err, "no workload"));
    bench_opts_free(&o);
    assert_int_equal(parse(&o, err, "frob", NULL), -1);
    assert_non_null(strstr(err, "unknown workload"));
    assert_int_equal(parse(&o, err, "range", NULL), -1);
    assert_non_null(strstr(err, "KEY"));
    bench_opts_free(&o);
    assert_int_equal(parse(&o, err, "put", "--clients", "0", NULL), -1);
    bench_opts_free(&o);
    assert_int_equal(parse(&o, err, "put", "--clients", NULL), -1);
    assert_non_null(strstr(err, "needs a value"));
    bench_opts_free(&o);
    assert_int_equal(parse(&o, err, "put", "--total", "x", NULL), -1);
    bench_opts_free(&o);
    assert_int_equal(parse(&o, err, "put", "--endpoints", "https://x:1", NULL), -1);
    assert_non_null(strstr(err, "bad endpoint"));
    bench_opts_free(&o);
    assert_int_equal(parse(&o, err, "put", "--consistency", "x", NULL), -1);
    bench_opts_free(&o);
    assert_int_equal(parse(&o, err, "put", "--total", "0", NULL), -1);
    bench_opts_free(&o);
}

static void test_endpoint(void **state)
{
    struct sockaddr_storage ss;
    assert_int_equal(client_parse_endpoint("127.0.0.1:2379", &ss), 0);
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(ntohs(((struct sockaddr_in *)&ss)->sin_port), 2379);
    assert_int_equal(client_parse_endpoint("http://127.0.0.1:12", &ss), 0);
    assert_int_equal(ntohs(((struct sockaddr_in *)&ss)->sin_port), 12);
    assert_int_equal(client_parse_endpoint("[::1]:7", &ss), 0);
    assert_int_equal(ss.ss_family, AF_INET6);
    assert_int_equal(client_parse_endpoint("127.0.0.1", &ss), 0); /* default port */
    assert_int_equal(ntohs(((struct sockaddr_in *)&ss)->sin_port), 2379);
    assert_int_equal(client_parse_endpoint("127.0.0.1:0", &ss), CLIENT_EINVAL);
    assert_int_equal(client_parse_endpoint("127.0.0.1:70000", &ss), CLIENT_EINVAL);
    /* https parses (ketchctl's TLS); opening it needs a TLS context */
    assert_int_equal(client_parse_endpoint("https://127.0.0.1:1", &ss), 0);
    assert_int_equal(ntohs(((struct sockaddr_in *)&ss)->sin_port), 1);
    struct client_conn *c = NULL;
    uv_loop_t loop;
    uv_loop_init(&loop);
    assert_int_equal(client_conn_open(&loop, "https://127.0.0.1:1", NULL, NULL, &c), CLIENT_EINVAL);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(client_parse_endpoint("unix://x", &ss), CLIENT_EINVAL);
    assert_int_equal(client_parse_endpoint(":1", &ss), CLIENT_EINVAL);
}

/* ---- against real etcd ---- */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) ||
        getsockname(fd, (struct sockaddr *)&a, &len))
        return -1;
    close(fd);
    return ntohs(a.sin_port);
}

struct etcd {
    pid_t pid;
    char dir[64];
    char ep[64];
};

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(p);
}

/* One unary call, run to completion on its own loop iteration(s). */
struct result {
    int fired;
    int status;
    char message[256];
    uint8_t data[4096];
    size_t len;
    int conn_err;
    int connected;
};

static void reply_cb(void *arg, const struct client_reply *r)
{
    struct result *res = arg;
    res->fired++;
    res->status = r->status;
    snprintf(res->message, sizeof res->message, "%s", r->message);
    res->len = r->len < sizeof res->data ? r->len : sizeof res->data;
    if (r->data)
        memcpy(res->data, r->data, res->len);
}

static void conn_cb(struct client_conn *c, int err, void *arg)
{
    struct result *res = arg;
    if (err)
        res->conn_err = err;
    else
        res->connected++;
}

static void wake(uv_timer_t *t)
{
}

/* Runs the loop until *flag reaches want or ms pass. */
static void run_until(uv_loop_t *loop, int *flag, int want, int ms)
{
    uv_timer_t t;
    uv_timer_init(loop, &t);
    uv_timer_start(&t, wake, 10, 10);
    uint64_t end = uv_hrtime() + (uint64_t)ms * 1000000;
    while (*flag < want && uv_hrtime() < end)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}

/* uv_walk: counts the handles still on the loop other than *arg, and
 * names them. */
struct walk {
    uv_handle_t *skip;
    int n;
    char names[256];
};

static void walk_cb(uv_handle_t *h, void *arg)
{
    struct walk *w = arg;
    if (h == w->skip)
        return;
    w->n++;
    size_t l = strlen(w->names);
    snprintf(w->names + l, sizeof w->names - l, " %s%s", uv_handle_type_name(h->type),
             uv_is_closing(h) ? "(closing)" : uv_is_active(h) ? "(active)" : "");
}

/* After client_conn_close: runs the loop until every handle is gone, for at
 * most ms; fails with the list of handles left instead of hanging (a plain
 * uv_run(UV_RUN_DEFAULT) blocks forever if a handle is never closed). */
static void drain(uv_loop_t *loop, int ms)
{
    uv_timer_t t;
    uv_timer_init(loop, &t);
    uv_timer_start(&t, wake, 10, 10);
    uint64_t end = uv_hrtime() + (uint64_t)ms * 1000000;
    struct walk w;
    for (;;) {
        memset(&w, 0, sizeof w);
        w.skip = (uv_handle_t *)&t;
        uv_walk(loop, walk_cb, &w);
        if (w.n == 0 || uv_hrtime() >= end)
            break;
        uv_run(loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    if (w.n)
        fail_msg("loop not drained after %d ms: %d handle(s) left:%s", ms, w.n, w.names);
}

static int call(uv_loop_t *loop, const char *ep, const char *path, const ProtobufCMessage *req,
                struct result *res)
{
    struct client_conn *c;
    memset(res, 0, sizeof *res);
    if (client_conn_open(loop, ep, conn_cb, res, &c))
        return -1;
    if (client_unary(c, path, req, reply_cb, res)) {
        client_conn_close(c);
        drain(loop, 5000);
        return -1;
    }
    run_until(loop, &res->fired, 1, 5000);
    client_conn_close(c);
    drain(loop, 5000);
    return res->fired == 1 ? 0 : -1;
}

/* The etcd started by the running test, killed by the group teardown if an
 * assertion ends the test early. */
static struct etcd *running_etcd;

static int start_etcd(struct etcd *e)
{
    int cport = free_port(), pport = free_port();
    if (cport < 0 || pport < 0)
        return -1;
    snprintf(e->dir, sizeof e->dir, "/tmp/ketch-test-client-XXXXXX");
    if (!mkdtemp(e->dir))
        return -1;
    snprintf(e->ep, sizeof e->ep, "127.0.0.1:%d", cport);
    char curl[64], purl[64], cluster[96], dd[96];
    snprintf(curl, sizeof curl, "http://127.0.0.1:%d", cport);
    snprintf(purl, sizeof purl, "http://127.0.0.1:%d", pport);
    snprintf(cluster, sizeof cluster, "t=%s", purl);
    snprintf(dd, sizeof dd, "%s/data", e->dir);
    e->pid = fork();
    if (e->pid == 0) {
        int fd = open("/dev/null", 1);
        dup2(fd, 1);
        dup2(fd, 2);
        execl("/usr/bin/etcd", "etcd", "--name", "t", "--data-dir", dd, "--listen-client-urls",
              curl, "--advertise-client-urls", curl, "--listen-peer-urls", purl,
              "--initial-advertise-peer-urls", purl, "--initial-cluster", cluster, (char *)NULL);
        _exit(127);
    }
    if (e->pid > 0)
        running_etcd = e;
    return e->pid > 0 ? 0 : -1;
}

static void stop_etcd(struct etcd *e)
{
    running_etcd = NULL;
    if (e->pid > 0) {
        kill(e->pid, SIGKILL);
        waitpid(e->pid, NULL, 0);
    }
    nftw(e->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

struct watch_state {
    int created;
    int events;
    char value[64];
    int closed;
    int close_status;
};

static void watch_msg(void *arg, const uint8_t *data, size_t len)
{
    struct watch_state *w = arg;
    Etcdserverpb__WatchResponse *r = etcdserverpb__watch_response__unpack(NULL, len, data);
    assert_non_null(r);
    if (r->created)
        w->created++;
    for (size_t i = 0; i < r->n_events; i++) {
        w->events++;
        snprintf(w->value, sizeof w->value, "%.*s", (int)r->events[i]->kv->value.len,
                 (const char *)r->events[i]->kv->value.data);
    }
    etcdserverpb__watch_response__free_unpacked(r, NULL);
}

static void watch_close(void *arg, const struct client_reply *r)
{
    struct watch_state *w = arg;
    w->closed++;
    w->close_status = r->status;
}

static void test_etcd_round_trip(void **state)
{
    if (access("/usr/bin/etcd", X_OK) != 0) {
        printf("skip: /usr/bin/etcd is not installed (apt-get install etcd-server)\n");
        skip();
    }
    struct etcd e = {0};
    assert_int_equal(start_etcd(&e), 0);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct result res;

    /* Wait (up to 15 s) until it answers. */
    Etcdserverpb__RangeRequest rr = ETCDSERVERPB__RANGE_REQUEST__INIT;
    rr.key.data = (uint8_t *)"foo";
    rr.key.len = 3;
    uint64_t end = uv_hrtime() + UINT64_C(15000000000);
    int up = 0;
    while (!up && uv_hrtime() < end) {
        if (call(&loop, e.ep, "/etcdserverpb.KV/Range", &rr.base, &res) == 0 && res.status == 0)
            up = 1;
        else
            usleep(20000);
    }
    if (!up) {
        stop_etcd(&e);
        fail_msg("etcd did not come up on %s", e.ep);
    }

    /* Put, then Range sees it. */
    Etcdserverpb__PutRequest pr = ETCDSERVERPB__PUT_REQUEST__INIT;
    pr.key = rr.key;
    pr.value.data = (uint8_t *)"bar";
    pr.value.len = 3;
    assert_int_equal(call(&loop, e.ep, "/etcdserverpb.KV/Put", &pr.base, &res), 0);
    assert_int_equal(res.status, 0);
    Etcdserverpb__PutResponse *put = etcdserverpb__put_response__unpack(NULL, res.len, res.data);
    assert_non_null(put);
    assert_true(put->header->revision >= 2);
    etcdserverpb__put_response__free_unpacked(put, NULL);

    assert_int_equal(call(&loop, e.ep, "/etcdserverpb.KV/Range", &rr.base, &res), 0);
    assert_int_equal(res.status, 0);
    Etcdserverpb__RangeResponse *rg = etcdserverpb__range_response__unpack(NULL, res.len, res.data);
    assert_non_null(rg);
    assert_int_equal(rg->n_kvs, 1);
    assert_memory_equal(rg->kvs[0]->value.data, "bar", 3);
    etcdserverpb__range_response__free_unpacked(rg, NULL);

    /* A server error arrives as grpc-status + grpc-message (etcd's text). */
    Etcdserverpb__PutRequest empty = ETCDSERVERPB__PUT_REQUEST__INIT;
    assert_int_equal(call(&loop, e.ep, "/etcdserverpb.KV/Put", &empty.base, &res), 0);
    assert_int_equal(res.status, 3);
    assert_string_equal(res.message, "etcdserver: key is not provided");
    /* An unknown method: UNIMPLEMENTED. */
    assert_int_equal(call(&loop, e.ep, "/etcdserverpb.KV/Nope", &rr.base, &res), 0);
    assert_int_equal(res.status, 12);

    /* Many concurrent calls on one connection. */
    struct client_conn *c;
    static struct result many[500];
    memset(many, 0, sizeof many);
    int fired = 0;
    assert_int_equal(client_conn_open(&loop, e.ep, NULL, NULL, &c), 0);
    for (int i = 0; i < 500; i++)
        assert_int_equal(client_unary(c, "/etcdserverpb.KV/Put", &pr.base, reply_cb, &many[i]), 0);
    /* A ticking timer, so the deadline is checked even if nothing arrives. */
    uv_timer_t tick;
    uv_timer_init(&loop, &tick);
    uv_timer_start(&tick, wake, 10, 10);
    end = uv_hrtime() + UINT64_C(10000000000);
    while (fired < 500 && uv_hrtime() < end) {
        uv_run(&loop, UV_RUN_ONCE);
        fired = 0;
        for (int i = 0; i < 500; i++)
            fired += many[i].fired;
    }
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(fired, 500);
    for (int i = 0; i < 500; i++)
        assert_int_equal(many[i].status, 0);
    assert_int_equal(client_conn_pending(c), 0);

    /* A watch stream sees a put. */
    struct watch_state w = {0};
    struct client_stream *s;
    assert_int_equal(client_stream_open(c, "/etcdserverpb.Watch/Watch", watch_msg, watch_close,
                                        &w, &s),
                     0);
    Etcdserverpb__WatchCreateRequest cr = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
    cr.key = rr.key;
    Etcdserverpb__WatchRequest wr = ETCDSERVERPB__WATCH_REQUEST__INIT;
    wr.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
    wr.create_request = &cr;
    assert_int_equal(client_stream_send(s, &wr.base), 0);
    run_until(&loop, &w.created, 1, 5000);
    assert_int_equal(w.created, 1);
    pr.value.data = (uint8_t *)"watched";
    pr.value.len = 7;
    struct result one = {0};
    assert_int_equal(client_unary(c, "/etcdserverpb.KV/Put", &pr.base, reply_cb, &one), 0);
    run_until(&loop, &w.events, 1, 5000);
    assert_int_equal(w.events, 1);
    assert_string_equal(w.value, "watched");
    /* Closing the connection ends the stream with CANCELLED. */
    client_conn_close(c);
    assert_int_equal(w.closed, 1);
    assert_int_equal(w.close_status, CLIENT_STATUS_CANCELLED);
    drain(&loop, 5000);

    /* Killed server: pending calls fail with UNAVAILABLE, not a hang. */
    struct result dead = {0};
    assert_int_equal(client_conn_open(&loop, e.ep, conn_cb, &dead, &c), 0);
    run_until(&loop, &dead.connected, 1, 5000);
    assert_int_equal(dead.connected, 1);
    stop_etcd(&e);
    e.pid = 0;
    if (client_unary(c, "/etcdserverpb.KV/Range", &rr.base, reply_cb, &dead) == 0) {
        run_until(&loop, &dead.fired, 1, 5000);
        assert_int_equal(dead.fired, 1);
        assert_int_equal(dead.status, CLIENT_STATUS_UNAVAILABLE);
    }
    client_conn_close(c);
    drain(&loop, 5000);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_refused(void **state)
{
    int port = free_port();
    char ep[32];
    snprintf(ep, sizeof ep, "127.0.0.1:%d", port);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct result res = {0};
    struct client_conn *c;
    assert_int_equal(client_conn_open(&loop, ep, conn_cb, &res, &c), 0);
    Etcdserverpb__RangeRequest rr = ETCDSERVERPB__RANGE_REQUEST__INIT;
    assert_int_equal(client_unary(c, "/etcdserverpb.KV/Range", &rr.base, reply_cb, &res), 0);
    run_until(&loop, &res.fired, 1, 5000);
    assert_int_equal(res.fired, 1);
    assert_int_equal(res.status, CLIENT_STATUS_UNAVAILABLE);
    assert_non_null(strstr(res.message, "connection refused"));
    assert_int_equal(res.conn_err, UV_ECONNREFUSED);
    /* Refused afterwards, and the callback does not fire. */
    assert_int_equal(client_unary(c, "/etcdserverpb.KV/Range", &rr.base, reply_cb, &res),
                     CLIENT_ECLOSED);
    client_conn_close(c);
    drain(&loop, 5000);
    assert_int_equal(res.fired, 1);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static int teardown(void **state)
{
    if (running_etcd)
        stop_etcd(running_etcd);
    return 0;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hist_buckets),  cmocka_unit_test(test_hist_quantiles),
        cmocka_unit_test(test_hist_single_and_bins), cmocka_unit_test(test_varint),
        cmocka_unit_test(test_args),          cmocka_unit_test(test_endpoint),
        cmocka_unit_test(test_refused),       cmocka_unit_test(test_etcd_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
