/* Listeners and connections on libuv.
 *
 * Reading: every connection reads into one server-wide buffer and feeds it
 * to nghttp2 at once (nghttp2_session_mem_recv copies what it keeps).
 *
 * Writing is coalesced: anything that may produce output (a read, a call
 * sending or finishing, a deadline) only marks the connection dirty and
 * starts a uv_idle handle. Its callback drains nghttp2 into one buffer per
 * connection and hands it to the kernel with a single uv_try_write (falling
 * back to uv_write for the rest), then stops. So all the frames one loop
 * iteration produced for a connection go out in one syscall. An idle
 * handle rather than a prepare handle: while one is active the loop polls
 * without blocking, so output queued from any phase (even from a later
 * prepare callback) is flushed in the very next iteration.
 *
 * Back-pressure: at most OUT_CAP bytes are taken from nghttp2 at a time;
 * while a write is pending (the kernel buffer is full, the client is not
 * reading) the connection stops reading requests, which bounds what
 * nghttp2 queues for it.
 *
 * TLS (listeners given a tls_ctx): bytes read go through tls_conn_feed /
 * tls_conn_read before anything below sees them; output is gathered as
 * plaintext in c->tplain and encrypted once per flush (so TLS records are
 * full-sized), then taken from the TLS layer into c->out.
 *
 * Sniffing: a connection starts in CONN_SNIFF; its first plaintext bytes
 * are compared with the HTTP/2 client preface. All 24 matching: HTTP/2
 * (nghttp2, which checks the preface itself); the first byte that differs:
 * HTTP/1.1 (http1.c). Our SETTINGS go out once HTTP/2 is known. */
#include <stdlib.h>
#include <string.h>

#include <stdio.h>

#include "grpc/grpc_int.h"
#include "util/errors.h"
#include "util/log.h"

#define OUT_CAP (1024 * 1024)

static void conn_close(struct grpc_conn *c);
static void conn_flush(struct grpc_conn *c);
static int conn_input(struct grpc_conn *c, const uint8_t *p, size_t n);

/* ---- byte buffers ---- */

void grpc_buf_init(struct grpc_buf *b, uint8_t *inl, size_t inl_cap)
{
    b->p = inl;
    b->inl = inl;
    b->inl_cap = inl_cap;
    b->len = 0;
    b->cap = inl_cap;
}

