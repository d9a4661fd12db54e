/* The MVCC store's LMDB environment and tables.
 *
 * Four named databases in one environment (integers are big-endian, so
 * LMDB's memcmp order is numeric order):
 *
 *   keys   every user key that has history, in user-key order
 *          short key (1..500 bytes):
 *            LMDB key  user key as is
 *            value     krec (49 bytes)
 *          long key (> 500 bytes), a bucket per 500-byte prefix:
 *            LMDB key  prefix[500] 0x00          (501 bytes)
 *            value     entries sorted by user key, each
 *                      klen u32 | key[klen] | krec (49 bytes)
 *          A short key of exactly 500 bytes sorts before the bucket of the
 *          same prefix, and every short key that is not a prefix of the
 *          bucket's keys compares the same way against the bucket as
 *          against its keys, so LMDB order = user-key order.
 *   krec   offset size field
 *          0      8    kid      key id (assigned at first put, never reused)
 *          8      8    main     revision of the latest change
 *          16     8    sub
 *          24     8    create   create_revision  } of the latest put;
 *          32     8    version  version          } 0 when the latest
 *          40     8    lease    lease ID         } change is a delete
 *          48     1    flags    bit 0: latest change is a tombstone
 *   hist   LMDB key  main u64 | sub u64                          (16 bytes)
 *          value     kind u8 (0 put, 1 tombstone) | kid u64 |
 *                    packed mvccpb.KeyValue (a tombstone holds key and
 *                    mod_revision only)
 *   idx    LMDB key  kid u64 | main u64 | sub u64                (24 bytes)
 *          value     kind u8
 *   meta   "applied_index" u64, "revision" i64, "compact_rev" i64 (-1 if
 *          never compacted), "next_kid" u64; written in the batch txn
 *          with the data, so what is committed is always consistent: the
 *          state after the applied_index-th Raft entry
 *   lease  LMDB key  lease ID i64                                 (8 bytes)
 *          value     granted TTL i64 | checkpointed remaining TTL i64
 *                    (0: none)                                   (16 bytes)
 *   lkeys  LMDB key  lease ID i64 | kid u64                      (16 bytes)
 *          value     the user key (any length): the keys attached to a
 *                    lease, found by a prefix scan (lease.c)
 *   auth   users, roles, enabled flag, auth revision (auth.c)
 *   alarm  LMDB key  member ID u64 | alarm type u8               (9 bytes)
 *          value     empty: the raised alarms (alarm.c)
 *
 * A key is removed from `keys` when compaction has removed its last change.
 * Reads at the current revision use `keys` (+ `hist` for values); reads at
 * older revisions find the newest change <= rev in `idx`. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "mvcc/mvcc_int.h"
#include "util/errors.h"
#include "util/log.h"

/* Durability: applies are grouped. mvcc_apply() runs each Raft entry in a
 * nested txn of one long-lived "batch" write txn (s->wtxn), so a failed
 * request drops only its own changes; the batch is committed by
 * mvcc_flush() (the server calls it every few ms, mvcc_apply() itself once
 * the batch holds MVCC_BATCH_MAX applies, mvcc_sync() and mvcc_close()
 * too). The env runs without MDB_NOSYNC but with MDB_NOMETASYNC: every
 * commit writes the dirty pages and fdatasyncs them, then writes the new
 * meta page without a sync. So a meta page that reaches the disk (even on
 * power loss) never points at pages that did not; a meta page lost on
 * power loss leaves the previous one, a consistent older state. What is
 * lost is replayed from the Raft log (fsynced, the durable record) above
 * the committed applied_index; mvcc_sync() also fsyncs the meta page before
 * libraft drops log entries. No MDB_WRITEMAP: nested txns need it off. */
#define ENV_FLAGS (MDB_NOTLS | MDB_NOMETASYNC)

int mdb_to_kerr(int rc)
{
    switch (rc) {
    case 0:
        return 0;
    case MDB_MAP_FULL:
        return KERR_NO_SPACE;
    case ENOMEM:
        return KERR_NOMEM;
    default:
        log_error("mvcc: lmdb: %s", mdb_strerror(rc));
        return KERR_IO;
    }
}

