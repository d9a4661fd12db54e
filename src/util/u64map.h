/* A small open-addressing hash map from non-zero uint64_t keys to pointers
 * (used for in-flight proposals by request ID). */
#ifndef KETCH_UTIL_U64MAP_H
#define KETCH_UTIL_U64MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct u64map {
    uint64_t *keys; /* 0 = empty slot */
    void **vals;
    size_t cap, len;
} u64map;

/* Inserts or replaces; key must not be 0. Returns 0, or -1 out of memory. */
int u64map_put(u64map *m, uint64_t key, void *val);
/* The value for key, or NULL. */
void *u64map_get(const u64map *m, uint64_t key);
/* Removes key and returns its value (NULL if absent). */
void *u64map_del(u64map *m, uint64_t key);
void u64map_free(u64map *m);

#endif
