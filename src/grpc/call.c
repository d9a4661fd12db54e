/* The grpc_call API: references, response messages, trailers, deadlines.
 *
 * Response shapes (as grpc-go sends them):
 *   normal         HEADERS(:status 200, content-type) DATA... HEADERS(trailers, END_STREAM)
 *   trailers-only  HEADERS(:status, content-type, grpc-status, grpc-message, END_STREAM)
 *                  when the call ends before any message was sent.
 * Response messages are queued in call->resp; nghttp2 pulls them through
 * grpc_call_data_read, which defers when the queue is empty and the call is not
 * finished, and submits the trailers when it is. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/grpc_int.h"
#include "util/endian.h"
#include "util/errors.h"

#define NV(n, v)                                                                        \
    {                                                                                   \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, sizeof(v) - 1,                   \
            NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE                \
    }

static const char *const status_text[17] = {"0",  "1",  "2",  "3",  "4",  "5",
                                            "6",  "7",  "8",  "9",  "10", "11",
                                            "12", "13", "14", "15", "16"};

static nghttp2_nv nv_str(const char *name, const char *value)
{
    nghttp2_nv nv = {(uint8_t *)name, (uint8_t *)value, strlen(name), strlen(value),
                     NGHTTP2_NV_FLAG_NO_COPY_NAME};
    return nv;
}

struct grpc_call *grpc_call_new(struct grpc_conn *c, int32_t stream_id)
{
    struct grpc_call *call = malloc(sizeof *call);
    if (!call) return NULL;
    memset(call, 0, offsetof(struct grpc_call, hdrs_inl));
    call->refs = 1;
    call->stream_id = stream_id;
    call->conn = c;
    call->ctx = c->s->ctx;
    call->server = c->s;
    grpc_buf_init(&call->hdrs, call->hdrs_inl, sizeof call->hdrs_inl);
    grpc_buf_init(&call->req, call->req_inl, sizeof call->req_inl);
    grpc_buf_init(&call->resp, call->resp_inl, sizeof call->resp_inl);
    call->next = c->calls;
    if (c->calls) c->calls->prev = call;
    c->calls = call;
    return call;
}

static void timer_closed(uv_handle_t *h)
{
    free(h);
}

void grpc_call_deliver_close(struct grpc_call *call)
{
    if (call->close_called || !call->method || call->method->kind != GRPC_STREAM) return;
    call->close_called = true;
    if (call->method->on_close) call->method->on_close(call, call->ctx);
}

void grpc_call_detach(struct grpc_call *call)
{
    struct grpc_conn *c = call->conn;
    if (!c) return;
    if (call->prev) call->prev->next = call->next;
    else c->calls = call->next;
    if (call->next) call->next->prev = call->prev;
    call->prev = call->next = NULL;
    call->conn = NULL;
    if (!call->finished) grpc_count_handled(call, GRPC_CANCELLED);
    if (call->timer) {
        uv_timer_stop(call->timer);
        call->timer->data = NULL;
        uv_close((uv_handle_t *)call->timer, timer_closed);
        call->timer = NULL;
    }
    grpc_call_deliver_close(call);
    grpc_call_unref(call);
}

void grpc_call_ref(grpc_call *call)
{
    call->refs++;
}

void grpc_call_unref(grpc_call *call)
{
    assert(call->refs > 0);
    if (--call->refs > 0) return;
    assert(!call->conn);
    if (call->local) {
        if (call->server) {
            if (call->prev) call->prev->next = call->next;
            else call->server->locals = call->next;
            if (call->next) call->next->prev = call->prev;
        }
        /* Dropped without an answer (the server is stopping). */
        if (call->local->done)
            call->local->done(GRPC_UNAVAILABLE, "etcdserver: server stopped", NULL, 0,
                              call->local->data);
        free(call->local);
    }
    grpc_buf_free(&call->hdrs);
    grpc_buf_free(&call->req);
    grpc_buf_free(&call->resp);
    free(call->message);
    free(call->encoding);
    free(call);
}

