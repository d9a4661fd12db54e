/* gRPC over h2c on libuv + nghttp2: see client.h for the contract.
 *
 * Shape: one nghttp2 client session per TCP connection, fed with
 * nghttp2_session_mem_recv from the read callback and drained with
 * nghttp2_session_mem_send into one write buffer from a uv_prepare handle, so
 * all the frames queued during one loop iteration leave in one write.
 *
 * A call (unary or stream) is a struct client_stream, kept on the
 * connection's free list after it completes so steady-state calls reuse its
 * buffers instead of allocating. Structures are freed only when the
 * connection is closed, which makes a callback that closes the connection
 * from inside nghttp2_session_mem_recv safe: nghttp2 may still look at
 * stream_user_data pointers, which stay valid, and every callback checks
 * conn->failed first. */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#include "client/client.h"
#include "net/tls.h"
#include "util/endian.h"

#define READ_BUF_SIZE (256 * 1024)
#define WRITE_BATCH_MAX (1024 * 1024)
#define LOCAL_WINDOW (1 << 30)
#define STREAM_WINDOW (16 << 20)
#define GRPC_PREFIX 5

struct client_stream {
    struct client_conn *conn;
    struct client_stream *next, *prev; /* active list, or free list (next) */
    int32_t stream_id;
    unsigned is_stream : 1;
    unsigned done : 1;
    unsigned out_eof : 1;  /* no more messages will be queued */
    unsigned deferred : 1; /* the data provider returned DEFERRED */
    unsigned have_status : 1;
    client_reply_cb cb;
    client_msg_cb on_msg;
    void *arg;
    int status;
    int http_status;
    uint8_t *out; /* framed outgoing messages, [out_off, out_len) unsent */
    size_t out_len, out_off, out_cap;
    uint8_t *in; /* received DATA, [in_off, in_len) not yet delivered */
    size_t in_len, in_off, in_cap;
    char *message; /* decoded grpc-message */
    size_t message_cap;
};

struct client_conn {
    uv_loop_t *loop;
    union {
        uv_tcp_t tcp;   /* client_conn_open */
        uv_pipe_t pipe; /* client_conn_adopt (same address: use tcp as the stream) */
    };
    uv_prepare_t prepare;
    uv_connect_t connect_req;
    uv_write_t write_req;
    nghttp2_session *session;
    client_conn_cb on_event;
    void *arg;
    char endpoint[256];  /* as given, for messages */
    char authority[256]; /* host:port without a scheme */
    struct client_stream *active; /* doubly linked */
    struct client_stream *free;
    size_t pending;
    uint8_t *wbuf;
    size_t wlen, wcap;
    uint8_t *rbuf;
    unsigned connected : 1;
    unsigned failed : 1; /* no more I/O, calls refused */
    unsigned closing : 1;
    unsigned writing : 1;
    unsigned scheduled : 1;
    int open_handles;
    tls_conn *tls;     /* NULL: cleartext */
    uint8_t *sbuf;     /* ciphertext being written */
    size_t scap;
    uint8_t *pbuf;     /* plaintext read out of TLS */
    char error[320];   /* why it failed */
    char *hdr_name[4], *hdr_value[4];
};

/* ---- small helpers ---- */

static int grow(uint8_t **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 256;
    while (n < need)
        n *= 2;
    uint8_t *p = realloc(*buf, n);
    if (!p)
        return CLIENT_ENOMEM;
    *buf = p;
    *cap = n;
    return 0;
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* grpc-message is percent-encoded (gRPC over HTTP/2 spec). */
static void set_message(struct client_stream *s, const uint8_t *v, size_t len)
{
    if (grow((uint8_t **)&s->message, &s->message_cap, len + 1))
        return;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int h, l;
        if (v[i] == '%' && i + 2 < len &&
            (h = hexval(v[i + 1])) >= 0 && (l = hexval(v[i + 2])) >= 0) {
            s->message[o++] = (char)(h << 4 | l);
            i += 2;
        } else {
            s->message[o++] = (char)v[i];
        }
    }
    s->message[o] = 0;
}

