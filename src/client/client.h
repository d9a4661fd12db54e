/* An asynchronous gRPC client over cleartext HTTP/2 (h2c, prior knowledge)
 * on libuv and nghttp2: unary calls and bidirectional streams, many
 * concurrent streams per connection. Used by ketch-bench and ketchctl; it
 * knows nothing about etcd beyond what protobuf-c messages it is handed.
 *
 * Threading: everything runs on the loop the connection was opened on; no
 * function here may be called from another thread.
 *
 * Batching: calls and stream messages are queued in the nghttp2 session and
 * written once per loop iteration (from a uv_prepare handle), so a burst of
 * calls made in the same callback leaves in one write(2).
 *
 * Callbacks: a function that takes a callback and returns non-zero never
 * fires that callback (libuv's rule). A call that was accepted fires its
 * callback exactly once: with the server's grpc-status, or with a local
 * status (UNAVAILABLE when the connection fails, CANCELLED when it is
 * closed by client_conn_close). */
#ifndef KETCH_CLIENT_CLIENT_H
#define KETCH_CLIENT_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>
#include <uv.h>

/* Our own error codes (returned by functions, never in a reply). */
enum client_err {
    CLIENT_OK = 0,
    CLIENT_ENOMEM = -2001,   /* out of memory */
    CLIENT_ECLOSED = -2002,  /* the connection failed or is closing */
    CLIENT_EINVAL = -2003,   /* bad argument (endpoint syntax, ...) */
    CLIENT_ESESSION = -2004, /* nghttp2 refused the request */
};

/* gRPC status codes used locally (the same numbers as util/errors.h). */
#define CLIENT_STATUS_OK 0
#define CLIENT_STATUS_CANCELLED 1
#define CLIENT_STATUS_UNKNOWN 2
#define CLIENT_STATUS_INTERNAL 13
#define CLIENT_STATUS_UNAVAILABLE 14

struct client_conn;
struct client_stream;

/* What a call ended with. All pointers are borrowed: valid only during the
 * callback that receives the reply. */
struct client_reply {
    int status;          /* grpc-status (0 = OK) */
    const char *message; /* grpc-message, percent-decoded; "" if none */
    const uint8_t *data; /* the (first) response message, without the
                          * 5-byte gRPC prefix; NULL if none came */
    size_t len;
};

/* Fires once per unary call, or once when a stream ends. */
typedef void (*client_reply_cb)(void *arg, const struct client_reply *reply);
/* Fires for each message received on a stream; data is borrowed for the
 * duration of the callback. */
typedef void (*client_msg_cb)(void *arg, const uint8_t *data, size_t len);
/* Connection events: err is 0 once the TCP connection is established, or a
 * negative libuv error (UV_ECONNREFUSED, UV_EOF, ...) when it could not be
 * made or was lost. Fires at most once with 0 and at most once with an
 * error. After an error every pending call has failed with UNAVAILABLE and
 * new calls are refused with CLIENT_ECLOSED; the caller still owns the
 * connection and must client_conn_close() it. */
typedef void (*client_conn_cb)(struct client_conn *conn, int err, void *arg);

/* Parses "host:port", "http://host:port", "https://host:port" or "[v6]:port" into a socket
 * address (numeric hosts, or names resolved with getaddrinfo, blocking).
 * Returns 0 or CLIENT_EINVAL. */
int client_parse_endpoint(const char *endpoint, struct sockaddr_storage *out);

/* Opens a connection to endpoint (see client_parse_endpoint) on loop.
 * Calls may be started at once; they are sent when the connection is up.
 * on_event (may be NULL) is described at client_conn_cb; arg is passed to it.
 * On success *out is owned by the caller until client_conn_close().
 * Returns 0, CLIENT_EINVAL (endpoint), CLIENT_ENOMEM, or a negative libuv
 * error from uv_tcp_connect. */
int client_conn_open(uv_loop_t *loop, const char *endpoint, client_conn_cb on_event,
                     void *arg, struct client_conn **out);

/* Options of client_conn_open_opts. */
struct tls_ctx;
struct client_opts {
    /* TLS client context (net/tls.h, tls_ctx_new_client), borrowed: it must
     * outlive the connection. NULL: cleartext h2c. An "http://" endpoint is
     * always cleartext, an "https://" one needs a context (as clientv3). */
    struct tls_ctx *tls;
};

/* As client_conn_open with options (NULL: as client_conn_open). With TLS,
 * on_event fires with 0 once the handshake is done (ALPN h2), or with
 * CLIENT_ESESSION when it failed (reason: client_conn_error). */
int client_conn_open_opts(uv_loop_t *loop, const char *endpoint, const struct client_opts *opts,
                          client_conn_cb on_event, void *arg, struct client_conn **out);

/* Why the connection failed ("" while it has not). Owned by conn. */
const char *client_conn_error(const struct client_conn *conn);