bool grpc_call_alive(const grpc_call *call)
{
    return (call->conn || call->local) && !call->finished;
}

const char *grpc_call_header(const grpc_call *call, const char *name)
{
    /* "name\0value\0" pairs; bounded by len even if a pair were broken */
    const char *p = (const char *)call->hdrs.p, *end = p + call->hdrs.len;
    while (p < end) {
        const char *nz = memchr(p, 0, (size_t)(end - p));
        if (nz == NULL || nz + 1 >= end) break;
        const char *v = nz + 1, *vz = memchr(v, 0, (size_t)(end - v));
        if (vz == NULL) break;
        if (strcmp(p, name) == 0) return v;
        p = vz + 1;
    }
    return NULL;
}

const char *grpc_call_peer_cn(const grpc_call *call)
{
    if (call->conn == NULL || call->conn->tls == NULL) return NULL;
    return tls_conn_peer_cn(call->conn->tls);
}

uint64_t grpc_call_deadline(const grpc_call *call)
{
    return call->deadline;
}

void grpc_call_set_data(grpc_call *call, void *data)
{
    call->data = data;
}

void grpc_call_set_half_close(grpc_call *call, grpc_close_fn fn)
{
    call->on_half_close = fn;
}

void *grpc_call_get_data(const grpc_call *call)
{
    return call->data;
}

size_t grpc_call_pending_bytes(const grpc_call *call)
{
    if (call->local && call->local->pending) return call->local->pending(call->local->data);
    return call->resp.len - call->resp_off;
}

/* ---- sending ---- */

static int submit_headers(struct grpc_call *call)
{
    static const nghttp2_nv nva[] = {NV(":status", "200"),
                                     NV("content-type", "application/grpc")};
    nghttp2_data_provider prd = {.source.ptr = call, .read_callback = grpc_call_data_read};
    int rv = nghttp2_submit_response(call->conn->h2, call->stream_id, nva, 2, &prd);
    if (rv) return KERR_INTERNAL;
    call->headers_sent = true;
    return 0;
}

/* After bytes were queued or the call finished: get nghttp2 to pull. */
static int kick(struct grpc_call *call)
{
    if (call->local && call->local->on_msg) {
        /* A local stream: hand every queued message over now. */
        struct grpc_local *l = call->local;
        while (call->resp.len - call->resp_off >= 5 && grpc_call_alive(call)) {
            const uint8_t *p = call->resp.p + call->resp_off;
            size_t mlen = get_be32(p + 1);
            call->resp_off += 5 + mlen;
            l->on_msg(p + 5, mlen, l->data);
        }
        call->resp.len = call->resp_off = 0;
        return 0;
    }
    if (call->local) return 0; /* the response waits in call->resp */
    int rv = 0;
    if (!call->headers_sent) rv = submit_headers(call);
    else if (call->deferred) {
        call->deferred = false;
        rv = nghttp2_session_resume_data(call->conn->h2, call->stream_id) ? KERR_INTERNAL : 0;
    }
    grpc_conn_mark_dirty(call->conn);
    return rv;
}

/* Makes room for a message of len bytes; returns where to write it. */
static uint8_t *resp_prepare(struct grpc_call *call, size_t len)
{
    if (call->resp_off == call->resp.len) call->resp.len = call->resp_off = 0;
    if (grpc_buf_reserve(&call->resp, 5 + len)) return NULL;
    uint8_t *p = call->resp.p + call->resp.len;
    p[0] = 0;
    put_be32(p + 1, (uint32_t)len);
    return p + 5;
}

int grpc_call_send(grpc_call *call, const uint8_t *msg, size_t len)
{
    if (!grpc_call_alive(call)) return KERR_STOPPED;
    if (len > UINT32_MAX) return KERR_REQUEST_TOO_LARGE;
    uint8_t *p = resp_prepare(call, len);
    if (!p) return KERR_NOMEM;
    if (len) memcpy(p, msg, len);
    call->resp.len += 5 + len;
    return kick(call);
}

