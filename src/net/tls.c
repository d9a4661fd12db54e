/* TLS with OpenSSL 3 over memory BIOs (see tls.h). */
#include "net/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

struct tls_ctx {
    SSL_CTX *ssl;
    bool client;
    bool verify; /* client: check the server's certificate */
};

struct tls_conn {
    SSL *ssl;
    BIO *rbio, *wbio; /* rbio: socket → SSL; wbio: SSL → socket */
    bool established;
    bool client;
    char err[256];
    char *cn;
};

/* Go's cipher suite names (crypto/tls, as etcd's --cipher-suites takes
 * them) → OpenSSL's. TLS 1.3 suites are not configurable in Go; they are
 * accepted here and ignored, as Go does. */
static const struct {
    const char *go, *ossl;
} ciphers[] = {
    {"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256"},
    {"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "ECDHE-RSA-AES128-GCM-SHA256"},
    {"TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384"},
    {"TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "ECDHE-RSA-AES256-GCM-SHA384"},
    {"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305", "ECDHE-ECDSA-CHACHA20-POLY1305"},
    {"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"},
    {"TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305", "ECDHE-RSA-CHACHA20-POLY1305"},
    {"TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-RSA-CHACHA20-POLY1305"},
    {"TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", "ECDHE-ECDSA-AES128-SHA"},
    {"TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "ECDHE-RSA-AES128-SHA"},
    {"TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", "ECDHE-ECDSA-AES256-SHA"},
    {"TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", "ECDHE-RSA-AES256-SHA"},
    {"TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", "ECDHE-ECDSA-AES128-SHA256"},
    {"TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", "ECDHE-RSA-AES128-SHA256"},
    {"TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA", "ECDHE-RSA-DES-CBC3-SHA"},
    {"TLS_RSA_WITH_AES_128_GCM_SHA256", "AES128-GCM-SHA256"},
    {"TLS_RSA_WITH_AES_256_GCM_SHA384", "AES256-GCM-SHA384"},
    {"TLS_RSA_WITH_AES_128_CBC_SHA", "AES128-SHA"},
    {"TLS_RSA_WITH_AES_256_CBC_SHA", "AES256-SHA"},
    {"TLS_RSA_WITH_AES_128_CBC_SHA256", "AES128-SHA256"},
    {"TLS_RSA_WITH_3DES_EDE_CBC_SHA", "DES-CBC3-SHA"},
    {"TLS_AES_128_GCM_SHA256", ""},
    {"TLS_AES_256_GCM_SHA384", ""},
    {"TLS_CHACHA20_POLY1305_SHA256", ""},
};

static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg);

static bool given(const char *s) { return s && *s; }

/* "TLS1.2" → TLS1_2_VERSION; 0 for "not given"; -1 when unknown. */
static int parse_version(const char *v)
{
    if (!given(v)) return 0;
    if (!strcmp(v, "TLS1.2")) return TLS1_2_VERSION;
    if (!strcmp(v, "TLS1.3")) return TLS1_3_VERSION;
    return -1;
}

/* Builds OpenSSL's cipher list from the Go names (into out), or fails. */
static int map_ciphers(const char *list, char *out, size_t outlen, char *err, size_t errlen)
{
    out[0] = '\0';
    size_t used = 0;
    const char *p = list;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        while (len && *p == ' ') p++, len--;
        while (len && p[len - 1] == ' ') len--;
        if (len) {
            size_t i;
            for (i = 0; i < sizeof ciphers / sizeof ciphers[0]; i++)
                if (strlen(ciphers[i].go) == len && !strncmp(ciphers[i].go, p, len)) break;
            if (i == sizeof ciphers / sizeof ciphers[0]) {
                snprintf(err, errlen, "unexpected TLS cipher suite \"%.*s\"", (int)len, p);
                return -1;
            }
            const char *o = ciphers[i].ossl;
            if (*o) {
                int n = snprintf(out + used, outlen - used, "%s%s", used ? ":" : "", o);
                if (n < 0 || (size_t)n >= outlen - used) {
                    snprintf(err, errlen, "too many cipher suites");
                    return -1;
                }
                used += (size_t)n;
            }
        }
        if (!comma) break;
        p = comma + 1;
    }
    return 0;
}

int tls_check_options(const struct tls_options *o, char *err, size_t errlen)
{
    int min = parse_version(o->min_version), max = parse_version(o->max_version);
    if (min < 0) {
        snprintf(err, errlen, "unexpected TLS version \"%s\" (supported versions: TLS1.2 and TLS1.3)",
                 o->min_version);
        return -1;
    }
    if (max < 0) {
        snprintf(err, errlen, "unexpected TLS version \"%s\" (supported versions: TLS1.2 and TLS1.3)",
                 o->max_version);
        return -1;
    }
    if (min && max && min > max) {
        snprintf(err, errlen, "min version (%s) is greater than max version (%s)",
                 o->min_version, o->max_version);
        return -1;
    }
    if (given(o->cipher_suites)) {
        /* As etcd 3.5: Go cannot configure TLS 1.3 suites. */
        if (min == TLS1_3_VERSION) {
            snprintf(err, errlen, "cipher suites cannot be configured when only TLS1.3 or "
                                  "greater is supported");
            return -1;
        }
        char list[2048];
        if (map_ciphers(o->cipher_suites, list, sizeof list, err, errlen)) return -1;
    }
    return 0;
}

/* The first queued OpenSSL error as text, for messages about files. */
static const char *ossl_reason(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    ERR_clear_error();
    return r ? r : "unknown error";
}

int tls_ctx_new(tls_ctx **out, const struct tls_options *o, char *err, size_t errlen)
{
    if (tls_check_options(o, err, errlen)) return -1;
    if (!given(o->cert_file) || !given(o->key_file)) {
        snprintf(err, errlen, "TLS key/cert (--cert-file, --key-file) must be provided");
        return -1;
    }
    if (o->client_cert_auth && !given(o->trusted_ca_file)) {
        snprintf(err, errlen, "--client-cert-auth needs --trusted-ca-file");
        return -1;
    }
    SSL_CTX *ssl = SSL_CTX_new(TLS_server_method());
    if (!ssl) {
        snprintf(err, errlen, "cannot create a TLS context: %s", ossl_reason());
        return -1;
    }
    int min = parse_version(o->min_version), max = parse_version(o->max_version);
    SSL_CTX_set_min_proto_version(ssl, min ? min : TLS1_2_VERSION);
    if (max) SSL_CTX_set_max_proto_version(ssl, max);
    SSL_CTX_set_options(ssl, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
    if (given(o->cipher_suites)) {
        char list[2048];
        if (map_ciphers(o->cipher_suites, list, sizeof list, err, errlen)) goto fail;
        if (list[0] && !SSL_CTX_set_cipher_list(ssl, list)) {
            snprintf(err, errlen, "no usable cipher suite in --cipher-suites: %s", ossl_reason());
            goto fail;
        }
    }
    if (SSL_CTX_use_certificate_chain_file(ssl, o->cert_file) != 1) {
        snprintf(err, errlen, "cannot load certificate %s: %s", o->cert_file, ossl_reason());
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ssl, o->key_file, SSL_FILETYPE_PEM) != 1) {
        snprintf(err, errlen, "cannot load key %s: %s", o->key_file, ossl_reason());
        goto fail;
    }
    if (SSL_CTX_check_private_key(ssl) != 1) {
        snprintf(err, errlen, "key %s does not match certificate %s", o->key_file, o->cert_file);
        ERR_clear_error();
        goto fail;
    }
    if (given(o->trusted_ca_file)) {
        if (SSL_CTX_load_verify_locations(ssl, o->trusted_ca_file, NULL) != 1) {
            snprintf(err, errlen, "cannot load trusted CA %s: %s", o->trusted_ca_file,
                     ossl_reason());
            goto fail;
        }
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->trusted_ca_file);
        if (names) SSL_CTX_set_client_CA_list(ssl, names);
    }
    if (o->client_cert_auth)
        SSL_CTX_set_verify(ssl, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    else if (given(o->trusted_ca_file))
        /* As Go's VerifyClientCertIfGiven: a certificate, when sent, must verify. */
        SSL_CTX_set_verify(ssl, SSL_VERIFY_PEER, NULL);
    else
        SSL_CTX_set_verify(ssl, SSL_VERIFY_NONE, NULL);
    /* Tickets would let a client resume without showing its certificate
     * again, and need key rotation; clients reconnect rarely. */
    SSL_CTX_set_options(ssl, SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(ssl, 0);
    SSL_CTX_set_session_cache_mode(ssl, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_alpn_select_cb(ssl, on_alpn, NULL);

    tls_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    c->ssl = ssl;
    *out = c;
    return 0;
fail:
    SSL_CTX_free(ssl);
    return -1;
}

int tls_ctx_new_client(tls_ctx **out, const struct tls_options *o, bool insecure_skip_verify,
                       char *err, size_t errlen)
{
    if (tls_check_options(o, err, errlen)) return -1;
    SSL_CTX *ssl = SSL_CTX_new(TLS_client_method());
    if (!ssl) {
        snprintf(err, errlen, "cannot create a TLS context: %s", ossl_reason());
        return -1;
    }
    int min = parse_version(o->min_version), max = parse_version(o->max_version);
    SSL_CTX_set_min_proto_version(ssl, min ? min : TLS1_2_VERSION);
    if (max) SSL_CTX_set_max_proto_version(ssl, max);
    SSL_CTX_set_options(ssl, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_NO_TICKET);
    SSL_CTX_set_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(ssl, SSL_SESS_CACHE_OFF);
    if (given(o->cipher_suites)) {
        char list[2048];
        if (map_ciphers(o->cipher_suites, list, sizeof list, err, errlen)) goto fail;
        if (list[0] && !SSL_CTX_set_cipher_list(ssl, list)) {
            snprintf(err, errlen, "no usable cipher suite in --cipher-suites: %s", ossl_reason());
            goto fail;
        }
    }
    if (given(o->cert_file) && given(o->key_file)) {
        if (SSL_CTX_use_certificate_chain_file(ssl, o->cert_file) != 1) {
            snprintf(err, errlen, "cannot load certificate %s: %s", o->cert_file, ossl_reason());
            goto fail;
        }
        if (SSL_CTX_use_PrivateKey_file(ssl, o->key_file, SSL_FILETYPE_PEM) != 1) {
            snprintf(err, errlen, "cannot load key %s: %s", o->key_file, ossl_reason());
            goto fail;
        }
    }
    bool verify = !insecure_skip_verify;
    if (verify) {
        if (given(o->trusted_ca_file)) {
            if (SSL_CTX_load_verify_locations(ssl, o->trusted_ca_file, NULL) != 1) {
                snprintf(err, errlen, "cannot load trusted CA %s: %s", o->trusted_ca_file,
                         ossl_reason());
                goto fail;
            }
        } else if (SSL_CTX_set_default_verify_paths(ssl) != 1) {
            ERR_clear_error(); /* as Go: the system roots, when there are some */
        }
        SSL_CTX_set_verify(ssl, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ssl, SSL_VERIFY_NONE, NULL);
    }
    tls_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    c->ssl = ssl;
    c->client = true;
    c->verify = verify;
    *out = c;
    return 0;
fail:
    SSL_CTX_free(ssl);
    return -1;
}

void tls_ctx_free(tls_ctx *ctx)
{
    if (!ctx) return;
    SSL_CTX_free(ctx->ssl);
    free(ctx);
}

/* ---- --auto-tls ---- */

static int mkdir_p(const char *dir)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s", dir) >= (int)sizeof tmp) return -1;
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0700) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(tmp, 0700) != 0 && errno != EEXIST) return -1;
    return 0;
}

