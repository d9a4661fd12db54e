/* Private to api/: requests a follower cannot serve alone go to the leader.
 *
 * libraft appends only on the leader and has no ReadIndex, so a follower
 * forwards writes (a packed InternalRequest, to ketchpb.Internal/Propose),
 * lease keep-alives and TTL queries to the leader, and confirms
 * linearizable reads with it (ketchpb.Internal/ReadIndex: the leader's
 * applied index after a barrier, then wait until applied here). The leader
 * is reached on the client URL it published (api/cluster.c), with the
 * async gRPC client (src/client), one HTTP/2 connection reused for all
 * calls and re-opened when the leader changes; the one to the old leader
 * stays open until the calls in flight on it are answered (the old leader
 * refused them, "not leader", and they go to the new one, or it applied
 * them), see struct lconn in forward.c.
 *
 * While there is no leader (an election), requests wait, up to their
 * deadline: the gRPC deadline, bounded by etcd's request timeout
 * (5 s + 2 × --election-timeout); then they fail as etcd's do: a write
 * or a membership change with "context deadline exceeded"
 * (DeadlineExceeded), a read index or a lease call with "etcdserver:
 * request timed out". */
#ifndef KETCH_API_FORWARD_H
#define KETCH_API_FORWARD_H

#include "api/api.h"
#include "client/client.h"

/* Completion of api_forward_unary. `r` (borrowed for the call) is the
 * leader's reply: r->status 0 and the response message in r->data/len, or
 * an error status and message. `kerr` is the KERR_* code matching the
 * message (KERR_PROPOSE_DEADLINE for Propose and Cluster/Member*, else
 * KERR_TIMEOUT, when the deadline passed without a leader,
 * KERR_LEADER_CHANGED when the connection to the leader broke with the
 * request sent, KERR_STOPPED when the server stops), or 0. */
typedef void (*api_forward_fn)(api_server *s, void *data, int kerr,
                               const struct client_reply *r);

/* Sends the unary call `path` with the packed message `msg` (len bytes,
 * copied) to the leader, waiting for one while there is none (until
 * `deadline`, uv_now() ms; 0: etcd's request timeout from now), and again
 * when the member it reached says it is not the leader (or nothing was
 * sent). `cb` runs exactly once, never inside this call. Returns 0 or
 * KERR_NOMEM / KERR_STOPPED (then cb never runs). */
int api_forward_unary(api_server *s, const char *path, const uint8_t *msg, size_t len,
                      uint64_t deadline, api_forward_fn cb, void *data);

/* Linearizable read on a follower: `cb` runs with 0 once this member has
 * applied everything the leader had committed when the read was confirmed
 * (reads are batched behind one ReadIndex call), or with a KERR_* code.
 * Never inside this call. Returns 0 or KERR_NOMEM / KERR_STOPPED. */
int api_forward_read_index(api_server *s, uint64_t deadline, member_done_fn cb, void *data);

/* `cb` runs with 0 once this member has applied Raft index `index` (the
 * store's applied index), or with KERR_TIMEOUT at `deadline` (uv_now()
 * ms) / KERR_STOPPED. Never inside this call. Returns 0 or KERR_NOMEM /
 * KERR_STOPPED. */
int api_forward_wait_applied(api_server *s, uint64_t index, uint64_t deadline, member_done_fn cb,
                             void *data);

/* As api_forward_wait_applied, but `cb` runs with 0 as soon as
 * `ready(data)` (asked after each turn of the loop) returns true, too. */
int api_forward_wait_until(api_server *s, uint64_t index, uint64_t deadline,
                           bool (*ready)(void *data), member_done_fn cb, void *data);

/* etcd's request timeout from now (uv_now() ms), or `call`'s deadline if
 * sooner (call may be NULL). */
uint64_t api_forward_deadline(api_server *s, grpc_call *call);

/* The ketchpb.Internal handlers (leader side). */
void internal_propose(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void internal_read_index(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void internal_lease_keep_alive(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);

#endif
