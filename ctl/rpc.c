/* A synchronous layer over the asynchronous client (src/client): run the
 * loop until the reply arrives or --command-timeout passes, failing over to
 * the next endpoint when one cannot be connected to. ketchctl is a one-shot
 * process: on a timeout it exits, so nothing that was left running on the
 * loop needs unwinding. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <signal.h>
#include <unistd.h>

#include "client/client.h"
#include "ctl.h"
#include "net/tls.h"

static uv_loop_t loop;
static bool loop_ready;
static struct client_conn *conn;
static const char *conn_ep;
static int conn_err;        /* 1 = pending, 0 = up, <0 = failed */
static bool timer_fired;
static uv_timer_t timer;
static char client_uuid[40];

static void loop_init(void)
{
    if (loop_ready)
        return;
    uv_loop_init(&loop);
    uv_timer_init(&loop, &timer);
    loop_ready = true;
    /* clientv3 names its resolver target endpoint://client-<uuid>/<ep> */
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    unsigned r[8];
    for (int i = 0; i < 8; i++)
        r[i] = (unsigned)rand() & 0xffff;
    snprintf(client_uuid, sizeof client_uuid, "%04x%04x-%04x-4%03x-%04x-%04x%04x%04x", r[0], r[1],
             r[2], r[3] & 0xfff, (r[4] & 0x3fff) | 0x8000, r[5], r[6], r[7]);
}

static void on_timer(uv_timer_t *t)
{
    timer_fired = true;
    uv_stop(t->loop);
}

/* Runs the loop until *flag becomes true or ms pass. Returns false on timeout. */
static bool run_until(volatile bool *flag, int64_t ms)
{
    timer_fired = false;
    if (ms < 1)
        ms = 1;
    uv_timer_start(&timer, on_timer, (uint64_t)ms, 0);
    while (!*flag && !timer_fired)
        uv_run(&loop, UV_RUN_ONCE);
    uv_timer_stop(&timer);
    return *flag;
}