int grpc_buf_reserve(struct grpc_buf *b, size_t extra)
{
    if (b->len + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra) cap *= 2;
    uint8_t *p;
    if (b->p == b->inl) {
        p = malloc(cap);
        if (!p) return -1;
        if (b->len) memcpy(p, b->p, b->len);
    } else {
        p = realloc(b->p, cap);
        if (!p) return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

int grpc_buf_append(struct grpc_buf *b, const void *data, size_t len)
{
    if (grpc_buf_reserve(b, len)) return -1;
    if (len) memcpy(b->p + b->len, data, len);
    b->len += len;
    return 0;
}

void grpc_buf_consume(struct grpc_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
}

void grpc_buf_free(struct grpc_buf *b)
{
    if (b->p != b->inl) free(b->p);
    b->p = b->inl;
    b->len = 0;
    b->cap = b->inl_cap;
}

/* ---- server ---- */

static void handle_closed(uv_handle_t *h);

/* Every connection past its deadline is closed (checked 4 times per
 * timeout period, so one lives at most 1.25 timeouts). */
static void sweep(uv_timer_t *t)
{
    grpc_server *s = t->data;
    uint64_t now = uv_now(s->loop);
    for (struct grpc_conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c->deadline == 0 || now < c->deadline) continue;
        log_info("closing connection from %s: no complete %s within %llu ms", c->peer,
                 c->proto == CONN_HTTP1 ? "request" : "handshake",
                 (unsigned long long)s->handshake_ms);
        conn_close(c);
    }
}

void grpc_server_set_handshake_timeout(grpc_server *s, uint64_t ms)
{
    s->handshake_ms = ms;
    if (ms == 0) {
        uv_timer_stop(&s->sweeper);
        for (struct grpc_conn *c = s->conns; c; c = c->next) c->deadline = 0;
        return;
    }
    uint64_t every = ms / 4 ? ms / 4 : 1;
    uv_timer_start(&s->sweeper, sweep, every, every);
    uv_unref((uv_handle_t *)&s->sweeper); /* connections keep the loop alive, not this */
}

void grpc_conn_deadline(struct grpc_conn *c, bool armed)
{
    if (!armed) c->deadline = 0;
    else if (c->deadline == 0 && c->s->handshake_ms)
        c->deadline = uv_now(c->s->loop) + c->s->handshake_ms;
}

static void flush_dirty(uv_idle_t *p)
{
    grpc_server *s = p->data;
    uv_idle_stop(p);
    while (s->dirty) {
        struct grpc_conn *c = s->dirty;
        s->dirty = c->dirty_next;
        c->in_dirty = false;
        c->dirty_next = NULL;
        conn_flush(c);
    }
}

int grpc_server_new(grpc_server **out, uv_loop_t *loop, const grpc_method *methods,
                    size_t n, void *server_ctx, size_t max_recv_bytes)
{
    grpc_server *s = calloc(1, sizeof *s);
    if (!s) return KERR_NOMEM;
    s->loop = loop;
    s->ctx = server_ctx;
    s->max_recv = max_recv_bytes;
    int rv = grpc_methods_init(&s->table, methods, n);
    if (rv) {
        free(s);
        return rv;
    }
    rv = grpc_session_callbacks_new(s);
    s->started = calloc(n ? n : 1, sizeof *s->started);
    s->handled = calloc(n ? n : 1, sizeof *s->handled);
    if (rv || !s->started || !s->handled) {
        if (!rv) grpc_session_callbacks_free(s);
        free(s->started);
        free(s->handled);
        grpc_methods_free(&s->table);
        free(s);
        return rv ? rv : KERR_NOMEM;
    }
    uv_idle_init(loop, &s->flusher);
    s->flusher.data = s;
    uv_timer_init(loop, &s->sweeper);
    s->sweeper.data = s;
    *out = s;
    return 0;
}

static void maybe_free_server(grpc_server *s)
{
    if (!s->closing || s->open_handles > 0 || s->conns) return;
    void (*cb)(void *) = s->close_cb;
    void *data = s->close_data;
    for (struct grpc_call *l = s->locals; l; l = l->next) l->server = NULL;
    grpc_methods_free(&s->table);
    grpc_session_callbacks_free(s);
    free(s->started);
    free(s->handled);
    free(s);
    if (cb) cb(data);
}

static void handle_closed(uv_handle_t *h)
{
    grpc_server *s = h->data;
    s->open_handles--;
    maybe_free_server(s);
}

static void listener_closed(uv_handle_t *h)
{
    struct grpc_listener *l = (struct grpc_listener *)h;
    grpc_server *s = l->s;
    free(l);
    if (s) {
        s->open_handles--;
        maybe_free_server(s);
    }
}

void grpc_server_close(grpc_server *s, void (*cb)(void *data), void *data)
{
    if (s->closing) return;
    s->closing = true;
    s->close_cb = cb;
    s->close_data = data;
    while (s->listeners) {
        struct grpc_listener *l = s->listeners;
        s->listeners = l->next;
        s->open_handles++;
        uv_close((uv_handle_t *)&l->tcp, listener_closed);
    }
    for (struct grpc_conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        conn_close(c);
    }
    s->open_handles++;
    uv_idle_stop(&s->flusher);
    uv_close((uv_handle_t *)&s->flusher, handle_closed);
    s->open_handles++;
    uv_timer_stop(&s->sweeper);
    uv_close((uv_handle_t *)&s->sweeper, handle_closed);
}

/* ---- connections ---- */

static void conn_freed(uv_handle_t *h)
{
    struct grpc_conn *c = h->data;
    grpc_server *s = c->s;
    grpc_buf_free(&c->out);
    grpc_buf_free(&c->tplain);
    tls_conn_free(c->tls);
    free(c);
    s->open_handles--;
    maybe_free_server(s);
}

/* Closes the connection now: every open call stops being alive. */
static void conn_close(struct grpc_conn *c)
{
    if (c->closing) return;
    if (c->in_recv) { /* e.g. grpc_server_close from a handler: after mem_recv */
        c->close_pending = true;
        return;
    }
    c->closing = true;
    grpc_server *s = c->s;
    if (c->prev) c->prev->next = c->next;
    else s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    if (c->in_dirty) {
        struct grpc_conn **pp = &s->dirty;
        while (*pp != c) pp = &(*pp)->dirty_next;
        *pp = c->dirty_next;
        c->in_dirty = false;
    }
    while (c->calls) grpc_call_detach(c->calls);
    grpc_http1_free(c);
    if (c->h2) nghttp2_session_del(c->h2);
    c->h2 = NULL;
    s->open_handles++;
    uv_close((uv_handle_t *)&c->tcp, conn_freed);
}

void grpc_conn_mark_dirty(struct grpc_conn *c)
{
    if (c->in_dirty || c->closing || c->s->closing) return;
    c->in_dirty = true;
    c->dirty_next = c->s->dirty;
    c->s->dirty = c;
    uv_idle_start(&c->s->flusher, flush_dirty);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct grpc_conn *c = h->data;
    grpc_server *s = c->s;
    if (s->rbuf_busy) { /* cannot happen: reads are processed synchronously */
        buf->base = NULL;
        buf->len = 0;
        return;
    }
    s->rbuf_busy = true;
    buf->base = (char *)s->rbuf;
    buf->len = sizeof s->rbuf;
}

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

static int h2_recv(struct grpc_conn *c, const uint8_t *p, size_t n)
{
    c->in_recv = true;
    ssize_t rv = nghttp2_session_mem_recv(c->h2, p, n);
    c->in_recv = false;
    if (c->close_pending) {
        conn_close(c);
        return -1;
    }
    if (rv < 0) {
        log_debug("grpc: http2: %s", nghttp2_strerror((int)rv));
        if (rv == NGHTTP2_ERR_BAD_CLIENT_MAGIC || nghttp2_is_fatal((int)rv)) {
            /* Not HTTP/2 at all, or nghttp2 cannot go on: just close. */
            conn_close(c);
            return -1;
        }
        nghttp2_session_terminate_session(c->h2, NGHTTP2_PROTOCOL_ERROR);
        c->close_after_write = true;
    }
    return 0;
}

/* Plaintext from the client. Returns 0, or -1 when the connection was
 * closed (nothing more may be fed). */
static int conn_input(struct grpc_conn *c, const uint8_t *p, size_t n)
{
    if (c->proto == CONN_SNIFF) {
        size_t want = sizeof preface - 1 - c->sniff_len;
        size_t take = n < want ? n : want;
        if (memcmp(p, preface + c->sniff_len, take) == 0) {
            memcpy(c->sniff + c->sniff_len, p, take);
            c->sniff_len += take;
            if (c->sniff_len < sizeof preface - 1) return 0;
            if (grpc_session_new(c) < 0) {
                conn_close(c);
                return -1;
            }
            c->proto = CONN_H2;
            if (h2_recv(c, c->sniff, c->sniff_len)) return -1;
            p += take;
            n -= take;
        } else {
            c->proto = CONN_HTTP1;
            if (c->sniff_len && grpc_http1_recv(c, c->sniff, c->sniff_len)) {
                conn_close(c);
                return -1;
            }
        }
        if (n == 0) return 0;
    }
    if (c->proto == CONN_H2) return h2_recv(c, p, n);
    if (grpc_http1_recv(c, p, n)) {
        conn_close(c);
        return -1;
    }
    return 0;
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct grpc_conn *c = st->data;
    c->s->rbuf_busy = false;
    if (nread == 0) return;
    if (nread < 0) {
        if (nread != UV_EOF) log_debug("grpc: read: %s", uv_strerror((int)nread));
        conn_close(c);
        return;
    }
    if (c->close_after_write) return;
    if (!c->tls) {
        if (conn_input(c, (const uint8_t *)buf->base, (size_t)nread) == 0) grpc_conn_mark_dirty(c);
        return;
    }
    if (tls_conn_feed(c->tls, (const uint8_t *)buf->base, (size_t)nread)) {
        conn_close(c);
        return;
    }
    grpc_server *s = c->s;
    for (;;) {
        ssize_t n = tls_conn_read(c->tls, s->pbuf, sizeof s->pbuf);
        if (n > 0) {
            if (conn_input(c, s->pbuf, (size_t)n)) return;
            if (c->close_after_write) break;
            continue;
        }
        if (n == TLS_CLOSED) {
            c->close_after_write = true;
        } else if (n == TLS_FAILED) {
            /* Refused in the handshake (e.g. no or a bad client
             * certificate), or not TLS at all: say why, send the alert. */
            log_warn("rejected connection from %s: %s", c->peer, tls_conn_error(c->tls));
            c->close_after_write = true;
        }
        break;
    }
    grpc_conn_mark_dirty(c); /* handshake messages, alerts, responses */
}

static void read_start(struct grpc_conn *c)
{
    if (c->reading || c->closing) return;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0) c->reading = true;
}

