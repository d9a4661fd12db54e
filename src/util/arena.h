/* A bump allocator for building one response: every allocation lives until
 * arena_reset() or arena_free(). Used to assemble protobuf-c responses whose
 * many small pieces (KeyValues, copies of keys read from LMDB) are freed at
 * once after packing. Out of memory aborts with a message (server policy). */
#ifndef KETCH_UTIL_ARENA_H
#define KETCH_UTIL_ARENA_H

#include <stddef.h>

struct arena_chunk;
typedef struct arena {
    struct arena_chunk *head;
} arena;

#define ARENA_INIT {NULL}

/* Returns `size` bytes aligned to 16, owned by the arena. */
void *arena_alloc(arena *a, size_t size);
/* Zeroed allocation. */
void *arena_calloc(arena *a, size_t n, size_t size);
/* Copies `len` bytes into the arena (len may be 0; returns a valid pointer). */
void *arena_dup(arena *a, const void *src, size_t len);
/* Frees everything allocated from the arena; the arena can be reused. */
void arena_free(arena *a);

#endif
