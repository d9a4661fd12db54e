/* Hash and HashKV (see mvcc.h).
 *
 * HashKV reproduces etcd 3.5's value bit for bit: etcd keeps its history
 * in bbolt's `key` bucket, keyed by the 17-byte revision
 *
 *   offset size
 *   0      8    main  big-endian
 *   8      1    '_'
 *   9      8    sub   big-endian
 *   17     1    't'   only for a tombstone
 *
 * with the marshalled mvccpb.KeyValue as value (a tombstone's holds only
 * the key). hashByRev writes "key", then each (key, value) of the bucket in
 * order whose main revision is <= rev, skipping those at or below the
 * compact revision that kvindex.Keep(rev) does not keep, unless Keep is
 * empty. Our `hist` table holds the same changes in the same order (a put's
 * KeyValue packed by protobuf-c is byte for byte gogoproto's: fields in
 * number order, zero values left out); a tombstone's is re-packed with only
 * the key. */
#include <stdlib.h>

#include "mvcc/mvcc_int.h"
#include "util/crc32c.h"
#include "util/errors.h"

/* Whether some key's newest change at or below rev is a put (Keep(rev) is
 * not empty). Returns 1, 0 or KERR_*. */
static int any_alive(MDB_txn *txn, mvcc_store *s, int64_t rev)
{
    struct kiter it;
    int rc = kiter_seek(&it, txn, s, (const uint8_t *)"", 0);
    int ret = 0;
    while (rc == 1) {
        if (it.rec.main <= rev) {
            if (!it.rec.deleted) {
                ret = 1;
                break;
            }
        } else {
            int64_t m, sub;
            int kind;
            int f = idx_find(txn, s, it.rec.kid, rev, &m, &sub, &kind);
            if (f < 0) {
                ret = f;
                break;
            }
            if (f == 1 && kind == CH_PUT) {
                ret = 1;
                break;
            }
        }
        rc = kiter_next(&it);
    }
    if (rc < 0) ret = rc;
    kiter_close(&it);
    return ret;
}

/* etcd's hashByRev over `txn` at revision rev with compact revision crev
 * (checked by the caller). */
static int hash_txn(MDB_txn *txn, mvcc_store *s, int64_t rev, int64_t crev, uint32_t *hash)
{
    MDB_cursor *cur;
    int rc;
    int keep = crev >= 0 ? any_alive(txn, s, rev) : 1;
    if (keep < 0) return keep;
    if ((rc = mdb_cursor_open(txn, s->hist, &cur)) != 0) return mdb_to_kerr(rc);
    uint32_t h = crc32c_update(0, "key", 3);
    MDB_val k, d;
    int ret = 0;
    for (rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
        if (k.mv_size != 16 || d.mv_size < 9) {
            ret = KERR_CORRUPT;
            break;
        }
        int64_t main = (int64_t)get_be64(k.mv_data);
        int64_t sub = (int64_t)get_be64((uint8_t *)k.mv_data + 8);
        if (main > rev) break;
        const uint8_t *v = d.mv_data;
        int kind = v[0];
        if (main <= crev) {
            /* as kvindex.Keep(rev) (or, when it is empty, what the
             * compaction keeps, which is what etcd's bucket then holds):
             * the key's newest change at that revision, if a put */
            int64_t m2, s2;
            int k2;
            int f = idx_find(txn, s, get_be64(v + 1), keep ? rev : crev, &m2, &s2, &k2);
            if (f < 0) {
                ret = f;
                break;
            }
            if (f == 0 || m2 != main || s2 != sub || k2 != CH_PUT) continue;
        }
        uint8_t rk[18];
        put_be64(rk, (uint64_t)main);
        rk[8] = '_';
        put_be64(rk + 9, (uint64_t)sub);
        if (kind == CH_TOMBSTONE) {
            rk[17] = 't';
            h = crc32c_update(h, rk, 18);
            Mvccpb__KeyValue *kv = mvccpb__key_value__unpack(NULL, d.mv_size - 9, v + 9);
            if (kv == NULL) {
                ret = KERR_CORRUPT;
                break;
            }
            Mvccpb__KeyValue t = MVCCPB__KEY_VALUE__INIT;
            t.key = kv->key;
            size_t n = mvccpb__key_value__get_packed_size(&t);
            uint8_t *buf = malloc(n ? n : 1);
            if (buf == NULL) {
                mvccpb__key_value__free_unpacked(kv, NULL);
                ret = KERR_NOMEM;
                break;
            }
            mvccpb__key_value__pack(&t, buf);
            h = crc32c_update(h, buf, n);
            free(buf);
            mvccpb__key_value__free_unpacked(kv, NULL);
        } else {
            h = crc32c_update(h, rk, 17);
            h = crc32c_update(h, v + 9, d.mv_size - 9);
        }
    }
    if (ret == 0 && rc != 0 && rc != MDB_NOTFOUND) ret = mdb_to_kerr(rc);
    mdb_cursor_close(cur);
    if (ret == 0) *hash = h;
    return ret;
}

static int hash_all_txn(MDB_txn *txn, mvcc_store *s, uint32_t *hash);

