/* The peer port: libraft transport with TLS, and HTTP/2 beside it (see
 * peer.h).
 *
 * One `link` per TCP connection, in both directions. Its life:
 *
 *   incoming:  accepted → [TLS handshake] → sniff the first plaintext bytes
 *              → socketpair; the far end to libraft (accept_cb) or to the
 *              gRPC server (on_http2) → relay
 *   out_raft:  libraft's connect → TCP connect → [TLS handshake] →
 *              socketpair; our handshake preamble sent; the far end to
 *              libraft (connect cb) → relay
 *   out_dial:  TLS: socketpair at once (the caller's end returned) → TCP
 *              connect → TLS handshake → dial cb → relay.
 *              Cleartext: the TCP socket itself returned at once (its
 *              connect goes on through a duplicate held by the link) →
 *              connected → dial cb → the link closes its duplicate
 *
 * Cleartext incoming connections are handed over as the TCP socket itself
 * too (a duplicate; the link then closes its own): to libraft after the
 * Raft handshake, to the gRPC server with the HTTP/2 preface read so far.
 * Only TLS connections are relayed (TLS ends here).
 *
 * A link closes when either side ends or fails; libraft and the gRPC server
 * then see EOF on their end. Callbacks still owed (libraft's connect, a
 * dial) fire from the last close callback, never inside the call that
 * started them. */
#include "member/peer.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <raft.h>
#include <raft/uv.h>

#include "util/endian.h"
#include "util/log.h"

#define HANDSHAKE_PROTOCOL 1
#define MAX_ADDRESS_LEN 1024
#define READ_BUF 65536
/* Relay back-pressure: stop reading one side while more than HIGH bytes
 * wait to be written to the other, resume below LOW. */
#define QUEUE_HIGH (8u << 20)
#define QUEUE_LOW (1u << 20)
/* An incoming connection must finish TLS and say what it is (Raft or
 * HTTP/2) within this long; a dial must be up within it too. */
#define HANDSHAKE_TIMEOUT_MS 10000
#define SWEEP_MS 1000

static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"; /* 24 bytes */

enum link_kind { LINK_IN, LINK_OUT_RAFT, LINK_OUT_DIAL };

struct link;

struct peer_dial {
    struct link *l;
    peer_dial_fn cb;
    void *arg;
};

struct link {
    peer_net *pn;
    struct link *prev, *next;
    enum link_kind kind;
    uv_tcp_t tcp;
    uv_pipe_t pipe; /* our end of the socketpair (plaintext) */
    bool pipe_open;
    uv_connect_t connect;
    tls_conn *tls; /* NULL: cleartext */
    bool up;       /* relaying */
    bool closing;
    bool cn_checked; /* incoming TLS: --peer-cert-allowed-cn done */
    bool direct;     /* out_dial, cleartext: the caller holds the socket */
    bool tcp_paused, pipe_paused; /* reading stopped: the other side is behind */
    uint64_t started; /* uv_now() at accept / dial */
    int handles; /* open libuv handles */
    int status;  /* why it failed (a libuv code), for owed callbacks */
    char who[80]; /* the peer's address, for logs */
    char *host;   /* outgoing: the host to verify */
    uint8_t *sniff; /* incoming: plaintext received before the hand-off */
    size_t sniff_len;
    /* out_raft */
    struct raft_uv_connect *req;
    raft_uv_connect_cb rcb;
    raft_id id;
    /* out_dial */
    peer_dial *dial;
};

struct peer_net {
    struct raft_uv_transport transport;
    uv_loop_t *loop;
    tls_ctx *server_tls, *client_tls;
    peer_http2_fn on_http2;
    void *ctx;
    raft_id id;
    char *address; /* advertised (libraft's server address) */
    /* where to listen, when not `address` (--listen-peer-urls, each) */
    char *binds[PEER_MAX_BINDS];
    size_t n_binds;
    uv_tcp_t listeners[PEER_MAX_BINDS];
    size_t n_listeners;    /* initialised by tr_listen */
    size_t listeners_open; /* of those, not closed yet */
    uv_timer_t sweep; /* closes links stuck in their handshake */
    bool sweep_closed;
    char *allowed_cn; /* --peer-cert-allowed-cn, or NULL */
    raft_uv_accept_cb accept_cb;
    bool closing;
    raft_uv_transport_close_cb close_cb;
    bool free_when_closed;
    struct link *links;
};

struct wreq {
    uv_write_t req;
    struct link *l;
    uv_stream_t *st;
    char data[];
};

static void link_close(struct link *l, int status);
static void pipe_read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *buf);
static void tcp_read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *buf);
static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

/* ---- address parsing ---- */

