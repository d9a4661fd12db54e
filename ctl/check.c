/* check perf (etcdctl's check.go): puts at the load's rate (150 writes/s
 * for "s") for 60 seconds, 256-byte keys under --prefix and 1 KiB values,
 * then deletes the prefix and judges throughput (> 90% of the rate), the
 * slowest request (<= 0.5 s) and the standard deviation (<= 0.1 s) with
 * etcdctl's PASS/FAIL lines. The requests go as concurrent streams on one
 * connection, at most the load's number of clients in flight.
 * KETCHCTL_CHECK_SECONDS shortens the run (tests only).
 *
 * check datascale: puts the load's number of keys (10000 for "s", 512-byte
 * keys and values) as fast as its clients go, and reports how much the
 * first endpoint's process_resident_memory_bytes (/metrics) grew.
 * KETCHCTL_CHECK_KEYS lowers the number of keys (tests only). */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include "client/client.h"
#include "ctl.h"

#define FEND {NULL, 0, 0, NULL, false}

static struct {
    struct client_conn *c;
    const char *prefix;
    int64_t limit, clients, duration_ms;
    int64_t count;    /* datascale: this many puts, as fast as the clients go */
    size_t ksize, vsize;
    uint64_t t0, end;
    int64_t issued, done, errors, inflight;
    struct client_hist hist;
    uint64_t first_start, last_end;
    bool stopping;
    char first_error[256];
} p;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct req {
    uint64_t start;
};

static void issue(void);

static void on_put(void *arg, const struct client_reply *r)
{
    struct req *q = arg;
    uint64_t t = now_ns();
    p.inflight--;
    if (r->status) {
        p.errors++;
        if (!p.first_error[0])
            snprintf(p.first_error, sizeof p.first_error, "%s", ctl_err_text(r->status, r->message));
    } else {
        p.done++;
        client_hist_record(&p.hist, t - q->start);
    }
    p.last_end = t;
    free(q);
    if (p.count)
        issue(); /* datascale: the next one at once */
    if (p.stopping && p.inflight == 0)
        uv_stop((uv_loop_t *)ctl_loop());
}

/* rate.Limiter with a burst of 1: the n-th put may start at t0 + n/limit. */
static void issue(void)
{
    uint64_t t = now_ns();
    if (p.count ? p.issued >= p.count : t >= p.end) {
        p.stopping = true;
        if (p.inflight == 0)
            uv_stop((uv_loop_t *)ctl_loop());
        return;
    }
    int64_t due = p.count ? p.count
                          : (int64_t)((t - p.t0) / 1000000u * (uint64_t)p.limit / 1000u) + 1;
    static uint8_t *key, val[1024];
    size_t pl = strlen(p.prefix);
    if (!key)
        key = malloc(pl + p.ksize + 1);
    while (p.issued < due && p.inflight < p.clients) {
        memcpy(key, p.prefix, pl);
        memset(key + pl, 0, p.ksize);
        /* binary.PutVarint of a random int63 */
        uint64_t x = ((uint64_t)rand() << 33) ^ ((uint64_t)rand() << 2) ^ (uint64_t)rand();
        x &= INT64_MAX;
        uint64_t ux = x << 1;
        size_t i = 0;
        while (ux >= 0x80) {
            key[pl + i++] = (uint8_t)(ux | 0x80);
            ux >>= 7;
        }
        key[pl + i] = (uint8_t)ux;
        Etcdserverpb__PutRequest put = ETCDSERVERPB__PUT_REQUEST__INIT;
        put.key = (ProtobufCBinaryData){pl + p.ksize, key};
        put.value = (ProtobufCBinaryData){p.vsize, val};
        struct req *q = malloc(sizeof *q);
        q->start = now_ns();
        if (!p.first_start)
            p.first_start = q->start;
        if (client_unary(p.c, "/etcdserverpb.KV/Put", &put.base, on_put, q)) {
            free(q);
            ctl_die(EXIT_ERR, "connection closed");
        }
        p.issued++;
        p.inflight++;
    }
}

static void on_tick(uv_timer_t *t)
{
    issue();
}

/* endpointMemoryMetrics: process_resident_memory_bytes from the first
 * endpoint's /metrics (plain HTTP), or 0 after printing why. */
