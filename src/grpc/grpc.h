/* gRPC server over HTTP/2 (nghttp2) on libuv: cleartext h2c listeners,
 * 5-byte message framing, trailers with grpc-status/grpc-message,
 * grpc-timeout deadlines, unary and bidirectional-streaming methods.
 *
 * The layer above (api/) registers a method table; this layer knows nothing
 * of etcd. Everything runs on the one libuv loop given to grpc_server_new.
 *
 * Lifetimes: a grpc_call is reference-counted. The server holds one
 * reference while the HTTP/2 stream is open; a handler that answers later
 * (after a Raft commit, say) takes its own with grpc_call_ref() and drops it
 * with grpc_call_unref() once it has finished the call. When the stream dies
 * first (client reset, deadline, connection closed) the call stays valid
 * but grpc_call_alive() turns false and sends/finishes become no-ops. */
#ifndef KETCH_GRPC_GRPC_H
#define KETCH_GRPC_GRPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include <protobuf-c/protobuf-c.h>

typedef struct grpc_server grpc_server;
typedef struct grpc_call grpc_call;

enum grpc_method_kind {
    GRPC_UNARY,  /* one request message, one response (or an error) */
    GRPC_STREAM, /* bidirectional: many messages each way (Watch, KeepAlive) */
};

/* Called once per request message. `msg` (len bytes, the gRPC message
 * without its 5-byte prefix) is borrowed for the duration of the call.
 * For GRPC_UNARY the handler must eventually call grpc_call_finish (or
 * grpc_call_reply): synchronously, or later while holding a reference. */
typedef void (*grpc_message_fn)(grpc_call *call, const uint8_t *msg, size_t len,
                                void *server_ctx);

/* GRPC_STREAM only: the stream ended (half-close by the client, reset,
 * deadline, or connection loss). Called exactly once for every GRPC_STREAM
 * call that reached its handler (its method was found), also when the
 * layer finished the call itself first: it is the one place to release
 * per-call state. After a half-close the call is still alive and the layer
 * is expected to finish it; in every other case it is no longer alive. */
typedef void (*grpc_close_fn)(grpc_call *call, void *server_ctx);

typedef struct grpc_method {
    const char *path; /* e.g. "/etcdserverpb.KV/Range" */
    enum grpc_method_kind kind;
    grpc_message_fn on_message;
    grpc_close_fn on_close; /* may be NULL */
} grpc_method;

/* Creates a server that dispatches by path through `methods` (n entries,
 * borrowed: must outlive the server). Unknown paths are answered with
 * UNIMPLEMENTED ("unknown service X" / "unknown method Y for service X" as
 * grpc-go says it). A request message larger than max_recv_bytes is
 * answered with RESOURCE_EXHAUSTED "grpc: received message larger than max
 * (N vs. M)". Returns 0 or a negative KERR_* code. */
int grpc_server_new(grpc_server **out, uv_loop_t *loop, const grpc_method *methods,
                    size_t n, void *server_ctx, size_t max_recv_bytes);

/* Listens on host:port (IPv4 or IPv6 literal, or "localhost"). Returns 0,
 * or a negative libuv error code (e.g. UV_EADDRINUSE) with nothing bound. */
int grpc_server_listen(grpc_server *s, const char *host, int port);

struct tls_ctx;

/* As grpc_server_listen, serving TLS with `tls` (borrowed: must outlive
 * the server; see net/tls.h) when it is not NULL. */
int grpc_server_listen_tls(grpc_server *s, const char *host, int port, struct tls_ctx *tls);

/* ---- HTTP/1.1 on the same port ----
 * A connection whose first bytes are not the HTTP/2 preface is served as
 * HTTP/1.1 (cleartext or inside TLS): each complete request (request line,
 * headers, a Content-Length body; "Expect: 100-continue" honoured) goes
 * to the handler set here, one at a time per connection. */
typedef struct grpc_http_req grpc_http_req;

/* The handler owns `req` until it calls grpc_http_respond (exactly once,
 * now or later). Without a handler every request gets 404. */
typedef void (*grpc_http_fn)(grpc_http_req *req, void *ctx);
void grpc_server_set_http_handler(grpc_server *s, grpc_http_fn fn, void *ctx);

/* The request's method ("GET"), path (without the query), and body.
 * Borrowed until grpc_http_respond. */