/* "host:port" (or "[v6]:port") → sockaddr; the host into `host` when not
 * NULL. Returns 0 or -1. */
static int parse_address(const char *address, struct sockaddr_storage *sa, char **host)
{
    const char *colon = strrchr(address, ':');
    if (colon == NULL || colon == address) return -1;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port < 0 || port > 65535) return -1; /* 0: any (listen only) */
    size_t hl = (size_t)(colon - address);
    const char *h = address;
    if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') h++, hl -= 2;
    char buf[256];
    if (hl == 0 || hl >= sizeof buf) return -1;
    memcpy(buf, h, hl);
    buf[hl] = '\0';
    if (strcmp(buf, "localhost") == 0) strcpy(buf, "127.0.0.1");
    memset(sa, 0, sizeof *sa);
    if (uv_ip4_addr(buf, (int)port, (struct sockaddr_in *)sa) != 0 &&
        uv_ip6_addr(buf, (int)port, (struct sockaddr_in6 *)sa) != 0)
        return -1;
    if (host != NULL) {
        /* verify the name the URL gave, as Go's tls does */
        char name[256];
        memcpy(name, h, hl);
        name[hl] = '\0';
        *host = strdup(name);
        if (*host == NULL) return -1;
    }
    return 0;
}

/* ---- lifecycle of links ---- */

static void maybe_closed(peer_net *pn)
{
    if (!pn->closing || pn->listeners_open > 0 || !pn->sweep_closed || pn->links != NULL) return;
    raft_uv_transport_close_cb cb = pn->close_cb;
    pn->close_cb = NULL;
    if (cb != NULL) cb(&pn->transport);
    if (pn->free_when_closed) {
        free(pn->address);
        for (size_t i = 0; i < pn->n_binds; i++) free(pn->binds[i]);
        free(pn->allowed_cn);
        free(pn);
    }
}

static struct link *link_new(peer_net *pn, enum link_kind kind)
{
    struct link *l = calloc(1, sizeof *l);
    if (l == NULL) return NULL;
    l->pn = pn;
    l->kind = kind;
    l->tcp.data = l;
    l->pipe.data = l;
    l->connect.data = l;
    uv_tcp_init(pn->loop, &l->tcp);
    l->handles = 1;
    l->started = uv_now(pn->loop);
    l->next = pn->links;
    if (pn->links != NULL) pn->links->prev = l;
    pn->links = l;
    return l;
}

static void link_handle_closed(uv_handle_t *h)
{
    struct link *l = h->data;
    if (--l->handles > 0) return;
    peer_net *pn = l->pn;
    if (l->prev != NULL) l->prev->next = l->next;
    else pn->links = l->next;
    if (l->next != NULL) l->next->prev = l->prev;
    int status = l->status ? l->status : UV_ECONNRESET;
    if (l->req != NULL) {
        struct raft_uv_connect *req = l->req;
        l->req = NULL;
        l->rcb(req, NULL, pn->closing ? RAFT_CANCELED : RAFT_NOCONNECTION);
    }
    if (l->dial != NULL) {
        peer_dial *d = l->dial;
        l->dial = NULL;
        if (d->cb != NULL) d->cb(d->arg, pn->closing ? UV_ECANCELED : status);
        free(d);
    }
    tls_conn_free(l->tls);
    free(l->sniff);
    free(l->host);
    free(l);
    maybe_closed(pn);
}

static void link_close(struct link *l, int status)
{
    if (l->closing) return;
    l->closing = true;
    if (l->status == 0) l->status = status;
    uv_os_fd_t fd;
    if (l->direct && !l->up && uv_fileno((uv_handle_t *)&l->tcp, &fd) == 0)
        shutdown(fd, SHUT_RDWR); /* the caller's socket too: it sees the end */
    uv_close((uv_handle_t *)&l->tcp, link_handle_closed);
    if (l->pipe_open) uv_close((uv_handle_t *)&l->pipe, link_handle_closed);
}

/* ---- writing ---- */

static void wreq_done(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    struct link *l = w->l;
    uv_stream_t *st = w->st;
    free(w);
    if (status < 0) {
        if (status != UV_ECANCELED) link_close(l, status);
        return;
    }
    if (l->closing || st->write_queue_size > QUEUE_LOW) return;
    /* the side that was behind caught up: read the other again */
    if (st == (uv_stream_t *)&l->tcp && l->pipe_paused) {
        l->pipe_paused = false;
        if (uv_read_start((uv_stream_t *)&l->pipe, alloc_cb, pipe_read_cb) != 0)
            link_close(l, UV_EIO);
    } else if (st == (uv_stream_t *)&l->pipe && l->tcp_paused) {
        l->tcp_paused = false;
        if (uv_read_start((uv_stream_t *)&l->tcp, alloc_cb, tcp_read_cb) != 0)
            link_close(l, UV_EIO);
    }
}