static int add_ext(X509 *cert, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, cert, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (!ext) return -1;
    int ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}

static bool is_ip(const char *h)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, h, buf) == 1 || inet_pton(AF_INET6, h, buf) == 1;
}

int tls_self_cert(const char *dir, const char *const *hosts, size_t n_hosts, char *err,
                  size_t errlen)
{
    char cert_path[4200], key_path[4200];
    snprintf(cert_path, sizeof cert_path, "%s/cert.pem", dir);
    snprintf(key_path, sizeof key_path, "%s/key.pem", dir);
    if (access(cert_path, R_OK) == 0 && access(key_path, R_OK) == 0) return 0;
    if (mkdir_p(dir)) {
        snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
        return -1;
    }
    int rv = -1;
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *cert = X509_new();
    FILE *f = NULL;
    if (!key || !cert) {
        snprintf(err, errlen, "cannot generate a key: %s", ossl_reason());
        goto out;
    }
    X509_set_version(cert, 2);
    /* A random 128-bit serial, as Go's SelfCert. */
    BIGNUM *bn = BN_new();
    if (bn && BN_rand(bn, 128, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY))
        BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert));
    BN_free(bn);
    X509_gmtime_adj(X509_getm_notBefore(cert), 0);
    X509_gmtime_adj(X509_getm_notAfter(cert), 365L * 24 * 3600);
    X509_set_pubkey(cert, key);
    X509_NAME *name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"etcd", -1, -1, 0);
    X509_set_issuer_name(cert, name);
    char san[4096] = "";
    size_t used = 0;
    for (size_t i = 0; i < n_hosts; i++) {
        const char *h = hosts[i];
        if (!*h) continue;
        int n = snprintf(san + used, sizeof san - used, "%s%s:%s", used ? "," : "",
                         is_ip(h) ? "IP" : "DNS", h);
        if (n < 0 || (size_t)n >= sizeof san - used) break;
        used += (size_t)n;
    }
    if ((used && add_ext(cert, NID_subject_alt_name, san)) ||
        add_ext(cert, NID_key_usage, "critical,digitalSignature,keyEncipherment") ||
        add_ext(cert, NID_ext_key_usage, "serverAuth,clientAuth") ||
        add_ext(cert, NID_basic_constraints, "critical,CA:FALSE")) {
        snprintf(err, errlen, "cannot build the certificate: %s", ossl_reason());
        goto out;
    }
    if (!X509_sign(cert, key, EVP_sha256())) {
        snprintf(err, errlen, "cannot sign the certificate: %s", ossl_reason());
        goto out;
    }
    int fd = open(key_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f || !PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) || fclose(f)) {
        f = NULL;
        snprintf(err, errlen, "cannot write %s", key_path);
        goto out;
    }
    f = fopen(cert_path, "w");
    if (!f || !PEM_write_X509(f, cert) || fclose(f)) {
        f = NULL;
        snprintf(err, errlen, "cannot write %s", cert_path);
        goto out;
    }
    f = NULL;
    rv = 0;
