/* ketchctl: etcdctl v3's commands, flags, environment variables and output
 * formats (simple, json, fields, table), plus a Kubernetes view of the
 * keyspace (k8s.c). Output is byte-for-byte what Debian's etcdctl 3.4.23
 * prints for the same server replies; see the etcdctl sources under
 * /usr/share/gocode/src/go.etcd.io/etcd/etcdctl/ctlv3/command. */
#ifndef KETCH_CTL_CTL_H
#define KETCH_CTL_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kv.pb-c.h"
#include "rpc.pb-c.h"

/* etcdctl's exit codes (command/error.go). */
enum {
    EXIT_OK = 0,
    EXIT_ERR = 1,
    EXIT_BAD_CONN = 2,
    EXIT_INVALID_INPUT = 3,
    EXIT_BAD_FEATURE = 4,
    EXIT_INTERRUPTED = 5,
    EXIT_IO = 6,
    EXIT_BAD_ARGS = 128,
};

enum out_fmt { OUT_SIMPLE, OUT_JSON, OUT_FIELDS, OUT_TABLE, OUT_PROTOBUF };

/* Global flags (ctl.go) after command line and ETCDCTL_* environment. */
struct ctl_global {
    char **endpoints;
    size_t n_endpoints;
    int64_t dial_timeout_ms;
    int64_t command_timeout_ms;
    enum out_fmt out;
    bool hex;
    bool value_only; /* get --print-value-only (simple printer) */
    const char *cacert, *cert, *key, *user, *password;
    bool insecure_transport, skip_verify;
};
extern struct ctl_global g;

/* Prints "Error: <msg>" on stderr as etcdctl's ExitWithError and exits. */
_Noreturn void ctl_die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- rpc.c: a synchronous layer over src/client ---- */

/* A finished unary call. data is malloc'd (owned by the caller). */
struct ctl_reply {
    int status;
    char *message;
    uint8_t *data;
    size_t len;
};

/* Connects (first endpoint that answers; the next on failure) and runs one
 * unary call, bounded by --command-timeout. On a gRPC error prints etcdctl's
 * warn line and returns the status; the caller prints the error. On timeout
 * or when no endpoint answers, exits as etcdctl does. */
int ctl_call(const char *path, const ProtobufCMessage *req, struct ctl_reply *out);
/* As ctl_call against one given endpoint (endpoint status/health). Returns
 * -1 if it could not connect in time (message in out->message). */
int ctl_call_ep(const char *endpoint, const char *path, const ProtobufCMessage *req,
                struct ctl_reply *out);
/* The etcdctl text of a gRPC error: the bare message for etcd's own errors
 * (clientv3's rpctypes), else "rpc error: code = X desc = Y". Static buffer. */
const char *ctl_err_text(int status, const char *message);
/* Prints clientv3's "retrying of unary invoker failed" warn line. */
void ctl_warn_line(const char *endpoint, int status, const char *message);
void ctl_reply_free(struct ctl_reply *r);
/* A command's call: ctl_call (or ctl_call_ep at endpoint, when not NULL),
 * then the reply unpacked as resp. On a gRPC error prints etcdctl's
 * "Error: <text>" (the text put into wrap's %s, when given: "failed to
 * grant lease (%s)") and exits with code; exits 1 when the reply does not
 * decode. The message is the caller's (never freed). */
ProtobufCMessage *ctl_rpc_at(const char *endpoint, const char *path, const ProtobufCMessage *req,
                             const ProtobufCMessageDescriptor *resp, int code, const char *wrap);
/* One endpoint's call for the commands that ask every endpoint (endpoint
 * status / hashkv, defrag): the reply unpacked, or NULL after printing
 * fail_fmt (its %s: the endpoint, then the error text) on stderr, as
 * etcdctl reports one endpoint and goes on. With err, the text replaces
 * *err (malloc'd). */
ProtobufCMessage *ctl_rpc_each(const char *endpoint, const char *path, const ProtobufCMessage *req,
                               const ProtobufCMessageDescriptor *resp, const char *fail_fmt,
                               char **err);
/* ctl_rpc_at with failover, the bare text and exit code 1. */
ProtobufCMessage *ctl_rpc(const char *path, const ProtobufCMessage *req,
                          const ProtobufCMessageDescriptor *resp);

/* As ctl_call with its own timeout (<= 0: none; the connection is still
 * bounded by --command-timeout), for calls that wait (lock, campaign). */
int ctl_call_wait(const char *path, const ProtobufCMessage *req, struct ctl_reply *out,
                  int64_t timeout_ms);
/* concurrency.NewSession: keeps lease alive (every ttl/3 s) for as long as
 * the loop runs (inside ctl_call*, ctl_wait_signal, ctl_spawn_wait).
 * Returns 0 or a gRPC status. */
