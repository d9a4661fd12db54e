/* HTTP/1.1 on the client port, for the JSON gateway, /health, /version
 * and /metrics (what etcd serves next to gRPC through cmux).
 *
 * A small strict parser: request line, headers, and a body of exactly
 * Content-Length bytes (chunked request bodies are refused with 501, as
 * no etcd client sends them). Requests on one connection are served one
 * at a time, in order: while one is with the handler, later (pipelined)
 * bytes wait in `in`. Malformed requests get 400 (431 for huge headers,
 * 413 for bodies over the server's message limit) and the connection is
 * closed after the response. Free of I/O: bytes come in through
 * grpc_http1_recv and go out through grpc_http1_take. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/grpc_int.h"
#include "util/log.h"

#define MAX_HEAD (64 * 1024)

struct grpc_http1 {
    struct grpc_buf in;  /* bytes not parsed yet */
    struct grpc_buf out; /* response bytes not taken yet */
    grpc_http_req *cur;  /* the request with the handler, or NULL */
    bool close;          /* close once `out` is written; ignore input */
    bool in_process;
    bool sent_continue;  /* "100 Continue" sent for the request at the head of `in` */
};

struct grpc_http_req {
    struct grpc_conn *conn; /* NULL once the connection is gone */
    char *method, *path;
    char *hdrs; /* "name\0value\0"..., names lower case */
    size_t hdrs_len;
    uint8_t *body;
    size_t body_len;
    bool keep_alive;
    bool http10;
    bool streaming;   /* grpc_http_stream_start done */
    void (*on_gone)(grpc_http_req *req, void *data);
    void *gone_data;
};

static const char *reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 412: return "Precondition Failed";
    case 413: return "Request Entity Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 499: return "Client Closed Request";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
    }
}

static void append_response(struct grpc_conn *c, int status, const char *ctype, const void *body,
                            size_t len, bool close)
{
    struct grpc_http1 *h = c->h1;
    char head[512];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s\r\n",
                     status, reason(status), ctype, len, close ? "Connection: close\r\n" : "");
    if (grpc_buf_append(&h->out, head, (size_t)n) || grpc_buf_append(&h->out, body, len)) {
        h->out.len = 0;
        close = true; /* out of memory: just close */
    }
    if (close) h->close = true;
    grpc_conn_mark_dirty(c);
}

/* A request we refuse before any handler sees it; closes afterwards. */
static void refuse(struct grpc_conn *c, int status, const char *text)
{
    log_debug("http: %s: %d %s", c->peer, status, text);
    append_response(c, status, "text/plain; charset=utf-8", text, strlen(text), true);
    c->h1->in.len = 0;
}

static bool token_char(int ch)
{
    return ch > 32 && ch < 127 && !strchr("()<>@,;:\\\"/[]?={}", ch);
}

/* Parses one request from the head of `in` if it is complete and hands it
 * over. Returns true if one was dispatched or refused. */
