/* Internals of the gRPC layer, shared by its files:
 *
 *   server.c   listeners, accepted connections, reading and the coalesced
 *              writing of nghttp2's output (libuv)
 *   session.c  nghttp2 callbacks: request headers, gRPC message framing,
 *              dispatch, the response data provider and trailers
 *   call.c     the grpc_call API (refcounts, send, finish), grpc-timeout
 *              deadlines, grpc-message percent-encoding
 *   methods.c  the method table: path → method, grpc-go's UNIMPLEMENTED texts
 *   http1.c    HTTP/1.1 on the same port (sniffed), for the JSON gateway,
 *              /health, /version, /metrics; local (in-process) calls
 *
 * Ownership: the server owns listeners and connections; a connection owns
 * its nghttp2 session and holds one reference on each of its open calls
 * (dropped when nghttp2 closes the stream or the connection goes away). A
 * call never points at a connection that is gone (call->conn is cleared). */
#ifndef KETCH_GRPC_GRPC_INT_H
#define KETCH_GRPC_GRPC_INT_H

#include <nghttp2/nghttp2.h>

#include "grpc/grpc.h"
#include "net/tls.h"

/* Byte buffer with an optional inline first block (no malloc for small
 * messages). `inl`/`inl_cap` describe the inline block; p == inl until the
 * buffer outgrows it. */
struct grpc_buf {
    uint8_t *p;
    size_t len, cap;
    uint8_t *inl;
    size_t inl_cap;
};

void grpc_buf_init(struct grpc_buf *b, uint8_t *inl, size_t inl_cap);
/* Returns 0 or -1 (out of memory; the buffer is unchanged). */
int grpc_buf_reserve(struct grpc_buf *b, size_t extra);
int grpc_buf_append(struct grpc_buf *b, const void *data, size_t len);
void grpc_buf_free(struct grpc_buf *b);
/* Drops the first n bytes. */
void grpc_buf_consume(struct grpc_buf *b, size_t n);

struct grpc_conn;

/* The method table, hashed by path. */
struct grpc_method_table {
    const grpc_method *methods;
    size_t n;
    uint32_t *slots; /* index+1, 0 = empty; nslots is a power of two */
    size_t nslots;
};

int grpc_methods_init(struct grpc_method_table *t, const grpc_method *methods, size_t n);
void grpc_methods_free(struct grpc_method_table *t);
const grpc_method *grpc_methods_find(const struct grpc_method_table *t, const char *path, size_t len);
/* grpc-go's UNIMPLEMENTED text for an unknown path, into buf. */
void grpc_methods_unknown_text(const struct grpc_method_table *t, const char *path, char *buf,
                          size_t size);

struct grpc_server {
    uv_loop_t *loop;
    nghttp2_session_callbacks *cbs;
    nghttp2_option *opt;
    struct grpc_method_table table;
    void *ctx;
    size_t max_recv;
    struct grpc_listener *listeners;
    struct grpc_conn *conns;       /* doubly linked */
    struct grpc_conn *dirty;       /* conns with output to flush (singly linked) */
    uv_idle_t flusher;             /* active while some conn is dirty */
    uv_timer_t sweeper;            /* closes conns past their deadline */
    uint64_t handshake_ms;         /* 0: no deadline (see grpc_server_set_handshake_timeout) */
    int open_handles;              /* handles whose close callback is pending */
    bool closing;
    void (*close_cb)(void *data);
    void *close_data;
    uint8_t rbuf[256 * 1024];      /* read buffer shared by all conns */
    bool rbuf_busy;
    uint8_t pbuf[64 * 1024];       /* decrypted bytes (TLS), shared likewise */
    grpc_http_fn http_fn;          /* HTTP/1.1 requests; NULL: 404 */
    void *http_ctx;
    /* grpc-prometheus counters, per method (index in table.methods). */
    uint64_t *started;
    uint64_t (*handled)[17];
    /* In-process calls still referenced (linked through prev/next): they
     * lose their server pointer when it is freed before them. */
    struct grpc_call *locals;
};

struct grpc_listener {
    uv_tcp_t tcp;
    grpc_server *s;
    tls_ctx *tls;        /* borrowed; NULL: cleartext */
    struct grpc_listener *next;
};

/* What a connection speaks, decided by its first (plaintext) bytes. */
enum grpc_conn_proto { CONN_SNIFF, CONN_H2, CONN_HTTP1 };

struct grpc_conn {
    uv_tcp_t tcp;
    grpc_server *s;
    nghttp2_session *h2;  /* CONN_H2 only */
    enum grpc_conn_proto proto;
    tls_conn *tls;        /* NULL: cleartext */
    struct grpc_buf tplain; /* TLS: plaintext waiting to be encrypted */
    uint8_t sniff[24];    /* CONN_SNIFF: what matched the HTTP/2 preface so far */
    size_t sniff_len;
    struct grpc_http1 *h1; /* CONN_HTTP1 only */
    char peer[64];        /* "ip:port" of the client, for logs */
    uint64_t deadline;    /* uv_now() by which the client must have completed
                           * its handshake or request head; 0: none */
    struct grpc_conn *prev, *next;
    struct grpc_conn *dirty_next;
    bool in_dirty;
    bool closing;        /* conn_close called: handle closing */
    bool in_recv;        /* inside nghttp2_session_mem_recv */
    bool close_pending;  /* conn_close asked for while in_recv */
    bool close_after_write; /* fatal protocol error: close once output is out */
    bool reading;
    bool writing;        /* a uv_write is in flight on `out` */
    bool read_paused;    /* stopped because output is backed up */
    uv_write_t wreq;
    struct grpc_buf out;     /* pending or in-flight output */
    size_t out_off;      /* bytes of `out` already handed to the kernel */
    struct grpc_call *calls; /* open calls, doubly linked */
};