int ctl_session_start(int64_t lease, int64_t ttl_s);
bool ctl_session_expired(void);
/* From now on SIGINT/SIGTERM are only noted (for ctl_wait_signal). */
void ctl_catch_signals(void);
/* Runs until SIGINT/SIGTERM (true) or the session expires (false). */
bool ctl_wait_signal(void);
/* Runs argv (PATH searched) with env, stdio inherited, the session kept
 * alive meanwhile. Returns its exit status (signal in *signal_out), or a
 * negative libuv error when it could not start. */
int ctl_spawn_wait(char **argv, char **env, int *signal_out);

/* The loop and the (connected, authenticated) connection of rpc.c, for
 * commands that drive src/client asynchronously (make-mirror). Exits as
 * etcdctl when no endpoint answers. */
struct uv_loop_s *ctl_loop(void);
struct client_conn *ctl_connect(void);
/* A TLS client context from files (exits on an error). */
struct tls_ctx;
int ctl_tls_ctx(const char *cacert, const char *cert, const char *key, bool skip_verify,
                struct tls_ctx **out);

/* Streams: msg_cb gets each response message; returns when the stream
 * ends (returns its status) or when done_cb asks (returns 0). */
typedef bool (*ctl_msg_fn)(void *arg, const uint8_t *data, size_t len); /* false: stop */
int ctl_stream(const char *path, const ProtobufCMessage *first, ctl_msg_fn fn, void *arg,
               int64_t timeout_ms, char **message);

/* Reads all of stdin (malloc'd, NUL-terminated, length in *len). */
char *ctl_read_stdin(size_t *len);

/* ---- out.c: formatting as Go's fmt / encoding/json / tablewriter ---- */

/* A growable byte buffer. */
struct buf {
    char *p;
    size_t len, cap;
};
void buf_put(struct buf *b, const void *p, size_t n);
void buf_puts(struct buf *b, const char *s);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_free(struct buf *b);

void out_base64(struct buf *b, const uint8_t *p, size_t n);
/* encoding/json string (with HTML escaping and \ufffd for bad UTF-8), quoted. */
void out_json_str(struct buf *b, const char *p, size_t n);
/* fmt's %q (strconv.Quote). */
void out_goquote(struct buf *b, const char *p, size_t n);
/* "\x66\x6f\x6f" as etcdctl's --hex. */
void out_hex(struct buf *b, const uint8_t *p, size_t n);
/* go-humanize Bytes (SI). */
void out_humanize(struct buf *b, uint64_t n);
/* time.Duration.String of ns. */
void out_duration(struct buf *b, int64_t ns);
/* Renders a tablewriter table (header centred, cells aligned right or left). */
void out_table(FILE *f, const char *const *hdr, size_t ncol, char ***rows, size_t nrows,
               bool right);
/* Parses a Go duration ("5s", "1m30s", "500ms"); false if malformed. */
bool parse_duration(const char *s, int64_t *ms);

/* ---- print.c: the printers (printer_*.go) ---- */
void print_get(const Etcdserverpb__RangeResponse *r);
void print_put(const Etcdserverpb__PutResponse *r);
void print_del(const Etcdserverpb__DeleteRangeResponse *r);
void print_txn(const Etcdserverpb__TxnResponse *r);
void print_watch(const Etcdserverpb__WatchResponse *r);
void print_grant(const Etcdserverpb__LeaseGrantResponse *r);
void print_revoke(int64_t id, const Etcdserverpb__LeaseRevokeResponse *r);
void print_keepalive(const Etcdserverpb__LeaseKeepAliveResponse *r);
void print_ttl(const Etcdserverpb__LeaseTimeToLiveResponse *r, bool keys);
void print_leases(const Etcdserverpb__LeaseLeasesResponse *r);
void print_members(const Etcdserverpb__MemberListResponse *r);
void print_alarm(const Etcdserverpb__AlarmResponse *r);
struct ep_status {
    const char *ep;
    Etcdserverpb__StatusResponse *resp;
};
void print_ep_status(const struct ep_status *s, size_t n);
struct ep_health {
    const char *ep;
    bool health;
    char took[64];
    char *error; /* NULL if healthy */
};
void print_ep_health(const struct ep_health *h, size_t n);
/* Exits with etcdctl's "<fmt> not supported as output format" if the
 * current printer lacks a method (fields/table printers of printer.go). */
void print_need_rpc_printer(void);

/* ---- pbout.c: any message by its descriptor ---- */
/* Whether a singular field (at p) holds its zero value: encoding/json's
 * omitempty test (so -0.0 is empty too). */