/* The status grpc-go gives to a stream reset with an HTTP/2 error code. */
static int rst_status(uint32_t code)
{
    switch (code) {
    case NGHTTP2_REFUSED_STREAM:
        return CLIENT_STATUS_UNAVAILABLE;
    case NGHTTP2_CANCEL:
        return CLIENT_STATUS_CANCELLED;
    case NGHTTP2_ENHANCE_YOUR_CALM:
        return 8; /* RESOURCE_EXHAUSTED */
    case NGHTTP2_INADEQUATE_SECURITY:
        return 7; /* PERMISSION_DENIED */
    default:
        return CLIENT_STATUS_INTERNAL;
    }
}

/* The status gRPC derives from a non-200 HTTP status. */
static int http_to_status(int http)
{
    switch (http) {
    case 400:
        return CLIENT_STATUS_INTERNAL;
    case 401:
        return 16;
    case 403:
        return 7;
    case 404:
        return 12;
    case 429:
    case 502:
    case 503:
    case 504:
        return CLIENT_STATUS_UNAVAILABLE;
    default:
        return CLIENT_STATUS_UNKNOWN;
    }
}

/* ---- call lifecycle ---- */

static struct client_stream *call_get(struct client_conn *c)
{
    struct client_stream *s = c->free;
    if (s) {
        c->free = s->next;
    } else {
        s = calloc(1, sizeof *s);
        if (!s)
            return NULL;
        s->conn = c;
    }
    s->next = s->prev = NULL;
    s->stream_id = 0;
    s->is_stream = s->done = s->out_eof = s->deferred = s->have_status = 0;
    s->status = CLIENT_STATUS_UNKNOWN;
    s->http_status = 0;
    s->out_len = s->out_off = s->in_len = s->in_off = 0;
    if (s->message)
        s->message[0] = 0;
    return s;
}

static void call_put(struct client_conn *c, struct client_stream *s)
{
    /* Keep buffers of ordinary size for reuse; drop huge ones. */
    if (s->in_cap > (1u << 20)) {
        free(s->in);
        s->in = NULL;
        s->in_cap = 0;
    }
    s->next = c->free;
    c->free = s;
}

static void call_unlink(struct client_conn *c, struct client_stream *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        c->active = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->next = s->prev = NULL;
    c->pending--;
}

/* Ends a call: fires its callback, then recycles it. */
static void call_finish(struct client_stream *s, int status, const char *message,
                        const uint8_t *data, size_t len)
{
    struct client_conn *c = s->conn;
    s->done = 1;
    call_unlink(c, s);
    struct client_reply r = {.status = status, .message = message ? message : "",
                             .data = data, .len = len};
    s->cb(s->arg, &r);
    call_put(c, s);
}

static void fail_all(struct client_conn *c, int status, const char *message)
{
    while (c->active)
        call_finish(c->active, status, message, NULL, 0);
}

static void schedule(struct client_conn *c);

/* The connection is unusable: fail every call, tell the owner. */
static void conn_fail(struct client_conn *c, int err, const char *why)
{
    if (c->failed)
        return;
    c->failed = 1;
    if (c->open_handles && !uv_is_closing((uv_handle_t *)&c->tcp))
        uv_read_stop((uv_stream_t *)&c->tcp);
    char msg[512];
    snprintf(msg, sizeof msg, "connection to %s failed: %s", c->endpoint, why);
    snprintf(c->error, sizeof c->error, "%s", why);
    fail_all(c, CLIENT_STATUS_UNAVAILABLE, msg);
    if (c->on_event && !c->closing)
        c->on_event(c, err, c->arg);
}

/* ---- nghttp2 callbacks ---- */

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data)
{
    struct client_conn *c = user_data;
    if (c->failed || frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct client_stream *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (!s || s->done)
        return 0;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        s->http_status = atoi((const char *)value);
    } else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
        s->status = atoi((const char *)value);
        s->have_status = 1;
    } else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
        set_message(s, value, valuelen);
    }
    return 0;
}

