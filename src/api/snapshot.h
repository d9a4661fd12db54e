/* Private to api/: Maintenance.Snapshot (etcd's format, see
 * src/snapshot/snapshot.h). */
#ifndef KETCH_API_SNAPSHOT_H
#define KETCH_API_SNAPSHOT_H

#include "api/api.h"

/* GRPC_STREAM handlers: the request message starts the snapshot; the
 * responses are the file in 32 KiB chunks, then its sha256. */
void maintenance_snapshot(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void maintenance_snapshot_close(grpc_call *call, void *ctx);

#endif