int grpc_call_send_pb(grpc_call *call, const ProtobufCMessage *msg)
{
    if (!grpc_call_alive(call)) return KERR_STOPPED;
    size_t len = protobuf_c_message_get_packed_size(msg);
    if (len > UINT32_MAX) return KERR_REQUEST_TOO_LARGE;
    uint8_t *p = resp_prepare(call, len);
    if (!p) return KERR_NOMEM;
    protobuf_c_message_pack(msg, p);
    call->resp.len += 5 + len;
    return kick(call);
}

static void finish(struct grpc_call *call, const char *http_status, int status,
                   const char *message)
{
    if (!grpc_call_alive(call)) return;
    call->finished = true;
    if (status < 0 || status > 16) status = GRPC_UNKNOWN;
    call->status = status;
    grpc_count_handled(call, status);
    if (call->local) {
        struct grpc_local *l = call->local;
        grpc_local_done_fn done = l->done;
        l->done = NULL;
        size_t avail = call->resp.len - call->resp_off;
        const uint8_t *r = avail >= 5 ? call->resp.p + call->resp_off + 5 : NULL;
        if (done) done(status, message && *message ? message : NULL, r, r ? avail - 5 : 0, l->data);
        return;
    }
    if (message && *message) call->message = grpc_message_encode(message);
    if (call->headers_sent) {
        kick(call);
        return;
    }
    /* Trailers-only response. */
    nghttp2_nv nva[4] = {nv_str(":status", http_status),
                         NV("content-type", "application/grpc"),
                         nv_str("grpc-status", status_text[status])};
    size_t n = 3;
    if (call->message) nva[n++] = nv_str("grpc-message", call->message);
    call->headers_sent = call->trailers_sent = true;
    nghttp2_submit_response(call->conn->h2, call->stream_id, nva, n, NULL);
    grpc_conn_mark_dirty(call->conn);
}

void grpc_call_finish(grpc_call *call, int status, const char *message)
{
    finish(call, "200", status, message);
}

void grpc_call_finish_http(struct grpc_call *call, const char *http_status, int status,
                      const char *message)
{
    finish(call, http_status, status, message);
}

void grpc_call_reply(grpc_call *call, const ProtobufCMessage *msg)
{
    int rv = grpc_call_send_pb(call, msg);
    if (rv == 0 || rv == KERR_STOPPED) grpc_call_finish(call, GRPC_OK, NULL);
    else grpc_call_fail(call, rv);
}

void grpc_call_fail(grpc_call *call, int kerr)
{
    grpc_call_finish(call, kerr_grpc_status(kerr), kerr_text(kerr));
}

ssize_t grpc_call_data_read(nghttp2_session *h2, int32_t stream_id, uint8_t *buf, size_t len,
                       uint32_t *flags, nghttp2_data_source *src, void *user)
{
    struct grpc_call *call = src->ptr;
    size_t avail = call->resp.len - call->resp_off;
    size_t n = avail < len ? avail : len;
    if (n) memcpy(buf, call->resp.p + call->resp_off, n);
    call->resp_off += n;
    if (call->resp_off == call->resp.len) {
        call->resp.len = call->resp_off = 0;
        if (call->resp.cap > 1024 * 1024) grpc_buf_free(&call->resp); /* after a big one */
        if (call->finished) {
            *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
            nghttp2_nv nva[2] = {nv_str("grpc-status", status_text[call->status])};
            size_t k = 1;
            if (call->message) nva[k++] = nv_str("grpc-message", call->message);
            call->trailers_sent = true;
            if (nghttp2_submit_trailer(h2, stream_id, nva, k))
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
            return (ssize_t)n;
        }
        if (n == 0) {
            call->deferred = true;
            return NGHTTP2_ERR_DEFERRED;
        }
    } else if (call->resp_off > 256 * 1024 && call->resp_off * 2 > call->resp.len) {
        /* A stream that keeps sending: drop what was consumed. */
        grpc_buf_consume(&call->resp, call->resp_off);
        call->resp_off = 0;
    }
    return (ssize_t)n;
}