bool pb_field_empty(const ProtobufCFieldDescriptor *f, const void *p);
/* Go's encoding/json of the gogo struct (no newline). */
void out_pb_json(struct buf *b, const ProtobufCMessage *m);
/* printer_protobuf.go: the marshalled message, raw on stdout. */
void out_pb_raw(const ProtobufCMessage *m);
/* -w json / protobuf: prints m and returns true; -w table: exits with
 * etcdctl's "table not supported"; simple / fields: returns false. */
bool print_generic(const ProtobufCMessage *m);
/* The header of an etcd reply (its field 1), or NULL. */
const Etcdserverpb__ResponseHeader *resp_header(const ProtobufCMessage *m);
/* print_generic, and -w fields: the reply's header, or, when etcdctl's
 * fields printer has no method for it (!fields), its "fields not supported
 * as output format" exit. false: the simple printer's turn. */
bool print_rpc(const ProtobufCMessage *m, bool fields);
/* A reply whose simple form is one line (fmt, without the newline):
 * print_rpc, else the line. */
void print_line(const ProtobufCMessage *m, bool fields, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The fields printer's header lines. */
void print_fields_header(const Etcdserverpb__ResponseHeader *h);

/* ---- commands ---- */
int cmd_get(int argc, char **argv);
int cmd_put(int argc, char **argv);
int cmd_del(int argc, char **argv);
int cmd_txn(int argc, char **argv);
int cmd_compaction(int argc, char **argv);
int cmd_watch(int argc, char **argv);
int cmd_lease(int argc, char **argv);
int cmd_member(int argc, char **argv);
int cmd_endpoint(int argc, char **argv);
int cmd_alarm(int argc, char **argv);
int cmd_k8s(int argc, char **argv);
int cmd_user(int argc, char **argv);
/* speakeasy.Ask as etcdctl: prompt on stdout, a line from stdin (malloc'd). */
char *ctl_ask_password(const char *prompt);
int cmd_defrag(int argc, char **argv);
int cmd_lock(int argc, char **argv);
int cmd_make_mirror(int argc, char **argv);
int cmd_check(int argc, char **argv);
/* other.c: etcdctl's watch of key [end] --prefix --rev --prev-kv as a
 * create request (borrowing key and end); returns what to free once it is
 * sent (the prefix's range end), or NULL. */
char *ctl_watch_create(Etcdserverpb__WatchCreateRequest *cr, const char *key, const char *end,
                       bool prefix, int64_t rev, bool prev);
/* watchi.c: watch -i with the command line's --prefix/--rev/--prev-kv. */
int ctl_watch_interactive(bool prefix, int64_t rev, bool prev);
int cmd_elect(int argc, char **argv);
int cmd_move_leader(int argc, char **argv);
/* admin.c: member add/remove/update/promote (-1: not one of them). */
int ctl_member_admin(const char *sub, int argc, char **argv);
int ctl_endpoint_hashkv(char **eps, size_t n, int64_t rev);
/* other.c: the endpoints to talk to, or with cluster the members' client
 * URLs from the member list. */
char **ctl_endpoints(bool cluster, size_t *n);
int cmd_role(int argc, char **argv);
int cmd_auth(int argc, char **argv);
int cmd_snapshot(int argc, char **argv); /* snapshot.c */

/* ---- flags (main.c) ---- */
enum flag_type { F_BOOL, F_STR, F_INT, F_DUR };
struct flag {
    const char *name;
    char shorthand;
    enum flag_type type;
    void *ptr; /* bool*, const char**, int64_t*, int64_t* (ms) */
    bool set;
};
/* Parses argv (after the command words) against flags (NULL-terminated by
 * name) and the global flags; positional arguments are left in argv[0..]
 * and their number returned. Exits on a bad flag as etcdctl does. */
int flags_parse(int argc, char **argv, struct flag *flags);

void ctl_globals_ready(void);
/* Resolves -w and checks the TLS / auth flags (exits on a bad value). */
void ctl_init_display(void);
extern bool flags_no_global, flags_soft;
extern int64_t ctl_stream_interval_ms;
/* flags_parse, then the ETCDCTL_* environment for the global flags. */
static inline int ctl_parse(int argc, char **argv, struct flag *flags)
{
    int n = flags_parse(argc, argv, flags);
    ctl_globals_ready();
    return n;
}

/* ---- kv.c, for txn ---- */
/* Parse the arguments of get / put / del into a RequestOp (txn's op lines);
 * returns -1 when the flags do not parse. */
int kv_parse_op(int argc, char **argv, Etcdserverpb__RequestOp *op);
char *prefix_end(const uint8_t *k, size_t n, size_t *out_len);
/* clientv3.WithPrefix on key: [key, prefix_end(key)) into *k and *end; the
 * empty key means every key ("\0", "\0"). Returns what to free (the range
 * end), or NULL. */
char *prefix_range(const char *key, ProtobufCBinaryData *k, ProtobufCBinaryData *end);

#endif
