/* Fuzz target: bytes from a connection on the peer port, through the real
 * code of src/member/peer.c (the sniffer that tells HTTP/2 from libraft's
 * handshake, the hand-off of cleartext Raft connections, the relay) and,
 * in the TLS variant, src/net/tls.c as a peer server with
 * --peer-client-cert-auth.
 *
 * Each input is written into one end of a socketpair whose other end the
 * peer port adopts (peer_net_adopt); the loop runs until the server goes
 * quiet, then the client end is closed and the loop runs until the peer
 * port has dropped the connection. A Raft connection that gets through is
 * handed to a stand-in for libraft that reads and drops its bytes; an
 * HTTP/2 one to a stand-in for the gRPC server that does the same.
 *
 * Build-time variant (FUZZ_MODE):
 *   1  fuzz_peer      cleartext peer port
 *   2  fuzz_peer_tls  TLS peer port requiring a client certificate */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <raft.h>
#include <raft/uv.h>

#include "member/peer.h"
#include "net/tls.h"
#include "util/log.h"

#ifndef FUZZ_MODE
#define FUZZ_MODE 1
#endif

static uv_loop_t loop;
static peer_net *pn;
static tls_ctx *tls;
static size_t answered;

#include "fuzz_sock.h" /* drain, put, self_signed_tls: use loop and answered */
static size_t handed; /* connections handed to the stand-ins, still open */

/* ---- stand-ins for libraft and the gRPC server: read until EOF ---- */

static void sink_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char b[65536];
    (void)h, (void)suggested;
    buf->base = b;
    buf->len = sizeof b;
}

static void sink_closed(uv_handle_t *h)
{
    handed--;
    raft_free(h);
}

static void sink_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    if (n < 0) uv_close((uv_handle_t *)st, sink_closed);
}

static void sink(uv_stream_t *st)
{
    handed++;
    if (uv_read_start(st, sink_alloc, sink_read) != 0) uv_close((uv_handle_t *)st, sink_closed);
}

static void on_raft(struct raft_uv_transport *t, raft_id id, const char *address,
                    struct uv_stream_s *stream)
{
    (void)t, (void)id, (void)address;
    sink(stream);
}

static void on_http2(void *ctx, uv_os_sock_t fd, const uint8_t *pre, size_t n)
{
    (void)ctx, (void)pre, (void)n;
    uv_pipe_t *p = raft_malloc(sizeof *p);
    if (p == NULL || uv_pipe_init(&loop, p, 0) != 0) abort();
    if (uv_pipe_open(p, fd) != 0) abort();
    sink((uv_stream_t *)p);
}

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    log_set_level(LOG_ERROR);
    if (uv_loop_init(&loop)) abort();
#if FUZZ_MODE == 2
    static const char *const hosts[] = {"127.0.0.1"};
    tls = self_signed_tls(hosts, 1, true);
#endif
    if (peer_net_new(&pn, &loop, tls, NULL, on_http2, NULL)) abort();
    struct raft_uv_transport *t = peer_net_transport(pn);
    if (t->init(t, 1, "127.0.0.1:0") != 0 || t->listen(t, on_raft) != 0) {
        fprintf(stderr, "fuzz: peer port: %s\n", t->errmsg);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!pn) setup();
    answered = 0;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv)) abort();
    if (peer_net_adopt(pn, sv[0])) abort();
    put(sv[1], data, size);
    for (int quiet = 0, i = 0; quiet < 3 && i < 1000; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        quiet = drain(sv[1]) ? 0 : quiet + 1;
    }
    close(sv[1]);
    for (int i = 0; (peer_net_conn_count(pn) > 0 || handed > 0) && i < 10000; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    if (peer_net_conn_count(pn) > 0 || handed > 0) {
        fprintf(stderr, "fuzz: the peer port did not drop a closed connection\n");
        abort();
    }
    uv_run(&loop, UV_RUN_NOWAIT);
    if (getenv("FUZZ_VERBOSE")) fprintf(stderr, "fuzz: %zu bytes in, %zu answered\n", size, answered);
    return 0;
}
