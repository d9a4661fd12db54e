/* Private to api/: proposing writes through Raft and waiting for reads. */
#ifndef KETCH_API_PROPOSE_H
#define KETCH_API_PROPOSE_H

#include "api/api.h"

/* Drops the unknown fields of `m` and of every message inside it, in
 * place (freeing them with free(), as protobuf-c's default allocator
 * allocated them in unpack). Requests proposed through Raft carry no
 * unknown fields, as etcd's do not: protobuf-c accepts some it cannot
 * re-encode into something it would unpack again (field number 0), and
 * a committed entry that no member can decode would leave its client
 * waiting. `m` must come from protobuf-c unpack or have no unknown fields
 * (messages built in code or from JSON). */
void api_strip_unknown(ProtobufCMessage *m);

/* Proposes `req` (its id is set here) for `call`. When the entry has been
 * applied, the call gets the response that mvcc produced (with its header
 * filled), or the error. Takes its own reference on `call`. On failure to
 * propose, the call is failed right away. */
void api_propose(api_server *s, grpc_call *call, Ketchpb__InternalRequest *req);

/* As api_propose, for auth requests (Authenticate, user and role changes,
 * enable/disable): on a follower, the call is answered only once this
 * member has applied the entry too, so the token it hands out or the
 * change holds here at once (etcd's members answer after their own
 * apply). Other writes are answered as soon as the leader applied them. */
void api_propose_auth(api_server *s, grpc_call *call, Ketchpb__InternalRequest *req);

/* As api_propose, but never forwarded: fails with KERR_NOT_LEADER /
 * KERR_NO_LEADER unless this member leads (ketchpb.Internal/Propose, so a
 * request is forwarded at most once). */
void api_propose_local(api_server *s, grpc_call *call, Ketchpb__InternalRequest *req);

/* Completion of api_propose_internal. err 0: the entry was applied and
 * `resp` (len bytes, borrowed for the call) is the packed response message
 * mvcc produced for it (e.g. a TxnResponse), header filled. Otherwise
 * a KERR_* code: the request failed at apply (resp NULL), or was never
 * committed (KERR_STOPPED, KERR_NOT_LEADER...). Runs after the apply, from
 * the member's completion, never inside api_apply: it may propose again. */
typedef void (*api_propose_fn)(api_server *s, void *data, int err, const uint8_t *resp,
                               size_t len);

/* Proposes `req` (its id is set here) on behalf of the server itself (lock
 * and election services): as api_propose, but the outcome goes to `cb`.
 * Returns 0, or a KERR_* code (KERR_STOPPED, KERR_REQUEST_TOO_LARGE,
 * KERR_NOMEM, KERR_NOT_LEADER...) and then `cb` never runs. */
int api_propose_internal(api_server *s, Ketchpb__InternalRequest *req, api_propose_fn cb,
                         void *data);

/* As api_propose_internal, but checked at apply as the user stamped in
 * `req` (auth_user, auth_revision: auth_api_stamp), not as root: what the
 * lock and election services propose for a client (etcd's run through a
 * client with the caller's credentials). */
int api_propose_as(api_server *s, Ketchpb__InternalRequest *req, api_propose_fn cb, void *data);

/* A read that runs once it may observe every write committed before it
 * arrived (linearizable), or, if serializable, once this member's store
 * has applied every write this member answered (s->ryw_index: at once
 * unless a forwarded write was answered before its apply here; fails
 * with KERR_TIMEOUT at the call's deadline / etcd's request timeout).
 * Takes ownership of
 * `req` (an unpacked message, freed after `exec` returns); `exec` must
 * finish the call. */
typedef void (*api_read_fn)(api_server *s, grpc_call *call, const ProtobufCMessage *req);
void api_read(api_server *s, grpc_call *call, ProtobufCMessage *req, bool serializable,
              api_read_fn exec);

#endif
