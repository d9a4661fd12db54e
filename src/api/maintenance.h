/* Private to api/: the Maintenance service's handlers. */
#ifndef KETCH_API_MAINTENANCE_H
#define KETCH_API_MAINTENANCE_H

#include "api/api.h"

void maintenance_status(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void maintenance_alarm(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);

#endif