static double memory_metric(const char *ep)
{
    if (!strncmp(ep, "https://", 8)) {
        printf("fetch error: https metrics are not supported by ketchctl\n");
        return 0;
    }
    struct sockaddr_storage sa;
    int fd = -1;
    if (client_parse_endpoint(ep, &sa) == 0)
        fd = socket(sa.ss_family, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sa.ss_family == AF_INET
                                                          ? sizeof(struct sockaddr_in)
                                                          : sizeof(struct sockaddr_in6))) {
        printf("fetch error: Get \"%s%s/metrics\": connection refused\n",
               strncmp(ep, "http://", 7) ? "http://" : "", ep);
        if (fd >= 0)
            close(fd);
        return 0;
    }
    const char *host = strncmp(ep, "http://", 7) ? ep : ep + 7;
    char req[600];
    int n = snprintf(req, sizeof req, "GET /metrics HTTP/1.0\r\nHost: %s\r\n\r\n", host);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return 0;
    }
    struct buf b = {0};
    char tmp[65536];
    ssize_t r;
    while ((r = read(fd, tmp, sizeof tmp)) > 0)
        buf_put(&b, tmp, (size_t)r);
    buf_put(&b, "", 1);
    close(fd);
    char *body = strstr(b.p, "\r\n\r\n");
    double v = 0;
    const char *keyname = "process_resident_memory_bytes";
    for (char *l = body ? body + 4 : b.p; l && *l;) {
        char *nl = strchr(l, '\n');
        if (nl)
            *nl = 0;
        if (!strncmp(l, keyname, strlen(keyname))) {
            v = strtod(l + strlen(keyname), NULL);
            if (v == 0)
                v = -1;
            break;
        }
        l = nl ? nl + 1 : NULL;
    }
    buf_free(&b);
    if (v == 0)
        printf("could not find: %s\n", keyname);
    return v < 0 ? 0 : v;
}