out:
    if (f) fclose(f);
    X509_free(cert);
    EVP_PKEY_free(key);
    ERR_clear_error();
    return rv;
}

/* ---- connections ---- */

static const unsigned char alpn_h2[] = "h2";
static const unsigned char alpn_h1[] = "http/1.1";

static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    /* gRPC clients offer only "h2" (grpc-go, grpc-core: also "grpc-exp");
     * clients that also offer "http/1.1" (curl, browsers, Go's net/http)
     * want /health, /metrics or the JSON gateway, which ketch serves over
     * HTTP/1.1: give them that. With neither, go on without ALPN. */
    const unsigned char *prefs[] = {alpn_h1, alpn_h2};
    for (size_t k = 0; k < 2; k++) {
        size_t pl = strlen((const char *)prefs[k]);
        for (unsigned int i = 0; i < inlen;) {
            unsigned int l = in[i];
            if (i + 1 + l > inlen) break;
            if (l == pl && memcmp(in + i + 1, prefs[k], pl) == 0) {
                *out = in + i + 1;
                *outlen = (unsigned char)l;
                return SSL_TLSEXT_ERR_OK;
            }
            i += 1 + l;
        }
    }
    return SSL_TLSEXT_ERR_NOACK;
}

tls_conn *tls_conn_new(tls_ctx *ctx)
{
    tls_conn *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->ssl = SSL_new(ctx->ssl);
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (!t->ssl || !t->rbio || !t->wbio) {
        SSL_free(t->ssl);
        BIO_free(t->rbio);
        BIO_free(t->wbio);
        free(t);
        return NULL;
    }
    /* An empty rbio means "no data yet", not EOF. */
    BIO_set_mem_eof_return(t->rbio, -1);
    SSL_set_bio(t->ssl, t->rbio, t->wbio); /* SSL owns both now */
    SSL_set_accept_state(t->ssl);
    return t;
}