/* Delivers the complete messages buffered on a stream. */
static void deliver(struct client_stream *s)
{
    struct client_conn *c = s->conn;
    while (s->in_len - s->in_off >= GRPC_PREFIX) {
        const uint8_t *p = s->in + s->in_off;
        uint32_t len = get_be32(p + 1);
        if (s->in_len - s->in_off - GRPC_PREFIX < len)
            break;
        s->in_off += GRPC_PREFIX + len;
        s->on_msg(s->arg, p + GRPC_PREFIX, len);
        if (s->done || c->failed)
            return;
    }
    if (s->in_off == s->in_len) {
        s->in_off = s->in_len = 0;
    } else if (s->in_off > s->in_cap / 2) {
        memmove(s->in, s->in + s->in_off, s->in_len - s->in_off);
        s->in_len -= s->in_off;
        s->in_off = 0;
    }
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                         const uint8_t *data, size_t len, void *user_data)
{
    struct client_conn *c = user_data;
    if (c->failed)
        return 0;
    struct client_stream *s = nghttp2_session_get_stream_user_data(session, stream_id);
    if (!s || s->done)
        return 0;
    if (grow(&s->in, &s->in_cap, s->in_len + len))
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    memcpy(s->in + s->in_len, data, len);
    s->in_len += len;
    if (s->is_stream)
        deliver(s);
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                           void *user_data)
{
    struct client_conn *c = user_data;
    if (c->failed)
        return 0;
    struct client_stream *s = nghttp2_session_get_stream_user_data(session, stream_id);
    if (!s || s->done)
        return 0;
    int status = s->status;
    const char *msg = s->message ? s->message : "";
    char buf[128];
    if (!s->have_status) {
        if (error_code != NGHTTP2_NO_ERROR) {
            status = rst_status(error_code);
            snprintf(buf, sizeof buf, "stream reset by %s: %s",
                     error_code == NGHTTP2_CANCEL ? "client or server" : "server",
                     nghttp2_http2_strerror(error_code));
        } else if (s->http_status && s->http_status != 200) {
            status = http_to_status(s->http_status);
            snprintf(buf, sizeof buf, "unexpected HTTP status %d", s->http_status);
        } else {
            status = CLIENT_STATUS_INTERNAL;
            snprintf(buf, sizeof buf, "server closed the stream without grpc-status");
        }
        msg = buf;
    }
    const uint8_t *data = NULL;
    size_t len = 0;
    if (!s->is_stream && s->in_len >= GRPC_PREFIX) {
        uint32_t n = get_be32(s->in + 1);
        if (s->in[0] != 0) {
            if (status == 0) {
                status = CLIENT_STATUS_INTERNAL;
                msg = "compressed response not supported";
            }
        } else if (n <= s->in_len - GRPC_PREFIX) {
            data = s->in + GRPC_PREFIX;
            len = n;
        } else if (status == 0) {
            status = CLIENT_STATUS_INTERNAL;
            msg = "truncated response message";
        }
    }
    call_finish(s, status, msg, data, len);
    return 0;
}

static ssize_t data_read(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                         size_t length, uint32_t *flags, nghttp2_data_source *source,
                         void *user_data)
{
    struct client_stream *s = source->ptr;
    size_t avail = s->out_len - s->out_off;
    if (avail == 0) {
        if (s->out_eof) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
            return 0;
        }
        s->deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    size_t n = avail < length ? avail : length;
    memcpy(buf, s->out + s->out_off, n);
    s->out_off += n;
    if (s->out_off == s->out_len) {
        s->out_off = s->out_len = 0;
        if (s->out_eof)
            *flags |= NGHTTP2_DATA_FLAG_EOF;
    }
    return (ssize_t)n;
}

/* ---- I/O ---- */

static void write_cb(uv_write_t *req, int status);

