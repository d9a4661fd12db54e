/* Whole-store Raft snapshots: the member's copy and install callbacks
 * (see member_config), with the api_server as ctx. */
#ifndef KETCH_API_CATCHUP_H
#define KETCH_API_CATCHUP_H

#include "api/api.h"

/* Worker thread: a compacted copy of the store's last commit into `path`. */
int api_catchup_copy(void *ctx, const char *path, uint64_t *applied);
/* Loop: the store becomes the copy in `path`; leases, the member table and
 * watchers follow. */
int api_catchup_install(void *ctx, const char *path, uint64_t *applied);
/* Loop: pins the store (no defrag swap) while a copy runs. */
void api_catchup_pin(void *ctx, int delta);

#endif