static void read_stop(struct grpc_conn *c)
{
    if (!c->reading) return;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
}

static void on_write(uv_write_t *req, int status)
{
    struct grpc_conn *c = req->data;
    c->writing = false;
    if (c->closing) return; /* cancelled by uv_close; conn_freed frees */
    if (status < 0) {
        log_debug("grpc: write: %s", uv_strerror(status));
        conn_close(c);
        return;
    }
    c->out.len = 0;
    c->out_off = 0;
    if (c->read_paused) {
        c->read_paused = false;
        read_start(c);
    }
    conn_flush(c);
}

/* Drains nghttp2 into c->out (up to OUT_CAP) and writes it. */
static void conn_flush(struct grpc_conn *c)
{
    if (c->closing || c->writing) return;
    if (c->out_off == c->out.len) c->out.len = c->out_off = 0;
    /* Plaintext goes to c->out, or to c->tplain to be encrypted. */
    struct grpc_buf *dst = c->tls ? &c->tplain : &c->out;
    while (c->proto == CONN_H2 && c->out.len + c->tplain.len < OUT_CAP) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->h2, &data);
        if (n < 0) {
            log_debug("grpc: http2 send: %s", nghttp2_strerror((int)n));
            conn_close(c);
            return;
        }
        if (n == 0) break;
        if (grpc_buf_append(dst, data, (size_t)n)) {
            log_error("grpc: out of memory buffering output");
            conn_close(c);
            return;
        }
    }
    if (c->proto == CONN_HTTP1 &&
        grpc_http1_take(c, dst, OUT_CAP - (c->out.len + c->tplain.len < OUT_CAP
                                               ? c->out.len + c->tplain.len : OUT_CAP))) {
        conn_close(c);
        return;
    }
    if (c->tls) {
        if (c->tplain.len) {
            if (tls_conn_write(c->tls, c->tplain.p, c->tplain.len)) {
                log_debug("grpc: tls write: %s", tls_conn_error(c->tls));
                conn_close(c);
                return;
            }
            c->tplain.len = 0;
            if (c->tplain.cap > 4 * OUT_CAP) grpc_buf_free(&c->tplain);
        }
        size_t pend = tls_conn_pending(c->tls);
        if (pend) {
            if (grpc_buf_reserve(&c->out, pend)) {
                conn_close(c);
                return;
            }
            c->out.len += tls_conn_take(c->tls, c->out.p + c->out.len, pend);
        }
    }
    if (c->out.len > c->out_off) {
        uv_buf_t b = uv_buf_init((char *)c->out.p + c->out_off, (unsigned)(c->out.len - c->out_off));
        int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (n == UV_EAGAIN) n = 0;
        if (n < 0) {
            log_debug("grpc: write: %s", uv_strerror(n));
            conn_close(c);
            return;
        }
        c->out_off += (size_t)n;
        if (c->out_off < c->out.len) {
            b = uv_buf_init((char *)c->out.p + c->out_off, (unsigned)(c->out.len - c->out_off));
            c->wreq.data = c;
            int rv = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write);
            if (rv < 0) {
                conn_close(c);
                return;
            }
            c->writing = true;
            if (c->reading) {
                read_stop(c);
                c->read_paused = true;
            }
            return;
        }
        c->out.len = c->out_off = 0;
        /* More frames may be waiting in nghttp2 beyond OUT_CAP. */
        if (c->proto == CONN_H2 && nghttp2_session_want_write(c->h2)) {
            grpc_conn_mark_dirty(c);
            return;
        }
        if (c->proto == CONN_HTTP1 && grpc_http1_pending(c)) {
            grpc_conn_mark_dirty(c);
            return;
        }
    }
    if (c->out.cap > 4 * OUT_CAP) grpc_buf_free(&c->out); /* shrink after a burst */
    if (c->close_after_write ||
        (c->proto == CONN_H2 && !nghttp2_session_want_read(c->h2) &&
         !nghttp2_session_want_write(c->h2)) ||
        (c->proto == CONN_HTTP1 && grpc_http1_done(c)))
        conn_close(c);
}