static void flush(struct client_conn *c)
{
    if (!c->connected || c->failed || c->writing)
        return;
    for (;;) {
        c->wlen = 0;
        bool h2 = !c->tls || tls_conn_established(c->tls);
        while (h2 && c->wlen < WRITE_BATCH_MAX) {
            const uint8_t *p;
            ssize_t n = nghttp2_session_mem_send(c->session, &p);
            if (n < 0) {
                conn_fail(c, CLIENT_ESESSION, nghttp2_strerror((int)n));
                return;
            }
            if (n == 0)
                break;
            if (grow(&c->wbuf, &c->wcap, c->wlen + (size_t)n)) {
                conn_fail(c, CLIENT_ENOMEM, "out of memory");
                return;
            }
            memcpy(c->wbuf + c->wlen, p, (size_t)n);
            c->wlen += (size_t)n;
        }
        uint8_t *out = c->wbuf;
        size_t olen = c->wlen;
        if (c->tls) {
            if (c->wlen && tls_conn_write(c->tls, c->wbuf, c->wlen)) {
                conn_fail(c, CLIENT_ESESSION, tls_conn_error(c->tls));
                return;
            }
            size_t p = tls_conn_pending(c->tls);
            if (grow(&c->sbuf, &c->scap, p ? p : 1)) {
                conn_fail(c, CLIENT_ENOMEM, "out of memory");
                return;
            }
            olen = p ? tls_conn_take(c->tls, c->sbuf, p) : 0;
            out = c->sbuf;
        }
        if (olen == 0)
            return;
        uv_buf_t b = uv_buf_init((char *)out, (unsigned)olen);
        int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (r == (int)olen)
            continue; /* all written: see if nghttp2 has more */
        if (r < 0 && r != UV_EAGAIN) {
            conn_fail(c, r, uv_strerror(r));
            return;
        }
        if (r > 0) {
            b.base += r;
            b.len -= (unsigned)r;
        }
        r = uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &b, 1, write_cb);
        if (r < 0) {
            conn_fail(c, r, uv_strerror(r));
            return;
        }
        c->writing = 1;
        return;
    }
}

static void write_cb(uv_write_t *req, int status)
{
    struct client_conn *c = req->data;
    c->writing = 0;
    if (c->closing || c->failed)
        return;
    if (status < 0) {
        conn_fail(c, status, uv_strerror(status));
        return;
    }
    flush(c);
}

static void prepare_cb(uv_prepare_t *h)
{
    struct client_conn *c = h->data;
    uv_prepare_stop(h);
    c->scheduled = 0;
    flush(c);
}

static void schedule(struct client_conn *c)
{
    /* Never (re)start the prepare handle once it is closing: libuv 1.44's
     * uv_prepare_start does not check for that, and an active closing
     * handle keeps the loop alive forever (and runs on freed memory). */
    if (c->scheduled || c->failed || c->closing ||
        uv_is_closing((uv_handle_t *)&c->prepare))
        return;
    c->scheduled = 1;
    uv_prepare_start(&c->prepare, prepare_cb);
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct client_conn *c = h->data;
    buf->base = (char *)c->rbuf;
    buf->len = READ_BUF_SIZE;
}

static void h2_recv(struct client_conn *c, const uint8_t *p, size_t n)
{
    ssize_t r = nghttp2_session_mem_recv(c->session, p, n);
    if (c->failed)
        return;
    if (r < 0) {
        conn_fail(c, CLIENT_ESESSION, nghttp2_strerror((int)r));
        return;
    }
    if (nghttp2_session_want_write(c->session))
        schedule(c);
}

/* Drives the handshake and hands the plaintext to nghttp2; the connection
 * counts as up (on_event 0) once the handshake is done with ALPN h2. */
static void tls_pump(struct client_conn *c)
{
    bool was_up = tls_conn_established(c->tls);
    for (;;) {
        ssize_t r = tls_conn_read(c->tls, c->pbuf, READ_BUF_SIZE);
        if (!was_up && tls_conn_established(c->tls)) {
            was_up = true;
            if (c->on_event)
                c->on_event(c, 0, c->arg);
            if (c->failed)
                return;
            schedule(c);
        }
        if (r > 0) {
            h2_recv(c, c->pbuf, (size_t)r);
            if (c->failed)
                return;
            continue;
        }
        if (r == TLS_CLOSED) {
            conn_fail(c, UV_EOF, "closed by the server");
            return;
        }
        if (r == TLS_FAILED) {
            conn_fail(c, CLIENT_ESESSION, tls_conn_error(c->tls));
            return;
        }
        break;
    }
    if (tls_conn_pending(c->tls))
        schedule(c);
}