tls_conn *tls_conn_new_client(tls_ctx *ctx, const char *host)
{
    tls_conn *t = tls_conn_new(ctx);
    if (!t) return NULL;
    t->client = true;
    SSL_set_connect_state(t->ssl);
    if (given(host) && !is_ip(host)) SSL_set_tlsext_host_name(t->ssl, host);
    if (ctx->verify && given(host)) {
        X509_VERIFY_PARAM *vp = SSL_get0_param(t->ssl);
        if (is_ip(host)) X509_VERIFY_PARAM_set1_ip_asc(vp, host);
        else X509_VERIFY_PARAM_set1_host(vp, host, 0);
    }
    return t;
}

void tls_conn_free(tls_conn *t)
{
    if (!t) return;
    SSL_free(t->ssl);
    free(t->cn);
    free(t);
}

int tls_conn_feed(tls_conn *t, const uint8_t *p, size_t n)
{
    while (n > 0) {
        int chunk = n > (1u << 30) ? (1 << 30) : (int)n;
        int w = BIO_write(t->rbio, p, chunk);
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Records why the connection failed: a certificate that did not verify
 * says why (X509_verify_cert_error_string), else OpenSSL's reason. */
static void set_error(tls_conn *t, int ssl_err)
{
    long vr = SSL_get_verify_result(t->ssl);
    unsigned long e = ERR_peek_last_error();
    if (vr != X509_V_OK) {
        snprintf(t->err, sizeof t->err, "%s certificate verify failed: %s",
                 t->client ? "server" : "client", X509_verify_cert_error_string(vr));
    } else if (e) {
        const char *r = ERR_reason_error_string(e);
        snprintf(t->err, sizeof t->err, "%s", r ? r : "TLS error");
    } else if (ssl_err == SSL_ERROR_SYSCALL || ssl_err == SSL_ERROR_ZERO_RETURN) {
        snprintf(t->err, sizeof t->err, "connection closed during TLS handshake");
    } else {
        snprintf(t->err, sizeof t->err, "TLS error %d", ssl_err);
    }
    ERR_clear_error();
}

ssize_t tls_conn_read(tls_conn *t, uint8_t *buf, size_t cap)
{
    if (t->err[0]) return TLS_FAILED;
    if (!t->established) {
        ERR_clear_error();
        int r = SSL_do_handshake(t->ssl);
        if (r != 1) {
            int e = SSL_get_error(t->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return TLS_AGAIN;
            set_error(t, e);
            return TLS_FAILED;
        }
        t->established = true;
    }
    ERR_clear_error();
    int n = SSL_read(t->ssl, buf, cap > INT32_MAX ? INT32_MAX : (int)cap);
    if (n > 0) return n;
    int e = SSL_get_error(t->ssl, n);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return TLS_AGAIN;
    if (e == SSL_ERROR_ZERO_RETURN) return TLS_CLOSED;
    set_error(t, e);
    return TLS_FAILED;
}

int tls_conn_write(tls_conn *t, const uint8_t *p, size_t n)
{
    if (t->err[0] || !t->established) return TLS_FAILED;
    while (n > 0) {
        ERR_clear_error();
        int chunk = n > (1u << 30) ? (1 << 30) : (int)n;
        int w = SSL_write(t->ssl, p, chunk);
        if (w <= 0) {
            set_error(t, SSL_get_error(t->ssl, w));
            return TLS_FAILED;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

size_t tls_conn_pending(const tls_conn *t)
{
    return BIO_ctrl_pending(t->wbio);
}

size_t tls_conn_take(tls_conn *t, uint8_t *buf, size_t cap)
{
    int n = BIO_read(t->wbio, buf, cap > INT32_MAX ? INT32_MAX : (int)cap);
    return n > 0 ? (size_t)n : 0;
}

bool tls_conn_established(const tls_conn *t) { return t->established; }

const char *tls_conn_error(const tls_conn *t) { return t->err; }

const char *tls_conn_peer_cn(tls_conn *t)
{
    if (t->cn) return t->cn;
    X509 *peer = SSL_get1_peer_certificate(t->ssl);
    if (!peer) return NULL;
    char cn[256];
    int n = X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, cn, sizeof cn);
    X509_free(peer);
    if (n < 0) return NULL;
    t->cn = strdup(cn);
    return t->cn;
}

/* ---- client side ---- */

static const unsigned char alpn_offer[] = "\x02h2";

int tls_client_ctx_new(tls_ctx **out, const struct tls_client_options *o, char *err,
                       size_t errlen)
{
    SSL_CTX *ssl = SSL_CTX_new(TLS_client_method());
    if (!ssl) {
        snprintf(err, errlen, "cannot create a TLS context: %s", ossl_reason());
        return -1;
    }
    SSL_CTX_set_min_proto_version(ssl, TLS1_2_VERSION);
    SSL_CTX_set_options(ssl, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
    if (given(o->cert_file) != given(o->key_file)) {
        snprintf(err, errlen, "both --cert and --key are needed for a client certificate");
        goto fail;
    }
    if (given(o->cert_file)) {
        if (SSL_CTX_use_certificate_chain_file(ssl, o->cert_file) != 1) {
            snprintf(err, errlen, "cannot load certificate %s: %s", o->cert_file, ossl_reason());
            goto fail;
        }
        if (SSL_CTX_use_PrivateKey_file(ssl, o->key_file, SSL_FILETYPE_PEM) != 1) {
            snprintf(err, errlen, "cannot load key %s: %s", o->key_file, ossl_reason());
            goto fail;
        }
        if (SSL_CTX_check_private_key(ssl) != 1) {
            snprintf(err, errlen, "key %s does not match certificate %s", o->key_file,
                     o->cert_file);
            ERR_clear_error();
            goto fail;
        }
    }
    if (given(o->ca_file)) {
        if (SSL_CTX_load_verify_locations(ssl, o->ca_file, NULL) != 1) {
            snprintf(err, errlen, "cannot load CA %s: %s", o->ca_file, ossl_reason());
            goto fail;
        }
    } else {
        SSL_CTX_set_default_verify_paths(ssl);
        ERR_clear_error();
    }
    SSL_CTX_set_verify(ssl, o->skip_verify ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, NULL);
    if (SSL_CTX_set_alpn_protos(ssl, alpn_offer, sizeof alpn_offer - 1) != 0) {
        snprintf(err, errlen, "cannot set ALPN");
        goto fail;
    }
    tls_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    c->ssl = ssl;
    c->client = true;
    c->verify = !o->skip_verify;
    *out = c;
    return 0;
fail:
    SSL_CTX_free(ssl);
    return -1;
}

