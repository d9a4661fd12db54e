/* The peer port: our own libraft transport (struct raft_uv_transport),
 * with TLS when the --peer-* flags ask for it, and the same listener
 * serving HTTP/2 (the ketchpb.Internal gRPC service followers forward to)
 * next to Raft traffic.
 *
 * With TLS, every peer connection is relayed: the network side is a TCP
 * socket with an OpenSSL connection over memory BIOs (net/tls.h), the
 * plaintext side one end of a socketpair; the other end is handed, as a
 * uv_pipe_t, to libraft (Raft traffic) or to the gRPC server (HTTP/2), who
 * never see TLS. Cleartext connections are handed over as the TCP socket
 * itself once it is known what they carry: no relay, no copy.
 *
 *   TCP ─ TLS ─ relay ─ socketpair ─┬─ libraft's stream (raft_malloc'd uv_pipe_t)
 *                                   └─ grpc_server_adopt (HTTP/2: ketchpb.Internal)
 *   TCP (cleartext) ────────────────┬─ libraft's stream (raft_malloc'd uv_tcp_t)
 *                                   └─ grpc_server_adopt_data (with the preface read)
 *
 * An incoming connection is sniffed on its first plaintext bytes: the
 * HTTP/2 client preface goes to the gRPC server; otherwise it must be a
 * Raft handshake (as libraft's TCP transport sends it, all little endian:
 * u64 protocol 1, u64 server ID, u64 address length L, L bytes of address,
 * NUL-terminated and padded with NULs), after which the rest is Raft
 * messages for libraft. Anything else is closed. Refused TLS handshakes
 * (a certificate from another CA, no certificate with
 * --peer-client-cert-auth, plain text on a TLS port) are logged with the
 * reason and closed; nothing reaches libraft or the gRPC server.
 *
 * Outgoing connections (libraft's connect, and peer_net_dial for the
 * forwarding client) verify the peer's certificate against
 * --peer-trusted-ca-file and the host of its address (skipped with
 * --peer-auto-tls and no CA, as etcd's InsecureSkipVerify there).
 *
 * Everything runs on the loop given to peer_net_new. */
#ifndef KETCH_MEMBER_PEER_H
#define KETCH_MEMBER_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "net/tls.h"

struct raft_uv_transport;
typedef struct peer_net peer_net;

/* Serves an HTTP/2 connection: `fd` is one end of a socketpair (TLS) or the
 * TCP socket itself (cleartext), owned by the callee from then on (it must
 * close it if it cannot serve it). `pre` (n bytes, borrowed for the call;
 * NULL if n is 0) is what was already read from fd: the client preface,
 * which the callee must take as the connection's first bytes. */
typedef void (*peer_http2_fn)(void *ctx, uv_os_sock_t fd, const uint8_t *pre, size_t n);

/* `server_tls` (accepting) and `client_tls` (dialling) are borrowed and
 * must outlive the peer_net; both NULL for cleartext peers. Returns 0 or
 * -1 (out of memory). */
int peer_net_new(peer_net **out, uv_loop_t *loop, tls_ctx *server_tls, tls_ctx *client_tls,
                 peer_http2_fn on_http2, void *ctx);

/* At most this many --listen-peer-urls. */
#define PEER_MAX_BINDS 8

/* Listen on each of `addresses` (host:port, one per --listen-peer-urls
 * URL; copied) instead of the member's advertised address (they differ
 * behind a proxy or NAT). n == 0: the advertised one. Call before the
 * member starts. Returns 0, or -1 (out of memory, or n > PEER_MAX_BINDS;
 * the list is then empty). */
int peer_net_set_bind_addresses(peer_net *pn, char *const *addresses, size_t n);

/* etcd's --peer-cert-allowed-cn: with TLS, an incoming peer connection
 * whose verified certificate's CN is not `cn` is refused (logged). NULL
 * or "": any CN. Returns 0 or -1 (out of memory). */
int peer_net_set_allowed_cn(peer_net *pn, const char *cn);

/* The libraft transport backed by `pn` (for member_config.transport).
 * libraft calls its init/listen/connect/close; close ends every relayed
 * connection (Raft and HTTP/2 ones alike) and the listener. */
struct raft_uv_transport *peer_net_transport(peer_net *pn);

/* Completion of peer_net_dial: 0 once the connection (and TLS handshake)
 * to the peer is up, or a negative libuv code if it could not be made
 * (UV_EPROTO: TLS refused, UV_ECANCELED: the peer_net closed). Fires
 * exactly once unless cancelled; the peer_dial handle is invalid after. */
typedef struct peer_dial peer_dial;
typedef void (*peer_dial_fn)(void *arg, int status);

/* Opens a connection to `address` (host:port) and puts a stream socket
 * into *fd at once (owned by the caller, to be served e.g. by
 * client_conn_adopt): bytes written to it go to the peer once the
 * connection is up. Cleartext, it is the TCP socket itself, still
 * connecting (writes wait for the connection; the peer_net keeps a
 * duplicate only until then); with TLS, the local end of a relayed
 * socketpair. If the connection fails, times out or the peer_net closes
 * before it is up, *fd sees an error or EOF. `cb` reports when it is up
 * (or failed); *out is the handle to cancel it with until then. Returns
 * 0, or -1 (bad address, out of memory, closed); then cb never runs and
 * *fd is not set. */
int peer_net_dial(peer_net *pn, const char *address, peer_dial_fn cb, void *arg,
                  uv_os_sock_t *fd, peer_dial **out);

/* The dial callback will not run (the connection itself goes on, until
 * the caller closes its end). Only before the callback ran. */
void peer_dial_cancel(peer_dial *d);

/* Serves an already connected stream socket `fd` (one end of a
 * socketpair: the fuzz target) as if accepted on the peer port. On
 * success pn owns fd; on failure (a negative libuv code) it is the
 * caller's. */
int peer_net_adopt(peer_net *pn, uv_os_sock_t fd);

/* Connections not yet closed (relayed or still in their handshake). */
size_t peer_net_conn_count(const peer_net *pn);

/* Frees `pn` once the transport was closed and the loop has run the
 * close callbacks (or it was never used by libraft). */
void peer_net_free(peer_net *pn);

#endif
