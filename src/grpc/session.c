/* nghttp2 server callbacks: from request HEADERS to a dispatched gRPC
 * message. Free of I/O: bytes come in through nghttp2_session_mem_recv
 * (server.c) and go out through nghttp2_session_mem_send.
 *
 * Request framing (gRPC over HTTP/2 spec), per message:
 *
 *   byte 0      compressed flag (0; 1 is rejected: no decompressors)
 *   bytes 1-4   message length, big-endian
 *   bytes 5-    the protobuf message
 *
 * Messages may span DATA frames; the partial tail is kept in call->req.
 * GRPC_UNARY calls are dispatched at END_STREAM (one message exactly);
 * GRPC_STREAM calls dispatch each message as soon as it is complete. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/grpc_int.h"
#include "util/endian.h"
#include "util/errors.h"
#include "util/log.h"

#define MAX_CONCURRENT_STREAMS 100000
#define STREAM_WINDOW (4 * 1024 * 1024)
#define CONN_WINDOW (16 * 1024 * 1024)

static struct grpc_call *stream_call(nghttp2_session *h2, int32_t stream_id)
{
    return nghttp2_session_get_stream_user_data(h2, stream_id);
}

static bool eq(const uint8_t *a, size_t alen, const char *lit)
{
    size_t n = strlen(lit);
    return alen == n && memcmp(a, lit, n) == 0;
}

static void rx_reject(struct grpc_call *call, int status, const char *msg)
{
    call->rx_failed = true;
    call->req.len = 0;
    grpc_call_finish(call, status, msg);
}

static int on_begin_headers(nghttp2_session *h2, const nghttp2_frame *f, void *user)
{
    struct grpc_conn *c = user;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    struct grpc_call *call = grpc_call_new(c, f->hd.stream_id);
    if (!call) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
    nghttp2_session_set_stream_user_data(h2, f->hd.stream_id, call);
    return 0;
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user)
{
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    struct grpc_call *call = stream_call(h2, f->hd.stream_id);
    if (!call) return 0;
    if (eq(name, namelen, ":method")) {
        call->is_post = eq(value, valuelen, "POST");
    } else if (eq(name, namelen, "content-type")) {
        /* "application/grpc", optionally followed by "+proto" or ";..." */
        static const char ct[] = "application/grpc";
        size_t n = sizeof ct - 1;
        call->bad_ctype = !(valuelen >= n && memcmp(value, ct, n) == 0 &&
                            (valuelen == n || value[n] == '+' || value[n] == ';'));
    } else if (eq(name, namelen, "grpc-timeout")) {
        if (grpc_call_set_timeout(call, value, valuelen) < 0) call->bad_timeout = true;
        return 0;
    } else if (eq(name, namelen, "grpc-encoding")) {
        free(call->encoding);
        call->encoding = strndup((const char *)value, valuelen);
        return 0;
    } else if (eq(name, namelen, "te") || eq(name, namelen, "user-agent") ||
               eq(name, namelen, ":scheme")) {
        return 0;
    }
    /* Keep the rest for grpc_call_header ("name\0value\0"); :path too. A
     * NUL inside would break that pairing: such a field is malformed
     * (RFC 9113 8.2.1), the stream is reset as Go's framer does. */
    if (memchr(name, 0, namelen) != NULL || memchr(value, 0, valuelen) != NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    struct grpc_buf *b = &call->hdrs;
    if (grpc_buf_reserve(b, namelen + valuelen + 2)) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    memcpy(b->p + b->len, name, namelen);
    b->p[b->len + namelen] = '\0';
    memcpy(b->p + b->len + namelen + 1, value, valuelen);
    b->p[b->len + namelen + 1 + valuelen] = '\0';
    b->len += namelen + valuelen + 2;
    return 0;
}

/* End of the request HEADERS: check it is gRPC and find the method. */
static void headers_done(struct grpc_call *call)
{
    if (!call->is_post) {
        grpc_call_finish_http(call, "405", GRPC_INTERNAL,
                         "invalid gRPC request method (want POST)");
        call->rx_failed = true;
        return;
    }
    const char *path = grpc_call_header(call, ":path");
    if (call->bad_ctype || !grpc_call_header(call, "content-type")) {
        /* as grpc-go: HTTP 415 */
        grpc_call_finish_http(call, "415", GRPC_INTERNAL, "invalid gRPC request content-type");
        call->rx_failed = true;
        return;
    }
    if (call->bad_timeout) {
        rx_reject(call, GRPC_INTERNAL, "transport: malformed grpc-timeout");
        return;
    }
    const grpc_method *m = path ? grpc_methods_find(&call->conn->s->table, path, strlen(path)) : NULL;
    if (!m) {
        char text[512];
        grpc_methods_unknown_text(&call->conn->s->table, path ? path : "", text, sizeof text);
        rx_reject(call, GRPC_UNIMPLEMENTED, text);
        return;
    }
    call->method = m;
    call->conn->s->started[m - call->conn->s->table.methods]++;
}