static bool conn_settled;
static void on_conn(struct client_conn *c, int err, void *arg)
{
    if (c != conn)
        return;
    conn_err = err;
    conn_settled = true;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void drop_conn(void)
{
    if (conn) {
        client_conn_close(conn);
        conn = NULL;
        uv_run(&loop, UV_RUN_NOWAIT);
    }
}

static bool given(const char *s) { return s && *s; }

/* clientv3's credentials: TLS when a certificate, key or CA is given, when
 * --insecure-transport=false, or for an https:// endpoint (the system's
 * roots then); an http:// endpoint is always cleartext. */
static const struct client_opts *conn_opts(void)
{
    static struct client_opts o;
    static bool done;
    if (done)
        return &o;
    done = true;
    bool want = given(g.cacert) || given(g.cert) || given(g.key) || !g.insecure_transport;
    for (size_t i = 0; i < g.n_endpoints; i++)
        if (!strncmp(g.endpoints[i], "https://", 8))
            want = true;
    if (!want)
        return &o;
    /* transport.TLSInfo.ClientConfig's checks and texts: net/tls.c's */
    struct tls_ctx *ctx;
    ctl_tls_ctx(g.cacert, g.cert, g.key, g.skip_verify, &ctx);
    o.tls = ctx;
    return &o;
}

/* --user name[:password] and --password (etcdctl's authCfgFromCmd). */
static char *auth_name, *auth_pass;
static bool auth_parsed;
static void auth_parse(void)
{
    if (auth_parsed)
        return;
    auth_parsed = true;
    if (!given(g.user))
        return;
    if (given(g.password)) {
        auth_name = strdup(g.user);
        auth_pass = strdup(g.password);
        return;
    }
    const char *colon = strchr(g.user, ':');
    if (colon) {
        auth_name = strndup(g.user, (size_t)(colon - g.user));
        auth_pass = strdup(colon + 1);
        return;
    }
    auth_name = strdup(g.user);
    auth_pass = ctl_ask_password("Password: ");
}

struct call {
    bool done;
    struct ctl_reply *out;
};
static void on_reply(void *arg, const struct client_reply *r);

/* Authenticate on the current connection and send its token with every
 * later call. Returns 0, or the gRPC status (reply in *out). */
static int authenticate(int64_t deadline, struct ctl_reply *out)
{
    memset(out, 0, sizeof *out);
    /* log in without the stale token (etcd refuses a call carrying one) */
    client_conn_set_header(conn, "token", NULL);
    Etcdserverpb__AuthenticateRequest req = ETCDSERVERPB__AUTHENTICATE_REQUEST__INIT;
    req.name = auth_name;
    req.password = auth_pass;
    struct call c = {.out = out};
    if (client_unary(conn, "/etcdserverpb.Auth/Authenticate", &req.base, on_reply, &c) != 0) {
        out->status = 14;
        out->message = strdup("connection closed");
        return 14;
    }
    if (!run_until(&c.done, deadline - now_ms())) {
        out->status = 4;
        out->message = strdup("context deadline exceeded");
        return 4;
    }
    if (out->status)
        return out->status;
    Etcdserverpb__AuthenticateResponse *resp =
        etcdserverpb__authenticate_response__unpack(NULL, out->len, out->data);
    if (resp && resp->token)
        client_conn_set_header(conn, "token", resp->token);
    if (resp)
        etcdserverpb__authenticate_response__free_unpacked(resp, NULL);
    ctl_reply_free(out);
    return 0;
}

/* Tries endpoints in order (then again) until one connects or deadline. */
static bool connect_any(char **eps, size_t n, int64_t deadline)
{
    loop_init();
    if (conn && conn_err == 0)
        return true;
    size_t i = 0;
    while (now_ms() < deadline) {
        drop_conn();
        const char *ep = eps[i % n];
        conn_settled = false;
        conn_err = 1;
        if (client_conn_open_opts(&loop, ep, conn_opts(), on_conn, NULL, &conn) != 0) {
            conn = NULL;
        } else {
            conn_ep = ep;
            int64_t left = deadline - now_ms();
            int64_t wait = g.dial_timeout_ms < left ? g.dial_timeout_ms : left;
            run_until(&conn_settled, wait);
            if (conn_settled && conn_err == 0) {
                auth_parse();
                if (!auth_name)
                    return true;
                struct ctl_reply ar;
                int st = authenticate(deadline, &ar);
                /* clientv3 goes on without a token when auth is off */
                if (st == 0 || !strcmp(ar.message, "etcdserver: authentication is not enabled")) {
                    ctl_reply_free(&ar);
                    return true;
                }
                if (st != 14) {
                    /* a refusal (wrong password, auth not enabled): as
                     * clientv3.New, which fails with the error */
                    ctl_warn_line(eps[0], ar.status, ar.message);
                    ctl_die(EXIT_BAD_CONN, "%s", ctl_err_text(ar.status, ar.message));
                }
                ctl_reply_free(&ar);
            }
        }
        i++;
        if (i % n == 0 && now_ms() + 100 < deadline)
            usleep(100 * 1000); /* every endpoint refused: back off a little */
    }
    drop_conn();
    return false;
}

static void on_reply(void *arg, const struct client_reply *r)
{
    struct call *c = arg;
    c->out->status = r->status;
    c->out->message = strdup(r->message ? r->message : "");
    if (r->data) {
        c->out->data = malloc(r->len ? r->len : 1);
        if (r->len) memcpy(c->out->data, r->data, r->len);
        c->out->len = r->len;
    }
    c->done = true;
}

static const char *const code_names[] = {
    "OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
    "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted",
    "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated",
};

/* clientv3's rpctypes: errors it turns back into typed errors by text. */
static const char *const etcd_errors[] = {
    "etcdserver: key is not provided",
    "etcdserver: key not found",
    "etcdserver: value is provided",
    "etcdserver: lease is provided",
    "etcdserver: too many operations in txn request",
    "etcdserver: duplicate key given in txn request",
    "etcdserver: mvcc: required revision has been compacted",
    "etcdserver: mvcc: required revision is a future revision",
    "etcdserver: mvcc: database space exceeded",
    "etcdserver: requested lease not found",
    "etcdserver: lease already exists",
    "etcdserver: too large lease TTL",
    "etcdserver: watch canceled",
    "etcdserver: member ID already exist",
    "etcdserver: Peer URLs already exists",
    "etcdserver: re-configuration failed due to not enough started members",
    "etcdserver: given member URLs are invalid",
    "etcdserver: member not found",
    "etcdserver: can only promote a learner member",
    "etcdserver: can only promote a learner member which is in sync with leader",
    "etcdserver: too many learner members in cluster",
    "etcdserver: request is too large",
    "etcdserver: too many requests",
    "etcdserver: root user does not exist",
    "etcdserver: root user does not have root role",
    "etcdserver: user name already exists",
    "etcdserver: user name is empty",
    "etcdserver: user name not found",
    "etcdserver: role name already exists",
    "etcdserver: role name not found",
    "etcdserver: role name is empty",
    "etcdserver: authentication failed, invalid user ID or password",
    "etcdserver: permission denied",
    "etcdserver: role is not granted to the user",
    "etcdserver: permission is not granted to the role",
    "etcdserver: authentication is not enabled",
    "etcdserver: invalid auth token",
    "etcdserver: invalid auth management",
    "etcdserver: revision of auth store is old",
    "etcdserver: no leader",
    "etcdserver: not leader",
    "etcdserver: leader changed",
    "etcdserver: not capable",
    "etcdserver: server stopped",
    "etcdserver: request timed out",
    "etcdserver: request timed out, possibly due to previous leader failure",
    "etcdserver: request timed out, possibly due to connection lost",
    "etcdserver: request timed out, waiting for the applied index took too long",
    "etcdserver: unhealthy cluster",
    "etcdserver: corrupt cluster",
    "etcdserver: bad leader transferee",
};

static const char *code_name(int status)
{
    if (status >= 0 && status < (int)(sizeof code_names / sizeof code_names[0]))
        return code_names[status];
    return "Unknown";
}

static char *grpc_err(int status, const char *message)
{
    static char buf[4096];
    snprintf(buf, sizeof buf, "rpc error: code = %s desc = %s", code_name(status), message);
    return buf;
}

const char *ctl_err_text(int status, const char *message)
{
    if (status == 4 && strcmp(message, "context deadline exceeded") == 0)
        return message;
    for (size_t i = 0; i < sizeof etcd_errors / sizeof etcd_errors[0]; i++)
        if (strcmp(message, etcd_errors[i]) == 0)
            return message;
    return grpc_err(status, message);
}

void ctl_warn_line(const char *endpoint, int status, const char *message)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char t[64];
    strftime(t, sizeof t, "%Y-%m-%dT%H:%M:%S", &tm);
    struct buf b = {0};
    buf_printf(&b,
               "{\"level\":\"warn\",\"ts\":\"%s.%03ldZ\",\"caller\":\"clientv3/"
               "retry_interceptor.go:62\",\"msg\":\"retrying of unary invoker failed\","
               "\"target\":",
               t, ts.tv_nsec / 1000000);
    char target[512];
    snprintf(target, sizeof target, "endpoint://client-%s/%s", client_uuid, endpoint);
    out_json_str(&b, target, strlen(target));
    buf_puts(&b, ",\"attempt\":0,\"error\":");
    const char *e = grpc_err(status, message);
    out_json_str(&b, e, strlen(e));
    buf_puts(&b, "}\n");
    if (b.len) fwrite(b.p, 1, b.len, stderr);
    buf_free(&b);
}

