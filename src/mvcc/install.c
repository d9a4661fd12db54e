/* Whole-store copies for Raft snapshots (see mvcc.h): a consistent,
 * compacted copy of the environment written to a file, and the swap of the
 * environment for such a copy on a member that installs a snapshot. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mvcc/mvcc_int.h"
#include "util/errors.h"
#include "util/log.h"

int mvcc_copy_fd(mvcc_store *s, int fd)
{
    /* mdb_env_copyfd2 reads through its own read txn (the env is MDB_NOTLS,
     * so any thread may): one consistent committed state. */
    int rc = mdb_env_copyfd2(s->env, fd, MDB_CP_COMPACT);
    if (rc != 0) {
        log_error("mvcc: copy: %s", mdb_strerror(rc));
        return rc == ENOSPC ? KERR_NO_SPACE : KERR_IO;
    }
    return 0;
}

int mvcc_file_applied(const char *path, uint64_t *applied)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi meta;
    int rc, rv = KERR_CORRUPT;

    *applied = 0;
    if ((rc = mdb_env_create(&env)) != 0) return KERR_NOMEM;
    mdb_env_set_maxdbs(env, 16); /* as store.c's MAX_DBS */
    rc = mdb_env_open(env, path, MDB_NOSUBDIR | MDB_RDONLY | MDB_NOLOCK, 0600);
    if (rc != 0) {
        log_error("mvcc: open copy %s: %s", path, mdb_strerror(rc));
        mdb_env_close(env);
        return KERR_CORRUPT;
    }
    if (mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) == 0) {
        if (mdb_dbi_open(txn, "meta", 0, &meta) == 0) {
            MDB_val k = {sizeof "applied_index" - 1, "applied_index"}, d;
            if (mdb_get(txn, meta, &k, &d) == 0 && d.mv_size == 8) {
                *applied = get_be64(d.mv_data);
                rv = 0;
            }
        }
        mdb_txn_abort(txn);
    }
    mdb_env_close(env);
    if (rv != 0) log_error("mvcc: copy %s has no applied index", path);
    return rv;
}

int mvcc_replace(mvcc_store *s, const char *path, int own_pins)
{
    char data[4200], lock[4200];
    uint64_t applied;
    if (s->offloop_readers > own_pins) {
        log_error("mvcc: cannot install a copy: %d readers on other threads",
                  s->offloop_readers - own_pins);
        return KERR_BUSY;
    }
    int rv = mvcc_file_applied(path, &applied);
    if (rv != 0) return rv;
    /* A reader on another thread (HashKV, a snapshot export, a defrag's
     * copy) still uses the env: wait until it is done. Each of them reads
     * the store once through, needing nothing from the loop, so the wait
     * is bounded by one pass over the file (as etcd's snapshot apply waits
     * for its backend's readers); the caller cannot put the install off
     * (libraft already took the snapshot as its state). */
    if (pthread_rwlock_trywrlock(s->env_lock) != 0) {
        log_warn("mvcc: installing a copy: waiting for the readers of the store on other threads");
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        pthread_rwlock_wrlock(s->env_lock);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        log_warn("mvcc: installing a copy: waited %.1f ms for the readers",
                 (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
    }
    snprintf(data, sizeof data, "%s/data.mdb", s->dir);
    snprintf(lock, sizeof lock, "%s/lock.mdb", s->dir);

    /* A defrag of the old file is moot; what is applied but not committed
     * is older than the copy: drop both. */
    mvcc_defrag_abort(s);
    if (s->wtxn != NULL) mdb_txn_abort(s->wtxn);
    s->wtxn = NULL;
    s->batch_n = 0;
    store_env_close(s, false);

    if (rename(path, data) != 0) {
        log_error("mvcc: rename %s to %s: %s", path, data, strerror(errno));
        rv = KERR_IO;
    } else {
        int dfd = open(s->dir, O_RDONLY | O_DIRECTORY);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
        unlink(lock); /* LMDB rebuilds it */
    }
    /* Reopen the copy (or, if the rename failed, the old file) in place:
     * hooks and options stay, the state is the file's. */
    int orv = store_env_open(s);
    pthread_rwlock_unlock(s->env_lock);
    if (orv != 0) {
        log_error("mvcc: cannot reopen %s after installing a snapshot", s->dir);
        return orv;
    }
    if (rv == 0)
        log_info("mvcc: installed a copy at applied index %llu, revision %lld",
                 (unsigned long long)s->applied, (long long)s->rev);
    return rv;
}