/* ---- deadlines ---- */

static void on_deadline(uv_timer_t *t)
{
    struct grpc_call *call = t->data;
    if (!call) return;
    grpc_call_ref(call);
    grpc_call_finish(call, GRPC_DEADLINE_EXCEEDED, "context deadline exceeded");
    grpc_call_deliver_close(call);
    grpc_call_unref(call);
}

int64_t grpc_timeout_parse_ms(const char *v, size_t len)
{
    /* TimeoutValue: 1 to 8 ASCII digits; TimeoutUnit: H M S m u n. */
    if (len < 2 || len > 9) return -1;
    int64_t x = 0;
    for (size_t i = 0; i + 1 < len; i++) {
        if (v[i] < '0' || v[i] > '9') return -1;
        x = x * 10 + (v[i] - '0');
    }
    switch (v[len - 1]) {
    case 'H': return x * 3600000;
    case 'M': return x * 60000;
    case 'S': return x * 1000;
    case 'm': return x;
    case 'u': return (x + 999) / 1000;
    case 'n': return (x + 999999) / 1000000;
    default: return -1;
    }
}

int grpc_call_set_timeout(struct grpc_call *call, const uint8_t *v, size_t len)
{
    int64_t ms = grpc_timeout_parse_ms((const char *)v, len);
    if (ms < 0) return -1;
    uv_loop_t *loop = call->conn->s->loop;
    if (!call->timer) {
        call->timer = malloc(sizeof *call->timer);
        if (!call->timer) return 0; /* no deadline rather than no call */
        uv_timer_init(loop, call->timer);
        call->timer->data = call;
    }
    call->deadline = uv_now(loop) + (uint64_t)ms;
    uv_timer_start(call->timer, on_deadline, (uint64_t)ms, 0);
    return 0;
}

/* grpc-message is percent-encoded: bytes outside 0x20-0x7E, and '%'. */
char *grpc_message_encode(const char *msg)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)msg; *p; p++)
        n += (*p < 0x20 || *p > 0x7e || *p == '%') ? 3 : 1;
    char *out = malloc(n + 1), *o = out;
    if (!out) return NULL;
    for (const unsigned char *p = (const unsigned char *)msg; *p; p++) {
        if (*p < 0x20 || *p > 0x7e || *p == '%') {
            *o++ = '%';
            *o++ = hex[*p >> 4];
            *o++ = hex[*p & 15];
        } else {
            *o++ = (char)*p;
        }
    }
    *o = '\0';
    return out;
}

/* ---- in-process calls and counters ---- */

void grpc_count_handled(struct grpc_call *call, int status)
{
    if (call->counted || !call->method || !call->server) return;
    call->counted = true;
    if (status < 0 || status > 16) status = GRPC_UNKNOWN;
    call->server->handled[call->method - call->server->table.methods][status]++;
}