static void read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    struct client_conn *c = st->data;
    if (c->failed)
        return;
    if (n < 0) {
        conn_fail(c, (int)n, n == UV_EOF ? "closed by the server" : uv_strerror((int)n));
        return;
    }
    if (n == 0)
        return;
    if (!c->tls) {
        h2_recv(c, (const uint8_t *)buf->base, (size_t)n);
        return;
    }
    if (tls_conn_feed(c->tls, (const uint8_t *)buf->base, (size_t)n)) {
        conn_fail(c, CLIENT_ENOMEM, "out of memory");
        return;
    }
    tls_pump(c);
}

static void connect_cb(uv_connect_t *req, int status)
{
    struct client_conn *c = req->data;
    if (c->closing || c->failed)
        return;
    if (status < 0) {
        conn_fail(c, status, uv_strerror(status));
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c->connected = 1;
    int r = uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
    if (r < 0) {
        conn_fail(c, r, uv_strerror(r));
        return;
    }
    if (c->tls) {
        tls_pump(c); /* the ClientHello */
        return;
    }
    if (c->on_event)
        c->on_event(c, 0, c->arg);
    if (!c->failed)
        schedule(c);
}

/* ---- public ---- */

int client_parse_endpoint(const char *endpoint, struct sockaddr_storage *out)
{
    char host[256];
    const char *p = endpoint;
    if (strncmp(p, "http://", 7) == 0)
        p += 7;
    else if (strncmp(p, "https://", 8) == 0)
        p += 8;
    else if (strstr(p, "://"))
        return CLIENT_EINVAL; /* https and others: not supported here */
    const char *port_s = NULL;
    size_t hl;
    if (*p == '[') {
        const char *e = strchr(p, ']');
        if (!e)
            return CLIENT_EINVAL;
        hl = (size_t)(e - p - 1);
        p++;
        if (e[1] == ':')
            port_s = e + 2;
        else if (e[1] != 0 && e[1] != '/')
            return CLIENT_EINVAL;
    } else {
        const char *colon = strrchr(p, ':');
        const char *slash = strchr(p, '/');
        if (slash && colon && colon > slash)
            colon = NULL;
        hl = colon ? (size_t)(colon - p) : slash ? (size_t)(slash - p) : strlen(p);
        if (colon)
            port_s = colon + 1;
    }
    if (hl == 0 || hl >= sizeof host)
        return CLIENT_EINVAL;
    memcpy(host, p, hl);
    host[hl] = 0;
    long port = 2379;
    if (port_s) {
        char *end;
        port = strtol(port_s, &end, 10);
        if (end == port_s || (*end && *end != '/') || port <= 0 || port > 65535)
            return CLIENT_EINVAL;
    }
    memset(out, 0, sizeof *out);
    struct sockaddr_in *v4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        return 0;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
        return CLIENT_EINVAL;
    memcpy(out, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    if (out->ss_family == AF_INET)
        v4->sin_port = htons((uint16_t)port);
    else
        v6->sin6_port = htons((uint16_t)port);
    return 0;
}

/* The host part of an authority ("[::1]:2379" → "::1"), for SNI. */
static void authority_host(const char *auth, char *host, size_t cap)
{
    const char *p = auth, *e;
    if (*p == '[') {
        p++;
        e = strchr(p, ']');
    } else {
        e = strrchr(p, ':');
    }
    size_t n = e ? (size_t)(e - p) : strlen(p);
    const char *slash = memchr(p, '/', n);
    if (slash)
        n = (size_t)(slash - p);
    snprintf(host, cap, "%.*s", (int)n, p);
}

/* fd < 0: connect to endpoint over TCP; else serve the connected stream
 * socket fd (endpoint only names it; cleartext). */
static int conn_create(uv_loop_t *loop, const char *endpoint, uv_os_sock_t fd,
                       const struct client_opts *opts, client_conn_cb on_event, void *arg,
                       struct client_conn **out)
{
    struct sockaddr_storage addr;
    if (strlen(endpoint) >= 256 || (fd < 0 && client_parse_endpoint(endpoint, &addr)))
        return CLIENT_EINVAL;
    bool https = strncmp(endpoint, "https://", 8) == 0;
    bool http = strncmp(endpoint, "http://", 7) == 0;
    tls_ctx *tls = opts && !http ? opts->tls : NULL;
    if (https && !tls)
        return CLIENT_EINVAL;
    struct client_conn *c = calloc(1, sizeof *c);
    if (!c)
        return CLIENT_ENOMEM;
    int rc = CLIENT_ENOMEM;
    c->rbuf = malloc(READ_BUF_SIZE);
    if (!c->rbuf)
        goto err_after_alloc;
    c->loop = loop;
    c->on_event = on_event;
    c->arg = arg;
    snprintf(c->endpoint, sizeof c->endpoint, "%s", endpoint);
    snprintf(c->authority, sizeof c->authority, "%s",
             http ? endpoint + 7 : https ? endpoint + 8 : endpoint);
    if (tls) {
        char host[256];
        authority_host(c->authority, host, sizeof host);
        c->pbuf = malloc(READ_BUF_SIZE);
        if (!c->pbuf || !(c->tls = tls_conn_new_client(tls, host)))
            goto err_after_alloc;
    }

    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs))
        goto err_after_alloc;
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_option *opt;
    if (nghttp2_option_new(&opt)) {
        nghttp2_session_callbacks_del(cbs);
        goto err_after_alloc;
    }
    /* etcd (grpc-go) allows unlimited concurrent streams; take what the
     * server advertises rather than nghttp2's default guess of 100. */
    nghttp2_option_set_peer_max_concurrent_streams(opt, 1u << 30);
    int r = nghttp2_session_client_new2(&c->session, cbs, c, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    if (r)
        goto err_after_alloc;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, 1 << 20},
    };
    if (nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]) ||
        nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0, LOCAL_WINDOW))
        goto err_after_session;

    if (fd >= 0) {
        if ((rc = uv_pipe_init(loop, &c->pipe, 0)) < 0) {
            close(fd);
            goto err_after_session;
        }
        c->pipe.data = c->prepare.data = c->write_req.data = c;
        c->open_handles++;
        uv_prepare_init(loop, &c->prepare);
        c->open_handles++;
        rc = uv_pipe_open(&c->pipe, fd);
        if (rc < 0)
            close(fd);
        if (rc == 0) {
            c->connected = 1;
            rc = uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
        }
        if (rc < 0) {
            c->on_event = NULL;
            client_conn_close(c);
            return rc;
        }
        schedule(c);
        *out = c;
        return 0;
    }
    c->tcp.data = c->prepare.data = c->connect_req.data = c->write_req.data = c;
    if ((rc = uv_tcp_init(loop, &c->tcp)) < 0)
        goto err_after_session;
    c->open_handles++;
    uv_prepare_init(loop, &c->prepare);
    c->open_handles++;
    rc = uv_tcp_connect(&c->connect_req, &c->tcp, (struct sockaddr *)&addr, connect_cb);
    if (rc < 0) {
        /* Handles exist now: let the normal close path free everything. */
        c->on_event = NULL;
        client_conn_close(c);
        return rc;
    }
    *out = c;
    return 0;

