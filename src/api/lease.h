/* Private to api/ (and start-up): the Lease service (etcd's
 * etcdserver/api/v3rpc/lease.go + the lease parts of v3_server.go) and the
 * leader's expiry timer. Lease state lives in the store (mvcc, written by
 * the Raft apply) and in the lessor (src/lease: deadlines, leader only). */
#ifndef KETCH_API_LEASE_H
#define KETCH_API_LEASE_H

#include "api/api.h"

/* Creates s->lease and loads every lease of the store into the lessor.
 * Call after api_init and before the member starts (its replay applies
 * entries). heartbeat_ms/election_ms give etcd's minimum TTL. Returns 0 or
 * a negative KERR_* code. */
int lease_api_init(api_server *s, unsigned heartbeat_ms, unsigned election_ms);
/* Once s->member is set: promotes the lessor if this member leads and
 * starts the expiry timer (every LEASE_TICK_MS). */
void lease_api_start(api_server *s);
/* Stops the timer (closes its handle; the loop can then end). */
void lease_api_stop(api_server *s);
/* After the loop has ended: frees s->lease. */
void lease_api_fini(api_server *s);
/* Rebuilds the leases from the store after it was replaced by a snapshot
 * (cluster). 0 or a KERR_* code (then the old ones stay). */
int lease_api_reload(api_server *s);

/* Called by api_apply after every entry the store applied: mirrors grants,
 * revokes and checkpoints into the lessor. */
void lease_api_applied(api_server *s, const Ketchpb__InternalRequest *req,
                       const struct mvcc_result *res);

/* Makes a grant proposable as LeaseGrant does: picks a free ID when
 * req->id is 0 and raises the TTL to the minimum. s->lease must be set. */
void lease_api_prepare_grant(api_server *s, Etcdserverpb__LeaseGrantRequest *req);

/* gRPC handlers. */
void lease_grant(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void lease_revoke(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void lease_keep_alive(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void lease_keep_alive_close(grpc_call *call, void *ctx);
void lease_time_to_live(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void lease_leases(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);

#endif
