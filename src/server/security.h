/* TLS set-up from etcd's security flags (--cert-file, --auto-tls, ...). */
#ifndef KETCH_SERVER_SECURITY_H
#define KETCH_SERVER_SECURITY_H

#include "net/tls.h"
#include "server/config.h"

/* Checks every TLS flag (client and peer) and, when some client URL is
 * https (`need`), creates the client context into *out (with --auto-tls
 * and no --cert-file/--key-file: a self-signed certificate in
 * <data-dir>/fixtures/client, made once, as etcd does). *out stays NULL
 * when TLS is not needed. Prints etcd-like messages to stderr; returns 0
 * or -1. */
int security_setup(const struct config *c, bool need, tls_ctx **out);

/* Peer TLS, when the peer URLs are https (`need`): the server context
 * (accepting peers: --peer-cert-file/--peer-key-file, with
 * --peer-client-cert-auth requiring a certificate the
 * --peer-trusted-ca-file signed) and the client context (dialling peers:
 * the same certificate, verifying theirs against the CA). With
 * --peer-auto-tls and no files: a self-signed certificate in
 * <data-dir>/fixtures/peer, and peers' certificates are not verified (as
 * etcd). Both stay NULL when not needed. Returns 0 or -1 (message on
 * stderr). */
int security_peer_setup(const struct config *c, bool need, tls_ctx **server, tls_ctx **client);

#endif
