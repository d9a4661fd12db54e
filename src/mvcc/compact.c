/* Compaction, as etcd's: logical at apply, physical in batches later.
 *
 * The apply of a Compaction entry only records the new compact revision
 * (meta "compact_rev"): from then on reads below it fail with
 * KERR_COMPACTED, and watchers starting below it are cancelled. The
 * history it frees is swept afterwards by mvcc_compact_step(), a bounded
 * number of changes per call (etcd's --experimental-compaction-batch-limit,
 * one bbolt txn per batch; here one step per call, committed with the
 * batch), so a compaction of millions of revisions never holds the loop.
 *
 * Nothing a client can see depends on how far the sweep got: reads at or
 * above the compact revision find the newest change <= their revision,
 * which the sweep never removes; HashKV skips what the sweep would remove
 * (hash.c). So members may sweep at their own pace and stay identical.
 * The sweep position is not stored: after a restart (or a defrag) the
 * sweep starts again from the first revision, which costs one pass over
 * the changes that were kept. */
#include "mvcc/mvcc_int.h"
#include "util/errors.h"

int store_compact(struct op_ctx *c, int64_t rev)
{
    mvcc_store *s = c->s;
    int rc = meta_put_u64(c->txn, s, "compact_rev", (uint64_t)rev);
    if (rc != 0) return rc;
    return 0;
}

/* Called by mvcc_apply once the compaction has committed in the batch. */
void compact_scheduled(mvcc_store *s, int64_t rev)
{
    if (rev > s->phys_target) {
        s->phys_target = rev;
        /* changes kept by the last sweep may go now */
        memset(s->phys_pos, 0, sizeof s->phys_pos);
    }
}

bool mvcc_compact_pending(const mvcc_store *s)
{
    return s->phys_target >= 0 &&
           (int64_t)get_be64(s->phys_pos) <= s->phys_target;
}

/* Removes every change at or below phys_target except, per key, the newest
 * one when it is a put (etcd's keyIndex.compact + scheduleCompaction):
 * reads at revisions >= the compact revision see the same data as before.
 * At most `limit` changes are looked at. */
int mvcc_compact_step(mvcc_store *s, size_t limit)
{
    if (!mvcc_compact_pending(s)) return 0;
    int64_t rev = s->phys_target;
    MDB_txn *txn;
    MDB_cursor *hc = NULL, *ic = NULL;
    uint8_t hk[16], ik[24];
    int rc, ret = 0;
    if ((rc = store_wtxn(s, &txn)) != 0) return rc;
    if ((rc = mdb_cursor_open(txn, s->hist, &hc)) != 0) return mdb_to_kerr(rc);
    if ((rc = mdb_cursor_open(txn, s->idx, &ic)) != 0) {
        mdb_cursor_close(hc);
        return mdb_to_kerr(rc);
    }
    memcpy(hk, s->phys_pos, 16);
    size_t seen = 0;
    for (;;) {
        if (seen++ >= limit) break;
        MDB_val k = {16, hk}, d;
        rc = mdb_cursor_get(hc, &k, &d, MDB_SET_RANGE);
        if (rc == MDB_NOTFOUND) {
            put_be64(hk, (uint64_t)rev + 1);
            put_be64(hk + 8, 0);
            break;
        }
        if (rc != 0) goto fail;
        if (k.mv_size != 16 || d.mv_size < 9) {
            ret = KERR_CORRUPT;
            goto out;
        }
        int64_t main = (int64_t)get_be64(k.mv_data);
        int64_t sub = (int64_t)get_be64((uint8_t *)k.mv_data + 8);
        if (main > rev) {
            put_be64(hk, (uint64_t)rev + 1);
            put_be64(hk + 8, 0);
            break;
        }
        int kind = ((uint8_t *)d.mv_data)[0];
        uint64_t kid = get_be64((uint8_t *)d.mv_data + 1);

        put_be64(ik, kid);
        memcpy(ik + 8, k.mv_data, 16);
        MDB_val ikv = {24, ik}, idv;
        rc = mdb_cursor_get(ic, &ikv, &idv, MDB_SET_KEY);
        if (rc != 0) goto fail;
        int newer_le = 0, newer_any = 0;
        rc = mdb_cursor_get(ic, &ikv, &idv, MDB_NEXT);
        if (rc == 0 && get_be64(ikv.mv_data) == kid) {
            newer_any = 1;
            newer_le = (int64_t)get_be64((uint8_t *)ikv.mv_data + 8) <= rev;
        } else if (rc != 0 && rc != MDB_NOTFOUND) {
            goto fail;
        }

        if (newer_le || kind == CH_TOMBSTONE) {
            if (!newer_any) {
                /* the key's last change goes: forget the key */
                Mvccpb__KeyValue *kv = mvccpb__key_value__unpack(NULL, d.mv_size - 9,
                                                                 (uint8_t *)d.mv_data + 9);
                if (kv == NULL) {
                    ret = KERR_CORRUPT;
                    goto out;
                }
                ret = krec_del(txn, s, kv->key.data, kv->key.len);
                mvccpb__key_value__free_unpacked(kv, NULL);
                if (ret != 0) goto out;
            }
            ikv = (MDB_val){24, ik};
            if ((rc = mdb_del(txn, s->idx, &ikv, NULL)) != 0) goto fail;
            put_be64(hk, (uint64_t)main);
            put_be64(hk + 8, (uint64_t)sub);
            k = (MDB_val){16, hk};
            if ((rc = mdb_del(txn, s->hist, &k, NULL)) != 0) goto fail;
        }
        put_be64(hk, (uint64_t)main);
        put_be64(hk + 8, (uint64_t)sub + 1);
    }
    memcpy(s->phys_pos, hk, 16);
    s->batch_n++; /* committed by the next flush */
    goto out;
fail:
    ret = mdb_to_kerr(rc);
out:
    mdb_cursor_close(ic);
    mdb_cursor_close(hc);
    return ret;
}