err_after_session:
    nghttp2_session_del(c->session);
err_after_alloc:
    tls_conn_free(c->tls);
    free(c->pbuf);
    free(c->rbuf);
    free(c);
    return rc;
}

int client_conn_open_opts(uv_loop_t *loop, const char *endpoint, const struct client_opts *opts,
                          client_conn_cb on_event, void *arg, struct client_conn **out)
{
    return conn_create(loop, endpoint, -1, opts, on_event, arg, out);
}

int client_conn_open(uv_loop_t *loop, const char *endpoint, client_conn_cb on_event,
                     void *arg, struct client_conn **out)
{
    return conn_create(loop, endpoint, -1, NULL, on_event, arg, out);
}

int client_conn_adopt(uv_loop_t *loop, uv_os_sock_t fd, const char *name,
                      client_conn_cb on_event, void *arg, struct client_conn **out)
{
    if (strlen(name) >= 256) {
        close(fd);
        return CLIENT_EINVAL;
    }
    /* conn_create closes fd itself once it reached the pipe */
    struct client_conn *c = NULL;
    int rc = conn_create(loop, name, fd, NULL, on_event, arg, &c);
    if (rc == CLIENT_ENOMEM)
        close(fd); /* failed before the pipe */
    if (rc == 0)
        *out = c;
    return rc;
}

