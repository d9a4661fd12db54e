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
#include "util/errors.h"

static uint32_t crc_table[256];

static void crc_init(void)
{
    if (crc_table[1] != 0) return;
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0x82F63B78u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

/* Go's crc32.Update with the Castagnoli table. */
static uint32_t crc32c(uint32_t crc, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    crc = ~crc;
    for (size_t i = 0; i < len; i++) crc = crc_table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

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
    uint32_t h = crc32c(0, "key", 3);
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
            h = crc32c(h, rk, 18);
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
            h = crc32c(h, buf, n);
            free(buf);
            mvccpb__key_value__free_unpacked(kv, NULL);
        } else {
            h = crc32c(h, rk, 17);
            h = crc32c(h, v + 9, d.mv_size - 9);
        }
    }
    if (ret == 0 && rc != 0 && rc != MDB_NOTFOUND) ret = mdb_to_kerr(rc);
    mdb_cursor_close(cur);
    if (ret == 0) *hash = h;
    return ret;
}

/* etcd's checks, and the revision to hash at. */
static int hash_args(mvcc_store *s, int64_t *rev, int64_t *current, int64_t *compact)
{
    crc_init();
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
    MDB_txn *txn;
    int64_t rev, crev;
};

int mvcc_hash_kv_start(mvcc_store *s, int64_t rev, struct mvcc_hash_job **job, int64_t *current,
                       int64_t *compact)
{
    int rc = hash_args(s, &rev, current, compact);
    if (rc != 0) return rc;
    /* the snapshot must hold everything applied: commit the batch */
    if ((rc = mvcc_flush(s)) != 0) return rc;
    struct mvcc_hash_job *j = calloc(1, sizeof *j);
    if (j == NULL) return KERR_NOMEM;
    if ((rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &j->txn)) != 0) {
        free(j);
        return mdb_to_kerr(rc);
    }
    j->s = s;
    j->rev = rev;
    j->crev = *compact;
    s->offloop_readers++;
    *job = j;
    return 0;
}

int mvcc_hash_kv_run(struct mvcc_hash_job *job, uint32_t *hash)
{
    return hash_txn(job->txn, job->s, job->rev, job->crev, hash);
}

void mvcc_hash_kv_end(struct mvcc_hash_job *job)
{
    if (job == NULL) return;
    mdb_txn_abort(job->txn);
    job->s->offloop_readers--;
    free(job);
}

int mvcc_hash(mvcc_store *s, uint32_t *hash)
{
    crc_init();
    MDB_txn *txn;
    int rc = store_rtxn_begin(s, &txn);
    if (rc != 0) return rc;
    MDB_dbi dbis[] = {s->keys, s->idx, s->hist, s->meta, s->lease, s->lkeys, s->auth, s->alarm};
    static const char *const names[] = {"keys", "idx", "hist", "meta", "lease", "lkeys", "auth",
                                        "alarm"};
    uint32_t h = 0;
    int ret = 0;
    for (size_t i = 0; i < sizeof dbis / sizeof dbis[0] && ret == 0; i++) {
        MDB_cursor *cur;
        if ((rc = mdb_cursor_open(txn, dbis[i], &cur)) != 0) {
            ret = mdb_to_kerr(rc);
            break;
        }
        h = crc32c(h, names[i], strlen(names[i]));
        MDB_val k, d;
        for (rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
            if (dbis[i] == s->meta && k.mv_size == 13 && memcmp(k.mv_data, "applied_index", 13) == 0)
                continue;
            h = crc32c(h, k.mv_data, k.mv_size);
            h = crc32c(h, d.mv_data, d.mv_size);
        }
        if (rc != MDB_NOTFOUND) ret = mdb_to_kerr(rc);
        mdb_cursor_close(cur);
    }
    store_rtxn_end(s);
    if (ret == 0) *hash = h;
    return ret;
}
