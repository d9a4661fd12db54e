/* libraft's heap with big buffers in files.
 *
 * libraft hands a snapshot around as one buffer: the leader sends one, a
 * member receives one (its transport allocates the whole message), and
 * one is loaded from disk at start. Ours carry the whole store, so those
 * buffers are as big as the database. Allocated with malloc they would be
 * anonymous memory: a store larger than RAM could not be sent at all.
 * Here every allocation of at least `threshold` bytes is a shared mapping
 * of an unlinked file in the Raft directory: its pages live in the page
 * cache, which the kernel writes back and evicts under memory pressure,
 * so a snapshot of any size needs disk, not RAM. raft_free unmaps it.
 * Smaller allocations (almost all) go to malloc; a failed mapping falls
 * back to malloc too. Thread-safe: libraft's and our worker threads
 * allocate as well. */
#include "member/bigheap.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <raft.h>

#include "util/log.h"

#define MAX_BIG 64

struct big {
    void *p;
    size_t len;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct big bigs[MAX_BIG];
static char *big_dir;
static size_t big_threshold;
static struct raft_heap heap;
static int installed;

static int track(void *p, size_t len)
{
    int ok = 0;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < MAX_BIG && !ok; i++)
        if (bigs[i].p == NULL) {
            bigs[i].p = p;
            bigs[i].len = len;
            ok = 1;
        }
    pthread_mutex_unlock(&lock);
    return ok;
}

/* The length of big buffer p (and forgets it if `forget`), or 0. */
static size_t lookup(void *p, int forget)
{
    size_t len = 0;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < MAX_BIG; i++)
        if (bigs[i].p == p && p != NULL) {
            len = bigs[i].len;
            if (forget)
                bigs[i].p = NULL;
            break;
        }
    pthread_mutex_unlock(&lock);
    return len;
}

void *bigheap_map_fd(int fd, size_t len)
{
    void *p = mmap(NULL, len ? len : 1, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return NULL;
    if (!track(p, len ? len : 1)) {
        munmap(p, len ? len : 1);
        return NULL;
    }
    return p;
}

static void *big_alloc(size_t size)
{
    int fd = open(big_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) {
        char path[4200];
        snprintf(path, sizeof path, "%s/big-XXXXXX", big_dir);
        fd = mkostemp(path, O_CLOEXEC);
        if (fd >= 0)
            unlink(path);
    }
    if (fd < 0)
        return NULL;
    void *p = NULL;
    if (ftruncate(fd, (off_t)size) == 0)
        p = bigheap_map_fd(fd, size);
    close(fd);
    return p;
}

static void *h_malloc(void *data, size_t size)
{
    (void)data;
    if (size >= big_threshold) {
        void *p = big_alloc(size);
        if (p != NULL)
            return p;
    }
    return malloc(size);
}

static void h_free(void *data, void *ptr)
{
    (void)data;
    size_t len = lookup(ptr, 1);
    if (len > 0)
        munmap(ptr, len);
    else
        free(ptr);
}

static void *h_calloc(void *data, size_t nmemb, size_t size)
{
    (void)data;
    if (size != 0 && nmemb >= big_threshold / size) {
        void *p = big_alloc(nmemb * size); /* a new file reads as zeros */
        if (p != NULL)
            return p;
    }
    return calloc(nmemb, size);
}

static void *h_realloc(void *data, void *ptr, size_t size)
{
    size_t old = lookup(ptr, 0);
    if (old == 0 && size < big_threshold)
        return realloc(ptr, size);
    if (ptr == NULL)
        return h_malloc(data, size);
    size_t have = old > 0 ? old : malloc_usable_size(ptr);
    void *p = h_malloc(data, size);
    if (p == NULL)
        return NULL;
    memcpy(p, ptr, have < size ? have : size);
    h_free(data, ptr);
    return p;
}

static void *h_aligned_alloc(void *data, size_t alignment, size_t size)
{
    (void)data;
    return aligned_alloc(alignment, size);
}

static void h_aligned_free(void *data, size_t alignment, void *ptr)
{
    (void)data, (void)alignment;
    free(ptr);
}

int bigheap_install(const char *dir, size_t threshold)
{
    if (installed)
        return 0;
    big_dir = strdup(dir);
    if (big_dir == NULL)
        return -1;
    big_threshold = threshold;
    heap.malloc = h_malloc;
    heap.free = h_free;
    heap.calloc = h_calloc;
    heap.realloc = h_realloc;
    heap.aligned_alloc = h_aligned_alloc;
    heap.aligned_free = h_aligned_free;
    raft_heap_set(&heap);
    installed = 1;
    return 0;
}