/* A call not on any connection; the caller holds its one reference. */
static struct grpc_call *local_new(grpc_server *s, const grpc_method *m,
                                   const char *authorization, grpc_local_done_fn done, void *data)
{
    struct grpc_call *call = malloc(sizeof *call);
    struct grpc_local *l = calloc(1, sizeof *l);
    if (!call || !l) {
        free(call);
        free(l);
        return NULL;
    }
    memset(call, 0, offsetof(struct grpc_call, hdrs_inl));
    l->done = done;
    l->data = data;
    call->refs = 1;
    call->ctx = s->ctx;
    call->server = s;
    call->method = m;
    call->local = l;
    grpc_buf_init(&call->hdrs, call->hdrs_inl, sizeof call->hdrs_inl);
    grpc_buf_init(&call->req, call->req_inl, sizeof call->req_inl);
    grpc_buf_init(&call->resp, call->resp_inl, sizeof call->resp_inl);
    /* the gateway's Authorization header, seen by handlers as gRPC metadata */
    if (authorization != NULL &&
        (grpc_buf_append(&call->hdrs, "authorization", sizeof "authorization") != 0 ||
         grpc_buf_append(&call->hdrs, authorization, strlen(authorization) + 1) != 0)) {
        grpc_buf_free(&call->hdrs);
        free(call);
        free(l);
        return NULL;
    }
    call->next = s->locals;
    if (s->locals) s->locals->prev = call;
    s->locals = call;
    s->started[m - s->table.methods]++;
    return call;
}

grpc_call *grpc_server_open_local_stream(grpc_server *s, const char *path,
                                         const char *authorization, grpc_local_msg_fn on_msg,
                                         grpc_local_done_fn done, void *data)
{
    const grpc_method *m = grpc_methods_find(&s->table, path, strlen(path));
    if (!m || m->kind != GRPC_STREAM) {
        char text[512];
        grpc_methods_unknown_text(&s->table, path, text, sizeof text);
        done(GRPC_UNIMPLEMENTED, text, NULL, 0, data);
        return NULL;
    }
    struct grpc_call *call = local_new(s, m, authorization, done, data);
    if (!call) {
        done(GRPC_RESOURCE_EXHAUSTED, "ketch: out of memory", NULL, 0, data);
        return NULL;
    }
    call->local->on_msg = on_msg;
    return call;
}

void grpc_local_stream_send(grpc_call *call, const uint8_t *msg, size_t len)
{
    if (!call->local || !grpc_call_alive(call) || call->remote_closed) return;
    grpc_call_ref(call);
    call->method->on_message(call, msg, len, call->ctx);
    grpc_call_unref(call);
}

void grpc_local_stream_half_close(grpc_call *call)
{
    if (!call->local || call->remote_closed) return;
    call->remote_closed = true;
    grpc_call_ref(call);
    if (call->on_half_close && grpc_call_alive(call)) call->on_half_close(call, call->ctx);
    else grpc_call_deliver_close(call);
    grpc_call_unref(call);
}

void grpc_local_stream_set_pending(grpc_call *call, size_t (*fn)(void *data))
{
    if (call->local) call->local->pending = fn;
}

void grpc_local_stream_cancel(grpc_call *call)
{
    if (!call->local) return;
    call->local->done = NULL;
    call->local->on_msg = NULL;
    if (!call->finished) {
        grpc_count_handled(call, GRPC_CANCELLED);
        call->finished = true;
    }
    grpc_call_deliver_close(call);
    grpc_call_unref(call);
}

void grpc_server_call_local(grpc_server *s, const char *path, const uint8_t *msg, size_t len,
                            grpc_local_done_fn done, void *data)
{
    grpc_server_call_local_auth(s, path, msg, len, NULL, done, data);
}

void grpc_server_call_local_auth(grpc_server *s, const char *path, const uint8_t *msg,
                                 size_t len, const char *authorization,
                                 grpc_local_done_fn done, void *data)
{
    const grpc_method *m = grpc_methods_find(&s->table, path, strlen(path));
    if (!m || m->kind != GRPC_UNARY) {
        char text[512];
        grpc_methods_unknown_text(&s->table, path, text, sizeof text);
        done(GRPC_UNIMPLEMENTED, text, NULL, 0, data);
        return;
    }
    struct grpc_call *call = local_new(s, m, authorization, done, data);
    if (!call) {
        done(GRPC_RESOURCE_EXHAUSTED, "ketch: out of memory", NULL, 0, data);
        return;
    }
    m->on_message(call, msg, len, s->ctx);
    grpc_call_unref(call);
}