const char *grpc_http_method(const grpc_http_req *req);
const char *grpc_http_path(const grpc_http_req *req);
const uint8_t *grpc_http_body(const grpc_http_req *req, size_t *len);
/* A request header by lower-case name, or NULL. */
const char *grpc_http_header(const grpc_http_req *req, const char *name);

/* Sends the response (copies body) and frees req. If the connection is
 * gone by then, only frees req. */
void grpc_http_respond(grpc_http_req *req, int http_status, const char *content_type,
                       const void *body, size_t len);

/* ---- in-process calls (the JSON gateway) ----
 * Runs the unary method at `path` on the request message msg (packed
 * protobuf, borrowed for the duration of the call) as if a client had
 * sent it, through the same handler. `done` runs exactly once, maybe
 * before grpc_server_call_local returns: with the gRPC status, the
 * grpc-message (or NULL) and the response message (packed, without the
 * 5-byte prefix; NULL/0 when there is none), all borrowed for the
 * duration of `done`. An unknown or streaming path gets UNIMPLEMENTED. */
typedef void (*grpc_local_done_fn)(int status, const char *message, const uint8_t *resp,
                                   size_t len, void *data);
void grpc_server_call_local(grpc_server *s, const char *path, const uint8_t *msg, size_t len,
                            grpc_local_done_fn done, void *data);
/* As grpc_server_call_local, with request header "authorization" set to
 * `authorization` (borrowed; NULL: none), as etcd's grpc-gateway passes
 * the HTTP Authorization header on as metadata (the auth token). */
void grpc_server_call_local_auth(grpc_server *s, const char *path, const uint8_t *msg,
                                 size_t len, const char *authorization,
                                 grpc_local_done_fn done, void *data);

/* Writes grpc-prometheus' grpc_server_started_total and
 * grpc_server_handled_total (with HELP and TYPE lines) for every method. */
void grpc_server_write_metrics(grpc_server *s, FILE *out);

/* Stops listening, closes every connection (open calls become not alive,
 * GRPC_STREAM calls get on_close), and frees the server once libuv has
 * closed all handles; `cb` (may be NULL) runs then. Calls still referenced
 * by the layer stay valid (not alive) until their last grpc_call_unref. */
void grpc_server_close(grpc_server *s, void (*cb)(void *data), void *data);

/* ---- calls ---- */

void grpc_call_ref(grpc_call *call);
void grpc_call_unref(grpc_call *call);

/* False once the stream is gone or the call was finished. */
bool grpc_call_alive(const grpc_call *call);

/* The value of request header `name` (lower case, e.g. "token"), or NULL.
 * Borrowed until the call is freed. */
const char *grpc_call_header(const grpc_call *call, const char *name);

/* The absolute deadline (uv_now() milliseconds) from grpc-timeout, or 0 if
 * none. When it passes the layer finishes the call with DEADLINE_EXCEEDED
 * itself. */
uint64_t grpc_call_deadline(const grpc_call *call);

/* The CN of the client's verified TLS certificate, or NULL (cleartext,
 * no certificate, in-process call, or connection gone). Borrowed. */
const char *grpc_call_peer_cn(const grpc_call *call);

/* Queues one response message (copies `len` bytes). For unary calls send at
 * most one before finishing. Returns 0, or a negative KERR_* code if the
 * call is not alive. */
int grpc_call_send(grpc_call *call, const uint8_t *msg, size_t len);

/* Bytes queued by grpc_call_send that HTTP/2 has not taken yet (the client
 * is slow or its flow-control window is closed): lets a streaming handler
 * (watch) apply back-pressure. */
size_t grpc_call_pending_bytes(const grpc_call *call);

/* Packs `msg` with protobuf-c and sends it (as grpc_call_send). */
int grpc_call_send_pb(grpc_call *call, const ProtobufCMessage *msg);

/* Ends the call with trailers grpc-status: status and, if message is not
 * NULL, grpc-message: message (percent-encoded as gRPC requires). No-op if
 * the call is not alive. */
void grpc_call_finish(grpc_call *call, int status, const char *message);

/* Sends `msg` and finishes with OK: the usual end of a unary handler. */
void grpc_call_reply(grpc_call *call, const ProtobufCMessage *msg);

/* Finishes with a KERR_* code: its gRPC status and etcd's text. */
void grpc_call_fail(grpc_call *call, int kerr);

/* Per-call user pointer for the layer above (e.g. a watch stream). */
void grpc_call_set_data(grpc_call *call, void *data);
void *grpc_call_get_data(const grpc_call *call);

#endif