static bool parse_one(struct grpc_conn *c)
{
    struct grpc_http1 *h = c->h1;
    const char *p = (const char *)h->in.p;
    size_t len = h->in.len;
    /* Refuse what cannot become a request line at once, rather than wait
     * for a blank line that garbage may never contain. */
    size_t m = 0;
    while (m < len && token_char((unsigned char)p[m])) m++;
    if (m < len && (m == 0 || p[m] != ' ')) {
        refuse(c, 400, "400 Bad Request");
        return true;
    }
    const char *end = len >= 4 ? memmem(p, len, "\r\n\r\n", 4) : NULL;
    if (!end) {
        if (len > MAX_HEAD) refuse(c, 431, "431 Request Header Fields Too Large");
        return len > MAX_HEAD;
    }
    size_t head_len = (size_t)(end - p) + 4;
    if (head_len > MAX_HEAD) {
        refuse(c, 431, "431 Request Header Fields Too Large");
        return true;
    }
    /* Request line: METHOD SP target SP HTTP/1.x */
    const char *eol = memmem(p, head_len, "\r\n", 2);
    const char *sp1 = memchr(p, ' ', (size_t)(eol - p));
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
    if (!sp1 || !sp2 || sp1 == p || sp2 == sp1 + 1 || eol - sp2 - 1 != 8 ||
        memcmp(sp2 + 1, "HTTP/1.", 7) != 0 || (sp2[8] != '0' && sp2[8] != '1') ||
        sp1[1] != '/') {
        refuse(c, 400, "400 Bad Request");
        return true;
    }
    for (const char *q = p; q < sp1; q++)
        if (!token_char((unsigned char)*q)) {
            refuse(c, 400, "400 Bad Request");
            return true;
        }
    for (const char *q = sp1 + 1; q < sp2; q++)
        if ((unsigned char)*q <= 32 || *q == 127) {
            refuse(c, 400, "400 Bad Request");
            return true;
        }
    bool http10 = sp2[8] == '0';
    bool keep_alive = !http10;
    long long clen = -1;
    bool expect_continue = false;

    grpc_http_req *req = calloc(1, sizeof *req);
    if (!req) goto nomem;
    req->method = strndup(p, (size_t)(sp1 - p));
    const char *target = sp1 + 1, *q = memchr(target, '?', (size_t)(sp2 - target));
    /* the path, then (after its NUL) the query without '?' (grpc_http_query) */
    size_t plen = (size_t)((q ? q : sp2) - target), qlen = q ? (size_t)(sp2 - q - 1) : 0;
    req->path = malloc(plen + qlen + 2);
    if (req->path) {
        memcpy(req->path, target, plen);
        req->path[plen] = 0;
        if (q) memcpy(req->path + plen + 1, q + 1, qlen);
        req->path[plen + 1 + qlen] = 0;
    }
    req->hdrs = malloc(head_len);
    if (!req->method || !req->path || !req->hdrs) goto nomem_req;

    /* Header lines. */
    const char *line = eol + 2;
    while (line < end + 2) {
        const char *le = memmem(line, (size_t)(end + 2 - line), "\r\n", 2);
        if (le == line) break;
        const char *colon = memchr(line, ':', (size_t)(le - line));
        if (!colon || colon == line || *line == ' ' || *line == '\t') goto bad;
        for (const char *k = line; k < colon; k++)
            if (!token_char((unsigned char)*k)) goto bad;
        const char *v = colon + 1, *ve = le;
        while (v < ve && (*v == ' ' || *v == '\t')) v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
        /* As Go's net/http: no control characters (NUL, bare CR...) in a
         * value, only HT. */
        for (const char *k = v; k < ve; k++)
            if (((unsigned char)*k < 32 && *k != '\t') || *k == 127) goto bad;
        char *dst = req->hdrs + req->hdrs_len;
        size_t nl = (size_t)(colon - line), vl = (size_t)(ve - v);
        for (size_t i = 0; i < nl; i++) dst[i] = (char)tolower((unsigned char)line[i]);
        dst[nl] = '\0';
        memcpy(dst + nl + 1, v, vl);
        dst[nl + 1 + vl] = '\0';
        req->hdrs_len += nl + vl + 2;
        if (!strcmp(dst, "content-length")) {
            if (vl == 0 || vl > 15) goto bad;
            long long x = 0;
            for (size_t i = 0; i < vl; i++) {
                if (v[i] < '0' || v[i] > '9') goto bad;
                x = x * 10 + (v[i] - '0');
            }
            if (clen >= 0 && clen != x) goto bad;
            clen = x;
        } else if (!strcmp(dst, "transfer-encoding")) {
            free(req->method), free(req->path), free(req->hdrs), free(req);
            refuse(c, 501, "501 Not Implemented: chunked request bodies");
            return true;
        } else if (!strcmp(dst, "connection")) {
            if (vl == 5 && !strncasecmp(v, "close", 5)) keep_alive = false;
            else if (vl == 10 && !strncasecmp(v, "keep-alive", 10)) keep_alive = true;
        } else if (!strcmp(dst, "expect")) {
            if (vl == 12 && !strncasecmp(v, "100-continue", 12)) expect_continue = true;
        }
        line = le + 2;
    }
    if (clen < 0) clen = 0;
    if ((unsigned long long)clen > c->s->max_recv) {
        free(req->method), free(req->path), free(req->hdrs), free(req);
        refuse(c, 413, "413 Request Entity Too Large");
        return true;
    }
    if (h->in.len < head_len + (size_t)clen) {
        /* Wait for the body; tell a client that asked that it may send it. */
        if (expect_continue && !h->sent_continue && !http10) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            if (grpc_buf_append(&h->out, cont, sizeof cont - 1)) goto nomem_req;
            h->sent_continue = true;
            grpc_conn_mark_dirty(c);
        }
        free(req->method), free(req->path), free(req->hdrs), free(req);
        return false;
    }
    req->body_len = (size_t)clen;
    req->body = malloc(req->body_len + 1); /* +1: callers may NUL-terminate */
    if (!req->body) goto nomem_req;
    memcpy(req->body, h->in.p + head_len, req->body_len);
    req->body[req->body_len] = 0;
    req->keep_alive = keep_alive;
    req->http10 = http10;
    req->conn = c;
    grpc_buf_consume(&h->in, head_len + req->body_len);
    h->sent_continue = false;
    h->cur = req;
    if (c->s->http_fn) c->s->http_fn(req, c->s->http_ctx);
    else grpc_http_respond(req, 404, "text/plain; charset=utf-8", "404 page not found\n", 19);
    return true;

