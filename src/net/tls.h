/* TLS for the client port with OpenSSL 3, free of I/O: the connection
 * layer feeds the bytes it read from the socket in (tls_conn_feed), takes
 * plaintext out (tls_conn_read), puts plaintext in (tls_conn_write) and
 * takes the bytes to send out (tls_conn_take). Both directions go through
 * OpenSSL memory BIOs, so nothing here ever blocks or touches a socket.
 *
 *   socket → tls_conn_feed → [rbio] → SSL_read  → tls_conn_read → HTTP/2 or HTTP/1.1
 *   HTTP   → tls_conn_write → SSL_write → [wbio] → tls_conn_take → socket
 *
 * ALPN: the server accepts "h2" and "http/1.1", preferring http/1.1 when a
 * client offers both (gRPC clients offer only h2, so curl gets /health over
 * HTTP/1.1). The connection layer sniffs the first plaintext bytes anyway.
 *
 * Nothing secret (keys, passwords) is ever logged or put in error texts. */
#ifndef KETCH_NET_TLS_H
#define KETCH_NET_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct tls_ctx tls_ctx;
typedef struct tls_conn tls_conn;

/* etcd's TLS flags for one side (client or peer). Strings are borrowed
 * for the duration of tls_ctx_new; empty or NULL means "not given". */
struct tls_options {
    const char *cert_file;
    const char *key_file;
    const char *trusted_ca_file;
    bool client_cert_auth;
    const char *cipher_suites; /* comma-separated Go names (etcd's --cipher-suites) */
    const char *min_version;   /* "TLS1.2" or "TLS1.3"; default TLS1.2 */
    const char *max_version;   /* "TLS1.2" or "TLS1.3"; default: the highest */
};

/* Checks the version and cipher flags alone (no files are read): the same
 * checks tls_ctx_new makes, for start-up validation of flags that are not
 * used yet (the peer ones). Returns 0, or -1 with a reason in err. */
int tls_check_options(const struct tls_options *o, char *err, size_t errlen);

/* Creates a server context: loads the certificate chain and key, the
 * trusted CA (when given), and with client_cert_auth requires clients to
 * present a certificate that the CA signed. Returns 0, or -1 with the
 * reason in err: for the files, the texts etcd prints (Go's os.ReadFile,
 * tls.X509KeyPair and x509 errors, e.g. "open f: no such file or
 * directory", "tls: private key does not match public key"). */
int tls_ctx_new(tls_ctx **out, const struct tls_options *o, char *err, size_t errlen);
void tls_ctx_free(tls_ctx *ctx);

/* Creates a client context, for peers dialling peers and for ketchctl
 * (etcdctl's --cacert/--cert/--key/--insecure-skip-tls-verify; the server
 * texts above are etcdctl's too). Presents cert_file and key_file when
 * given (both or neither; servers with --client-cert-auth ask for one),
 * and verifies the server's certificate against trusted_ca_file, or the
 * system's roots without one (its name too: see tls_conn_new_client).
 * client_cert_auth is not used. With `skip_verify` (etcd's --peer-auto-tls
 * without a CA, etcdctl's --insecure-skip-tls-verify: Go's
 * InsecureSkipVerify) the server's certificate is not checked. `alpn`:
 * the one protocol to offer ("h2" for gRPC), or NULL for no ALPN. Returns
 * 0, or -1 with the reason in err. */
int tls_ctx_new_client(tls_ctx **out, const struct tls_options *o, bool skip_verify,
                       const char *alpn, char *err, size_t errlen);

/* etcd's --auto-tls: makes sure dir/cert.pem and dir/key.pem exist,
 * creating dir and a self-signed certificate (ECDSA P-256, one year,
 * subject alternative names for `hosts`: IP literals as IP SANs, others as
 * DNS names) when they do not; existing files are reused, as etcd does.
 * Returns 0, or -1 with the reason in err. */
int tls_self_cert(const char *dir, const char *const *hosts, size_t n_hosts, char *err,
                  size_t errlen);

/* ---- one connection ---- */

/* NULL when out of memory. The context must outlive the connection. */
tls_conn *tls_conn_new(tls_ctx *ctx);
/* A client connection (ctx from tls_ctx_new_client) to `host` (an IP
 * literal or a DNS name, borrowed): the server's certificate must name it
 * (unless the context skips verification). The first tls_conn_read
 * starts the handshake (ClientHello in tls_conn_take). NULL when out of
 * memory. */
tls_conn *tls_conn_new_client(tls_ctx *ctx, const char *host);
void tls_conn_free(tls_conn *t);

/* Bytes read from the socket. Returns 0, or -1 (out of memory). */
int tls_conn_feed(tls_conn *t, const uint8_t *p, size_t n);

enum { TLS_AGAIN = 0, TLS_CLOSED = -1, TLS_FAILED = -2 };

/* Decrypts into buf: the number of plaintext bytes (> 0), TLS_AGAIN (needs
 * more input; also while the handshake runs), TLS_CLOSED (the client sent
 * close_notify) or TLS_FAILED (handshake or record failure: the reason is
 * in tls_conn_error; an alert may be waiting in tls_conn_take). */
ssize_t tls_conn_read(tls_conn *t, uint8_t *buf, size_t cap);

/* Encrypts n plaintext bytes (only once the handshake is done). Returns 0
 * or TLS_FAILED. */
int tls_conn_write(tls_conn *t, const uint8_t *p, size_t n);

/* Bytes waiting to be sent to the socket (handshake messages, records). */
size_t tls_conn_pending(const tls_conn *t);
/* Moves up to cap of them into buf; returns how many. */
size_t tls_conn_take(tls_conn *t, uint8_t *buf, size_t cap);

bool tls_conn_established(const tls_conn *t);
/* Why the connection failed (certificate verification, protocol), static
 * or owned by t; "" when it did not. */
const char *tls_conn_error(const tls_conn *t);
/* The CN of the verified client certificate, or NULL. Owned by t. */
const char *tls_conn_peer_cn(tls_conn *t);

#endif
