#include "util/u64map.h"

#include <stdlib.h>

static size_t slot_of(uint64_t key, size_t cap)
{
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdULL;
    key ^= key >> 33;
    return (size_t)key & (cap - 1);
}

static int grow(u64map *m)
{
    size_t cap = m->cap ? m->cap * 2 : 64;
    uint64_t *keys = calloc(cap, sizeof *keys);
    void **vals = calloc(cap, sizeof *vals);
    if (keys == NULL || vals == NULL) {
        free(keys);
        free(vals);
        return -1;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (m->keys[i] == 0) continue;
        size_t j = slot_of(m->keys[i], cap);
        while (keys[j] != 0) j = (j + 1) & (cap - 1);
        keys[j] = m->keys[i];
        vals[j] = m->vals[i];
    }
    free(m->keys);
    free(m->vals);
    m->keys = keys;
    m->vals = vals;
    m->cap = cap;
    return 0;
}

int u64map_put(u64map *m, uint64_t key, void *val)
{
    if ((m->len + 1) * 2 > m->cap && grow(m) != 0) return -1;
    size_t i = slot_of(key, m->cap);
    while (m->keys[i] != 0 && m->keys[i] != key) i = (i + 1) & (m->cap - 1);
    if (m->keys[i] == 0) m->len++;
    m->keys[i] = key;
    m->vals[i] = val;
    return 0;
}

void *u64map_get(const u64map *m, uint64_t key)
{
    if (m->cap == 0) return NULL;
    size_t i = slot_of(key, m->cap);
    while (m->keys[i] != 0) {
        if (m->keys[i] == key) return m->vals[i];
        i = (i + 1) & (m->cap - 1);
    }
    return NULL;
}

void *u64map_del(u64map *m, uint64_t key)
{
    if (m->cap == 0) return NULL;
    size_t i = slot_of(key, m->cap);
    while (m->keys[i] != key) {
        if (m->keys[i] == 0) return NULL;
        i = (i + 1) & (m->cap - 1);
    }
    void *val = m->vals[i];
    m->keys[i] = 0;
    m->vals[i] = NULL;
    m->len--;
    /* Re-insert the rest of the probe run (backward-shift deletion). */
    size_t j = (i + 1) & (m->cap - 1);
    while (m->keys[j] != 0) {
        uint64_t k = m->keys[j];
        void *v = m->vals[j];
        m->keys[j] = 0;
        m->vals[j] = NULL;
        m->len--;
        u64map_put(m, k, v);
        j = (j + 1) & (m->cap - 1);
    }
    return val;
}

void u64map_free(u64map *m)
{
    free(m->keys);
    free(m->vals);
    m->keys = NULL;
    m->vals = NULL;
    m->cap = m->len = 0;
}
