/* Defragmentation without stopping reads and writes (see mvcc.h).
 *
 * etcd's Defragment copies its bbolt file into a new one while holding
 * every lock of the store, so nothing is served until it ends (etcd issue
 * 9222). Here the copy is LMDB's compacting copy (mdb_env_copy2 with
 * MDB_CP_COMPACT: free pages left out, pages renumbered), made from a read
 * snapshot on another thread while applies go on; what was applied after
 * that snapshot is recorded here (the Raft entries, packed again, and the
 * meta records of the layers above) and replayed into the copy, a few at a
 * time on the loop; the last few are replayed at the swap, which renames
 * the copy over the file and reopens it. The replay is the same
 * deterministic apply the Raft log drives, so the copy ends exactly where
 * the store is.
 *
 * Crash safety: the copy is fsynced before it replaces the file, the
 * rename is atomic and the directory is fsynced after it (on the pool,
 * mvcc_defrag_cleanup); a crash before that leaves the old file or the new
 * one, both consistent states (the old one a little behind: the Raft log
 * replays it forward, as after any crash); the copy and the old file are
 * removed by the cleanup or the next defrag. */
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "mvcc/mvcc_int.h"
#include "util/errors.h"
#include "util/log.h"

struct dlog {
    uint64_t index;  /* of the apply; for a meta record, the applied index then */
    char *name;      /* meta record name; NULL: an apply */
    uint8_t *buf;    /* packed InternalRequest (NULL: none) or the record's value */
    size_t len;
};

struct defrag {
    char *tmpdir;
    struct dlog *log;
    size_t n, cap, pos;
    bool failed;      /* recording ran out of memory: the copy cannot catch up */
    mvcc_store *copy; /* the copy, opened by the first step */
};

static void remove_copy(const char *tmpdir)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/data.mdb", tmpdir);
    unlink(path);
    snprintf(path, sizeof path, "%s/old.mdb", tmpdir);
    unlink(path);
    snprintf(path, sizeof path, "%s/lock.mdb", tmpdir);
    unlink(path);
    rmdir(tmpdir);
}

static struct dlog *log_add(mvcc_store *s)
{
    struct defrag *d = s->defrag;
    if (d->failed) return NULL;
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 256;
        struct dlog *l = realloc(d->log, cap * sizeof *l);
        if (l == NULL) {
            d->failed = true;
            return NULL;
        }
        d->log = l;
        d->cap = cap;
    }
    struct dlog *e = &d->log[d->n++];
    memset(e, 0, sizeof *e);
    return e;
}

void defrag_log_apply(mvcc_store *s, uint64_t index, const Ketchpb__InternalRequest *req)
{
    struct dlog *e = log_add(s);
    if (e == NULL) return;
    e->index = index;
    if (req != NULL) {
        e->len = ketchpb__internal_request__get_packed_size(req);
        e->buf = malloc(e->len ? e->len : 1);
        if (e->buf == NULL) {
            s->defrag->failed = true;
            return;
        }
        ketchpb__internal_request__pack(req, e->buf);
    }
}

void defrag_log_meta(mvcc_store *s, const char *name, const uint8_t *val, size_t len)
{
    struct dlog *e = log_add(s);
    if (e == NULL) return;
    e->index = s->applied;
    e->name = strdup(name);
    e->buf = malloc(len ? len : 1);
    e->len = len;
    if (e->name == NULL || e->buf == NULL) {
        s->defrag->failed = true;
        return;
    }
    memcpy(e->buf, val, len);
}

bool mvcc_defrag_running(const mvcc_store *s) { return s->defrag != NULL; }

int mvcc_defrag_begin(mvcc_store *s)
{
    if (s->defrag != NULL) return KERR_BUSY;
    struct defrag *d = calloc(1, sizeof *d);
    if (d == NULL) return KERR_NOMEM;
    size_t n = strlen(s->dir) + 16;
    d->tmpdir = malloc(n);
    if (d->tmpdir == NULL) {
        free(d);
        return KERR_NOMEM;
    }
    snprintf(d->tmpdir, n, "%s/defrag", s->dir);
    remove_copy(d->tmpdir); /* left by a crash during an earlier defrag */
    if (mkdir(d->tmpdir, 0700) != 0) {
        log_error("defrag: mkdir %s: %s", d->tmpdir, strerror(errno));
        free(d->tmpdir);
        free(d);
        return KERR_IO;
    }
    /* The copy sees committed state only: commit what is applied, so
     * everything applied from here on is recorded. */
    int rc = mvcc_flush(s);
    if (rc != 0) {
        remove_copy(d->tmpdir);
        free(d->tmpdir);
        free(d);
        return rc;
    }
    s->defrag = d;
    return 0;
}

