/* Private to api/: the KV service's gRPC handlers (grpc_message_fn). */
#ifndef KETCH_API_KV_H
#define KETCH_API_KV_H

#include "api/api.h"

void kv_range(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void kv_put(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void kv_delete_range(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void kv_txn(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void kv_compact(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);

#endif
