/* ketch-bench command line: pure functions (tests/unit/test_client.c). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

static const char usage[] =
    "usage: ketch-bench <workload> [flags]\n"
    "\n"
    "Workloads (as etcd's benchmark tool):\n"
    "  put                 puts of --key-size/--val-size keys over --key-space-size keys\n"
    "  range KEY [END]     ranges (--consistency l|s, --limit)\n"
    "  txn-put             txns of --txn-ops puts\n"
    "  txn-mixed           txn reads and writes, --rw-ratio reads per write\n"
    "  watch-latency       --streams x --watchers-per-stream watchers on one key,\n"
    "                      --put-total puts at --put-rate/s, put->event latency\n"
    "  k8s                 what kube-apiserver does: creates (txn mod_revision==0),\n"
    "                      guaranteed updates (get + txn on mod_revision), paginated\n"
    "                      lists (limit 500 at a fixed revision), events with leases\n"
    "  ready               wait until the endpoint answers (exit 0) or --timeout (exit 1)\n"
    "\n"
    "Global flags:\n"
    "  --endpoints LIST    comma separated host:port (default 127.0.0.1:2379)\n"
    "  --conns N           connections (default 1)\n"
    "  --clients N         concurrent requests in flight (default 1)\n"
    "  --total N           requests (default 10000; 0 with --duration)\n"
    "  --duration S        stop after S seconds\n"
    "  --timeout S         give up after S seconds without progress (default 30)\n"
    "  --json              print the result as one JSON object on stdout\n"
    "  --seed N            random seed (default: time)\n"
    "Workload flags:\n"
    "  --key-size N (8; watch 32)  --val-size N (8; watch 32)  --sequential-keys\n"
    "  --key-space-size N (1)  --consistency l|s (l)  --limit N (0)\n"
    "  --key-prefix P (put: keys are P + the varint, to range over them later)\n"
    "  --txn-ops N (1)  --rw-ratio R (1)  --end-range KEY\n"
    "  --put-total N (1000)  --put-rate R (100)  --streams N (10)\n"
    "  --watchers-per-stream N (10)  --watchers N (total, split over streams)\n"
    "  --objects N (2000, k8s objects created before the run)  --namespaces N (20)\n"
    "  --events-per-lease N (500)\n";

const char *bench_usage(void)
{
    return usage;
}

void bench_put_varint(uint8_t *buf, size_t len, int64_t v)
{
    memset(buf, 0, len);
    uint64_t ux = (uint64_t)v << 1;
    if (v < 0)
        ux = ~ux;
    size_t i = 0;
    while (ux >= 0x80 && i < len) {
        buf[i++] = (uint8_t)(ux | 0x80);
        ux >>= 7;
    }
    if (i < len)
        buf[i] = (uint8_t)ux;
}

int bench_parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s || *s == '-')
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return -1;
    uint64_t mul = 1;
    if (*end == 'k' || *end == 'K')
        mul = 1000, end++;
    else if (*end == 'm' || *end == 'M')
        mul = 1000000, end++;
    else if (*end == 'g' || *end == 'G')
        mul = 1000000000, end++;
    if (*end)
        return -1;
    *out = (uint64_t)v * mul;
    return 0;
}

static int parse_double(const char *s, double *out)
{
    if (!s || !*s)
        return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || v < 0)
        return -1;
    *out = v;
    return 0;
}

static int opt_error(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static const struct {
    const char *name;
    enum workload w;
} workloads[] = {
    {"put", W_PUT},         {"range", W_RANGE},
    {"txn-put", W_TXN_PUT}, {"txn-mixed", W_TXN_MIXED},
    {"watch-latency", W_WATCH_LATENCY}, {"k8s", W_K8S},
    {"ready", W_READY},
};

void bench_opts_free(struct bench_opts *o)
{
    for (int i = 0; i < o->n_endpoints; i++)
        free(o->endpoints[i]);
    o->n_endpoints = 0;
}

static int set_endpoints(struct bench_opts *o, const char *list, char *err, size_t errlen)
{
    bench_opts_free(o);
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n) {
            if (o->n_endpoints == BENCH_MAX_ENDPOINTS)
                return opt_error(err, errlen, "too many endpoints (at most %d)", BENCH_MAX_ENDPOINTS);
            char *ep = strndup(p, n);
            struct sockaddr_storage ss;
            if (!ep)
                return opt_error(err, errlen, "out of memory");
            o->endpoints[o->n_endpoints++] = ep;
            if (client_parse_endpoint(ep, &ss))
                return opt_error(err, errlen, "bad endpoint '%s' (want host:port)", ep);
        }
        p += n;
        if (*p == ',')
            p++;
    }
    if (o->n_endpoints == 0)
        return opt_error(err, errlen, "--endpoints is empty");
    return 0;
}

int bench_parse_args(int argc, char **argv, struct bench_opts *o, char *err, size_t errlen)
{
    memset(o, 0, sizeof *o);
    o->workload = (enum workload)-1;
    o->conns = 1;
    o->clients = 1;
    o->total = 10000;
    o->timeout = 30;
    o->key_size = -1;
    o->val_size = -1;
    o->key_space_size = 1;
    o->consistency = 'l';
    o->txn_ops = 1;
    o->rw_ratio = 1;
    o->put_total = 1000;
    o->put_rate = 100;
    o->streams = 10;
    o->watchers_per_stream = 10;
    o->objects = 2000;
    o->namespaces = 20;
    o->events_per_lease = 500;
    int total_set = 0, watchers = 0;
    const char *positional[2] = {0};
    int npos = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0 || strcmp(a, "help") == 0) {
            snprintf(err, errlen, "%s", usage);
            return 1;
        }
        if (strncmp(a, "--", 2) != 0) {
            if ((int)o->workload == -1) {
                size_t k;
                for (k = 0; k < sizeof workloads / sizeof workloads[0]; k++)
                    if (strcmp(a, workloads[k].name) == 0)
                        break;
                if (k == sizeof workloads / sizeof workloads[0])
                    return opt_error(err, errlen, "unknown workload '%s' (see --help)", a);
                o->workload = workloads[k].w;
                o->workload_name = workloads[k].name;
            } else if (npos < 2) {
                positional[npos++] = a;
            } else {
                return opt_error(err, errlen, "unexpected argument '%s'", a);
            }
            continue;
        }
        /* --name=value or --name value */
        char name[64];
        const char *val = NULL;
        const char *eq = strchr(a + 2, '=');
        size_t nl = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if (nl >= sizeof name)
            return opt_error(err, errlen, "unknown flag '%s'", a);
        memcpy(name, a + 2, nl);
        name[nl] = 0;
        if (strcmp(name, "json") == 0 || strcmp(name, "sequential-keys") == 0) {
            int on = 1;
            if (eq)
                on = strcmp(eq + 1, "false") != 0 && strcmp(eq + 1, "0") != 0;
            if (name[0] == 'j')
                o->json = on;
            else
                o->sequential_keys = on;
            continue;
        }
        if (eq) {
            val = eq + 1;
        } else {
            if (i + 1 >= argc)
                return opt_error(err, errlen, "flag --%s needs a value", name);
            val = argv[++i];
        }
        uint64_t u = 0;
        double d = 0;