/* Stops reading the side that feeds `st` while st is far behind. */
static void maybe_pause(struct link *l, uv_stream_t *st)
{
    if (l->closing || st->write_queue_size <= QUEUE_HIGH) return;
    if (st == (uv_stream_t *)&l->tcp && l->up && !l->pipe_paused) {
        l->pipe_paused = true;
        uv_read_stop((uv_stream_t *)&l->pipe);
    } else if (st == (uv_stream_t *)&l->pipe && !l->tcp_paused) {
        l->tcp_paused = true;
        uv_read_stop((uv_stream_t *)&l->tcp);
    }
}

/* Writes n bytes (copied) to `st`, which belongs to link l. */
static void stream_write(struct link *l, uv_stream_t *st, const void *p, size_t n)
{
    if (l->closing || n == 0) return;
    int r = uv_try_write(st, &(uv_buf_t){.base = (char *)p, .len = n}, 1);
    if (r == (int)n) return;
    if (r < 0 && r != UV_EAGAIN) {
        link_close(l, r);
        return;
    }
    size_t done = r > 0 ? (size_t)r : 0;
    struct wreq *w = malloc(sizeof *w + (n - done));
    if (w == NULL) {
        link_close(l, UV_ENOMEM);
        return;
    }
    w->l = l;
    w->st = st;
    memcpy(w->data, (const char *)p + done, n - done);
    uv_buf_t b = {.base = w->data, .len = n - done};
    r = uv_write(&w->req, st, &b, 1, wreq_done);
    if (r < 0) {
        free(w);
        link_close(l, r);
        return;
    }
    maybe_pause(l, st);
}

/* TLS output (handshake, records, alerts) to the network. */
static void flush_tls(struct link *l)
{
    uint8_t buf[16384];
    while (!l->closing && l->tls != NULL && tls_conn_pending(l->tls) > 0) {
        size_t n = tls_conn_take(l->tls, buf, sizeof buf);
        if (n == 0) break;
        stream_write(l, (uv_stream_t *)&l->tcp, buf, n);
    }
}

/* Plaintext to the peer. */
static void send_net(struct link *l, const void *p, size_t n)
{
    if (l->closing) return;
    if (l->tls == NULL) {
        stream_write(l, (uv_stream_t *)&l->tcp, p, n);
        return;
    }
    if (tls_conn_write(l->tls, p, n) != 0) {
        log_warn("peer: TLS with %s: %s", l->who, tls_conn_error(l->tls));
        link_close(l, UV_EPROTO);
        return;
    }
    flush_tls(l);
}

/* ---- the plaintext side ---- */

/* Cleartext incoming: how many bytes the sniffer still needs, so that no
 * read takes more than the handshake (the socket itself is then handed to
 * libraft, with nothing of the Raft stream read). */
static size_t sniff_want(const struct link *l)
{
    if (l->sniff_len < 24) return 24 - l->sniff_len;
    if (l->sniff[0] == 'P') return 1;
    uint64_t alen = get_le64(l->sniff + 16);
    if (alen == 0 || alen > MAX_ADDRESS_LEN || l->sniff_len >= 24 + alen) return 1;
    return (size_t)(24 + alen - l->sniff_len);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct link *l = h->data;
    (void)suggested;
    size_t n = READ_BUF;
    if (h == (uv_handle_t *)&l->tcp && l->kind == LINK_IN && l->tls == NULL && !l->up)
        n = sniff_want(l);
    buf->base = malloc(READ_BUF);
    buf->len = buf->base != NULL ? n : 0;
}

/* A duplicate of the link's TCP socket, for whoever takes the connection
 * over (the link then closes its own descriptor). Reading stops here, so
 * nothing more of the stream is taken. -1 on failure. */
static int dup_tcp(struct link *l)
{
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&l->tcp, &fd) != 0) return -1;
    int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (nfd >= 0) uv_read_stop((uv_stream_t *)&l->tcp);
    return nfd;
}

/* Cleartext Raft needs no relay: a duplicate of the TCP socket becomes
 * libraft's stream (raft_malloc'd: it uv_close()s and raft_free()s it).
 * NULL on failure. */
