/* Private to api/: what the lock and election services share — server-side
 * equivalents of etcd's clientv3/concurrency (the session lease, the
 * create-revision-guarded txns, waitDeletes), run inside the server instead
 * of through a client, and the waiters they park while waiting.
 *
 * Waiting is state-based: after entries are applied (and every
 * CONC_SWEEP_MS), each parked waiter whose call is still alive re-reads the
 * store if the revision moved; a waiter whose call died (client gone,
 * deadline) gets its `dead` callback instead. Checks run from a libuv timer,
 * never inside api_apply, so they may propose. */
#ifndef KETCH_API_CONCURRENCY_H
#define KETCH_API_CONCURRENCY_H

#include <stdbool.h>

#include "api/api.h"
#include "api/propose.h"
#include "kv.pb-c.h"

/* etcd's concurrency.defaultSessionTTL: the lease granted for a request
 * that names none (lease 0). */
#define CONC_SESSION_TTL 60

typedef ProtobufCBinaryData conc_bytes;

struct conc_waiter {
    grpc_call *call; /* the waiting call; the owner holds a reference */
    /* The store changed (or the waiter was just parked): re-read it. If the
     * wait is over, it must conc_unpark the waiter (and may free it). */
    void (*check)(api_server *s, struct conc_waiter *w);
    /* The call is no longer alive: conc_unpark, clean up (etcd's
     * cancellation paths: unlock / resign) and free. */
    void (*dead)(api_server *s, struct conc_waiter *w);
    struct conc_waiter *prev, *next; /* private */
    bool parked;                      /* private */
};

/* Parks `w` (borrowed until conc_unpark) and checks it once at once.
 * Returns 0 or KERR_NOMEM (then nothing was parked or checked). */
int conc_park(api_server *s, struct conc_waiter *w);
/* Unparks `w` (no-op if it is not parked). */
void conc_unpark(api_server *s, struct conc_waiter *w);
/* api_apply's hook: schedules a check of the parked waiters. */
void conc_applied(api_server *s);

/* ---- answers ---- */

/* etcd's lock and election servers return their client's errors as plain
 * errors: gRPC Unknown with the text. */
void conc_fail(grpc_call *call, int kerr);
void conc_fail_text(grpc_call *call, const char *text);

/* ---- keys and reads (arena memory; valid until the arena is freed) ---- */

/* name + "/" */
conc_bytes conc_prefix(arena *a, conc_bytes name);
/* etcd's fmt.Sprintf("%s%x", pfx, leaseID) */
conc_bytes conc_lease_key(arena *a, conc_bytes pfx, int64_t lease);
/* etcd's GetPrefixRangeEnd */
conc_bytes conc_prefix_end(arena *a, conc_bytes pfx);

/* The KeyValue under `pfx` with the smallest create revision (etcd's
 * WithFirstCreate), or with max_create != 0 the one with the largest create
 * revision <= max_create (WithLastCreate + WithMaxCreateRev); *kv NULL when
 * none. Reads the local store at its current revision. Returns 0 or a
 * KERR_* code. */
int conc_first_create(api_server *s, arena *a, conc_bytes pfx, Mvccpb__KeyValue **kv);
int conc_last_create_before(api_server *s, arena *a, conc_bytes pfx, int64_t max_create,
                            Mvccpb__KeyValue **kv);
/* The live KeyValue of `key`, or NULL. */
int conc_get(api_server *s, arena *a, conc_bytes key, Mvccpb__KeyValue **kv);

/* ---- proposals ---- */

Etcdserverpb__RequestOp *conc_op_put(arena *a, conc_bytes key, conc_bytes value, int64_t lease);
Etcdserverpb__RequestOp *conc_op_get(arena *a, conc_bytes key);
/* WithFirstCreate over the prefix: sort by create ascending, limit 1 */
Etcdserverpb__RequestOp *conc_op_get_first(arena *a, conc_bytes pfx);
Etcdserverpb__RequestOp *conc_op_delete(arena *a, conc_bytes key);

/* Proposes "if create_revision(key) == create_rev then ops_then else
 * ops_else" (arrays borrowed for the call). As api_propose_internal: cb gets
 * the packed TxnResponse; if this returns non-zero, cb never runs.
 * `caller` (may be NULL: the server's own clean-up, run as root): the
 * client call it is made for; the entry carries its user and is checked
 * at apply against that user's permissions. */
int conc_propose_txn(api_server *s, grpc_call *caller, conc_bytes key, int64_t create_rev,
                     Etcdserverpb__RequestOp **ops_then, size_t n_then,
                     Etcdserverpb__RequestOp **ops_else, size_t n_else, api_propose_fn cb,
                     void *data);
/* Proposes a DeleteRange of one key; cb gets a DeleteRangeResponse. */
int conc_propose_delete(api_server *s, grpc_call *caller, conc_bytes key, api_propose_fn cb,
                        void *data);
/* Best effort, nobody waits: the txn above with only ops_then. Used where
 * etcd cleans up after a cancelled wait (Unlock, Resign). */
void conc_propose_forget(api_server *s, conc_bytes key, int64_t create_rev,
                         Etcdserverpb__RequestOp *op);
/* etcd's NewSession without a lease: grants one of CONC_SESSION_TTL
 * seconds, which nobody keeps alive (the server orphans the session).
 * *id is the lease's ID; cb gets the LeaseGrantResponse. */
int conc_grant_session(api_server *s, int64_t *id, api_propose_fn cb, void *data);

/* Unpacks the TxnResponse given to a txn's callback (free with
 * etcdserverpb__txn_response__free_unpacked), or NULL. */
Etcdserverpb__TxnResponse *conc_txn_unpack(const uint8_t *resp, size_t len);
/* The kvs of response op `i` of `t` if it is a range, else NULL/0. */
size_t conc_txn_range(const Etcdserverpb__TxnResponse *t, size_t i, Mvccpb__KeyValue ***kvs);

#endif