static void krec_encode(uint8_t *p, const struct krec *r)
{
    put_be64(p, r->kid);
    put_be64(p + 8, (uint64_t)r->main);
    put_be64(p + 16, (uint64_t)r->sub);
    put_be64(p + 24, (uint64_t)r->create);
    put_be64(p + 32, (uint64_t)r->version);
    put_be64(p + 40, (uint64_t)r->lease);
    p[48] = r->deleted ? 1 : 0;
}

static void krec_decode(const uint8_t *p, struct krec *r)
{
    r->kid = get_be64(p);
    r->main = (int64_t)get_be64(p + 8);
    r->sub = (int64_t)get_be64(p + 16);
    r->create = (int64_t)get_be64(p + 24);
    r->version = (int64_t)get_be64(p + 32);
    r->lease = (int64_t)get_be64(p + 40);
    r->deleted = p[48] & 1;
}

/* ---- meta ---- */

static int meta_get_u64(MDB_txn *txn, mvcc_store *s, const char *name, uint64_t *v)
{
    MDB_val k = {strlen(name), (void *)name}, d;
    int rc = mdb_get(txn, s->meta, &k, &d);
    if (rc == MDB_NOTFOUND) return 0;
    if (rc != 0) return mdb_to_kerr(rc);
    if (d.mv_size != 8) return KERR_CORRUPT;
    *v = get_be64(d.mv_data);
    return 1;
}

int meta_put_u64(MDB_txn *txn, mvcc_store *s, const char *name, uint64_t v)
{
    uint8_t b[8];
    put_be64(b, v);
    MDB_val k = {strlen(name), (void *)name}, d = {8, b};
    return mdb_to_kerr(mdb_put(txn, s->meta, &k, &d, 0));
}

/* ---- open / close ---- */

/* Named databases: 8 in use (keys idx hist meta lease lkeys auth alarm);
 * room for more. */
#define MAX_DBS 16

int store_env_open(mvcc_store *s)
{
    int rc;
    const char *dir = s->dir;
    if ((rc = mdb_env_create(&s->env)) != 0) return rc == ENOMEM ? KERR_NOMEM : KERR_IO;
    mdb_env_set_maxdbs(s->env, MAX_DBS);
    if ((rc = mdb_env_set_mapsize(s->env, s->map_size)) != 0) goto err_after_env;
    if ((rc = mdb_env_open(s->env, dir, ENV_FLAGS, 0600)) != 0) {
        log_error("mvcc: open %s: %s", dir, mdb_strerror(rc));
        goto err_after_env;
    }
    if (mdb_env_get_maxkeysize(s->env) < KEY_PREFIX + 1) {
        rc = EINVAL;
        goto err_after_env;
    }

    MDB_txn *txn;
    if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0) goto err_after_env;
    if ((rc = mdb_dbi_open(txn, "keys", MDB_CREATE, &s->keys)) != 0 ||
        (rc = mdb_dbi_open(txn, "idx", MDB_CREATE, &s->idx)) != 0 ||
        (rc = mdb_dbi_open(txn, "hist", MDB_CREATE, &s->hist)) != 0 ||
        (rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &s->meta)) != 0 ||
        (rc = mdb_dbi_open(txn, "lease", MDB_CREATE, &s->lease)) != 0 ||
        (rc = mdb_dbi_open(txn, "lkeys", MDB_CREATE, &s->lkeys)) != 0 ||
        (rc = mdb_dbi_open(txn, "auth", MDB_CREATE, &s->auth)) != 0 ||
        (rc = mdb_dbi_open(txn, "alarm", MDB_CREATE, &s->alarm)) != 0)
        goto err_after_txn;

    uint64_t rev, crev, applied, kid;
    int found = meta_get_u64(txn, s, "revision", &rev);
    if (found < 0) {
        rc = EIO;
        goto err_after_txn;
    }
    if (found == 0) {
        rev = 1, crev = (uint64_t)-1, applied = 0, kid = 1;
        if (meta_put_u64(txn, s, "revision", rev) || meta_put_u64(txn, s, "compact_rev", crev) ||
            meta_put_u64(txn, s, "applied_index", applied) ||
            meta_put_u64(txn, s, "next_kid", kid)) {
            rc = EIO;
            goto err_after_txn;
        }
    } else if (meta_get_u64(txn, s, "compact_rev", &crev) != 1 ||
               meta_get_u64(txn, s, "applied_index", &applied) != 1 ||
               meta_get_u64(txn, s, "next_kid", &kid) != 1) {
        log_error("mvcc: %s: meta table incomplete", dir);
        rc = EIO;
        goto err_after_txn;
    }
    if (auth_load(txn, s) != 0 || alarm_load(txn, s) != 0) {
        rc = EIO;
        goto err_after_txn;
    }
    if ((rc = mdb_txn_commit(txn)) != 0) goto err_after_env;
    s->rev = (int64_t)rev;
    s->compact_rev = (int64_t)crev;
    s->applied = applied;
    s->durable = applied;
    s->next_kid = kid;
    /* a sweep cut short by a stop starts again from the first revision */
    s->phys_target = s->compact_rev;
    memset(s->phys_pos, 0, sizeof s->phys_pos);
    s->trim_pgno = 0; /* a new file (open, defrag swap): the next commit checks */

    if ((rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &s->rtxn)) != 0) goto err_after_env;
    mdb_txn_reset(s->rtxn);
    s->rtxn_live = 0;
    return 0;

