/* ketch-bench: etcd's `benchmark` workloads over src/client.
 *
 * Files: opts.c (command line, pure), engine.c (connections, client slots,
 * timing, progress), workloads.c (put, range, txn-put, txn-mixed, k8s),
 * watch.c (watch-latency), report.c (text and JSON), main.c. */
#ifndef KETCH_BENCH_BENCH_H
#define KETCH_BENCH_BENCH_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "client/client.h"
#include "rpc.pb-c.h"

enum workload {
    W_PUT,
    W_RANGE,
    W_TXN_PUT,
    W_TXN_MIXED,
    W_WATCH_LATENCY,
    W_K8S,
    W_READY, /* wait until the endpoint answers a Range (for scripts) */
};

#define BENCH_MAX_ENDPOINTS 16

struct bench_opts {
    enum workload workload;
    const char *workload_name;
    char *endpoints[BENCH_MAX_ENDPOINTS]; /* owned; bench_opts_free */
    int n_endpoints;
    int conns;
    int clients;
    uint64_t total;  /* 0: bounded by duration only */
    double duration; /* seconds, 0: bounded by total only */
    double timeout;  /* seconds without progress before giving up */
    int json;
    uint64_t seed;
    /* put, txn-put, txn-mixed, watch-latency */
    int key_size;
    int val_size;
    int sequential_keys;
    uint64_t key_space_size;
    const char *key_prefix; /* ketch extension: put keys are prefix + varint */
    /* range, txn-mixed */
    const char *range_key;
    const char *range_end;
    char consistency; /* 'l' or 's' */
    int64_t limit;
    int txn_ops;
    double rw_ratio;
    /* watch-latency */
    int put_total;
    double put_rate;
    int streams;
    int watchers_per_stream;
    /* k8s */
    int objects;
    int namespaces;
    int events_per_lease;
};

/* Parses the command line (subcommand anywhere, flags as --name value or
 * --name=value). Fills o with the defaults of etcd's benchmark tool for
 * what is not given. Returns 0, 1 if help was asked for (usage written to
 * err), or -1 with a message in err. */
int bench_parse_args(int argc, char **argv, struct bench_opts *o, char *err, size_t errlen);
void bench_opts_free(struct bench_opts *o);
const char *bench_usage(void);

/* etcd's key generation: Go's binary.PutVarint (zig-zag) of v into a
 * zeroed buffer of len bytes (truncated if too short). */
void bench_put_varint(uint8_t *buf, size_t len, int64_t v);
/* Parses a number with an optional suffix k/m/g (1000s). -1 if bad. */
int bench_parse_u64(const char *s, uint64_t *out);

/* ---- the engine ---- */

#define BENCH_MAX_OPS 8
#define BENCH_MAX_ERRS 32

struct bench;
struct slot;

/* Continuation after a reply: issue a follow-up with bench_call, or finish
 * with bench_next. */
typedef void (*slot_cb)(struct slot *s, const struct client_reply *r);

struct slot {
    struct bench *b;
    unsigned idx;
    struct client_conn *conn;
    uint64_t t0;    /* start of the request in flight */
    uint64_t op_t0; /* start of the logical operation (k8s list) */
    int op;         /* op index recorded for the request in flight */
    slot_cb cb;
    int idle;
    /* workload state */
    uint64_t n;
    int kind;
    int tries;
    uint32_t obj;
    int64_t rev;
    size_t keylen;
    uint8_t key[512];
    uint8_t key2[512];
    size_t key2len;
    uint64_t rng;
};

struct workload_ops {
    const char *ops[BENCH_MAX_OPS]; /* names of the recorded operations */
    int nops;
    /* Before the clock starts (may run requests itself). 0 or -1. */
    int (*setup)(struct bench *b);
    /* Starts one logical operation on the slot. */
    void (*start)(struct slot *s);
    void (*cleanup)(struct bench *b);
};

struct err_count {
    int status;
    char message[160];
    uint64_t count;
};

struct bench {
    struct bench_opts *o;
    uv_loop_t *loop;
    struct client_conn **conns;
    int connected;
    struct slot *slots;
    const struct workload_ops *w;
    void *wstate;
    struct client_hist hist[BENCH_MAX_OPS];
    uint64_t done[BENCH_MAX_OPS];
    uint64_t started; /* logical operations started */
    uint64_t requests, errors;
    struct err_count errs[BENCH_MAX_ERRS];
    int nerrs;
    uint64_t err_other;
    uint64_t t_start, t_end;
    int stopping, running_slots;
    uint64_t last_progress_done, last_d;
    double last_el;
    double stalled_for;
    uv_timer_t progress, deadline;
    int phase_active;
    char note[256]; /* printed with the report (e.g. leases unsupported) */
    uint64_t conflicts;
    int fatal;
};

uint64_t bench_rand(uint64_t *state);
/* Issues a unary request on the slot's connection; records its latency as
 * op when it completes, then calls cb. */
void bench_call(struct slot *s, int op, const char *path, const ProtobufCMessage *req, slot_cb cb);
/* The logical operation is over: start the next, or go idle. */
void bench_next(struct slot *s);
/* Records a latency the workload measured itself. */
void bench_record(struct bench *b, int op, uint64_t ns);
void bench_count_error(struct bench *b, int status, const char *message);
/* Runs the slots until total/duration is reached (the measured phase). */
int bench_run_phase(struct bench *b, const char *label);
/* Prints a fatal error and exits 1. */
void bench_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

extern const struct workload_ops bench_put_ops, bench_range_ops, bench_txn_put_ops,
    bench_txn_mixed_ops, bench_k8s_ops;
int bench_watch_latency(struct bench *b);
void bench_watch_cleanup(void);
int bench_ready(struct bench_opts *o);

/* Starts the once-a-second progress line and stall check; sets t_start. */
void bench_progress_start(struct bench *b);
/* After closing everything: runs loop until no handle is left, for at most
 * ms; returns how many are left (then the loop must not be closed). */
int bench_drain_loop(uv_loop_t *loop, int ms);
int bench_main_run(struct bench_opts *o);
extern const struct workload_ops bench_watch_ops;

void bench_report(struct bench *b, FILE *out);

#endif