/* The copy is made by a thread of its own at the lowest CPU priority,
 * into a pipe; this thread writes it to the file and pushes it to the disk
 * 8 MiB at a time (sync_file_range), so the copy never leaves hundreds of
 * MB of dirty pages for one big writeback that the loop's own commits
 * (fdatasync) would queue behind. */
struct copier {
    MDB_env *env;
    int fd;
    int rc;
};

static void *copy_thread(void *arg)
{
    struct copier *c = arg;
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19);
    c->rc = mdb_env_copyfd2(c->env, c->fd, MDB_CP_COMPACT);
    close(c->fd);
    return NULL;
}

#define SYNC_CHUNK (8u << 20)

int mvcc_defrag_copy(mvcc_store *s)
{
    struct defrag *d = s->defrag;
    char path[4200];
    snprintf(path, sizeof path, "%s/data.mdb", d->tmpdir);
    int out = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (out < 0) {
        log_error("defrag: create %s: %s", path, strerror(errno));
        return KERR_IO;
    }
    int p[2];
    if (pipe(p) != 0) {
        close(out);
        return KERR_IO;
    }
    struct copier c = {s->env, p[1], 0};
    pthread_t th;
    mvcc_reader_enter(s);
    if (pthread_create(&th, NULL, copy_thread, &c) != 0) {
        mvcc_reader_exit(s);
        close(p[0]);
        close(p[1]);
        close(out);
        return KERR_IO;
    }
    size_t cap = 1u << 20;
    char *buf = malloc(cap);
    int ret = buf == NULL ? KERR_NOMEM : 0;
    off_t written = 0, synced = 0;
    for (;;) {
        ssize_t n = read(p[0], buf ? buf : path, buf ? cap : 1);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        if (ret != 0) continue; /* drain, so the copier can finish */
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(out, buf + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR) continue;
            if (w < 0) {
                log_error("defrag: write %s: %s", path, strerror(errno));
                ret = KERR_IO;
                break;
            }
            off += w;
        }
        written += n;
        if (ret == 0 && written - synced >= (off_t)SYNC_CHUNK) {
            sync_file_range(out, synced, written - synced,
                            SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                SYNC_FILE_RANGE_WAIT_AFTER);
            synced = written;
        }
    }
    close(p[0]);
    pthread_join(th, NULL);
    mvcc_reader_exit(s);
    free(buf);
    if (c.rc != 0) {
        log_error("defrag: copy: %s", mdb_strerror(c.rc));
        ret = KERR_IO;
    }
    if (ret == 0 && fdatasync(out) != 0) {
        log_error("defrag: sync %s: %s", path, strerror(errno));
        ret = KERR_IO;
    }
    close(out);
    return ret;
}

int mvcc_defrag_step(mvcc_store *s, size_t max, size_t *left)
{
    struct defrag *d = s->defrag;
    if (d == NULL) return KERR_INTERNAL;
    if (d->failed) return KERR_NOMEM;
    int rc;
    if (d->copy == NULL) {
        if ((rc = mvcc_open(&d->copy, d->tmpdir, s->map_size)) != 0) return rc;
        d->copy->bcrypt_cost = s->bcrypt_cost;
    }
    mvcc_store *c = d->copy;
    size_t done = 0;
    while (d->pos < d->n && done < max) {
        struct dlog *e = &d->log[d->pos++];
        if (e->name != NULL) {
            /* a meta record written after its entry's apply, which the copy
             * may hold without the record: written again if in doubt */
            if (e->index < c->applied) continue;
            if ((rc = mvcc_meta_put(c, e->name, e->buf, e->len)) != 0) return rc;
        } else {
            if (e->index <= c->applied) continue;
            Ketchpb__InternalRequest *req = NULL;
            if (e->buf != NULL &&
                (req = ketchpb__internal_request__unpack(NULL, e->len, e->buf)) == NULL)
                return KERR_INTERNAL;
            arena a = ARENA_INIT;
            struct mvcc_result res;
            rc = mvcc_apply(c, e->index, req, &a, &res);
            arena_free(&a);
            if (req != NULL) ketchpb__internal_request__free_unpacked(req, NULL);
            if (rc != 0) return rc;
        }
        done++;
    }
    if ((rc = mvcc_flush(c)) != 0) return rc;
    *left = d->n - d->pos;
    return 0;
}