/* Checks the 5-byte prefix at p: 0 and the length, or -1 (call rejected). */
static int check_prefix(struct grpc_call *call, const uint8_t *p, uint32_t *len)
{
    *len = get_be32(p + 1);
    if (p[0] != 0) {
        char text[256];
        if (p[0] != 1) {
            snprintf(text, sizeof text, "grpc: received unexpected payload format %u", p[0]);
            rx_reject(call, GRPC_INTERNAL, text);
        } else if (!call->encoding || strcmp(call->encoding, "identity") == 0) {
            rx_reject(call, GRPC_INTERNAL,
                      "grpc: compressed flag set with identity or empty encoding");
        } else {
            snprintf(text, sizeof text,
                     "grpc: Decompressor is not installed for grpc-encoding \"%.100s\"",
                     call->encoding);
            rx_reject(call, GRPC_UNIMPLEMENTED, text);
        }
        return -1;
    }
    size_t max = call->conn->s->max_recv;
    if (*len > max) {
        char text[128];
        snprintf(text, sizeof text, "grpc: received message larger than max (%u vs. %zu)", *len,
                 max);
        rx_reject(call, GRPC_RESOURCE_EXHAUSTED, text);
        return -1;
    }
    return 0;
}

/* GRPC_STREAM: dispatches every complete message of data (after what is
 * buffered), keeping a partial tail. */
static void stream_data(struct grpc_call *call, const uint8_t *data, size_t len)
{
    grpc_call_ref(call);
    void *ctx = call->ctx;
    /* Complete the buffered message first. */
    while (call->req.len > 0 && len > 0 && !call->rx_failed && grpc_call_alive(call)) {
        if (call->req.len < 5) {
            size_t n = 5 - call->req.len < len ? 5 - call->req.len : len;
            if (grpc_buf_append(&call->req, data, n)) goto nomem;
            data += n;
            len -= n;
            if (call->req.len < 5) break;
        }
        uint32_t mlen;
        if (check_prefix(call, call->req.p, &mlen)) goto out;
        size_t need = 5 + (size_t)mlen - call->req.len;
        size_t n = need < len ? need : len;
        if (grpc_buf_append(&call->req, data, n)) goto nomem;
        data += n;
        len -= n;
        if (call->req.len < 5 + (size_t)mlen) break;
        call->req.len = 0;
        call->method->on_message(call, call->req.p + 5, mlen, ctx);
    }
    /* Then messages straight from the frame, without copying. */
    while (len > 0 && !call->rx_failed && grpc_call_alive(call)) {
        uint32_t mlen;
        if (len < 5) {
            if (grpc_buf_append(&call->req, data, len)) goto nomem;
            break;
        }
        if (check_prefix(call, data, &mlen)) goto out;
        if (len < 5 + (size_t)mlen) {
            if (grpc_buf_append(&call->req, data, len)) goto nomem;
            break;
        }
        call->method->on_message(call, data + 5, mlen, ctx);
        data += 5 + (size_t)mlen;
        len -= 5 + (size_t)mlen;
    }
    goto out;
nomem:
    rx_reject(call, GRPC_RESOURCE_EXHAUSTED, "ketch: out of memory");
out:
    grpc_call_unref(call);
}

static int on_data_chunk(nghttp2_session *h2, uint8_t flags, int32_t stream_id,
                         const uint8_t *data, size_t len, void *user)
{
    struct grpc_call *call = stream_call(h2, stream_id);
    if (!call || !call->method || call->rx_failed || !call->conn) return 0;
    if (call->method->kind == GRPC_STREAM) {
        stream_data(call, data, len);
        return 0;
    }
    /* Unary: buffer it all; check the prefix as soon as it is there. */
    size_t before = call->req.len;
    if (grpc_buf_append(&call->req, data, len)) {
        rx_reject(call, GRPC_RESOURCE_EXHAUSTED, "ketch: out of memory");
        return 0;
    }
    if (call->req.len >= 5) {
        uint32_t mlen;
        if (before < 5 && check_prefix(call, call->req.p, &mlen)) return 0;
        mlen = get_be32(call->req.p + 1);
        if (call->req.len > 5 + (size_t)mlen)
            rx_reject(call, GRPC_INTERNAL,
                      "grpc: unary request with more than one message");
    }
    return 0;
}