static struct grpc_conn *conn_new(grpc_server *s)
{
    struct grpc_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->s = s;
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    grpc_buf_init(&c->out, NULL, 0);
    grpc_buf_init(&c->tplain, NULL, 0);
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    return c;
}

/* Starts serving an accepted connection (cleartext when tls is NULL). */
static void conn_start(struct grpc_conn *c, tls_ctx *tls)
{
    snprintf(c->peer, sizeof c->peer, "local");
    struct sockaddr_storage sa;
    int salen = sizeof sa;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&sa, &salen) == 0) {
        char ip[48] = "?";
        int port = 0;
        if (sa.ss_family == AF_INET6) {
            uv_ip6_name((struct sockaddr_in6 *)&sa, ip, sizeof ip);
            port = ntohs(((struct sockaddr_in6 *)&sa)->sin6_port);
            snprintf(c->peer, sizeof c->peer, "[%s]:%d", ip, port);
        } else if (sa.ss_family == AF_INET) {
            uv_ip4_name((struct sockaddr_in *)&sa, ip, sizeof ip);
            port = ntohs(((struct sockaddr_in *)&sa)->sin_port);
            snprintf(c->peer, sizeof c->peer, "%s:%d", ip, port);
        }
    }
    if (tls && !(c->tls = tls_conn_new(tls))) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    grpc_conn_deadline(c, true);
    read_start(c);
}