static int deadline_reply(struct ctl_reply *out)
{
    out->status = 4;
    out->message = strdup("context deadline exceeded");
    return 4;
}

static int call_on_t(char **eps, size_t n, const char *path, const ProtobufCMessage *req,
                     struct ctl_reply *out, int64_t timeout_ms);

static int call_on(char **eps, size_t n, const char *path, const ProtobufCMessage *req,
                   struct ctl_reply *out)
{
    return call_on_t(eps, n, path, req, out, g.command_timeout_ms);
}

int ctl_call_wait(const char *path, const ProtobufCMessage *req, struct ctl_reply *out,
                  int64_t timeout_ms)
{
    return call_on_t(g.endpoints, g.n_endpoints, path, req, out,
                     timeout_ms > 0 ? timeout_ms : INT64_MAX / 4);
}

static int call_on_t(char **eps, size_t n, const char *path, const ProtobufCMessage *req,
                     struct ctl_reply *out, int64_t timeout_ms)
{
    memset(out, 0, sizeof *out);
    int64_t deadline = now_ms() + timeout_ms;
    int64_t dial_deadline = now_ms() + g.command_timeout_ms;
    if (!connect_any(eps, n, dial_deadline < deadline ? dial_deadline : deadline)) {
        loop_init();
        ctl_warn_line(eps[0], 4, "latest balancer error: all SubConns are in TransientFailure");
        return deadline_reply(out);
    }
    for (int attempt = 0;; attempt++) {
        struct call c = {.out = out};
        if (client_unary(conn, path, req, on_reply, &c) != 0) {
            out->status = 14;
            out->message = strdup("connection closed");
        } else if (!run_until(&c.done, deadline - now_ms())) {
            ctl_warn_line(eps[0], 4, "context deadline exceeded");
            return deadline_reply(out);
        }
        /* clientv3 re-authenticates once when the token expired (e.g. the
         * server restarted, or simple tokens timed out) */
        if (attempt == 0 && auth_name && out->status &&
            !strcmp(out->message, "etcdserver: invalid auth token")) {
            struct ctl_reply ar;
            if (authenticate(deadline, &ar) == 0) {
                ctl_reply_free(out);
                continue;
            }
            ctl_reply_free(&ar);
        }
        break;
    }
    if (out->status != 0)
        ctl_warn_line(eps[0], out->status, out->message);
    return out->status;
}

