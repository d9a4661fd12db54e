#include "server/security.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/errors.h"
#include "util/log.h"

static bool given(const char *s) { return s && *s; }

/* A file named by a flag must be readable (as etcd fails on open). */
static int check_file(const char *flag, const char *path)
{
    if (!given(path) || access(path, R_OK) == 0) return 0;
    char why[128];
    fprintf(stderr, "ketch: --%s: open %s: %s\n", flag, path,
            errno_text_go(why, sizeof why, errno));
    return -1;
}

/* Hosts of the URLs (listen and advertise) for --auto-tls SANs. */
static char **url_hosts(const char *listen, const char *advertise, size_t *n)
{
    size_t nl, na;
    char **l = config_split(listen, &nl);
    char **a = config_split(advertise, &na);
    char **hosts = calloc(nl + na + 1, sizeof *hosts);
    size_t k = 0;
    for (size_t i = 0; i < nl + na; i++) {
        char *h;
        int port;
        if (config_parse_url(i < nl ? l[i] : a[i - nl], &h, &port) != 0) continue;
        bool dup = false;
        for (size_t j = 0; j < k; j++) dup |= strcmp(hosts[j], h) == 0;
        if (dup) free(h);
        else hosts[k++] = h;
    }
    config_strv_free(l);
    config_strv_free(a);
    *n = k;
    return hosts;
}

int security_setup(const struct config *c, bool need, tls_ctx **out)
{
    char err[512];
    *out = NULL;
    struct tls_options o = {
        .cert_file = c->cert_file,
        .key_file = c->key_file,
        .trusted_ca_file = c->trusted_ca_file,
        .client_cert_auth = c->client_cert_auth,
        .cipher_suites = c->cipher_suites,
        .min_version = c->tls_min_version,
        .max_version = c->tls_max_version,
    };
    if (tls_check_options(&o, err, sizeof err)) {
        fprintf(stderr, "ketch: %s\n", err);
        return -1;
    }
    /* Peer TLS: checked now so a bad flag fails at start, not at the
     * first peer connection; used once peers talk over TLS. */
    if (check_file("peer-cert-file", c->peer_cert_file) ||
        check_file("peer-key-file", c->peer_key_file) ||
        check_file("peer-trusted-ca-file", c->peer_trusted_ca_file))
        return -1;
    if (given(c->peer_cert_file) != given(c->peer_key_file)) {
        fprintf(stderr, "ketch: --peer-cert-file and --peer-key-file must be given together\n");
        return -1;
    }
    if (c->peer_client_cert_auth && !given(c->peer_trusted_ca_file)) {
        fprintf(stderr, "ketch: --peer-client-cert-auth needs --peer-trusted-ca-file\n");
        return -1;
    }
    if (check_file("cert-file", c->cert_file) || check_file("key-file", c->key_file) ||
        check_file("trusted-ca-file", c->trusted_ca_file))
        return -1;
    if (!need) {
        if (given(c->cert_file) || c->auto_tls)
            log_warn("scheme is HTTP while key and cert files are present; ignoring key and cert "
                     "files");
        return 0;
    }
    char cert[4200], key[4200];
    if (!given(c->cert_file) && !given(c->key_file) && c->auto_tls) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/fixtures/client", c->data_dir);
        size_t n;
        char **hosts = url_hosts(c->listen_client_urls, c->advertise_client_urls, &n);
        int rv = tls_self_cert(dir, (const char *const *)hosts, n, err, sizeof err);
        config_strv_free(hosts);
        if (rv) {
            fprintf(stderr, "ketch: --auto-tls: %s\n", err);
            return -1;
        }
        snprintf(cert, sizeof cert, "%s/cert.pem", dir);
        snprintf(key, sizeof key, "%s/key.pem", dir);
        o.cert_file = cert;
        o.key_file = key;
        log_info("auto-tls: serving clients with the self-signed certificate %s", cert);
    } else if (c->auto_tls) {
        log_warn("ignoring client auto TLS since certs given");
    }
    if (!given(o.cert_file) || !given(o.key_file)) {
        fprintf(stderr, "ketch: TLS key/cert (--cert-file, --key-file) must be provided for "
                        "client url with HTTPS scheme\n");
        return -1;
    }
    if (tls_ctx_new(out, &o, err, sizeof err)) {
        fprintf(stderr, "ketch: client TLS: %s\n", err);
        return -1;
    }
    return 0;
}

int security_peer_setup(const struct config *c, bool need, tls_ctx **server, tls_ctx **client)
{
    char err[512];
    *server = *client = NULL;
    bool files = given(c->peer_cert_file) && given(c->peer_key_file);
    if (!need) {
        if (files || c->peer_auto_tls)
            log_warn("peer scheme is HTTP while key and cert files are present; ignoring key and "
                     "cert files");
        return 0;
    }
    struct tls_options o = {
        .cert_file = c->peer_cert_file,
        .key_file = c->peer_key_file,
        .trusted_ca_file = c->peer_trusted_ca_file,
        .client_cert_auth = c->peer_client_cert_auth,
        .cipher_suites = c->cipher_suites,
        .min_version = c->tls_min_version,
        .max_version = c->tls_max_version,
    };
    bool skip_verify = false;
    char cert[4200], key[4200];
    if (!files && c->peer_auto_tls) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/fixtures/peer", c->data_dir);
        size_t n;
        char **hosts = url_hosts(c->listen_peer_urls, c->initial_advertise_peer_urls, &n);
        int rv = tls_self_cert(dir, (const char *const *)hosts, n, err, sizeof err);
        config_strv_free(hosts);
        if (rv) {
            fprintf(stderr, "ketch: --peer-auto-tls: %s\n", err);
            return -1;
        }
        snprintf(cert, sizeof cert, "%s/cert.pem", dir);
        snprintf(key, sizeof key, "%s/key.pem", dir);
        o.cert_file = cert;
        o.key_file = key;
        /* as etcd: self-signed peers cannot verify each other */
        skip_verify = !given(c->peer_trusted_ca_file);
        if (skip_verify) o.client_cert_auth = false;
        log_info("peer-auto-tls: serving peers with the self-signed certificate %s", cert);
    } else if (c->peer_auto_tls) {
        log_warn("ignoring peer auto TLS since certs given");
    }
    if (!given(o.cert_file) || !given(o.key_file)) {
        fprintf(stderr, "ketch: TLS key/cert (--peer-cert-file, --peer-key-file) must be provided "
                        "for peer url with HTTPS scheme\n");
        return -1;
    }
    if (tls_ctx_new(server, &o, err, sizeof err)) {
        fprintf(stderr, "ketch: peer TLS: %s\n", err);
        return -1;
    }
    if (tls_ctx_new_client(client, &o, skip_verify, NULL, err, sizeof err)) {
        fprintf(stderr, "ketch: peer TLS: %s\n", err);
        tls_ctx_free(*server);
        *server = NULL;
        return -1;
    }
    return 0;
}