static void on_connection(uv_stream_t *ls, int status)
{
    struct grpc_listener *l = ls->data;
    grpc_server *s = l->s;
    if (status < 0 || s->closing) return;
    struct grpc_conn *c = conn_new(s);
    if (!c) return;
    if (uv_accept(ls, (uv_stream_t *)&c->tcp) < 0) {
        conn_close(c);
        return;
    }
    conn_start(c, l->tls);
}

int grpc_server_adopt_data(grpc_server *s, uv_os_sock_t fd, struct tls_ctx *tls,
                           const uint8_t *data, size_t n)
{
    if (s->closing || (tls && n > 0)) return UV_EINVAL;
    struct grpc_conn *c = conn_new(s);
    if (!c) return UV_ENOMEM;
    int rv = uv_tcp_open(&c->tcp, fd);
    if (rv < 0) {
        conn_close(c);
        return rv;
    }
    conn_start(c, tls);
    /* as if read: conn_input closes c itself if the bytes are bad */
    if (n > 0 && !c->closing && conn_input(c, data, n) == 0) grpc_conn_mark_dirty(c);
    return 0;
}

int grpc_server_adopt(grpc_server *s, uv_os_sock_t fd, struct tls_ctx *tls)
{
    return grpc_server_adopt_data(s, fd, tls, NULL, 0);
}

size_t grpc_server_conn_count(const grpc_server *s)
{
    size_t n = 0;
    for (const struct grpc_conn *c = s->conns; c; c = c->next) n++;
    return n;
}

int grpc_server_listen(grpc_server *s, const char *host, int port)
{
    return grpc_server_listen_tls(s, host, port, NULL);
}

int grpc_server_listen_tls(grpc_server *s, const char *host, int port, struct tls_ctx *tls)
{
    struct sockaddr_storage addr;
    char h[64];
    size_t hl = strlen(host);
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']' && hl - 2 < sizeof h) {
        memcpy(h, host + 1, hl - 2);
        h[hl - 2] = '\0';
        host = h;
    }
    if (strcmp(host, "localhost") == 0 || host[0] == '\0') host = "127.0.0.1";
    int rv;
    if (strchr(host, ':')) rv = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr);
    else rv = uv_ip4_addr(host, port, (struct sockaddr_in *)&addr);
    if (rv < 0) return rv;

    struct grpc_listener *l = calloc(1, sizeof *l);
    if (!l) return UV_ENOMEM;
    uv_tcp_init(s->loop, &l->tcp);
    l->tcp.data = l;
    rv = uv_tcp_bind(&l->tcp, (const struct sockaddr *)&addr, 0);
    if (rv == 0) rv = uv_listen((uv_stream_t *)&l->tcp, 4096, on_connection);
    if (rv < 0) {
        l->s = NULL;
        uv_close((uv_handle_t *)&l->tcp, listener_closed);
        return rv;
    }
    l->s = s;
    l->tls = tls;
    l->next = s->listeners;
    s->listeners = l;
    return 0;
}
