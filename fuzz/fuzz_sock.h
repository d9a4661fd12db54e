/* Shared by the connection fuzz targets (fuzz_conn.c, fuzz_peer.c): the
 * client end of a socketpair the server under test adopted, and a
 * throwaway self-signed TLS context. Each target includes it once, after
 * defining its own `static uv_loop_t loop; static size_t answered;`. */
#ifndef KETCH_FUZZ_SOCK_H
#define KETCH_FUZZ_SOCK_H

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "net/tls.h"

/* Reads and drops what the server sent; true if anything came. */
static bool drain(int fd)
{
    char buf[65536];
    bool got = false;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) return got;
        got = true;
        answered += (size_t)n;
    }
}

/* Writes all of p, running the loop while the socket is full. */
static void put(int fd, const uint8_t *p, size_t n)
{
    int stuck = 0;
    while (n > 0 && stuck < 1000) {
        ssize_t w = write(fd, p, n);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            stuck = 0;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EINTR) return; /* the server closed it */
        uv_run(&loop, UV_RUN_NOWAIT);
        drain(fd);
        stuck++;
    }
}

/* A server TLS context with a fresh self-signed certificate for `hosts`
 * (also its own trusted CA when client_cert_auth); aborts on failure. */
__attribute__((unused)) static tls_ctx *self_signed_tls(const char *const *hosts, size_t n_hosts, bool client_cert_auth)
{
    char dir[] = "/tmp/ketch-fuzz-tls-XXXXXX", err[256] = "";
    if (!mkdtemp(dir) || tls_self_cert(dir, hosts, n_hosts, err, sizeof err)) {
        fprintf(stderr, "fuzz: self-signed certificate: %s\n", err);
        abort();
    }
    char cert[512], key[512];
    snprintf(cert, sizeof cert, "%s/cert.pem", dir);
    snprintf(key, sizeof key, "%s/key.pem", dir);
    struct tls_options o = {.cert_file = cert, .key_file = key,
                            .trusted_ca_file = client_cert_auth ? cert : NULL,
                            .client_cert_auth = client_cert_auth};
    tls_ctx *t;
    if (tls_ctx_new(&t, &o, err, sizeof err)) {
        fprintf(stderr, "fuzz: tls: %s\n", err);
        abort();
    }
    unlink(cert);
    unlink(key);
    rmdir(dir);
    return t;
}

#endif