err_after_txn:
    mdb_txn_abort(txn);
err_after_env:
    mdb_env_close(s->env);
    s->env = NULL;
    return rc == ENOMEM ? KERR_NOMEM : KERR_IO;
}

void store_env_close(mvcc_store *s, bool sync)
{
    if (s->env == NULL) return;
    mdb_txn_abort(s->rtxn);
    s->rtxn = NULL;
    s->rtxn_live = 0;
    if (sync) mdb_env_sync(s->env, 1);
    mdb_env_close(s->env);
    s->env = NULL;
    s->map_addr = NULL;
}

static uint64_t clock_ms(void *ctx);

int mvcc_open(mvcc_store **out, const char *dir, size_t map_size)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        log_error("mvcc: mkdir %s: %s", dir, strerror(errno));
        return KERR_IO;
    }
    mvcc_store *s = calloc(1, sizeof *s);
    if (s == NULL) return KERR_NOMEM;
    s->dir = strdup(dir);
    s->map_size = map_size;
    s->bcrypt_cost = 10;
    s->page_size = (size_t)sysconf(_SC_PAGESIZE);
    s->now_ms = clock_ms;
    s->env_lock = malloc(sizeof *s->env_lock);
    if (s->dir == NULL || s->env_lock == NULL || pthread_rwlock_init(s->env_lock, NULL) != 0) {
        free(s->env_lock);
        free(s->dir);
        free(s);
        return KERR_NOMEM;
    }
    int rc = store_env_open(s);
    if (rc != 0) {
        pthread_rwlock_destroy(s->env_lock);
        free(s->env_lock);
        free(s->dir);
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

void mvcc_close(mvcc_store *s)
{
    if (s == NULL) return;
    mvcc_defrag_abort(s);
    mvcc_flush(s);
    store_env_close(s, true);
    pthread_rwlock_destroy(s->env_lock);
    free(s->env_lock);
    free(s->dir);
    free(s);
}

void mvcc_set_lease_hook(mvcc_store *s, mvcc_lease_exists_fn fn, void *ctx)
{
    s->lease_exists = fn;
    s->lease_ctx = ctx;
}

int64_t mvcc_revision(const mvcc_store *s) { return s->rev; }
int64_t mvcc_compact_revision(const mvcc_store *s) { return s->compact_rev < 0 ? 0 : s->compact_rev; }
uint64_t mvcc_applied_index(const mvcc_store *s) { return s->applied; }

int store_wtxn(mvcc_store *s, MDB_txn **out)
{
    if (s->wtxn == NULL) {
        int rc = mdb_txn_begin(s->env, NULL, 0, &s->wtxn);
        if (rc != 0) {
            s->wtxn = NULL;
            return mdb_to_kerr(rc);
        }
    }
    *out = s->wtxn;
    return 0;
}

/* ---- resident map pages ----
 *
 * LMDB reads through a read-only shared mapping of data.mdb: every page a
 * commit copies or a read visits stays mapped, and mapped file pages count
 * in the process's RSS (RssFile), so a load of 1M keys left the whole file
 * resident (~500 MB) although the heap stayed under 50 MB (VmHWM 557 MB). When the
 * file-backed RSS passes MAP_RSS_BUDGET, drop the map's page table entries
 * (MADV_DONTNEED on a shared file mapping only unmaps: the pages stay in
 * the kernel's page cache, no data is lost and nothing is written; the next
 * touch is a minor fault). The check reads /proc/self/statm (an open, a
 * read and a close: a few microseconds), so it no longer runs at every
 * commit (up to 100 a second). A commit checks when the writes since the
 * last check may have mapped a lot: TRIM_APPLIES applied requests, or the
 * file grew by TRIM_GROWTH (every page a write copies is read through the
 * map first, and the next txn reads the copies, wherever LMDB put them:
 * checking only on file growth or once a second, a 1M-key load's RssFile
 * reached 131 MB against 56 MB with a check per commit). Otherwise a
 * commit, or every TRIM_CHECK-th read, checks once TRIM_INTERVAL_MS passed
 * since the last check. So a quiet or moderate load checks once a second
 * and a heavy one once per TRIM_APPLIES writes (~17 a second during the
 * 1M-key load, 100 before). Safe with readers on other threads: they
 * fault the pages in again. */
#define MAP_RSS_BUDGET (32u << 20)
#define TRIM_GROWTH (8u << 20)
#define TRIM_APPLIES 1024u
#define TRIM_INTERVAL_MS 1000u
#define TRIM_CHECK 4096u

static long file_rss_pages(void)
{
    char buf[128];
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    long size, resident, shared;
    if (sscanf(buf, "%ld %ld %ld", &size, &resident, &shared) != 3) return -1;
    return shared;
}

/* Where LMDB mapped data.mdb: mdb_env_info's me_mapaddr is only set with
 * MDB_FIXEDMAP, so find the mapping of the file's inode in /proc/self/maps. */
static void *find_map(mvcc_store *s)
{
    mdb_filehandle_t fd;
    struct stat st;
    if (mdb_env_get_fd(s->env, &fd) != 0 || fstat(fd, &st) != 0) return NULL;
    FILE *f = fopen("/proc/self/maps", "re");
    if (f == NULL) return NULL;
    char line[512];
    void *addr = NULL;
    while (addr == NULL && fgets(line, sizeof line, f) != NULL) {
        unsigned long lo, hi, off, ino;
        unsigned maj, min;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s %lx %x:%x %lu", &lo, &hi, perms, &off, &maj, &min, &ino) != 7)
            continue;
        if (ino == (unsigned long)st.st_ino && makedev(maj, min) == st.st_dev && off == 0)
            addr = (void *)lo;
    }
    fclose(f);
    return addr;
}

int mvcc_map_trim(mvcc_store *s, int force)
{
    if (s->env == NULL) return 0;
    long psz = sysconf(_SC_PAGESIZE);
    long shared = file_rss_pages();
    if (shared < 0) return 0;
    if (!force && (size_t)shared * (size_t)psz <= MAP_RSS_BUDGET) return 0;
    MDB_envinfo info;
    if (mdb_env_info(s->env, &info) != 0) return 0;
    if (s->map_addr == NULL && (s->map_addr = find_map(s)) == NULL) return 0;
    size_t used = ((size_t)info.me_last_pgno + 1) * (size_t)psz;
    if (used > info.me_mapsize) used = info.me_mapsize;
    if (madvise(s->map_addr, used, MADV_DONTNEED) != 0) {
        log_warn("mvcc: madvise: %s", strerror(errno));
        return 0;
    }
    return 1;
}

static uint64_t clock_ms(void *ctx)
{
    (void)ctx;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts); /* vDSO: no system call */
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void mvcc_set_clock(mvcc_store *s, uint64_t (*now_ms)(void *ctx), void *ctx)
{
    s->now_ms = now_ms != NULL ? now_ms : clock_ms;
    s->now_ctx = ctx;
}

/* After a commit of `applies` requests (`commit`) or a read: checks the
 * resident map when it is due (see above). */
static void store_map_tick(mvcc_store *s, bool commit, size_t applies)
{
    if (!commit && ++s->trim_work < TRIM_CHECK) return;
    s->trim_work = 0;
    s->trim_applies += applies;
    uint64_t now = s->now_ms(s->now_ctx);
    bool due = s->trim_applies >= TRIM_APPLIES || now - s->trim_checked_ms >= TRIM_INTERVAL_MS;
    MDB_envinfo info;
    if (commit && !due && mdb_env_info(s->env, &info) == 0) {
        /* mdb_env_info reads the meta page: no system call */
        size_t psz = s->page_size;
        due = (size_t)info.me_last_pgno > s->trim_pgno &&
              ((size_t)info.me_last_pgno - s->trim_pgno) * psz >= TRIM_GROWTH;
    }
    if (!due) return;
    s->trim_checked_ms = now;
    s->trim_applies = 0;
    if (mdb_env_info(s->env, &info) == 0) s->trim_pgno = info.me_last_pgno;
    mvcc_map_trim(s, 0);
}

size_t mvcc_batch_pending(const mvcc_store *s) { return s->wtxn != NULL ? s->batch_n : 0; }

int mvcc_flush(mvcc_store *s)
{
    if (s->wtxn == NULL) return 0;
    int rc = mdb_txn_commit(s->wtxn);
    size_t applies = s->batch_n;
    s->wtxn = NULL;
    s->batch_n = 0;
    if (rc != 0) {
        /* The batch is gone but its applies are in memory (s->rev...): the
         * store no longer matches what was reported. Nothing sane remains. */
        log_error("mvcc: commit: %s", mdb_strerror(rc));
        return KERR_IO;
    }
    s->durable = s->applied;
    store_map_tick(s, true, applies);
    return 0;
}

int mvcc_sync(mvcc_store *s)
{
    int rc = mvcc_flush(s);
    if (rc != 0) return rc;
    /* the last commit's meta page was written without a sync */
    rc = mdb_env_sync(s->env, 1);
    if (rc != 0) {
        log_error("mvcc: sync: %s", mdb_strerror(rc));
        return KERR_IO;
    }
    return 0;
}

uint64_t mvcc_durable_index(const mvcc_store *s) { return s->durable; }

int64_t mvcc_db_file_size(const mvcc_store *s)
{
    MDB_envinfo info;
    MDB_stat st;
    if (mdb_env_info(s->env, &info) != 0 || mdb_env_stat(s->env, &st) != 0) return 0;
    /* the high-water mark of the file as of the last commit (LMDB writes
     * pages up to it; the map beyond is address space only) */
    return (int64_t)(info.me_last_pgno + 1) * st.ms_psize;
}

void mvcc_db_size(mvcc_store *s, int64_t *size, int64_t *in_use)
{
    MDB_stat st;
    /* the file's size is the committed one's: commit the batch first (Status
     * and /metrics only; one commit costs about a fdatasync) */
    mvcc_flush(s);
    *size = mvcc_db_file_size(s);
    mdb_env_stat(s->env, &st);
    int64_t psize = st.ms_psize;
    /* in use: 2 meta pages + the pages of every tree, the main one (which
     * names the others) and the free list's own pages included; what is
     * left of the file are free pages, as bbolt's freelist in etcd's
     * dbSize - dbSizeInUse */
    int64_t pages = 2 + (int64_t)(st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages);
    MDB_txn *txn;
    if (store_rtxn_begin(s, &txn) == 0) {
        MDB_dbi dbis[] = {0 /* FREE_DBI */, s->keys, s->idx, s->hist, s->meta, s->lease,
                          s->lkeys, s->auth, s->alarm};
        for (size_t i = 0; i < sizeof dbis / sizeof dbis[0]; i++)
            if (mdb_stat(txn, dbis[i], &st) == 0)
                pages += (int64_t)(st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages);
        store_rtxn_end(s);
    }
    *in_use = pages * psize;
    if (*in_use > *size) *in_use = *size;
}

/* Reads see every apply: inside the open batch write txn when there is
 * one (LMDB reads in a write txn see its uncommitted changes), else in the
 * reusable read txn. Data borrowed from LMDB is valid until the next write
 * to that txn, so a read keeps no pointer past its call. */
int store_rtxn_begin(mvcc_store *s, MDB_txn **out)
{
    if (s->wtxn != NULL) {
        *out = s->wtxn;
        return 0;
    }
    int rc = mdb_txn_renew(s->rtxn);
    if (rc != 0) return mdb_to_kerr(rc);
    s->rtxn_live = 1;
    *out = s->rtxn;
    return 0;
}

void store_rtxn_end(mvcc_store *s)
{
    if (!s->rtxn_live) return;
    s->rtxn_live = 0;
    mdb_txn_reset(s->rtxn);
    store_map_tick(s, false, 0);
}

/* ---- keys table ---- */

static void bucket_key(uint8_t *b, const uint8_t *key)
{
    memcpy(b, key, KEY_PREFIX);
    b[KEY_PREFIX] = 0;
}

int krec_get(MDB_txn *txn, mvcc_store *s, const uint8_t *key, size_t klen, struct krec *rec)
{
    uint8_t bk[KEY_PREFIX + 1];
    MDB_val k, d;
    if (klen == 0) return 0;
    if (klen <= KEY_PREFIX) {
        k = (MDB_val){klen, (void *)key};
    } else {
        bucket_key(bk, key);
        k = (MDB_val){sizeof bk, bk};
    }
    int rc = mdb_get(txn, s->keys, &k, &d);
    if (rc == MDB_NOTFOUND) return 0;
    if (rc != 0) return mdb_to_kerr(rc);
    if (klen <= KEY_PREFIX) {
        if (d.mv_size != KREC_SIZE) return KERR_CORRUPT;
        krec_decode(d.mv_data, rec);
        return 1;
    }
    const uint8_t *p = d.mv_data, *e = p + d.mv_size;
    while (p + 4 <= e) {
        uint32_t n = get_be32(p);
        if ((size_t)(e - p) < 4 + (size_t)n + KREC_SIZE) return KERR_CORRUPT;
        if (n == klen && memcmp(p + 4, key, klen) == 0) {
            krec_decode(p + 4 + n, rec);
            return 1;
        }
        p += 4 + n + KREC_SIZE;
    }
    return 0;
}

/* Rewrites the bucket of a long key with `key` replaced/inserted (rec) or
 * removed (rec NULL). */
static int bucket_update(MDB_txn *txn, mvcc_store *s, const uint8_t *key, size_t klen,
                         const struct krec *rec)
{
    uint8_t bk[KEY_PREFIX + 1];
    bucket_key(bk, key);
    MDB_val k = {sizeof bk, bk}, d = {0, NULL};
    int rc = mdb_get(txn, s->keys, &k, &d);
    if (rc != 0 && rc != MDB_NOTFOUND) return mdb_to_kerr(rc);
    size_t cap = d.mv_size + 4 + klen + KREC_SIZE;
    uint8_t *buf = malloc(cap), *w = buf;
    if (buf == NULL) return KERR_NOMEM;
    const uint8_t *p = d.mv_data, *e = p + d.mv_size;
    int done = 0;
    while (p != NULL && p + 4 <= e) {
        uint32_t n = get_be32(p);
        size_t esz = 4 + (size_t)n + KREC_SIZE;
        if ((size_t)(e - p) < esz) {
            free(buf);
            return KERR_CORRUPT;
        }
        int c = bytes_cmp(p + 4, n, key, klen);
        if (!done && c >= 0) {
            if (rec != NULL) {
                put_be32(w, (uint32_t)klen);
                memcpy(w + 4, key, klen);
                krec_encode(w + 4 + klen, rec);
                w += 4 + klen + KREC_SIZE;
            }
            done = 1;
            if (c == 0) {
                p += esz;
                continue;
            }
        }
        memcpy(w, p, esz);
        w += esz;
        p += esz;
    }
    if (!done && rec != NULL) {
        put_be32(w, (uint32_t)klen);
        memcpy(w + 4, key, klen);
        krec_encode(w + 4 + klen, rec);
        w += 4 + klen + KREC_SIZE;
    }
    if (w == buf) {
        rc = d.mv_data ? mdb_del(txn, s->keys, &k, NULL) : 0;
    } else {
        d = (MDB_val){(size_t)(w - buf), buf};
        rc = mdb_put(txn, s->keys, &k, &d, 0);
    }
    free(buf);
    return mdb_to_kerr(rc);
}

int krec_put(MDB_txn *txn, mvcc_store *s, const uint8_t *key, size_t klen, const struct krec *rec)
{
    if (klen > KEY_PREFIX) return bucket_update(txn, s, key, klen, rec);
    uint8_t b[KREC_SIZE];
    krec_encode(b, rec);
    MDB_val k = {klen, (void *)key}, d = {sizeof b, b};
    return mdb_to_kerr(mdb_put(txn, s->keys, &k, &d, 0));
}

int krec_del(MDB_txn *txn, mvcc_store *s, const uint8_t *key, size_t klen)
{
    if (klen > KEY_PREFIX) return bucket_update(txn, s, key, klen, NULL);
    MDB_val k = {klen, (void *)key};
    int rc = mdb_del(txn, s->keys, &k, NULL);
    return rc == MDB_NOTFOUND ? 0 : mdb_to_kerr(rc);
}

/* ---- keys iterator ---- */

/* Loads the entry at it->boff of the current bucket (or the short key). */
static int kiter_load(struct kiter *it)
{
    if (!it->in_bucket) {
        if (it->v.mv_size != KREC_SIZE) return KERR_CORRUPT;
        it->key = it->k.mv_data;
        it->klen = it->k.mv_size;
        krec_decode(it->v.mv_data, &it->rec);
        return 1;
    }
    const uint8_t *p = (const uint8_t *)it->v.mv_data + it->boff;
    size_t left = it->v.mv_size - it->boff;
    if (left < 4) return KERR_CORRUPT;
    uint32_t n = get_be32(p);
    if (left < 4 + (size_t)n + KREC_SIZE) return KERR_CORRUPT;
    it->key = p + 4;
    it->klen = n;
    krec_decode(p + 4 + n, &it->rec);
    return 1;
}

/* Takes the LMDB entry just read by the cursor (rc from mdb_cursor_get). */
static int kiter_settle(struct kiter *it, int rc)
{
    if (rc == MDB_NOTFOUND) return 0;
    if (rc != 0) return mdb_to_kerr(rc);
    it->in_bucket = it->k.mv_size == KEY_PREFIX + 1;
    it->boff = 0;
    return kiter_load(it);
}

int kiter_seek(struct kiter *it, MDB_txn *txn, mvcc_store *s, const uint8_t *start, size_t len)
{
    memset(it, 0, sizeof *it);
    int rc = mdb_cursor_open(txn, s->keys, &it->cur);
    if (rc != 0) return mdb_to_kerr(rc);
    if (len == 0) {
        rc = mdb_cursor_get(it->cur, &it->k, &it->v, MDB_FIRST);
    } else {
        it->k = (MDB_val){len < KEY_PREFIX ? len : KEY_PREFIX, (void *)start};
        rc = mdb_cursor_get(it->cur, &it->k, &it->v, MDB_SET_RANGE);
    }
    rc = kiter_settle(it, rc);
    /* the short key equal to a long start's prefix, and bucket entries
     * below start, come before start */
    while (rc == 1 && bytes_cmp(it->key, it->klen, start, len) < 0) rc = kiter_next(it);
    return rc;
}

int kiter_next(struct kiter *it)
{
    if (it->in_bucket) {
        size_t next = it->boff + 4 + it->klen + KREC_SIZE;
        if (next < it->v.mv_size) {
            it->boff = next;
            return kiter_load(it);
        }
    }
    int rc = mdb_cursor_get(it->cur, &it->k, &it->v, MDB_NEXT);
    return kiter_settle(it, rc);
}

void kiter_close(struct kiter *it)
{
    if (it->cur) mdb_cursor_close(it->cur);
    it->cur = NULL;
}

/* ---- history ---- */

static void *pb_alloc(void *data, size_t size) { return arena_alloc(data, size); }
static void pb_free(void *data, void *p) { (void)data, (void)p; }

int hist_put(struct op_ctx *c, uint64_t kid, int kind, const Mvccpb__KeyValue *kv)
{
    mvcc_store *s = c->s;
    int64_t main = c->begin_rev + 1, sub = c->nchanges;
    uint8_t hk[16], ik[24], kb = (uint8_t)kind;
    put_be64(hk, (uint64_t)main);
    put_be64(hk + 8, (uint64_t)sub);
    put_be64(ik, kid);
    memcpy(ik + 8, hk, 16);
    size_t n = mvccpb__key_value__get_packed_size(kv);
    MDB_val k = {16, hk}, d = {9 + n, NULL};
    int rc = mdb_put(c->txn, s->hist, &k, &d, MDB_RESERVE | MDB_APPEND);
    if (rc != 0) return mdb_to_kerr(rc);
    uint8_t *p = d.mv_data;
    p[0] = kb;
    put_be64(p + 1, kid);
    mvccpb__key_value__pack(kv, p + 9);
    k = (MDB_val){24, ik};
    d = (MDB_val){1, &kb};
    return mdb_to_kerr(mdb_put(c->txn, s->idx, &k, &d, 0));
}

int hist_load(MDB_txn *txn, mvcc_store *s, int64_t main, int64_t sub, arena *a,
              Mvccpb__KeyValue **out)
{
    uint8_t hk[16];
    put_be64(hk, (uint64_t)main);
    put_be64(hk + 8, (uint64_t)sub);
    MDB_val k = {16, hk}, d;
    int rc = mdb_get(txn, s->hist, &k, &d);
    if (rc == MDB_NOTFOUND) {
        log_error("mvcc: revision (%lld,%lld) missing from history", (long long)main,
                  (long long)sub);
        return KERR_CORRUPT;
    }
    if (rc != 0) return mdb_to_kerr(rc);
    if (d.mv_size < 9) return KERR_CORRUPT;
    ProtobufCAllocator al = {pb_alloc, pb_free, a};
    *out = mvccpb__key_value__unpack(&al, d.mv_size - 9, (const uint8_t *)d.mv_data + 9);
    return *out ? 0 : KERR_CORRUPT;
}

int idx_find(MDB_txn *txn, mvcc_store *s, uint64_t kid, int64_t rev, int64_t *main,
             int64_t *sub, int *kind)
{
    MDB_cursor *cur;
    uint8_t ik[24];
    int rc = mdb_cursor_open(txn, s->idx, &cur);
    if (rc != 0) return mdb_to_kerr(rc);
    put_be64(ik, kid);
    put_be64(ik + 8, (uint64_t)rev + 1);
    put_be64(ik + 16, 0);
    MDB_val k = {24, ik}, d;
    rc = mdb_cursor_get(cur, &k, &d, MDB_SET_RANGE);
    if (rc == 0)
        rc = mdb_cursor_get(cur, &k, &d, MDB_PREV);
    else if (rc == MDB_NOTFOUND)
        rc = mdb_cursor_get(cur, &k, &d, MDB_LAST);
    int ret = 0;
    if (rc == 0) {
        if (k.mv_size == 24 && d.mv_size == 1 && get_be64(k.mv_data) == kid) {
            *main = (int64_t)get_be64((uint8_t *)k.mv_data + 8);
            *sub = (int64_t)get_be64((uint8_t *)k.mv_data + 16);
            *kind = *(uint8_t *)d.mv_data;
            ret = 1;
        }
    } else if (rc != MDB_NOTFOUND) {
        ret = mdb_to_kerr(rc);
    }
    mdb_cursor_close(cur);
    return ret;
}
