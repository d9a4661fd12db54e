/* Private to api/: proposing writes through Raft and waiting for reads. */
#ifndef KETCH_API_PROPOSE_H
#define KETCH_API_PROPOSE_H

#include "api/api.h"

/* Proposes `req` (its id is set here) for `call`. When the entry has been
 * applied, the call gets the response that mvcc produced (with its header
 * filled), or the error. Takes its own reference on `call`. On failure to
 * propose, the call is failed right away. */
void api_propose(api_server *s, grpc_call *call, Ketchpb__InternalRequest *req);

/* A read that runs once it may observe every write committed before it
 * arrived (linearizable), or at once if serializable. Takes ownership of
 * `req` (an unpacked message, freed after `exec` returns); `exec` must
 * finish the call. */
typedef void (*api_read_fn)(api_server *s, grpc_call *call, const ProtobufCMessage *req);
void api_read(api_server *s, grpc_call *call, ProtobufCMessage *req, bool serializable,
              api_read_fn exec);

#endif