int ctl_call(const char *path, const ProtobufCMessage *req, struct ctl_reply *out)
{
    return call_on(g.endpoints, g.n_endpoints, path, req, out);
}

int ctl_call_ep(const char *endpoint, const char *path, const ProtobufCMessage *req,
                struct ctl_reply *out)
{
    drop_conn();
    char *eps[1] = {(char *)endpoint};
    int rc = call_on(eps, 1, path, req, out);
    drop_conn();
    return rc;
}

void ctl_reply_free(struct ctl_reply *r)
{
    free(r->message);
    free(r->data);
    memset(r, 0, sizeof *r);
}

ProtobufCMessage *ctl_rpc_at(const char *endpoint, const char *path, const ProtobufCMessage *req,
                             const ProtobufCMessageDescriptor *resp, int code, const char *wrap)
{
    struct ctl_reply r;
    if (endpoint ? ctl_call_ep(endpoint, path, req, &r) : ctl_call(path, req, &r)) {
        const char *t = ctl_err_text(r.status, r.message);
        if (wrap)
            ctl_die(code, wrap, t);
        ctl_die(code, "%s", t);
    }
    ProtobufCMessage *m = protobuf_c_message_unpack(resp, NULL, r.len, r.data);
    if (!m)
        ctl_die(EXIT_ERR, "cannot decode the reply");
    ctl_reply_free(&r);
    return m;
}

ProtobufCMessage *ctl_rpc_each(const char *endpoint, const char *path, const ProtobufCMessage *req,
                               const ProtobufCMessageDescriptor *resp, const char *fail_fmt,
                               char **err)
{
    struct ctl_reply r;
    ProtobufCMessage *m = NULL;
    const char *t = "cannot decode the reply";
    if (ctl_call_ep(endpoint, path, req, &r))
        t = ctl_err_text(r.status, r.message);
    else
        m = protobuf_c_message_unpack(resp, NULL, r.len, r.data);
    if (!m) {
        fflush(stdout);
        fprintf(stderr, fail_fmt, endpoint, t);
        if (err) {
            free(*err);
            *err = strdup(t);
        }
    }
    ctl_reply_free(&r);
    return m;
}

ProtobufCMessage *ctl_rpc(const char *path, const ProtobufCMessage *req,
                          const ProtobufCMessageDescriptor *resp)
{
    return ctl_rpc_at(NULL, path, req, resp, EXIT_ERR, NULL);
}

/* ---- streams ---- */