static uv_stream_t *steal_tcp(struct link *l)
{
    int nfd = dup_tcp(l);
    if (nfd < 0) return NULL;
    uv_tcp_t *t = raft_malloc(sizeof *t);
    if (t == NULL) {
        close(nfd);
        return NULL;
    }
    uv_tcp_init(l->pn->loop, t);
    if (uv_tcp_open(t, nfd) != 0) {
        close(nfd);
        uv_close((uv_handle_t *)t, (uv_close_cb)raft_free);
        return NULL;
    }
    uv_tcp_nodelay(t, 1);
    return (uv_stream_t *)t;
}

/* A socketpair: *ours opened as l->pipe, *theirs returned. */
static int make_pair(struct link *l, uv_os_sock_t *theirs)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return -1;
    uv_pipe_init(l->pn->loop, &l->pipe, 0);
    if (uv_pipe_open(&l->pipe, sv[0]) != 0) {
        uv_close((uv_handle_t *)&l->pipe, NULL);
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    l->pipe_open = true;
    l->handles++;
    *theirs = sv[1];
    return 0;
}

/* A raft_malloc'd stream on fd for libraft (it uv_close()s and raft_free()s
 * it). NULL on failure (fd closed). */
static uv_stream_t *raft_stream(uv_loop_t *loop, uv_os_sock_t fd)
{
    uv_pipe_t *p = raft_malloc(sizeof *p);
    if (p == NULL) {
        close(fd);
        return NULL;
    }
    uv_pipe_init(loop, p, 0);
    if (uv_pipe_open(p, fd) != 0) {
        close(fd);
        uv_close((uv_handle_t *)p, (uv_close_cb)raft_free);
        return NULL;
    }
    return (uv_stream_t *)p;
}

static void start_relay(struct link *l)
{
    l->up = true;
    if (uv_read_start((uv_stream_t *)&l->pipe, alloc_cb, pipe_read_cb) != 0)
        link_close(l, UV_EIO);
}

static void pipe_read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    struct link *l = st->data;
    if (n > 0) send_net(l, buf->base, (size_t)n);
    else if (n < 0) link_close(l, (int)n);
    free(buf->base);
}

/* ---- incoming: what the first bytes say ---- */

static void refuse(struct link *l, const char *why)
{
    log_warn("peer: closing connection from %s: %s", l->who, why);
    link_close(l, UV_EPROTO);
}

static void sniff(struct link *l, const uint8_t *p, size_t n)
{
    size_t cap = 24 + MAX_ADDRESS_LEN;
    if (n > cap - l->sniff_len) n = cap - l->sniff_len; /* more than needed is kept below */
    memcpy(l->sniff + l->sniff_len, p, n);
    l->sniff_len += n;
    const uint8_t *s = l->sniff;
    size_t len = l->sniff_len;
    peer_net *pn = l->pn;
    uv_os_sock_t theirs;
    if (s[0] == 'P') {
        size_t k = len < 24 ? len : 24;
        if (memcmp(s, h2_preface, k) != 0) return refuse(l, "neither Raft nor HTTP/2");
        if (len < 24) return;
        if (pn->on_http2 == NULL) return refuse(l, "cannot serve HTTP/2");
        if (l->tls == NULL && len == 24) {
            /* cleartext: the gRPC server gets the socket itself, and the
             * preface read so far (sniff_want read no more) */
            int fd = dup_tcp(l);
            if (fd < 0) return refuse(l, "cannot serve HTTP/2");
            l->up = true;
            link_close(l, 0);
            pn->on_http2(pn->ctx, fd, s, len);
            return;
        }
        if (make_pair(l, &theirs) != 0) return refuse(l, "cannot serve HTTP/2");
        pn->on_http2(pn->ctx, theirs, NULL, 0);
        stream_write(l, (uv_stream_t *)&l->pipe, s, len);
        start_relay(l);
        return;
    }
    if (len >= 8 && get_le64(s) != HANDSHAKE_PROTOCOL) return refuse(l, "neither Raft nor HTTP/2");
    if (len < 24) return;
    uint64_t alen = get_le64(s + 16);
    if (alen == 0 || alen > MAX_ADDRESS_LEN) return refuse(l, "bad Raft handshake");
    if (len < 24 + alen) return;
    char address[MAX_ADDRESS_LEN + 1];
    memcpy(address, s + 24, alen);
    address[alen] = '\0';
    raft_id id = get_le64(s + 8);
    if (pn->accept_cb == NULL || pn->closing) return refuse(l, "not listening for Raft");
    if (l->tls == NULL && len == 24 + alen) {
        uv_stream_t *st = steal_tcp(l);
        if (st == NULL) return refuse(l, "cannot hand the connection to Raft");
        log_debug("peer: Raft connection from %" PRIx64 " (%s) at %s", (uint64_t)id, address,
                  l->who);
        l->up = true;
        link_close(l, 0);
        pn->accept_cb(&pn->transport, id, address, st);
        return;
    }
    if (make_pair(l, &theirs) != 0) return refuse(l, "cannot relay");
    uv_stream_t *st = raft_stream(pn->loop, theirs);
    if (st == NULL) return refuse(l, "cannot relay");
    log_debug("peer: Raft connection from %" PRIx64 " (%s) at %s", (uint64_t)id, address,
              l->who);
    pn->accept_cb(&pn->transport, id, address, st);
    stream_write(l, (uv_stream_t *)&l->pipe, s + 24 + alen, len - 24 - alen);
    start_relay(l);
}