int cmd_check(int argc, char **argv)
{
    if (argc < 1 || argv[0][0] == '-') {
        printf("check <subcommand>: perf, datascale\n");
        return 0;
    }
    const char *sub = argv[0];
    const char *load = "s", *prefix = "/etcdctl-check-perf/";
    bool auto_compact = false, auto_defrag = false;
    struct flag fl[] = {{"load", 0, F_STR, &load, false},
                        {"prefix", 0, F_STR, &prefix, false},
                        {"auto-compact", 0, F_BOOL, &auto_compact, false},
                        {"auto-defrag", 0, F_BOOL, &auto_defrag, false},
                        FEND};
    bool datascale = !strcmp(sub, "datascale");
    if (datascale)
        prefix = "/etcdctl-check-datascale/";
    ctl_parse(argc - 1, argv + 1, fl);
    if (strcmp(sub, "perf") && !datascale)
        ctl_die(EXIT_ERR, "unknown command \"%s\" for \"ketchctl check\"", sub);
    ctl_init_display();
    static const struct {
        const char *names[2];
        int64_t limit, clients, keys;
    } loads[] = {{{"s", "small"}, 150, 50, 10000},
                 {{"m", "medium"}, 1000, 200, 100000},
                 {{"l", "large"}, 8000, 500, 1000000},
                 {{"xl", "xLarge"}, 15000, 1000, 3000000}};
    int li = -1;
    for (int i = 0; i < 4; i++)
        if (!strcmp(load, loads[i].names[0]) || !strcmp(load, loads[i].names[1]))
            li = i;
    if (li < 0)
        ctl_die(EXIT_BAD_FEATURE, "unknown load option %s", load);
    p.limit = loads[li].limit;
    p.clients = loads[li].clients;
    p.ksize = datascale ? 512 : 256;
    p.vsize = datascale ? 512 : 1024;
    if (datascale)
        p.count = loads[li].keys;
    const char *cnt = getenv("KETCHCTL_CHECK_KEYS");
    if (datascale && cnt && atoi(cnt) > 0)
        p.count = atoi(cnt);
    p.prefix = prefix;
    p.duration_ms = 60000;
    const char *env = getenv("KETCHCTL_CHECK_SECONDS");
    if (env && atoi(env) > 0)
        p.duration_ms = (int64_t)atoi(env) * 1000;

    /* the prefix must be empty */
    size_t el;
    char *e = prefix_end((const uint8_t *)prefix, strlen(prefix), &el);
    Etcdserverpb__RangeRequest rr = ETCDSERVERPB__RANGE_REQUEST__INIT;
    rr.key = (ProtobufCBinaryData){strlen(prefix), (uint8_t *)prefix};
    rr.range_end = (ProtobufCBinaryData){el, (uint8_t *)e};
    rr.limit = 1;
    Etcdserverpb__RangeResponse *r = (Etcdserverpb__RangeResponse *)ctl_rpc(
        "/etcdserverpb.KV/Range", &rr.base, &etcdserverpb__range_response__descriptor);
    if (r->n_kvs)
        ctl_die(EXIT_INVALID_INPUT, "prefix \"%s\" has keys. Delete with etcdctl del --prefix %s first",
                prefix, prefix);

    srand((unsigned)now_ns());
    double before = 0;
    if (datascale) {
        before = memory_metric(g.endpoints[0]);
        if (before == 0) {
            printf("FAIL: Could not read process_resident_memory_bytes before the put operations.\n");
            fflush(stdout);
            exit(EXIT_ERR);
        }
        printf("Start data scale check for work load [%" PRId64 " key-value pairs, 1024 bytes per "
               "key-value, %" PRId64 " concurrent clients].\n", loads[li].keys, p.clients);
        fflush(stdout);
    }
    p.c = ctl_connect();
    uv_loop_t *loop = (uv_loop_t *)ctl_loop();
    static uv_timer_t tick;
    uv_timer_init(loop, &tick);
    p.t0 = now_ns();
    p.end = p.t0 + (uint64_t)p.duration_ms * 1000000u;
    issue();
    uv_timer_start(&tick, on_tick, 1, 1);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_timer_stop(&tick);

    double after = 0;
    if (datascale) {
        printf("\n"); /* where etcdctl's progress bar ends */
        after = memory_metric(g.endpoints[0]);
        if (after == 0) {
            printf("FAIL: Could not read process_resident_memory_bytes after the put operations.\n");
            fflush(stdout);
            exit(EXIT_ERR);
        }
    }
    Etcdserverpb__DeleteRangeRequest dr = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
    dr.key = rr.key;
    dr.range_end = rr.range_end;
    Etcdserverpb__DeleteRangeResponse *d = (Etcdserverpb__DeleteRangeResponse *)ctl_rpc(
        "/etcdserverpb.KV/DeleteRange", &dr.base, &etcdserverpb__delete_range_response__descriptor);
    if (auto_compact && d->header) {
        int64_t rev = d->header->revision;
        printf("Compacting with revision %" PRId64 "\n", rev);
        Etcdserverpb__CompactionRequest cr = ETCDSERVERPB__COMPACTION_REQUEST__INIT;
        cr.revision = rev;
        cr.physical = true;
        ctl_rpc("/etcdserverpb.KV/Compact", &cr.base, &etcdserverpb__compaction_response__descriptor);
        printf("Compacted with revision %" PRId64 "\n", rev);
    }
    if (auto_defrag) {
        for (size_t i = 0; i < g.n_endpoints; i++) {
            struct buf q = {0};
            out_goquote(&q, g.endpoints[i], strlen(g.endpoints[i]));
            printf("Defragmenting %s\n", q.p);
            fflush(stdout);
            Etcdserverpb__DefragmentRequest dq = ETCDSERVERPB__DEFRAGMENT_REQUEST__INIT;
            struct ctl_reply rep;
            if (ctl_call_ep(g.endpoints[i], "/etcdserverpb.Maintenance/Defragment", &dq.base, &rep))
                ctl_die(EXIT_ERR, "%s", ctl_err_text(rep.status, rep.message));
            printf("Defragmented %s\n", q.p);
            buf_free(&q);
        }
    }

    if (datascale) {
        if (p.errors) {
            printf("FAIL: too many errors\nFAIL: ERROR(%s) -> %" PRId64 "\n", p.first_error, p.errors);
            fflush(stdout);
            exit(EXIT_ERR);
        }
        printf("PASS: Approximate system memory used : %.2f MB.\n", (after - before) / (1024 * 1024));
        fflush(stdout);
        return 0;
    }
    double secs = p.last_end > p.first_start ? (double)(p.last_end - p.first_start) / 1e9 : 1;
    double rps = (double)p.done / secs;
    double slowest = (double)p.hist.max / 1e9, sd = client_hist_stddev(&p.hist) / 1e9;
    bool ok = true;
    if (p.errors) {
        printf("FAIL: too many errors\nFAIL: ERROR(%s) -> %" PRId64 "\n", p.first_error, p.errors);
        ok = false;
    }
    if (rps / (double)p.limit <= 0.9) {
        printf("FAIL: Throughput too low: %d writes/s\n", (int)rps + 1);
        ok = false;
    } else {
        printf("PASS: Throughput is %d writes/s\n", (int)rps + 1);
    }
    if (slowest > 0.5) {
        printf("Slowest request took too long: %fs\n", slowest);
        ok = false;
    } else {
        printf("PASS: Slowest request took %fs\n", slowest);
    }
    if (sd > 0.1) {
        printf("Stddev too high: %fs\n", sd);
        ok = false;
    } else {
        printf("PASS: Stddev is %fs\n", sd);
    }
    printf(ok ? "PASS\n" : "FAIL\n");
    fflush(stdout);
    return ok ? 0 : EXIT_ERR;
}