#define U64(flag, field, min)                                                             \
    if (strcmp(name, flag) == 0) {                                                        \
        if (bench_parse_u64(val, &u) || (int64_t)u < (int64_t)(min) || u > INT32_MAX * (uint64_t)1000)      \
            return opt_error(err, errlen, "bad value '%s' for --%s", val, flag);               \
        field = u;                                                                        \
        continue;                                                                         \
    }
#define INT(flag, field, min, max)                                                        \
    if (strcmp(name, flag) == 0) {                                                        \
        if (bench_parse_u64(val, &u) || (int64_t)u < (int64_t)(min) || u > (max))                         \
            return opt_error(err, errlen, "bad value '%s' for --%s (%d..%d)", val, flag,       \
                        (int)(min), (int)(max));                                          \
        field = (int)u;                                                                   \
        continue;                                                                         \
    }
#define DBL(flag, field)                                                                  \
    if (strcmp(name, flag) == 0) {                                                        \
        if (parse_double(val, &d))                                                        \
            return opt_error(err, errlen, "bad value '%s' for --%s", val, flag);               \
        field = d;                                                                        \
        continue;                                                                         \
    }
        if (strcmp(name, "endpoints") == 0) {
            if (set_endpoints(o, val, err, errlen))
                return -1;
            continue;
        }
        if (strcmp(name, "total") == 0) {
            if (bench_parse_u64(val, &u))
                return opt_error(err, errlen, "bad value '%s' for --total", val);
            o->total = u;
            total_set = 1;
            continue;
        }
        if (strcmp(name, "consistency") == 0) {
            if (strcmp(val, "l") && strcmp(val, "s"))
                return opt_error(err, errlen, "--consistency must be l or s, not '%s'", val);
            o->consistency = val[0];
            continue;
        }
        if (strcmp(name, "key-prefix") == 0) {
            if (strlen(val) > 256)
                return opt_error(err, errlen, "--key-prefix is too long");
            o->key_prefix = val;
            continue;
        }
        if (strcmp(name, "end-range") == 0) {
            o->range_end = val;
            continue;
        }
        INT("conns", o->conns, 1, 10000)
        INT("clients", o->clients, 1, 1000000)
        DBL("duration", o->duration)
        DBL("timeout", o->timeout)
        U64("seed", o->seed, 0)
        INT("key-size", o->key_size, 1, 255)
        INT("val-size", o->val_size, 0, 64 * 1024 * 1024)
        U64("key-space-size", o->key_space_size, 1)
        U64("limit", o->limit, 0)
        INT("txn-ops", o->txn_ops, 1, 10000)
        DBL("rw-ratio", o->rw_ratio)
        INT("put-total", o->put_total, 1, 100000000)
        DBL("put-rate", o->put_rate)
        INT("streams", o->streams, 1, 100000)
        INT("watchers-per-stream", o->watchers_per_stream, 1, 100000)
        INT("watchers", watchers, 1, 10000000)
        INT("objects", o->objects, 0, 10000000)
        INT("namespaces", o->namespaces, 1, 100000)
        INT("events-per-lease", o->events_per_lease, 1, 100000000)