static void free_calls(struct client_stream *s)
{
    while (s) {
        struct client_stream *n = s->next;
        free(s->in);
        free(s->out);
        free(s->message);
        free(s);
        s = n;
    }
}

static void close_cb(uv_handle_t *h)
{
    struct client_conn *c = h->data;
    if (--c->open_handles > 0)
        return;
    nghttp2_session_del(c->session);
    free_calls(c->free);
    free(c->wbuf);
    free(c->rbuf);
    free(c->sbuf);
    free(c->pbuf);
    tls_conn_free(c->tls);
    for (int i = 0; i < 4; i++) {
        free(c->hdr_name[i]);
        free(c->hdr_value[i]);
    }
    free(c);
}

void client_conn_close(struct client_conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    if (!c->failed) {
        c->failed = 1;
        fail_all(c, CLIENT_STATUS_CANCELLED, "connection closed by the client");
    }
    /* Stop everything that could keep the loop alive before closing. */
    c->scheduled = 0;
    if (!uv_is_closing((uv_handle_t *)&c->prepare)) {
        uv_prepare_stop(&c->prepare);
        uv_close((uv_handle_t *)&c->prepare, close_cb);
    }
    if (!uv_is_closing((uv_handle_t *)&c->tcp)) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        uv_close((uv_handle_t *)&c->tcp, close_cb);
    }
}

const char *client_conn_endpoint(const struct client_conn *c)
{
    return c->endpoint;
}

const char *client_conn_error(const struct client_conn *c)
{
    return c->error;
}

int client_conn_set_header(struct client_conn *c, const char *name, const char *value)
{
    int slot = -1;
    for (int i = 0; i < 4; i++)
        if (c->hdr_name[i] && !strcmp(c->hdr_name[i], name))
            slot = i;
    if (slot >= 0) {
        free(c->hdr_name[slot]);
        free(c->hdr_value[slot]);
        c->hdr_name[slot] = c->hdr_value[slot] = NULL;
    }
    if (!value || !*value)
        return 0;
    for (int i = 0; slot < 0 && i < 4; i++)
        if (!c->hdr_name[i])
            slot = i;
    if (slot < 0)
        return CLIENT_EINVAL;
    c->hdr_name[slot] = strdup(name);
    c->hdr_value[slot] = strdup(value);
    if (!c->hdr_name[slot] || !c->hdr_value[slot]) {
        free(c->hdr_name[slot]);
        free(c->hdr_value[slot]);
        c->hdr_name[slot] = c->hdr_value[slot] = NULL;
        return CLIENT_ENOMEM;
    }
    return 0;
}

size_t client_conn_pending(const struct client_conn *c)
{
    return c->pending;
}

static int submit(struct client_conn *c, struct client_stream *s, const char *path)
{
#define NV(n, v, fl)                                                                      \
    {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v),                            \
     NGHTTP2_NV_FLAG_NO_COPY_NAME | (fl)}
#define NVC(n, v) NV(n, v, NGHTTP2_NV_FLAG_NO_COPY_VALUE)
    nghttp2_nv nv[11] = {
        NVC(":method", "POST"),          NVC(":scheme", c->tls ? "https" : "http"),
        NV(":path", path, 0),            NV(":authority", c->authority, 0),
        NVC("content-type", "application/grpc"), NVC("te", "trailers"),
        NVC("user-agent", "ketch-client/0.1"),
    };