bad:
    free(req->method), free(req->path), free(req->hdrs), free(req);
    refuse(c, 400, "400 Bad Request");
    return true;
nomem_req:
    free(req->method), free(req->path), free(req->hdrs), free(req->body), free(req);
nomem:
    log_error("http: out of memory");
    h->in.len = 0;
    h->close = true;
    grpc_conn_mark_dirty(c);
    return true;
}

static void process(struct grpc_conn *c)
{
    struct grpc_http1 *h = c->h1;
    if (h->in_process) return;
    h->in_process = true;
    while (!h->cur && !h->close && h->in.len > 0 && parse_one(c)) {
    }
    h->in_process = false;
    /* A request begun but not complete must complete in time (slowloris);
     * one with the handler, or none at all (keep-alive), has no deadline. */
    grpc_conn_deadline(c, !h->cur && !h->close && h->in.len > 0);
}

int grpc_http1_recv(struct grpc_conn *c, const uint8_t *p, size_t n)
{
    if (!c->h1) {
        c->h1 = calloc(1, sizeof *c->h1);
        if (!c->h1) return -1;
        grpc_buf_init(&c->h1->in, NULL, 0);
        grpc_buf_init(&c->h1->out, NULL, 0);
    }
    struct grpc_http1 *h = c->h1;
    if (h->close) return 0;
    /* Pipelined requests beyond what one request may be: refuse. */
    if (h->in.len + n > c->s->max_recv + 2 * MAX_HEAD) {
        if (h->cur) return -1;
        refuse(c, 413, "413 Request Entity Too Large");
        return 0;
    }
    if (grpc_buf_append(&h->in, p, n)) return -1;
    process(c);
    return 0;
}

int grpc_http1_take(struct grpc_conn *c, struct grpc_buf *b, size_t max)
{
    struct grpc_http1 *h = c->h1;
    if (!h || h->out.len == 0 || max == 0) return 0;
    size_t n = h->out.len < max ? h->out.len : max;
    if (grpc_buf_append(b, h->out.p, n)) return -1;
    grpc_buf_consume(&h->out, n);
    if (h->out.len == 0 && h->out.cap > 1024 * 1024) grpc_buf_free(&h->out);
    return 0;
}

bool grpc_http1_pending(const struct grpc_conn *c)
{
    return c->h1 && c->h1->out.len > 0;
}

bool grpc_http1_done(const struct grpc_conn *c)
{
    return c->h1 && c->h1->close && c->h1->out.len == 0;
}

void grpc_http1_free(struct grpc_conn *c)
{
    struct grpc_http1 *h = c->h1;
    if (!h) return;
    grpc_http_req *cur = h->cur;
    h->cur = NULL;
    grpc_buf_free(&h->in);
    grpc_buf_free(&h->out);
    free(h);
    c->h1 = NULL;
    if (cur) {
        cur->conn = NULL;
        if (cur->on_gone) cur->on_gone(cur, cur->gone_data); /* may free cur */
    }
}

/* ---- the request API ---- */

