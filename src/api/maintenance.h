/* Private to api/: the Maintenance service's handlers, the backend quota,
 * the compaction sweep and auto-compaction (api/maintenance.c). */
#ifndef KETCH_API_MAINTENANCE_H
#define KETCH_API_MAINTENANCE_H

#include "api/api.h"
#include "net/tls.h"

void maintenance_status(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void maintenance_alarm(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void maintenance_hash(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void maintenance_hash_kv(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void maintenance_defragment(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
/* ketchpb.Internal/HashKV (peer port): HashKV for other members' checks. */
void internal_hash_kv(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);

/* A HashKV computed by maint_hash_kv_async. */
struct maint_hash {
    int rv;           /* 0, or the KERR_* code HashKV fails with */
    uint32_t hash;
    int64_t current;  /* the store's revision when the hash began */
    int64_t compact;  /* compact revision (-1: never compacted), as etcd */
    int64_t hash_rev; /* the revision hashed */
};
typedef void (*maint_hash_fn)(api_server *s, void *data, const struct maint_hash *h);

/* HashKV at `rev` (0: the current revision), the one code path of
 * Maintenance.HashKV, ketchpb.Internal/HashKV and the corruption checks:
 * checked and started on `loop` (s->loop, or the start-up check's own),
 * computed on libuv's thread pool from a read snapshot, so the loop goes
 * on serving meanwhile. `cb` runs once on `loop`, never inside this call
 * (h->rv KERR_STOPPED if the work was cancelled); `h` is borrowed for the
 * callback. Returns 0, or KERR_COMPACTED / KERR_FUTURE_REV / KERR_NOMEM /
 * KERR_IO / KERR_INTERNAL (then cb never runs). */
int maint_hash_kv_async(api_server *s, uv_loop_t *loop, int64_t rev, maint_hash_fn cb,
                        void *data);

/* etcd's quota costs (quota.go): a put, a txn (its bigger branch's puts,
 * top level only), a lease grant. */
int64_t maint_cost_put(const Etcdserverpb__PutRequest *p);
int64_t maint_cost_txn(const Etcdserverpb__TxnRequest *t);
int64_t maint_cost_lease(void);

/* etcd's quotaAlarmer.check: 0 if a request of `cost` fits under
 * --quota-backend-bytes, else KERR_NO_SPACE (and this member's NOSPACE
 * alarm is proposed, once at a time). */
int maint_quota_check(api_server *s, int64_t cost);

/* The corruption check (api/corrupt.c): one round, if this member leads
 * and none is running; and stopping a round in progress (its callbacks
 * then only free it). Other members are asked over their peer URLs
 * (ketchpb.Internal/HashKV, through s->peer: TLS as the --peer-* flags
 * say), as etcd asks them on the peer port (/members/hashkv). */
void maint_corrupt_check(api_server *s);
void maint_corrupt_stop(void);

/* etcd's CheckInitialHashKV (--experimental-initial-corrupt-check), run at
 * start-up before Raft and the client ports serve: hashes this member's
 * store at its current revision and asks every other member in the table
 * for HashKV at that revision over their peer URLs
 * (ketchpb.Internal/HashKV), on a private loop with a dial-only peer
 * transport using `peer_client_tls` (borrowed; NULL: cleartext peers),
 * all calls bounded by timeout_ms. A member with the same compact revision
 * and another hash is a mismatch: logs etcd's
 * "<id> found data inconsistency with peers" and returns -1. Members that
 * are down, unreachable, behind (future revision) or compacted past it are
 * skipped with a warning, as etcd. Returns 0 otherwise. */
int maint_initial_check(api_server *s, tls_ctx *peer_client_tls, uint64_t timeout_ms);

#endif
