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

#include "util/errors.h"

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

/* ---- certificate files, read as etcd reads them ----
 *
 * etcd (and etcdctl) load the key pair with Go's tls.X509KeyPair on the
 * files' bytes (pkg/tlsutil NewCert) and the CA with tlsutil.NewCertPool;
 * their errors are what both print, so the texts below are Go's. */

/* os.ReadFile: the whole file in a memory BIO, or NULL with Go's text
 * ("open f: no such file or directory", "read f: is a directory"). */
static BIO *read_file(const char *path, char *err, size_t errlen)
{
    char why[128];
    FILE *f = fopen(path, "rb");
    if (!f) {
        errno_text_go(why, sizeof why, errno);
        snprintf(err, errlen, "open %s: %s", path, why);
        return NULL;
    }
    BIO *b = BIO_new(BIO_s_mem());
    char chunk[8192];
    size_t n;
    while (b && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (BIO_write(b, chunk, (int)n) != (int)n) {
            BIO_free(b);
            b = NULL;
        }
    if (b && ferror(f)) {
        errno_text_go(why, sizeof why, errno);
        snprintf(err, errlen, "read %s: %s", path, why);
        BIO_free(b);
        b = NULL;
    } else if (!b) {
        snprintf(err, errlen, "out of memory");
    }
    fclose(f);
    return b;
}

/* One PEM block (pem.Decode): its type and DER bytes, owned by the caller
 * (OPENSSL_free). false at the end of the input. */
struct pem_block {
    char *type;
    unsigned char *der;
    long len;
};

static bool pem_next(BIO *b, struct pem_block *blk)
{
    char *header = NULL;
    int ok = PEM_read_bio(b, &blk->type, &header, &blk->der, &blk->len);
    OPENSSL_free(header);
    ERR_clear_error(); /* the end of the input is an error to OpenSSL */
    return ok == 1;
}

static void pem_block_free(struct pem_block *blk)
{
    OPENSSL_free(blk->type);
    OPENSSL_free(blk->der);
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

/* x509.ParseCertificate: the certificate, or NULL with Go's text for the
 * usual ways DER fails (not a SEQUENCE; a SEQUENCE that does not start
 * with the to-be-signed SEQUENCE, e.g. a private key). */
static X509 *parse_cert(const unsigned char *der, long len, char *err, size_t errlen)
{
    const unsigned char *p = der;
    X509 *x = d2i_X509(NULL, &p, len);
    ERR_clear_error();
    if (x) return x;
    long inner;
    int tag, class;
    p = der;
    bool outer = !(ASN1_get_object(&p, &inner, &tag, &class, len) & 0x80) &&
                 tag == V_ASN1_SEQUENCE;
    ERR_clear_error();
    bool tbs = outer && inner > 0 && *p == (V_ASN1_SEQUENCE | V_ASN1_CONSTRUCTED);
    snprintf(err, errlen, outer && !tbs ? "x509: malformed tbs certificate"
                                        : "x509: malformed certificate");
    return NULL;
}

/* Joins Go's %v of a []string: "[A B]". */
static void go_list(char *dst, size_t n, char *const *v, size_t count)
{
    size_t used = (size_t)snprintf(dst, n, "[");
    for (size_t i = 0; i < count && used < n; i++)
        used += (size_t)snprintf(dst + used, n - used, "%s%s", i ? " " : "", v[i]);
    if (used < n) snprintf(dst + used, n - used, "]");
}

/* The certificate chain of cert_file (its CERTIFICATE blocks, leaf first)
 * into ssl, as X509KeyPair reads it; *leaf is the caller's to free. */
static int use_cert_chain(SSL_CTX *ssl, BIO *in, X509 **leaf, char *err, size_t errlen)
{
    char *skipped[8];
    size_t n_skipped = 0, n_certs = 0;
    int rv = -1;
    struct pem_block blk;
    *leaf = NULL;
    while (pem_next(in, &blk)) {
        if (strcmp(blk.type, "CERTIFICATE")) {
            if (n_skipped < sizeof skipped / sizeof skipped[0])
                skipped[n_skipped++] = blk.type, blk.type = NULL;
            pem_block_free(&blk);
            continue;
        }
        X509 *x = parse_cert(blk.der, blk.len, err, errlen);
        pem_block_free(&blk);
        if (!x) goto out;
        int ok;
        if (n_certs++) {
            ok = SSL_CTX_add0_chain_cert(ssl, x); /* owns x when it worked */
            if (ok != 1) X509_free(x);
        } else {
            *leaf = x; /* the caller's */
            ok = SSL_CTX_use_certificate(ssl, x);
        }
        if (ok != 1) {
            snprintf(err, errlen, "cannot use the certificate: %s", ossl_reason());
            goto out;
        }
    }
    if (n_certs) {
        rv = 0;
    } else if (!n_skipped) {
        snprintf(err, errlen, "tls: failed to find any PEM data in certificate input");
    } else if (n_skipped == 1 && ends_with(skipped[0], "PRIVATE KEY")) {
        snprintf(err, errlen, "tls: failed to find certificate PEM data in certificate input, "
                              "but did find a private key; PEM inputs may have been switched");
    } else {
        char list[512];
        go_list(list, sizeof list, skipped, n_skipped);
        snprintf(err, errlen, "tls: failed to find \"CERTIFICATE\" PEM block in certificate "
                              "input after skipping PEM blocks of the following types: %s", list);
    }
out:
    for (size_t i = 0; i < n_skipped; i++) OPENSSL_free(skipped[i]);
    return rv;
}

/* The first "PRIVATE KEY" / "* PRIVATE KEY" block of key_file, checked
 * against the certificate's public key, into ssl. */
static int use_private_key(SSL_CTX *ssl, BIO *in, X509 *leaf, char *err, size_t errlen)
{
    char *skipped[8];
    size_t n_skipped = 0;
    int rv = -1;
    struct pem_block blk;
    bool found = false;
    while (!found && pem_next(in, &blk)) {
        found = !strcmp(blk.type, "PRIVATE KEY") || ends_with(blk.type, " PRIVATE KEY");
        if (!found) {
            if (n_skipped < sizeof skipped / sizeof skipped[0])
                skipped[n_skipped++] = blk.type, blk.type = NULL;
            pem_block_free(&blk);
        }
    }
    if (!found) {
        if (!n_skipped) {
            snprintf(err, errlen, "tls: failed to find any PEM data in key input");
        } else if (n_skipped == 1 && !strcmp(skipped[0], "CERTIFICATE")) {
            snprintf(err, errlen,
                     "tls: found a certificate rather than a key in the PEM for the private key");
        } else {
            char list[512];
            go_list(list, sizeof list, skipped, n_skipped);
            snprintf(err, errlen, "tls: failed to find PEM block with type ending in \"PRIVATE "
                                  "KEY\" in key input after skipping PEM blocks of the following "
                                  "types: %s", list);
        }
        goto out;
    }
    const unsigned char *p = blk.der;
    EVP_PKEY *key = d2i_AutoPrivateKey(NULL, &p, blk.len);
    pem_block_free(&blk);
    ERR_clear_error();
    if (!key) {
        snprintf(err, errlen, "tls: failed to parse private key");
        goto out;
    }
    switch (EVP_PKEY_eq(X509_get0_pubkey(leaf), key)) {
    case 1:
        if (SSL_CTX_use_PrivateKey(ssl, key) == 1) rv = 0;
        else snprintf(err, errlen, "cannot use the key: %s", ossl_reason());
        break;
    case 0: snprintf(err, errlen, "tls: private key does not match public key"); break;
    case -1: snprintf(err, errlen, "tls: private key type does not match public key type"); break;
    default: snprintf(err, errlen, "tls: unknown public key algorithm"); break;
    }
    ERR_clear_error();
    EVP_PKEY_free(key);
out:
    for (size_t i = 0; i < n_skipped; i++) OPENSSL_free(skipped[i]);
    return rv;
}

/* tlsutil.NewCert + tls.X509KeyPair: both files read first (cert, then
 * key), then the chain and the key that must match its public key. */
static int use_key_pair(SSL_CTX *ssl, const char *cert_file, const char *key_file, char *err,
                        size_t errlen)
{
    BIO *cert = read_file(cert_file, err, errlen);
    if (!cert) return -1;
    BIO *key = read_file(key_file, err, errlen);
    X509 *leaf = NULL;
    int rv = key && !use_cert_chain(ssl, cert, &leaf, err, errlen) &&
                     !use_private_key(ssl, key, leaf, err, errlen) ? 0 : -1;
    X509_free(leaf);
    BIO_free(cert);
    BIO_free(key);
    return rv;
}

/* tlsutil.NewCertPool: every PEM block of ca_file must be a certificate
 * (whatever its type says); a file without any gives an empty pool, so
 * nothing verifies. The server also names them to clients as acceptable
 * issuers (name_to_clients). */
static int use_ca_file(SSL_CTX *ssl, const char *ca_file, bool name_to_clients, char *err,
                       size_t errlen)
{
    BIO *in = read_file(ca_file, err, errlen);
    if (!in) return -1;
    X509_STORE *store = SSL_CTX_get_cert_store(ssl);
    struct pem_block blk;
    int rv = 0;
    while (rv == 0 && pem_next(in, &blk)) {
        X509 *x = parse_cert(blk.der, blk.len, err, errlen);
        pem_block_free(&blk);
        if (!x) {
            rv = -1;
            break;
        }
        if (X509_STORE_add_cert(store, x) != 1 ||
            (name_to_clients && SSL_CTX_add_client_CA(ssl, x) != 1)) {
            snprintf(err, errlen, "cannot use the CA certificate: %s", ossl_reason());
            rv = -1;
        }
        X509_free(x);
    }
    ERR_clear_error();
    BIO_free(in);
    return rv;
}

/* ---- contexts ---- */

/* What server and client contexts share: the protocol versions and cipher
 * suites of o, no renegotiation, compression, tickets or session cache
 * (a client reconnects rarely; a ticket would let it resume without
 * showing its certificate again), and the key pair when given. */
static SSL_CTX *ctx_base(const SSL_METHOD *method, const struct tls_options *o, char *err,
                         size_t errlen)
{
    if (tls_check_options(o, err, errlen)) return NULL;
    SSL_CTX *ssl = SSL_CTX_new(method);
    if (!ssl) {
        snprintf(err, errlen, "cannot create a TLS context: %s", ossl_reason());
        return NULL;
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
    if (given(o->cert_file) != given(o->key_file)) {
        /* transport.TLSInfo's check, in its words */
        snprintf(err, errlen, "KeyFile and CertFile must both be present[key: %s, cert: %s]",
                 o->key_file ? o->key_file : "", o->cert_file ? o->cert_file : "");
        goto fail;
    }
    if (given(o->cert_file) && use_key_pair(ssl, o->cert_file, o->key_file, err, errlen))
        goto fail;
    return ssl;
fail:
    SSL_CTX_free(ssl);
    return NULL;
}

static int ctx_wrap(tls_ctx **out, SSL_CTX *ssl, bool client, bool verify, char *err,
                    size_t errlen)
{
    tls_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        SSL_CTX_free(ssl);
        return -1;
    }
    c->ssl = ssl;
    c->client = client;
    c->verify = verify;
    *out = c;
    return 0;
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
    SSL_CTX *ssl = ctx_base(TLS_server_method(), o, err, errlen);
    if (!ssl) return -1;
    SSL_CTX_set_options(ssl, SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_num_tickets(ssl, 0);
    if (given(o->trusted_ca_file) && use_ca_file(ssl, o->trusted_ca_file, true, err, errlen)) {
        SSL_CTX_free(ssl);
        return -1;
    }
    if (o->client_cert_auth)
        SSL_CTX_set_verify(ssl, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    else if (given(o->trusted_ca_file))
        /* As Go's VerifyClientCertIfGiven: a certificate, when sent, must verify. */
        SSL_CTX_set_verify(ssl, SSL_VERIFY_PEER, NULL);
    else
        SSL_CTX_set_verify(ssl, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_alpn_select_cb(ssl, on_alpn, NULL);
    return ctx_wrap(out, ssl, false, false, err, errlen);
}

int tls_ctx_new_client(tls_ctx **out, const struct tls_options *o, bool skip_verify,
                       const char *alpn, char *err, size_t errlen)
{
    SSL_CTX *ssl = ctx_base(TLS_client_method(), o, err, errlen);
    if (!ssl) return -1;
    if (given(o->trusted_ca_file)) {
        /* read even when not verifying, as etcdctl does */
        if (use_ca_file(ssl, o->trusted_ca_file, false, err, errlen)) goto fail;
    } else if (!skip_verify && SSL_CTX_set_default_verify_paths(ssl) != 1) {
        ERR_clear_error(); /* as Go: the system roots, when there are some */
    }
    SSL_CTX_set_verify(ssl, skip_verify ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, NULL);
    if (given(alpn)) {
        unsigned char wire[256];
        size_t n = strlen(alpn);
        if (n > 255 || (wire[0] = (unsigned char)n, memcpy(wire + 1, alpn, n),
                        SSL_CTX_set_alpn_protos(ssl, wire, (unsigned)n + 1) != 0)) {
            snprintf(err, errlen, "cannot offer ALPN %s", alpn);
            goto fail;
        }
    }
    return ctx_wrap(out, ssl, true, !skip_verify, err, errlen);
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