/* Plaintext from the peer. */
static void on_plain(struct link *l, const uint8_t *p, size_t n)
{
    if (l->closing) return;
    if (l->up) {
        stream_write(l, (uv_stream_t *)&l->pipe, p, n);
        return;
    }
    if (l->kind != LINK_IN) return; /* cannot happen: outgoing links are up first */
    size_t cap = 24 + MAX_ADDRESS_LEN;
    while (n > 0 && !l->up && !l->closing) {
        size_t take = n < cap - l->sniff_len ? n : cap - l->sniff_len;
        sniff(l, p, take);
        p += take;
        n -= take;
    }
    if (n > 0 && l->up) stream_write(l, (uv_stream_t *)&l->pipe, p, n);
}

/* ---- outgoing: the connection is up ---- */

/* libraft's handshake, as its TCP transport sends it; malloc'd, *len set. */
static uint8_t *encode_handshake(const peer_net *pn, size_t *len)
{
    size_t alen = strlen(pn->address) + 1;
    alen = (alen + 7) / 8 * 8;
    uint8_t *hs = calloc(1, 24 + alen);
    if (hs == NULL) return NULL;
    put_le64(hs, HANDSHAKE_PROTOCOL);
    put_le64(hs + 8, pn->id);
    put_le64(hs + 16, alen);
    memcpy(hs + 24, pn->address, strlen(pn->address));
    *len = 24 + alen;
    return hs;
}

static void out_up(struct link *l)
{
    peer_net *pn = l->pn;
    if (l->kind == LINK_OUT_RAFT && l->tls == NULL) {
        /* cleartext: libraft gets the socket itself */
        size_t n;
        uint8_t *hs = encode_handshake(pn, &n);
        uv_stream_t *st = hs != NULL ? steal_tcp(l) : NULL;
        int w = st != NULL ? uv_try_write(st, &(uv_buf_t){.base = (char *)hs, .len = n}, 1) : -1;
        free(hs);
        if (w != (int)n) {
            if (st != NULL) uv_close((uv_handle_t *)st, (uv_close_cb)raft_free);
            return link_close(l, UV_EIO); /* libraft tries again later */
        }
        struct raft_uv_connect *req = l->req;
        l->req = NULL;
        l->up = true;
        link_close(l, 0);
        l->rcb(req, st, 0);
        return;
    }
    if (l->kind == LINK_OUT_RAFT) {
        uv_os_sock_t theirs;
        if (make_pair(l, &theirs) != 0) return link_close(l, UV_EIO);
        uv_stream_t *st = raft_stream(pn->loop, theirs);
        if (st == NULL) return link_close(l, UV_ENOMEM);
        size_t n;
        uint8_t *hs = encode_handshake(pn, &n);
        if (hs == NULL) {
            uv_close((uv_handle_t *)st, (uv_close_cb)raft_free);
            return link_close(l, UV_ENOMEM);
        }
        send_net(l, hs, n);
        free(hs);
        start_relay(l);
        struct raft_uv_connect *req = l->req;
        l->req = NULL;
        if (l->closing) {
            uv_close((uv_handle_t *)st, (uv_close_cb)raft_free);
            l->req = req; /* failed: owed from the close callback */
            return;
        }
        l->rcb(req, st, 0);
        return;
    }
    start_relay(l);
    peer_dial *d = l->dial;
    l->dial = NULL;
    if (d != NULL) {
        if (d->cb != NULL) d->cb(d->arg, 0);
        free(d);
    }
}

/* ---- the network side ---- */