void grpc_server_set_http_handler(grpc_server *s, grpc_http_fn fn, void *ctx)
{
    s->http_fn = fn;
    s->http_ctx = ctx;
}

const char *grpc_http_method(const grpc_http_req *req) { return req->method; }
const char *grpc_http_path(const grpc_http_req *req) { return req->path; }

const char *grpc_http_query(const grpc_http_req *req)
{
    return req->path + strlen(req->path) + 1;
}

const uint8_t *grpc_http_body(const grpc_http_req *req, size_t *len)
{
    *len = req->body_len;
    return req->body;
}

const char *grpc_http_header(const grpc_http_req *req, const char *name)
{
    const char *p = req->hdrs, *end = p + req->hdrs_len;
    while (p < end) {
        const char *v = p + strlen(p) + 1;
        if (strcmp(p, name) == 0) return v;
        p = v + strlen(v) + 1;
    }
    return NULL;
}

void grpc_http_set_on_gone(grpc_http_req *req, void (*fn)(grpc_http_req *req, void *data),
                           void *data)
{
    req->on_gone = fn;
    req->gone_data = data;
}

static bool req_connected(const grpc_http_req *req)
{
    struct grpc_conn *c = req->conn;
    return c && c->h1 && c->h1->cur == req && !c->h1->close;
}

int grpc_http_stream_start(grpc_http_req *req, int http_status, const char *content_type)
{
    if (!req_connected(req) || req->streaming) return -1;
    struct grpc_http1 *h = req->conn->h1;
    char head[512];
    /* HTTP/1.0 has no chunked encoding: the body ends with the connection. */
    int n = snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n%s\r\n",
                     http_status, reason(http_status), content_type,
                     req->http10 ? "Connection: close\r\n" : "Transfer-Encoding: chunked\r\n");
    if (grpc_buf_append(&h->out, head, (size_t)n)) return -1;
    req->streaming = true;
    grpc_conn_mark_dirty(req->conn);
    return 0;
}

int grpc_http_stream_write(grpc_http_req *req, const void *data, size_t len)
{
    if (!req_connected(req) || !req->streaming) return -1;
    if (len == 0) return 0; /* an empty chunk would end the body */
    struct grpc_http1 *h = req->conn->h1;
    char size[24];
    int n = snprintf(size, sizeof size, "%zx\r\n", len);
    if ((!req->http10 && grpc_buf_append(&h->out, size, (size_t)n)) ||
        grpc_buf_append(&h->out, data, len) ||
        (!req->http10 && grpc_buf_append(&h->out, "\r\n", 2)))
        return -1;
    grpc_conn_mark_dirty(req->conn);
    return 0;
}

size_t grpc_http_pending(const grpc_http_req *req)
{
    return req_connected(req) ? req->conn->h1->out.len : 0;
}

void grpc_http_stream_end(grpc_http_req *req)
{
    struct grpc_conn *c = req->conn;
    if (req_connected(req) && req->streaming) {
        struct grpc_http1 *h = c->h1;
        bool close = req->http10 || !req->keep_alive;
        if (!req->http10 && grpc_buf_append(&h->out, "0\r\n\r\n", 5)) close = true;
        if (close) h->close = true;
        h->cur = NULL;
        grpc_conn_mark_dirty(c);
        process(c);
    } else if (c && c->h1 && c->h1->cur == req) {
        c->h1->cur = NULL; /* never started: nothing to end; close */
        c->h1->close = true;
        grpc_conn_mark_dirty(c);
    }
    free(req->method);
    free(req->path);
    free(req->hdrs);
    free(req->body);
    free(req);
}

void grpc_http_respond(grpc_http_req *req, int http_status, const char *content_type,
                       const void *body, size_t len)
{
    struct grpc_conn *c = req->conn;
    if (c && c->h1 && c->h1->cur == req) {
        /* An unknown path ends the connection (nothing useful will follow
         * on it: a scanner, or a client on the wrong port). */
        append_response(c, http_status, content_type, body, len,
                        !req->keep_alive || http_status == 404);
        c->h1->cur = NULL;
        process(c);
    }
    free(req->method);
    free(req->path);
    free(req->hdrs);
    free(req->body);
    free(req);
}
