/* Private to api/ (and start-up): etcdserverpb.Watch (etcd's
 * etcdserver/api/v3rpc/watch.go) over the watch hub (src/watch). */
#ifndef KETCH_API_WATCH_H
#define KETCH_API_WATCH_H

#include "api/api.h"

/* Creates s->watch (the hub and its timers). progress_ms: etcd's
 * --experimental-watch-progress-notify-interval in ms (0: 10 minutes).
 * Call after api_init, before the member starts (its replay applies
 * entries, which the hub then sees). Returns 0 or a negative KERR_*. */
int watch_api_init(api_server *s, uint64_t progress_ms);
/* Closes the timers (the loop can then end). */
void watch_api_stop(api_server *s);
/* After the loop has ended: frees s->watch and what streams left. */
void watch_api_fini(api_server *s);
/* The store was replaced by a snapshot whose revision is past `old_rev`:
 * watchers catch up from its history (cluster). */
void watch_api_store_replaced(api_server *s, int64_t old_rev);

/* gRPC handlers of "/etcdserverpb.Watch/Watch" (GRPC_STREAM). */
void watch_watch(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void watch_watch_close(grpc_call *call, void *ctx);

#endif
