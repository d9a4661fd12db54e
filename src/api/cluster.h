/* Private to api/: the Cluster service's handlers and the member table's
 * apply (see api.h for the rest of api/cluster.c). */
#ifndef KETCH_API_CLUSTER_H
#define KETCH_API_CLUSTER_H

#include "api/api.h"
#include "client/client.h"
#include "member/peer.h"

void cluster_member_list(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void cluster_member_add(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void cluster_member_remove(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void cluster_member_update(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void cluster_member_promote(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
/* Maintenance.MoveLeader (leader only, as etcd's). */
void cluster_move_leader(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);

/* Applies req->member_attr_set / req->member_change to the table (and the
 * store's meta table). Returns 0 or a storage error (fatal). */
int api_cluster_apply(api_server *s, const Ketchpb__InternalRequest *req);
/* Whether member `id` was removed from the cluster. */
bool api_cluster_is_removed(const api_server *s, uint64_t id);
/* Reloads the member table from the store after it was replaced by a
 * snapshot. 0 or a KERR_* code. */
int api_cluster_reload(api_server *s);

/* Opens an HTTP/2 client connection to member `id`'s peer port (its
 * first peer URL), where ketchpb.Internal and the Cluster methods a member
 * needs from another are served, through `pn` (whose loop is `loop`; TLS
 * as pn's client context says). Calls may be started at once; if the peer
 * cannot be reached (refused, TLS refused, no handshake in time) they fail
 * with UNAVAILABLE. *out is the caller's until client_conn_close. Returns
 * 0, KERR_MEMBER_NOT_FOUND (no such member or no peer URL) or KERR_NOMEM
 * (also: a bad address). */
int api_cluster_peer_open(const api_server *s, peer_net *pn, uv_loop_t *loop, uint64_t id,
                          client_conn_cb on_event, void *arg, struct client_conn **out);

#endif
