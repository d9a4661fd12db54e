/* Private to api/: the v3lockpb.Lock service (lock.c). */
#ifndef KETCH_API_LOCK_H
#define KETCH_API_LOCK_H

#include "api/api.h"

void lock_lock(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void lock_unlock(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);

#endif
