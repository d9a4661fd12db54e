/* The data dir's lock: one process at a time (a ketch member, or
 * `ketchctl defrag --data-dir`) may use a data dir, as etcd's bbolt flock
 * on member/snap/db. */
#ifndef KETCH_UTIL_DIRLOCK_H
#define KETCH_UTIL_DIRLOCK_H

#include <stdbool.h>

/* Takes an exclusive flock on <data_dir>/member/lock (created if missing;
 * <data_dir>/member must exist). With wait, blocks until it is free.
 * Returns the descriptor holding the lock (keep it open; closing it or
 * exiting releases the lock), or -1 with errno (EWOULDBLOCK: held by
 * another process). */
int dirlock_take(const char *data_dir, bool wait);

#endif