static void tcp_read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    struct link *l = st->data;
    if (n < 0) {
        if (l->tls != NULL && !tls_conn_established(l->tls) && n == UV_EOF)
            log_warn("peer: %s closed the connection during the TLS handshake", l->who);
        link_close(l, (int)n);
        free(buf->base);
        return;
    }
    if (n == 0 || l->closing) {
        free(buf->base);
        return;
    }
    if (l->tls == NULL) {
        on_plain(l, (const uint8_t *)buf->base, (size_t)n);
        free(buf->base);
        return;
    }
    if (tls_conn_feed(l->tls, (const uint8_t *)buf->base, (size_t)n) != 0) {
        free(buf->base);
        return link_close(l, UV_ENOMEM);
    }
    uint8_t *plain = (uint8_t *)buf->base; /* reused for the plaintext */
    for (;;) {
        ssize_t r = tls_conn_read(l->tls, plain, READ_BUF);
        if (!l->up && l->kind != LINK_IN && tls_conn_established(l->tls)) {
            flush_tls(l);
            out_up(l);
        }
        if (l->kind == LINK_IN && !l->cn_checked && tls_conn_established(l->tls)) {
            l->cn_checked = true;
            const char *cn = tls_conn_peer_cn(l->tls);
            if (l->pn->allowed_cn != NULL && (cn == NULL || strcmp(cn, l->pn->allowed_cn) != 0)) {
                /* as etcd's --peer-cert-allowed-cn */
                log_warn("peer: rejected connection from %s: certificate CN \"%s\" is not the "
                         "allowed CN \"%s\" (CommonName authentication failed)",
                         l->who, cn ? cn : "", l->pn->allowed_cn);
                link_close(l, UV_EPROTO);
            }
        }
        if (l->closing) break;
        if (r > 0) {
            on_plain(l, plain, (size_t)r);
            if (l->closing) break;
            continue;
        }
        if (r == TLS_AGAIN) break;
        if (r == TLS_FAILED) {
            log_warn("peer: TLS %s %s: %s",
                     tls_conn_established(l->tls) ? "error with" : "handshake with",
                     l->who, tls_conn_error(l->tls));
            flush_tls(l); /* the alert */
        }
        link_close(l, r == TLS_CLOSED ? UV_EOF : UV_EPROTO);
        break;
    }
    flush_tls(l);
    free(buf->base);
}

static void describe(struct link *l, const struct sockaddr *sa)
{
    char ip[64] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        uv_ip4_name(a, ip, sizeof ip);
        port = ntohs(a->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        uv_ip6_name(a, ip, sizeof ip);
        port = ntohs(a->sin6_port);
    }
    snprintf(l->who, sizeof l->who, "%s:%d", ip, port);
}

/* A new incoming link on l->tcp (accepted or adopted). */
static void start_incoming(struct link *l)
{
    peer_net *pn = l->pn;
    struct sockaddr_storage sa;
    int len = sizeof sa;
    if (uv_tcp_getpeername(&l->tcp, (struct sockaddr *)&sa, &len) == 0)
        describe(l, (struct sockaddr *)&sa);
    else
        snprintf(l->who, sizeof l->who, "(local)");
    uv_tcp_nodelay(&l->tcp, 1);
    l->sniff = malloc(24 + MAX_ADDRESS_LEN);
    if (l->sniff == NULL) return link_close(l, UV_ENOMEM);
    if (pn->server_tls != NULL) {
        l->tls = tls_conn_new(pn->server_tls);
        if (l->tls == NULL) return link_close(l, UV_ENOMEM);
    }
    if (uv_read_start((uv_stream_t *)&l->tcp, alloc_cb, tcp_read_cb) != 0)
        link_close(l, UV_EIO);
}

static void on_accept(uv_stream_t *server, int status)
{
    peer_net *pn = server->data;
    if (status < 0 || pn->closing) return;
    struct link *l = link_new(pn, LINK_IN);
    if (l == NULL) return;
    if (uv_accept(server, (uv_stream_t *)&l->tcp) != 0) return link_close(l, UV_EIO);
    start_incoming(l);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct link *l = req->data;
    if (l->closing) return;
    if (status < 0) return link_close(l, status);
    uv_tcp_nodelay(&l->tcp, 1);
    if (l->direct) {
        /* the caller's socket is connected: nothing to relay */
        l->up = true;
        peer_dial *d = l->dial;
        l->dial = NULL;
        if (d != NULL && d->cb != NULL) d->cb(d->arg, 0);
        free(d);
        return link_close(l, 0);
    }
    if (uv_read_start((uv_stream_t *)&l->tcp, alloc_cb, tcp_read_cb) != 0)
        return link_close(l, UV_EIO);
    if (l->pn->client_tls == NULL) return out_up(l);
    l->tls = tls_conn_new_client(l->pn->client_tls, l->host);
    if (l->tls == NULL) return link_close(l, UV_ENOMEM);
    uint8_t none[1];
    tls_conn_read(l->tls, none, sizeof none); /* starts the handshake: ClientHello */
    flush_tls(l);
}

/* A link connecting to `address`. With `direct` (a cleartext dial), the
 * socket is made here and a duplicate of it put into *direct for the
 * caller; the link connects it. */