struct strm {
    bool done, stop;
    int status;
    char *message;
    ctl_msg_fn fn;
    void *arg;
    struct client_stream *s;
};

static void on_smsg(void *arg, const uint8_t *data, size_t len)
{
    struct strm *st = arg;
    if (st->stop)
        return;
    if (!st->fn(st->arg, data, len)) {
        st->stop = true;
        uv_stop(&loop);
    }
    fflush(stdout);
}

static void on_sclose(void *arg, const struct client_reply *r)
{
    struct strm *st = arg;
    st->status = r->status;
    st->message = strdup(r->message ? r->message : "");
    st->done = true;
    uv_stop(&loop);
}

static const ProtobufCMessage *resend_msg;
int64_t ctl_stream_interval_ms; /* set by the message callback to resend */
static struct client_stream *cur_stream;
static uv_timer_t resend_timer;

static void on_resend(uv_timer_t *t)
{
    if (cur_stream && resend_msg)
        client_stream_send(cur_stream, resend_msg);
    if (ctl_stream_interval_ms > 0)
        uv_timer_start(t, on_resend, (uint64_t)ctl_stream_interval_ms, 0);
}

int ctl_stream(const char *path, const ProtobufCMessage *first, ctl_msg_fn fn, void *arg,
               int64_t timeout_ms, char **message)
{
    int64_t deadline = now_ms() + g.command_timeout_ms;
    if (!connect_any(g.endpoints, g.n_endpoints, deadline)) {
        if (message)
            *message = strdup("context deadline exceeded");
        return 4;
    }
    struct strm st = {.fn = fn, .arg = arg};
    if (client_stream_open(conn, path, on_smsg, on_sclose, &st, &st.s) != 0 ||
        client_stream_send(st.s, first) != 0) {
        if (message)
            *message = strdup("connection closed");
        return 14;
    }
    cur_stream = st.s;
    resend_msg = first;
    uv_timer_init(&loop, &resend_timer);
    int64_t end = timeout_ms > 0 ? now_ms() + timeout_ms : 0;
    int64_t last_interval = 0;
    while (!st.done && !st.stop) {
        if (ctl_stream_interval_ms != last_interval) {
            last_interval = ctl_stream_interval_ms;
            if (last_interval > 0)
                uv_timer_start(&resend_timer, on_resend, (uint64_t)last_interval, 0);
        }
        if (end) {
            if (now_ms() >= end) {
                if (message)
                    *message = strdup("context deadline exceeded");
                return 4;
            }
            timer_fired = false;
            uv_timer_start(&timer, on_timer, (uint64_t)(end - now_ms() + 1), 0);
        }
        uv_run(&loop, UV_RUN_ONCE);
    }
    uv_timer_stop(&resend_timer);
    cur_stream = NULL;
    if (st.stop)
        return 0;
    if (message)
        *message = st.message;
    else
        free(st.message);
    return st.status;
}

char *ctl_read_stdin(size_t *len)
{
    struct buf b = {0};
    char tmp[65536];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, stdin)) > 0)
        buf_put(&b, tmp, n);
    buf_put(&b, "", 1);
    *len = b.len - 1;
    return b.p;
}

/* ---- sessions (concurrency.NewSession): a lease kept alive in the
 * background while the loop runs, for lock and elect ---- */

static struct client_stream *sess_stream;
static uv_timer_t sess_timer;
static bool sess_expired, got_signal;
static Etcdserverpb__LeaseKeepAliveRequest sess_req = ETCDSERVERPB__LEASE_KEEP_ALIVE_REQUEST__INIT;

static void sess_msg(void *arg, const uint8_t *data, size_t len)
{
    Etcdserverpb__LeaseKeepAliveResponse *r =
        etcdserverpb__lease_keep_alive_response__unpack(NULL, len, data);
    if (r && r->ttl <= 0) {
        sess_expired = true;
        uv_stop(&loop);
    }
    if (r)
        etcdserverpb__lease_keep_alive_response__free_unpacked(r, NULL);
}

static void sess_close(void *arg, const struct client_reply *r)
{
    sess_stream = NULL;
    sess_expired = true;
    uv_stop(&loop);
}