/* END_STREAM from the client. */
static void remote_end(struct grpc_call *call)
{
    call->remote_closed = true;
    if (!call->method) return;
    if (call->method->kind == GRPC_UNARY) {
        if (call->rx_failed || !grpc_call_alive(call)) return;
        if (call->req.len < 5 || call->req.len != 5 + (size_t)get_be32(call->req.p + 1)) {
            rx_reject(call, GRPC_INTERNAL, "grpc: request message missing or incomplete");
            return;
        }
        call->method->on_message(call, call->req.p + 5, call->req.len - 5, call->ctx);
        return;
    }
    if (call->req.len > 0 && !call->rx_failed)
        rx_reject(call, GRPC_INTERNAL, "grpc: unexpected EOF inside a request message");
    if (call->on_half_close && grpc_call_alive(call)) {
        call->on_half_close(call, call->ctx); /* on_close comes when the stream ends */
        return;
    }
    grpc_call_deliver_close(call);
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *f, void *user)
{
    /* The client's first SETTINGS completes the handshake (grpc-go waits
     * for it under its ConnectionTimeout). */
    if (f->hd.type == NGHTTP2_SETTINGS && !(f->hd.flags & NGHTTP2_FLAG_ACK))
        grpc_conn_deadline(user, false);
    if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) return 0;
    struct grpc_call *call = stream_call(h2, f->hd.stream_id);
    if (!call || !call->conn) return 0;
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST)
        headers_done(call);
    if (f->hd.flags & NGHTTP2_FLAG_END_STREAM) remote_end(call);
    return 0;
}

/* After our END_STREAM, reset a stream the client is still sending on, as
 * grpc-go does, so it stops (e.g. after RESOURCE_EXHAUSTED). */
static int on_frame_send(nghttp2_session *h2, const nghttp2_frame *f, void *user)
{
    if (!(f->hd.flags & NGHTTP2_FLAG_END_STREAM) ||
        (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA))
        return 0;
    struct grpc_call *call = stream_call(h2, f->hd.stream_id);
    if (call && !call->remote_closed)
        nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_NO_ERROR);
    return 0;
}

static int on_stream_close(nghttp2_session *h2, int32_t stream_id, uint32_t error_code,
                           void *user)
{
    struct grpc_call *call = stream_call(h2, stream_id);
    if (call) {
        nghttp2_session_set_stream_user_data(h2, stream_id, NULL);
        grpc_call_detach(call);
    }
    return 0;
}

int grpc_session_callbacks_new(grpc_server *s)
{
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs)) return KERR_NOMEM;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_option *opt;
    if (nghttp2_option_new(&opt)) {
        nghttp2_session_callbacks_del(cbs);
        return KERR_NOMEM;
    }
    /* Long-lived watch streams with many messages: no need to keep closed
     * streams around for priority. */
    nghttp2_option_set_no_closed_streams(opt, 1);
    nghttp2_option_set_max_settings(opt, 64);
    /* grpc-go sends the dial target as :authority, and etcdctl dials
     * members by their client URL ("http://127.0.0.1:2379", e.g. for
     * `endpoint status --cluster`), which nghttp2's RFC checks reject with
     * PROTOCOL_ERROR; grpc-go's server accepts it, so we do too. */
    nghttp2_option_set_no_http_messaging(opt, 1);
    s->cbs = cbs;
    s->opt = opt;
    return 0;
}

void grpc_session_callbacks_free(grpc_server *s)
{
    nghttp2_session_callbacks_del(s->cbs);
    nghttp2_option_del(s->opt);
}

int grpc_session_new(struct grpc_conn *c)
{
    if (nghttp2_session_server_new2(&c->h2, c->s->cbs, c, c->s->opt)) return KERR_NOMEM;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, MAX_CONCURRENT_STREAMS},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, 1024 * 1024},
    };
    if (nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]) ||
        nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW)) {
        nghttp2_session_del(c->h2);
        c->h2 = NULL;
        return KERR_NOMEM;
    }
    return 0;
}
