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

/* Serves an already connected stream socket `fd` (a TCP socket, or one
 * end of a socketpair: used by the fuzz targets and tests) as if it had
 * been accepted on a listener, with TLS when `tls` is not NULL. On success
 * the server owns fd (closes it with the connection); on failure (a
 * negative libuv code) fd is left open for the caller. */
int grpc_server_adopt(grpc_server *s, uv_os_sock_t fd, struct tls_ctx *tls);

/* As grpc_server_adopt, with `data` (n bytes, borrowed for the call) taken
 * as the first bytes received, before anything read from fd: what the
 * caller read to tell the protocol (the peer port's HTTP/2 preface).
 * Cleartext only: with `tls` and n > 0, UV_EINVAL. */
int grpc_server_adopt_data(grpc_server *s, uv_os_sock_t fd, struct tls_ctx *tls,
                           const uint8_t *data, size_t n);

/* Closes connections that have not completed their handshake within ms
 * milliseconds of being accepted: for HTTP/2 the client preface and first
 * SETTINGS frame (over TLS, the TLS handshake too), as grpc-go's
 * ConnectionTimeout (120 s by default); for HTTP/1.1 a request head and
 * body, from its first byte (slowloris clients). Connections that are
 * merely idle between requests are kept, as Go's servers keep them.
 * 0 (the default) disables it. */
void grpc_server_set_handshake_timeout(grpc_server *s, uint64_t ms);

/* Connections currently open (accepted or adopted, not yet closing). */
size_t grpc_server_conn_count(const grpc_server *s);

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
/* The query string, without the '?' ("" if none), raw (not decoded). */
const char *grpc_http_query(const grpc_http_req *req);
const uint8_t *grpc_http_body(const grpc_http_req *req, size_t *len);
/* A request header by lower-case name, or NULL. */
const char *grpc_http_header(const grpc_http_req *req, const char *name);

/* Sends the response (copies body) and frees req. If the connection is
 * gone by then, only frees req. */
void grpc_http_respond(grpc_http_req *req, int http_status, const char *content_type,
                       const void *body, size_t len);

/* Streamed responses (grpc-gateway's server streams, e.g. POST /v3/watch):
 * grpc_http_stream_start sends the head with "Transfer-Encoding: chunked"
 * (HTTP/1.0 clients: no length, the connection closes at the end); each
 * grpc_http_stream_write sends one chunk (copied); grpc_http_stream_end
 * sends the last chunk and frees req (instead of grpc_http_respond).
 * start/write return 0, or -1 once the connection is gone or closing. */
int grpc_http_stream_start(grpc_http_req *req, int http_status, const char *content_type);
int grpc_http_stream_write(grpc_http_req *req, const void *data, size_t len);
void grpc_http_stream_end(grpc_http_req *req);
/* Response bytes waiting to be sent on req's connection (0 when gone): a
 * streaming handler can stop producing while the client does not read. */
size_t grpc_http_pending(const grpc_http_req *req);
/* `fn` runs once if the connection goes away while the handler still owns
 * req; req stays valid (and must still be ended or responded to, which
 * then only frees it). fn may end it right away. */
void grpc_http_set_on_gone(grpc_http_req *req, void (*fn)(grpc_http_req *req, void *data),
                           void *data);

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

/* In-process GRPC_STREAM calls (the gateway's POST /v3/watch). Opens a
 * stream at `path`: every message the handler sends goes to on_msg at once
 * (packed, without the 5-byte prefix, borrowed for the duration of
 * on_msg); `done` runs once when the handler finishes the call (status,
 * message or NULL; resp NULL) or the server stops (UNAVAILABLE). Returns
 * the call, with a reference that the caller owns, or NULL after `done`
 * ran (unknown or unary path: UNIMPLEMENTED; out of memory).
 * `authorization` as for grpc_server_call_local_auth (NULL: none). */
typedef void (*grpc_local_msg_fn)(const uint8_t *msg, size_t len, void *data);
grpc_call *grpc_server_open_local_stream(grpc_server *s, const char *path,
                                         const char *authorization, grpc_local_msg_fn on_msg,
                                         grpc_local_done_fn done, void *data);
/* Delivers one request message (borrowed for the call) to the handler, as
 * if the client had sent it. No-op once the call is not alive. */
void grpc_local_stream_send(grpc_call *call, const uint8_t *msg, size_t len);
/* The client's half-close (END_STREAM), as on the network. */
void grpc_local_stream_half_close(grpc_call *call);
/* What grpc_call_pending_bytes reports for a local stream: fn(data) (the
 * `data` given at open), e.g. the bytes its HTTP client has not read yet,
 * so a handler that streams much (Snapshot) waits for a slow client. */
void grpc_local_stream_set_pending(grpc_call *call, size_t (*fn)(void *data));
/* The client went away: the call stops being alive (counted CANCELLED),
 * on_close reaches the handler, `done` never runs after this, and the
 * caller's reference is dropped. */
void grpc_local_stream_cancel(grpc_call *call);

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

/* GRPC_STREAM only: what to do when the client half-closes (END_STREAM)
 * while the call is alive. Without a hook (the default) the half-close is
 * delivered as on_close and the layer is expected to finish the call
 * (grpc-go handlers that return on io.EOF, e.g. LeaseKeepAlive). With one,
 * `fn` runs instead and the stream stays open for responses (etcd's Watch
 * keeps sending events after CloseSend); on_close then comes when the
 * stream really ends (reset, deadline, connection loss, or after the layer
 * finished the call). */
void grpc_call_set_half_close(grpc_call *call, grpc_close_fn fn);

/* Per-call user pointer for the layer above (e.g. a watch stream). */
void grpc_call_set_data(grpc_call *call, void *data);
void *grpc_call_get_data(const grpc_call *call);

#endif