/* etcd's checks, and the revision to hash at. */
static int hash_args(mvcc_store *s, int64_t *rev, int64_t *current, int64_t *compact)
{
    *current = s->rev;
    *compact = s->compact_rev; /* -1 if never compacted, as etcd's compactMainRev */
    if (*rev > 0 && *rev <= s->compact_rev) return KERR_COMPACTED;
    if (*rev > 0 && *rev > s->rev) return KERR_FUTURE_REV;
    if (*rev == 0) *rev = s->rev;
    return 0;
}

int mvcc_hash_kv(mvcc_store *s, int64_t rev, uint32_t *hash, int64_t *current, int64_t *compact)
{
    int rc = hash_args(s, &rev, current, compact);
    if (rc != 0) return rc;
    MDB_txn *txn;
    if ((rc = store_rtxn_begin(s, &txn)) != 0) return rc;
    rc = hash_txn(txn, s, rev, *compact, hash);
    store_rtxn_end(s);
    return rc;
}

struct mvcc_hash_job {
    mvcc_store *s;
    int64_t rev, crev;
    bool whole; /* Maintenance.Hash (mvcc_hash_start), else HashKV */
};

int mvcc_hash_kv_start(mvcc_store *s, int64_t rev, struct mvcc_hash_job **job, int64_t *current,
                       int64_t *compact)
{
    int rc = hash_args(s, &rev, current, compact);
    if (rc != 0) return rc;
    /* the snapshot taken by run must hold everything applied: commit */
    if ((rc = mvcc_flush(s)) != 0) return rc;
    struct mvcc_hash_job *j = calloc(1, sizeof *j);
    if (j == NULL) return KERR_NOMEM;
    j->s = s;
    j->rev = rev;
    j->crev = *compact;
    *job = j;
    return 0;
}

int mvcc_hash_kv_run(struct mvcc_hash_job *job, uint32_t *hash)
{
    mvcc_store *s = job->s;
    MDB_txn *txn;
    mvcc_reader_enter(s);
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        mvcc_reader_exit(s);
        return mdb_to_kerr(rc);
    }
    if (job->whole) {
        rc = hash_all_txn(txn, s, hash);
    } else {
        /* a compaction committed since start counts, as if the request
         * had come after it */
        uint64_t crev;
        MDB_val k = {sizeof "compact_rev" - 1, "compact_rev"}, d;
        if (mdb_get(txn, s->meta, &k, &d) == 0 && d.mv_size == 8) {
            crev = get_be64(d.mv_data);
            if ((int64_t)crev > job->crev) job->crev = (int64_t)crev;
        }
        rc = job->rev <= job->crev ? KERR_COMPACTED
                                   : hash_txn(txn, s, job->rev, job->crev, hash);
    }
    mdb_txn_abort(txn);
    mvcc_reader_exit(s);
    return rc;
}

int64_t mvcc_hash_kv_compact(const struct mvcc_hash_job *job) { return job->crev; }

void mvcc_hash_kv_end(struct mvcc_hash_job *job) { free(job); }

/* Every table's records, in order (the applied index left out). */
static int hash_all_txn(MDB_txn *txn, mvcc_store *s, uint32_t *hash)
{
    MDB_dbi dbis[] = {s->keys, s->idx, s->hist, s->meta, s->lease, s->lkeys, s->auth, s->alarm};
    static const char *const names[] = {"keys", "idx", "hist", "meta", "lease", "lkeys", "auth",
                                        "alarm"};
    uint32_t h = 0;
    int rc, ret = 0;
    for (size_t i = 0; i < sizeof dbis / sizeof dbis[0] && ret == 0; i++) {
        MDB_cursor *cur;
        if ((rc = mdb_cursor_open(txn, dbis[i], &cur)) != 0) {
            ret = mdb_to_kerr(rc);
            break;
        }
        h = crc32c_update(h, names[i], strlen(names[i]));
        MDB_val k, d;
        for (rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
            if (dbis[i] == s->meta && k.mv_size == 13 && memcmp(k.mv_data, "applied_index", 13) == 0)
                continue;
            h = crc32c_update(h, k.mv_data, k.mv_size);
            h = crc32c_update(h, d.mv_data, d.mv_size);
        }
        if (rc != MDB_NOTFOUND) ret = mdb_to_kerr(rc);
        mdb_cursor_close(cur);
    }
    if (ret == 0) *hash = h;
    return ret;
}

int mvcc_hash(mvcc_store *s, uint32_t *hash)
{
    MDB_txn *txn;
    int rc = store_rtxn_begin(s, &txn);
    if (rc != 0) return rc;
    rc = hash_all_txn(txn, s, hash);
    store_rtxn_end(s);
    return rc;
}

int mvcc_hash_start(mvcc_store *s, struct mvcc_hash_job **job)
{
    int rc = mvcc_flush(s);
    if (rc != 0) return rc;
    struct mvcc_hash_job *j = calloc(1, sizeof *j);
    if (j == NULL) return KERR_NOMEM;
    j->s = s;
    j->whole = true;
    *job = j;
    return 0;
}
