/* libraft's heap, with big buffers kept in files (see bigheap.c). */
#ifndef KETCH_MEMBER_BIGHEAP_H
#define KETCH_MEMBER_BIGHEAP_H

#include <stddef.h>

/* Installs the heap (once per process; later calls do nothing): buffers
 * of at least `threshold` bytes that libraft allocates become shared
 * mappings of unlinked files in `dir`. Returns 0 or -1 (out of memory). */
int bigheap_install(const char *dir, size_t threshold);

/* Maps the whole file `fd` (read/write, shared) as a buffer that
 * raft_free releases (munmap); the file may be unlinked and fd closed.
 * Returns the buffer or NULL. */
void *bigheap_map_fd(int fd, size_t len);

#endif