#undef U64
#undef INT
#undef DBL
        return opt_error(err, errlen, "unknown flag '--%s' (see --help)", name);
    }

    if ((int)o->workload == -1)
        return opt_error(err, errlen, "no workload given (put, range, txn-put, txn-mixed, "
                                 "watch-latency, k8s, ready; see --help)");
    if (o->n_endpoints == 0 && set_endpoints(o, "127.0.0.1:2379", err, errlen))
        return -1;
    if (o->workload == W_RANGE) {
        if (npos == 0)
            return opt_error(err, errlen, "range needs a KEY (range KEY [END])");
        o->range_key = positional[0];
        if (npos > 1)
            o->range_end = positional[1];
    } else if (npos) {
        return opt_error(err, errlen, "unexpected argument '%s'", positional[0]);
    }
    int watch = o->workload == W_WATCH_LATENCY;
    if (o->key_size < 0)
        o->key_size = watch ? 32 : 8;
    if (o->val_size < 0)
        o->val_size = watch ? 32 : 8;
    if (watch && o->val_size < 8)
        o->val_size = 8; /* the put's sequence number travels in the value */
    if (watchers)
        o->watchers_per_stream = (watchers + o->streams - 1) / o->streams;
    if (o->duration > 0 && !total_set)
        o->total = 0;
    if (o->total == 0 && o->duration <= 0 && o->workload != W_WATCH_LATENCY &&
        o->workload != W_READY)
        return opt_error(err, errlen, "--total 0 needs --duration");
    if (o->conns > o->clients && o->workload != W_WATCH_LATENCY)
        o->conns = o->clients; /* an idle connection measures nothing */
    if (o->timeout <= 0)
        return opt_error(err, errlen, "--timeout must be positive");
    return 0;
}