static void free_defrag(struct defrag *d)
{
    for (size_t i = 0; i < d->n; i++) {
        free(d->log[i].name);
        free(d->log[i].buf);
    }
    free(d->log);
    free(d->tmpdir);
    free(d);
}

void mvcc_defrag_abort(mvcc_store *s)
{
    struct defrag *d = s->defrag;
    if (d == NULL) return;
    s->defrag = NULL;
    if (d->copy != NULL) mvcc_close(d->copy);
    remove_copy(d->tmpdir);
    free_defrag(d);
}

static int swap_locked(mvcc_store *s);

int mvcc_defrag_swap(mvcc_store *s)
{
    if (s->offloop_readers > 0) return KERR_BUSY;
    /* no other thread may be in the environment while it is swapped */
    if (pthread_rwlock_trywrlock(s->env_lock) != 0) return KERR_BUSY;
    int rc = swap_locked(s);
    pthread_rwlock_unlock(s->env_lock);
    return rc;
}

static int swap_locked(mvcc_store *s)
{
    struct defrag *d = s->defrag;
    size_t left;
    int rc = mvcc_defrag_step(s, SIZE_MAX, &left);
    if (rc != 0) goto fail;
    mvcc_store *c = d->copy;
    if (c->applied != s->applied || c->rev != s->rev || c->compact_rev != s->compact_rev) {
        log_error("defrag: the copy ended at index %llu revision %lld, the store at %llu %lld",
                  (unsigned long long)c->applied, (long long)c->rev,
                  (unsigned long long)s->applied, (long long)s->rev);
        rc = KERR_INTERNAL;
        goto fail;
    }
    if ((rc = mvcc_flush(s)) != 0) goto fail;
    /* the copy is complete and on disk (mvcc_close syncs) */
    mvcc_close(c);
    d->copy = NULL;
    s->defrag = NULL;

    char from[4200], to[4200], old[4200];
    snprintf(from, sizeof from, "%s/data.mdb", d->tmpdir);
    snprintf(to, sizeof to, "%s/data.mdb", s->dir);
    snprintf(old, sizeof old, "%s/old.mdb", d->tmpdir);
    /* not synced: the file is replaced, or kept (and then as after any
     * commit) if the rename fails */
    store_env_close(s, false);
    /* the old file keeps a name, so the rename does not free its blocks
     * (tens of ms for a big file): mvcc_defrag_cleanup unlinks it later,
     * off the loop */
    if (link(to, old) != 0) log_warn("defrag: link %s: %s", old, strerror(errno));
    int renamed = rename(from, to) == 0;
    if (!renamed) log_error("defrag: rename %s: %s", from, strerror(errno));
    free_defrag(d);
    rc = store_env_open(s);
    if (rc != 0) {
        log_error("defrag: cannot reopen the store in %s", s->dir);
        return KERR_IO; /* fatal: the caller stops */
    }
    return renamed ? 0 : KERR_DEFRAG_FAILED;

fail:
    mvcc_defrag_abort(s);
    return rc == KERR_IO ? KERR_DEFRAG_FAILED : rc;
}

void mvcc_defrag_cleanup(mvcc_store *s)
{
    /* The rename is made durable here, off the loop. Until then a crash
     * may bring the old file back: a consistent state a little behind,
     * which the Raft log replays forward (as after any crash). */
    int dfd = open(s->dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    char tmpdir[4200];
    snprintf(tmpdir, sizeof tmpdir, "%s/defrag", s->dir);
    remove_copy(tmpdir);
}

void mvcc_defrag_clean_temp(const char *dir)
{
    char tmpdir[4200];
    snprintf(tmpdir, sizeof tmpdir, "%s/defrag", dir);
    remove_copy(tmpdir);
}

void mvcc_pin(mvcc_store *s) { s->offloop_readers++; }
void mvcc_unpin(mvcc_store *s) { s->offloop_readers--; }

void mvcc_reader_enter(mvcc_store *s) { pthread_rwlock_rdlock(s->env_lock); }
void mvcc_reader_exit(mvcc_store *s) { pthread_rwlock_unlock(s->env_lock); }
