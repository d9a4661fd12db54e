/* Private to api/: the Cluster service's handlers. */
#ifndef KETCH_API_CLUSTER_H
#define KETCH_API_CLUSTER_H

#include "api/api.h"

void cluster_member_list(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);

#endif
