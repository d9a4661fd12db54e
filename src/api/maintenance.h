/* Private to api/: the Maintenance service's handlers, the backend quota,
 * the compaction sweep and auto-compaction (api/maintenance.c). */
#ifndef KETCH_API_MAINTENANCE_H
#define KETCH_API_MAINTENANCE_H

#include "api/api.h"

void maintenance_status(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void maintenance_alarm(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void maintenance_hash(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void maintenance_hash_kv(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void maintenance_defragment(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);

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
 * and none is running; and stopping a round in progress. */
void maint_corrupt_check(api_server *s);
void maint_corrupt_stop(void);

/* etcd's CheckInitialHashKV (--experimental-initial-corrupt-check), run at
 * start-up before Raft and the client ports serve: hashes this member's
 * store at its current revision and asks every other member in the table
 * for HashKV at that revision over their client URLs, on a private loop,
 * each call bounded by timeout_ms. A member with the same compact revision
 * and another hash is a mismatch: logs etcd's
 * "<id> found data inconsistency with peers" and returns -1. Members that
 * are down, behind (future revision), compacted past it, or unreachable
 * over TLS are skipped with a warning, as etcd. Returns 0 otherwise. */
int maint_initial_check(api_server *s, uint64_t timeout_ms);

#endif
