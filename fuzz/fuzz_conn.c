/* Fuzz target: bytes from a client connection, through the real
 * connection code of src/grpc (server.c sniffing, session.c over nghttp2,
 * call.c, http1.c) and, in the TLS variant, src/net/tls.c.
 *
 * Each input is written into one end of a socketpair whose other end the
 * server adopts (grpc_server_adopt), the loop runs until the server has
 * nothing more to say, then the client end is closed and the loop runs
 * until the server has dropped the connection. Everything the server
 * answers is read and thrown away.
 *
 * Build-time variant (FUZZ_MODE):
 *   1  fuzz_h2     the HTTP/2 client preface is sent first, the input is
 *                  the frames after it
 *   2  fuzz_http1  the input is the raw first bytes (HTTP/1.1, garbage, or
 *                  the preface itself)
 *   3  fuzz_tls    the input is the raw bytes of a TLS client (ClientHello
 *                  and whatever follows) on a TLS connection
 *
 * The methods served are toys (the real handlers need a Raft member):
 *   /etcdserverpb.KV/Range    unary: answers the request bytes back
 *   /etcdserverpb.KV/Put      unary: fails with INVALID_ARGUMENT
 *   /etcdserverpb.Watch/Watch stream: each message answered back; the
 *                             call finishes OK when the stream closes
 *   /etcdserverpb.Lease/LeaseKeepAlive  the same, but a half-close keeps
 *                             the stream open (grpc_call_set_half_close)
 * and every HTTP/1.1 request is answered with its body: at once, or for
 * path /stream as a chunked stream (twice), or for /hold as a stream kept
 * open until the connection goes (grpc_http_set_on_gone). */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "grpc/grpc.h"
#include "net/tls.h"
#include "util/log.h"

#ifndef FUZZ_MODE
#define FUZZ_MODE 1
#endif

static uv_loop_t loop;
static grpc_server *srv;
static tls_ctx *tls;
static size_t answered; /* bytes the server sent for this input */

#include "fuzz_sock.h" /* drain, put, self_signed_tls: use loop and answered */

static void unary_echo(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    if (grpc_call_send(call, msg, len) == 0) grpc_call_finish(call, 0, NULL);
}

static void unary_fail(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    grpc_call_finish(call, 3, "etcdserver: key is not provided");
}

static void stream_echo(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    grpc_call_send(call, msg, len);
}

static void stream_close(grpc_call *call, void *ctx)
{
    if (grpc_call_alive(call)) grpc_call_finish(call, 0, NULL);
}

static void keep_open(grpc_call *call, void *ctx)
{
    grpc_call_send(call, (const uint8_t *)"half-closed", 11);
}

static void stream_keep(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    grpc_call_set_half_close(call, keep_open);
    grpc_call_send(call, msg, len);
}

static const grpc_method methods[] = {
    {"/etcdserverpb.KV/Range", GRPC_UNARY, unary_echo, NULL},
    {"/etcdserverpb.KV/Put", GRPC_UNARY, unary_fail, NULL},
    {"/etcdserverpb.Watch/Watch", GRPC_STREAM, stream_echo, stream_close},
    {"/etcdserverpb.Lease/LeaseKeepAlive", GRPC_STREAM, stream_keep, stream_close},
};

static void held_gone(grpc_http_req *req, void *data)
{
    grpc_http_stream_end(req);
}

static void http_echo(grpc_http_req *req, void *ctx)
{
    size_t len;
    const uint8_t *body = grpc_http_body(req, &len);
    const char *path = grpc_http_path(req);
    if (grpc_http_header(req, "x-fail")) {
        grpc_http_respond(req, 404, "text/plain", "no\n", 3);
    } else if (!strcmp(path, "/stream")) {
        grpc_http_stream_start(req, 200, "application/json");
        grpc_http_stream_write(req, body, len);
        grpc_http_stream_write(req, body, len);
        grpc_http_stream_end(req);
    } else if (!strcmp(path, "/hold")) {
        grpc_http_stream_start(req, 200, "application/json");
        grpc_http_stream_write(req, body, len);
        grpc_http_set_on_gone(req, held_gone, NULL);
    } else {
        grpc_http_respond(req, 200, "application/json", body, len);
    }
}

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN); /* as the server: writes to closed sockets fail with EPIPE */
    log_set_level(LOG_ERROR);
    if (uv_loop_init(&loop) ||
        grpc_server_new(&srv, &loop, methods, sizeof methods / sizeof methods[0], NULL,
                        64 * 1024)) {
        fprintf(stderr, "fuzz: setup failed\n");
        abort();
    }
    grpc_server_set_http_handler(srv, http_echo, NULL);
#if FUZZ_MODE == 3
    static const char *const hosts[] = {"127.0.0.1", "localhost"};
    tls = self_signed_tls(hosts, 2, false);
#endif
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!srv) setup();
    answered = 0;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv)) abort();
    if (grpc_server_adopt(srv, sv[0], tls)) abort();
#if FUZZ_MODE == 1
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    put(sv[1], (const uint8_t *)preface, sizeof preface - 1);
#endif
    put(sv[1], data, size);
    /* Let the server answer until it goes quiet. */
    for (int quiet = 0, i = 0; quiet < 3 && i < 1000; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        quiet = drain(sv[1]) ? 0 : quiet + 1;
    }
    close(sv[1]);
    for (int i = 0; grpc_server_conn_count(srv) > 0 && i < 10000; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    if (grpc_server_conn_count(srv) > 0) {
        fprintf(stderr, "fuzz: the server did not drop a closed connection\n");
        abort();
    }
    uv_run(&loop, UV_RUN_NOWAIT); /* close callbacks */
    if (getenv("FUZZ_VERBOSE")) fprintf(stderr, "fuzz: %zu bytes in, %zu answered\n", size, answered);
    return 0;
}