#undef NVC
#undef NV
    size_t nnv = 7;
    for (int i = 0; i < 4; i++)
        if (c->hdr_name[i])
            nv[nnv++] = (nghttp2_nv){(uint8_t *)c->hdr_name[i], (uint8_t *)c->hdr_value[i],
                                     strlen(c->hdr_name[i]), strlen(c->hdr_value[i]),
                                     NGHTTP2_NV_FLAG_NONE};
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = data_read};
    int32_t id = nghttp2_submit_request(c->session, NULL, nv, nnv, &prd, s);
    if (id < 0) {
        call_put(c, s);
        return CLIENT_ESESSION;
    }
    s->stream_id = id;
    s->next = c->active;
    if (c->active)
        c->active->prev = s;
    c->active = s;
    c->pending++;
    schedule(c);
    return 0;
}

/* Appends one framed message to s->out. */
static int frame_msg(struct client_stream *s, const ProtobufCMessage *msg, const uint8_t *raw,
                     size_t rawlen)
{
    size_t len = msg ? protobuf_c_message_get_packed_size(msg) : rawlen;
    if (len > UINT32_MAX - GRPC_PREFIX)
        return CLIENT_EINVAL;
    /* Compact what was sent already before growing. */
    if (s->out_off && s->out_off == s->out_len)
        s->out_off = s->out_len = 0;
    if (grow(&s->out, &s->out_cap, s->out_len + GRPC_PREFIX + len))
        return CLIENT_ENOMEM;
    uint8_t *p = s->out + s->out_len;
    p[0] = 0;
    put_be32(p + 1, (uint32_t)len);
    if (msg)
        protobuf_c_message_pack(msg, p + GRPC_PREFIX);
    else if (len)
        memcpy(p + GRPC_PREFIX, raw, len);
    s->out_len += GRPC_PREFIX + len;
    return 0;
}

static int unary(struct client_conn *c, const char *path, const ProtobufCMessage *req,
                 const uint8_t *raw, size_t rawlen, client_reply_cb cb, void *arg)
{
    if (c->failed || c->closing)
        return CLIENT_ECLOSED;
    struct client_stream *s = call_get(c);
    if (!s)
        return CLIENT_ENOMEM;
    int rc = frame_msg(s, req, raw, rawlen);
    if (rc) {
        call_put(c, s);
        return rc;
    }
    s->out_eof = 1;
    s->cb = cb;
    s->on_msg = NULL;
    s->arg = arg;
    return submit(c, s, path);
}

int client_unary(struct client_conn *c, const char *path, const ProtobufCMessage *req,
                 client_reply_cb cb, void *arg)
{
    return unary(c, path, req, NULL, 0, cb, arg);
}

int client_unary_raw(struct client_conn *c, const char *path, const uint8_t *msg, size_t len,
                     client_reply_cb cb, void *arg)
{
    return unary(c, path, NULL, msg, len, cb, arg);
}

int client_stream_open(struct client_conn *c, const char *path, client_msg_cb on_msg,
                       client_reply_cb on_close, void *arg, struct client_stream **out)
{
    if (c->failed || c->closing)
        return CLIENT_ECLOSED;
    struct client_stream *s = call_get(c);
    if (!s)
        return CLIENT_ENOMEM;
    s->is_stream = 1;
    s->cb = on_close;
    s->on_msg = on_msg;
    s->arg = arg;
    int rc = submit(c, s, path);
    if (rc == 0)
        *out = s;
    return rc;
}

static void resume(struct client_stream *s)
{
    struct client_conn *c = s->conn;
    if (s->deferred) {
        s->deferred = 0;
        nghttp2_session_resume_data(c->session, s->stream_id);
    }
    schedule(c);
}

int client_stream_send(struct client_stream *s, const ProtobufCMessage *msg)
{
    if (s->done || s->out_eof || s->conn->failed)
        return CLIENT_ECLOSED;
    int rc = frame_msg(s, msg, NULL, 0);
    if (rc)
        return rc;
    resume(s);
    return 0;
}

int client_stream_close_send(struct client_stream *s)
{
    if (s->done || s->conn->failed)
        return CLIENT_ECLOSED;
    s->out_eof = 1;
    resume(s);
    return 0;
}

void client_stream_cancel(struct client_stream *s)
{
    struct client_conn *c = s->conn;
    if (s->done || c->failed)
        return;
    nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, s->stream_id, NGHTTP2_CANCEL);
    schedule(c);
}