static struct link *dial(peer_net *pn, enum link_kind kind, const char *address,
                         uv_os_sock_t *direct)
{
    struct sockaddr_storage sa;
    char *host = NULL;
    if (pn->closing || parse_address(address, &sa, &host) != 0) return NULL;
    struct link *l = link_new(pn, kind);
    if (l == NULL) {
        free(host);
        return NULL;
    }
    l->host = host;
    snprintf(l->who, sizeof l->who, "%s", address);
    if (direct != NULL) {
        int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int ours = fd >= 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1;
        if (ours < 0 || uv_tcp_open(&l->tcp, ours) != 0) {
            if (fd >= 0) close(fd);
            if (ours >= 0) close(ours);
            link_close(l, UV_EIO);
            return NULL;
        }
        l->direct = true;
        *direct = fd;
    }
    if (uv_tcp_connect(&l->connect, &l->tcp, (struct sockaddr *)&sa, on_connect) != 0) {
        if (l->direct) close(*direct);
        l->direct = false;
        link_close(l, UV_ECONNREFUSED);
        return NULL; /* freed from the close callback; nothing owed */
    }
    return l;
}

/* Closes links that did not finish their handshake in time (a silent or
 * slow client holding a connection open). */
static void on_sweep(uv_timer_t *t)
{
    peer_net *pn = t->data;
    uint64_t now = uv_now(pn->loop);
    for (struct link *l = pn->links; l != NULL; l = l->next) {
        if (l->up || l->closing || now - l->started < HANDSHAKE_TIMEOUT_MS) continue;
        if (l->kind == LINK_IN)
            log_warn("peer: closing connection from %s: no handshake within %d s", l->who,
                     HANDSHAKE_TIMEOUT_MS / 1000);
        else
            log_debug("peer: connection to %s: not up within %d s", l->who,
                      HANDSHAKE_TIMEOUT_MS / 1000);
        link_close(l, UV_ETIMEDOUT);
    }
}

static void on_sweep_closed(uv_handle_t *h)
{
    peer_net *pn = h->data;
    pn->sweep_closed = true;
    maybe_closed(pn);
}

/* ---- the raft_uv_transport ---- */

static int tr_init(struct raft_uv_transport *t, raft_id id, const char *address)
{
    peer_net *pn = t->impl;
    pn->id = id;
    free(pn->address);
    pn->address = strdup(address);
    return pn->address != NULL ? 0 : RAFT_NOMEM;
}

static int tr_listen(struct raft_uv_transport *t, raft_uv_accept_cb cb)
{
    peer_net *pn = t->impl;
    struct sockaddr_storage sa;
    const char *advertised[1] = {pn->address};
    const char *const *at = pn->n_binds > 0 ? (const char *const *)pn->binds : advertised;
    size_t n = pn->n_binds > 0 ? pn->n_binds : 1;
    for (size_t i = 0; i < n; i++)
        if (at[i] == NULL || parse_address(at[i], &sa, NULL) != 0) {
            snprintf(t->errmsg, sizeof t->errmsg, "bad peer address %s", at[i] ? at[i] : "(none)");
            return RAFT_INVALID;
        }
    /* every one, as etcd: a peer may dial any URL we advertise (the
     * listeners opened before a failure are closed with the transport) */
    for (size_t i = 0; i < n && pn->n_listeners < PEER_MAX_BINDS; i++) {
        uv_tcp_t *lt = &pn->listeners[pn->n_listeners];
        parse_address(at[i], &sa, NULL);
        uv_tcp_init(pn->loop, lt);
        lt->data = pn;
        pn->n_listeners++;
        pn->listeners_open++;
        int rv = uv_tcp_bind(lt, (struct sockaddr *)&sa, 0);
        if (rv == 0) rv = uv_listen((uv_stream_t *)lt, 128, on_accept);
        if (rv != 0) {
            snprintf(t->errmsg, sizeof t->errmsg, "listen tcp %s: %s", at[i], uv_strerror(rv));
            log_error("peer: listen tcp %s: %s", at[i], uv_strerror(rv));
            return RAFT_IOERR;
        }
        log_info("peer: listening for peers on %s (%s)", at[i],
                 pn->server_tls != NULL ? "TLS" : "cleartext");
    }
    pn->accept_cb = cb;
    return 0;
}

static int tr_connect(struct raft_uv_transport *t, struct raft_uv_connect *req, raft_id id,
                      const char *address, raft_uv_connect_cb cb)
{
    peer_net *pn = t->impl;
    struct link *l = dial(pn, LINK_OUT_RAFT, address, NULL);
    if (l == NULL) return RAFT_NOCONNECTION;
    l->req = req;
    l->rcb = cb;
    l->id = id;
    return 0;
}