/* Sends header name: value (gRPC metadata, lower-case name, e.g. etcd's
 * "token") with every call started after this; a NULL or empty value removes
 * it. Both strings are copied. Returns 0, CLIENT_EINVAL (more than 4 names)
 * or CLIENT_ENOMEM. */
int client_conn_set_header(struct client_conn *conn, const char *name, const char *value);
/* As client_conn_open, over an already connected stream socket `fd` (one
 * end of a socketpair, e.g. from peer_net_dial), which the connection owns
 * from then on (closed with it, also when this fails). `name` (host:port)
 * is used for messages and the :authority header. on_event never fires
 * with 0 (the caller knows when its stream is up); it fires with an error
 * when the stream ends or fails. */
int client_conn_adopt(uv_loop_t *loop, uv_os_sock_t fd, const char *name,
                      client_conn_cb on_event, void *arg, struct client_conn **out);

/* Closes the connection: pending calls and streams fire their callbacks with
 * CANCELLED (from inside this function), then the memory is released once
 * libuv has closed the handles (the loop must run). May be called from any
 * callback of this connection. */
void client_conn_close(struct client_conn *conn);

/* The address this connection was opened to, for messages. */
const char *client_conn_endpoint(const struct client_conn *conn);

/* Number of calls and streams not yet completed. */
size_t client_conn_pending(const struct client_conn *conn);

/* Starts a unary call of method path ("/etcdserverpb.KV/Put") with request
 * req, which is serialised before this returns (the caller keeps ownership
 * of req). cb fires once with the reply.
 * Returns 0, CLIENT_ECLOSED, CLIENT_ENOMEM or CLIENT_ESESSION. */
int client_unary(struct client_conn *conn, const char *path, const ProtobufCMessage *req,
                 client_reply_cb cb, void *arg);

/* As client_unary, with a request already serialised (len bytes, copied). */
int client_unary_raw(struct client_conn *conn, const char *path, const uint8_t *msg,
                     size_t len, client_reply_cb cb, void *arg);

/* Opens a bidirectional stream. on_msg fires for each response message;
 * on_close fires once when the stream ends (trailers, reset, connection
 * loss, cancel), with data/len NULL/0; after it the stream is freed and
 * must not be used. *out is valid until then.
 * Returns 0, CLIENT_ECLOSED, CLIENT_ENOMEM or CLIENT_ESESSION. */
int client_stream_open(struct client_conn *conn, const char *path, client_msg_cb on_msg,
                       client_reply_cb on_close, void *arg, struct client_stream **out);

/* Queues one message on the stream (serialised now; caller keeps msg).
 * Returns 0, CLIENT_ECLOSED (stream half-closed or ended) or CLIENT_ENOMEM. */
int client_stream_send(struct client_stream *s, const ProtobufCMessage *msg);

/* Half-closes the sending side (END_STREAM after the queued messages). */
int client_stream_close_send(struct client_stream *s);

/* Resets the stream (RST_STREAM CANCEL); on_close fires later with
 * CANCELLED unless the stream ended first. */
void client_stream_cancel(struct client_stream *s);

/* A latency histogram with log-linear buckets (relative error < 1/64):
 * values in nanoseconds, from 0 to about 2^42 ns (73 minutes), larger
 * values are clamped. Plain data: zero-initialise or client_hist_reset. */
#define CLIENT_HIST_SUB_BITS 6
#define CLIENT_HIST_SUB (1u << CLIENT_HIST_SUB_BITS)
#define CLIENT_HIST_MAX_EXP 42
#define CLIENT_HIST_BUCKETS ((CLIENT_HIST_MAX_EXP - CLIENT_HIST_SUB_BITS + 2) * CLIENT_HIST_SUB)
struct client_hist {
    uint64_t count;
    uint64_t min, max; /* exact */
    double sum, sumsq; /* of values, for mean and stddev */
    uint64_t buckets[CLIENT_HIST_BUCKETS];
};

void client_hist_reset(struct client_hist *h);
void client_hist_record(struct client_hist *h, uint64_t ns);
/* Adds all values of src to dst. */
void client_hist_merge(struct client_hist *dst, const struct client_hist *src);
/* The value below which fraction q (0..1) of the recorded values lie: the
 * upper bound of the bucket holding it, clamped to [min, max]; 0 if empty. */
uint64_t client_hist_quantile(const struct client_hist *h, double q);
double client_hist_mean(const struct client_hist *h);
double client_hist_stddev(const struct client_hist *h);
/* Bucket index of a value and the largest value of a bucket (for tests). */
unsigned client_hist_index(uint64_t ns);
uint64_t client_hist_bucket_max(unsigned index);
/* Splits [min, max] into nbins equal bins and counts the values in each
 * (approximately: by bucket). bounds[i] is the upper edge of bin i.
 * Returns the number of bins filled (nbins, or 1 if min == max, 0 if empty). */
unsigned client_hist_bins(const struct client_hist *h, unsigned nbins, double *bounds,
                          uint64_t *counts);

#endif