static void sess_tick(uv_timer_t *t)
{
    if (sess_stream)
        client_stream_send(sess_stream, &sess_req.base);
}

int ctl_session_start(int64_t lease, int64_t ttl_s)
{
    int64_t deadline = now_ms() + g.command_timeout_ms;
    if (!connect_any(g.endpoints, g.n_endpoints, deadline))
        return 4;
    sess_req.id = lease;
    if (client_stream_open(conn, "/etcdserverpb.Lease/LeaseKeepAlive", sess_msg, sess_close, NULL,
                           &sess_stream) != 0)
        return 14;
    client_stream_send(sess_stream, &sess_req.base);
    uint64_t every = ttl_s > 0 ? (uint64_t)ttl_s * 1000 / 3 : 1000;
    if (every < 500)
        every = 500;
    uv_timer_init(&loop, &sess_timer);
    uv_timer_start(&sess_timer, sess_tick, every, every);
    ctl_catch_signals();
    return 0;
}

bool ctl_session_expired(void)
{
    return sess_expired;
}

static bool waiting_signal; /* in ctl_wait_signal or ctl_spawn_wait */

static void on_signal(uv_signal_t *h, int signum)
{
    got_signal = true;
    uv_stop(&loop);
    if (!waiting_signal) /* e.g. while Lock waits: the context is canceled */
        ctl_die(EXIT_ERR, "context canceled");
}

static uv_signal_t sig_int, sig_term;
static bool catching;

void ctl_catch_signals(void)
{
    loop_init();
    if (catching)
        return;
    catching = true;
    uv_signal_init(&loop, &sig_int);
    uv_signal_init(&loop, &sig_term);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
}

bool ctl_wait_signal(void)
{
    ctl_catch_signals();
    waiting_signal = true;
    while (!got_signal && !sess_expired)
        uv_run(&loop, UV_RUN_ONCE);
    waiting_signal = false;
    return got_signal;
}

static bool child_done;
static int64_t child_status;
static int child_signal;

static void on_exit_cb(uv_process_t *p, int64_t status, int sig)
{
    child_done = true;
    child_status = status;
    child_signal = sig;
    uv_close((uv_handle_t *)p, NULL);
}

int ctl_spawn_wait(char **argv, char **env, int *signal_out)
{
    loop_init();
    static uv_process_t proc;
    uv_stdio_container_t stdio[3] = {
        {.flags = UV_INHERIT_FD, .data.fd = 0},
        {.flags = UV_INHERIT_FD, .data.fd = 1},
        {.flags = UV_INHERIT_FD, .data.fd = 2},
    };
    uv_process_options_t o = {.exit_cb = on_exit_cb, .file = argv[0], .args = argv, .env = env,
                              .stdio_count = 3, .stdio = stdio};
    fflush(stdout);
    int r = uv_spawn(&loop, &proc, &o);
    if (r < 0)
        return r;
    waiting_signal = true;
    while (!child_done)
        uv_run(&loop, UV_RUN_ONCE);
    waiting_signal = false;
    *signal_out = child_signal;
    return (int)child_status;
}

/* ---- raw access for commands that drive the client asynchronously ---- */

uv_loop_t *ctl_loop(void)
{
    loop_init();
    return &loop;
}

struct client_conn *ctl_connect(void)
{
    int64_t deadline = now_ms() + g.command_timeout_ms;
    if (!connect_any(g.endpoints, g.n_endpoints, deadline)) {
        ctl_warn_line(g.endpoints[0], 4, "latest balancer error: all SubConns are in TransientFailure");
        ctl_die(EXIT_ERR, "context deadline exceeded");
    }
    return conn;
}

int ctl_tls_ctx(const char *cacert, const char *cert, const char *key, bool skip_verify,
                struct tls_ctx **out)
{
    struct tls_options to = {.trusted_ca_file = cacert, .cert_file = cert, .key_file = key};
    char err[512];
    tls_ctx *ctx;
    if (tls_ctx_new_client(&ctx, &to, skip_verify, "h2", err, sizeof err))
        ctl_die(EXIT_BAD_ARGS, "%s", err);
    *out = (struct tls_ctx *)ctx;
    return 0;
}