static void on_listener_closed(uv_handle_t *h)
{
    peer_net *pn = h->data;
    pn->listeners_open--;
    maybe_closed(pn);
}

static void close_all(peer_net *pn)
{
    if (pn->closing) return;
    pn->closing = true;
    pn->accept_cb = NULL;
    for (size_t i = 0; i < pn->n_listeners; i++)
        uv_close((uv_handle_t *)&pn->listeners[i], on_listener_closed);
    uv_close((uv_handle_t *)&pn->sweep, on_sweep_closed);
    for (struct link *l = pn->links; l != NULL; l = l->next) link_close(l, UV_ECANCELED);
}

static void tr_close(struct raft_uv_transport *t, raft_uv_transport_close_cb cb)
{
    peer_net *pn = t->impl;
    pn->close_cb = cb;
    close_all(pn);
}

/* ---- public ---- */

int peer_net_new(peer_net **out, uv_loop_t *loop, tls_ctx *server_tls, tls_ctx *client_tls,
                 peer_http2_fn on_http2, void *ctx)
{
    peer_net *pn = calloc(1, sizeof *pn);
    if (pn == NULL) return -1;
    pn->loop = loop;
    pn->server_tls = server_tls;
    pn->client_tls = client_tls;
    pn->on_http2 = on_http2;
    pn->ctx = ctx;
    uv_timer_init(loop, &pn->sweep);
    pn->sweep.data = pn;
    uv_timer_start(&pn->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
    uv_unref((uv_handle_t *)&pn->sweep); /* never keeps the loop alive alone */
    pn->transport.impl = pn;
    pn->transport.init = tr_init;
    pn->transport.listen = tr_listen;
    pn->transport.connect = tr_connect;
    pn->transport.close = tr_close;
    *out = pn;
    return 0;
}

struct raft_uv_transport *peer_net_transport(peer_net *pn) { return &pn->transport; }

int peer_net_dial(peer_net *pn, const char *address, peer_dial_fn cb, void *arg,
                  uv_os_sock_t *fd, peer_dial **out)
{
    peer_dial *d = calloc(1, sizeof *d);
    if (d == NULL) return -1;
    uv_os_sock_t theirs;
    bool direct = pn->client_tls == NULL;
    struct link *l = dial(pn, LINK_OUT_DIAL, address, direct ? &theirs : NULL);
    if (l == NULL) {
        free(d);
        return -1;
    }
    if (!direct && make_pair(l, &theirs) != 0) {
        free(d);
        link_close(l, UV_EIO);
        return -1;
    }
    d->l = l;
    d->cb = cb;
    d->arg = arg;
    l->dial = d;
    *fd = theirs;
    *out = d;
    return 0;
}

int peer_net_set_bind_addresses(peer_net *pn, char *const *addresses, size_t n)
{
    for (size_t i = 0; i < pn->n_binds; i++) free(pn->binds[i]);
    pn->n_binds = 0;
    if (n > PEER_MAX_BINDS) return -1;
    for (size_t i = 0; i < n; i++) {
        pn->binds[i] = strdup(addresses[i]);
        if (pn->binds[i] == NULL) return -1;
        pn->n_binds++;
    }
    return 0;
}

int peer_net_set_allowed_cn(peer_net *pn, const char *cn)
{
    free(pn->allowed_cn);
    pn->allowed_cn = NULL;
    if (cn == NULL || cn[0] == '\0') return 0;
    pn->allowed_cn = strdup(cn);
    return pn->allowed_cn != NULL ? 0 : -1;
}

int peer_net_adopt(peer_net *pn, uv_os_sock_t fd)
{
    if (pn->closing) return UV_ECANCELED;
    struct link *l = link_new(pn, LINK_IN);
    if (l == NULL) return UV_ENOMEM;
    int rv = uv_tcp_open(&l->tcp, fd);
    if (rv != 0) {
        link_close(l, rv); /* fd stays the caller's */
        return rv;
    }
    start_incoming(l);
    return 0;
}

size_t peer_net_conn_count(const peer_net *pn)
{
    size_t n = 0;
    for (const struct link *l = pn->links; l != NULL; l = l->next) n++;
    return n;
}

void peer_dial_cancel(peer_dial *d)
{
    if (d != NULL) d->cb = NULL;
}

void peer_net_free(peer_net *pn)
{
    if (pn == NULL) return;
    pn->free_when_closed = true;
    if (!pn->closing) close_all(pn);
    else maybe_closed(pn); /* frees it if everything is closed already */
}