enum call_kind_state { CALL_HEADERS, CALL_OPEN, CALL_REJECTED };

/* A call made in-process (grpc_server_call_local), not on a stream. */
struct grpc_local {
    grpc_local_done_fn done;
    void *data;
    grpc_local_msg_fn on_msg; /* streams: each response message, at once */
    size_t (*pending)(void *data); /* streams: bytes the consumer has not sent on */
};

struct grpc_call {
    int refs;
    int32_t stream_id;
    struct grpc_conn *conn; /* NULL once the stream or connection is gone */
    struct grpc_call *prev, *next; /* in conn->calls */
    const grpc_method *method;
    void *data;
    void *ctx;              /* the server's server_ctx */
    grpc_close_fn on_half_close; /* see grpc_call_set_half_close; NULL: none */
    uint64_t deadline;
    uv_timer_t *timer;      /* deadline timer, separately allocated */
    grpc_server *server;
    struct grpc_local *local; /* non-NULL for in-process calls */
    bool counted;           /* handled_total already counted */

    /* request */
    bool is_post, bad_ctype, bad_timeout;
    bool remote_closed;     /* END_STREAM received */
    bool rx_failed;         /* request side rejected: ignore further data */
    bool close_called;      /* on_close delivered */
    bool finished;          /* grpc_call_finish done (or layer-side end) */
    bool headers_sent;      /* response HEADERS submitted */
    bool deferred;          /* the data provider returned DEFERRED */
    bool trailers_sent;
    int status;
    char *message;          /* grpc-message, percent-encoded, or NULL */
    char *encoding;         /* grpc-encoding of the request, or NULL */
    struct grpc_buf hdrs;       /* "name\0value\0" pairs; the first is :path */
    size_t path_len;
    struct grpc_buf req;        /* request bytes not yet dispatched */
    struct grpc_buf resp;       /* response bytes queued for the data provider */
    size_t resp_off;
    uint8_t hdrs_inl[256];
    uint8_t req_inl[512];
    uint8_t resp_inl[512];
};

/* server.c */
void grpc_conn_mark_dirty(struct grpc_conn *c);
/* Arms the connection's handshake deadline (if the server has one and it
 * is not armed yet) or clears it. */
void grpc_conn_deadline(struct grpc_conn *c, bool armed);

/* Counts a finished call in grpc_server_handled_total (once per call). */
void grpc_count_handled(struct grpc_call *call, int status);

/* http1.c: input once a connection is known to be HTTP/1.1; -1 means
 * close it now. grpc_http1_take moves pending response bytes into b. */
int grpc_http1_recv(struct grpc_conn *c, const uint8_t *p, size_t n);
int grpc_http1_take(struct grpc_conn *c, struct grpc_buf *b, size_t max);
/* The connection is going away: requests in progress lose it. */
void grpc_http1_free(struct grpc_conn *c);
/* Response bytes not taken yet. */
bool grpc_http1_pending(const struct grpc_conn *c);
/* True once a response said "Connection: close" and all of it was taken:
 * close once written. */
bool grpc_http1_done(const struct grpc_conn *c);

/* session.c */
int grpc_session_callbacks_new(grpc_server *s);
void grpc_session_callbacks_free(grpc_server *s);
int grpc_session_new(struct grpc_conn *c);

/* call.c */
struct grpc_call *grpc_call_new(struct grpc_conn *c, int32_t stream_id);
/* The stream is gone (closed by nghttp2, or the connection died): the call
 * is no longer alive, on_close fires for streams, the conn's reference is
 * dropped. */
void grpc_call_detach(struct grpc_call *call);
/* Starts the deadline timer from a grpc-timeout value; -1 if malformed. */
int grpc_call_set_timeout(struct grpc_call *call, const uint8_t *v, size_t len);
/* Finishes with a given HTTP :status (trailers-only), for requests that are
 * not gRPC at all. */
void grpc_call_finish_http(struct grpc_call *call, const char *http_status, int status,
                      const char *message);
/* Data provider read callback for responses. */
ssize_t grpc_call_data_read(nghttp2_session *h2, int32_t stream_id, uint8_t *buf, size_t len,
                       uint32_t *flags, nghttp2_data_source *src, void *user);
/* Delivers on_close once (GRPC_STREAM only). */
void grpc_call_deliver_close(struct grpc_call *call);
/* Parses a grpc-timeout value into milliseconds (rounded up); -1 if bad. */
int64_t grpc_timeout_parse_ms(const char *v, size_t len);
/* Percent-encodes a grpc-message (gRPC spec); returns malloc'd string. */
char *grpc_message_encode(const char *msg);

#endif
