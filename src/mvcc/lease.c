/* Leases in the store: the `lease` and `lkeys` tables (layout at the top of
 * store.c), written in the same LMDB transaction as the keys they govern,
 * so that a grant, a revoke and its deletes, or a put and its attachment
 * are all-or-nothing and start-up rebuilds nothing.
 *
 * Semantics are etcd's lessor (lease/lessor.go) minus time: expiry is
 * decided outside (src/lease) and arrives here as a revoke. */
#include <stdlib.h>

#include "mvcc/mvcc_int.h"
#include "util/errors.h"

static void lease_key(uint8_t *b, int64_t id) { put_be64(b, (uint64_t)id); }

static void lkey_key(uint8_t *b, int64_t id, uint64_t kid)
{
    put_be64(b, (uint64_t)id);
    put_be64(b + 8, kid);
}

int leasetab_exists(MDB_txn *txn, mvcc_store *s, int64_t id)
{
    uint8_t b[8];
    lease_key(b, id);
    MDB_val k = {8, b}, d;
    int rc = mdb_get(txn, s->lease, &k, &d);
    if (rc == MDB_NOTFOUND) return 0;
    return rc == 0 ? 1 : mdb_to_kerr(rc);
}

int leasetab_move(MDB_txn *txn, mvcc_store *s, uint64_t kid, const uint8_t *key, size_t klen,
                  int64_t from, int64_t to)
{
    uint8_t b[16];
    int rc;
    if (from == to) return 0;
    if (from != 0) {
        lkey_key(b, from, kid);
        MDB_val k = {16, b};
        rc = mdb_del(txn, s->lkeys, &k, NULL);
        if (rc != 0 && rc != MDB_NOTFOUND) return mdb_to_kerr(rc);
    }
    if (to != 0) {
        lkey_key(b, to, kid);
        MDB_val k = {16, b}, d = {klen, (void *)key};
        if ((rc = mdb_put(txn, s->lkeys, &k, &d, 0)) != 0) return mdb_to_kerr(rc);
    }
    return 0;
}

static int put_lease(MDB_txn *txn, mvcc_store *s, int64_t id, int64_t ttl, int64_t remaining)
{
    uint8_t kb[8], vb[16];
    lease_key(kb, id);
    put_be64(vb, (uint64_t)ttl);
    put_be64(vb + 8, (uint64_t)remaining);
    MDB_val k = {8, kb}, d = {16, vb};
    return mdb_to_kerr(mdb_put(txn, s->lease, &k, &d, 0));
}

/* etcd's applierV3backend.LeaseGrant + lessor.Grant. */
int leasetab_grant(struct op_ctx *c, const Etcdserverpb__LeaseGrantRequest *r, arena *a,
                   Etcdserverpb__LeaseGrantResponse *resp)
{
    (void)a;
    if (r->id == 0) return KERR_LEASE_NOT_FOUND;
    if (r->ttl > MVCC_MAX_LEASE_TTL) return KERR_LEASE_TTL_TOO_LARGE;
    int rc = leasetab_exists(c->txn, c->s, r->id);
    if (rc < 0) return rc;
    if (rc == 1) return KERR_LEASE_EXIST;
    if ((rc = put_lease(c->txn, c->s, r->id, r->ttl, 0)) != 0) return rc;
    resp->id = r->id;
    resp->ttl = r->ttl;
    return 0;
}

/* Collects the keys of lease `id` (arena copies, with their kids) in kid
 * order. */
static int collect_keys(MDB_txn *txn, mvcc_store *s, int64_t id, arena *a,
                        ProtobufCBinaryData **keys, size_t *n)
{
    MDB_cursor *cur;
    uint8_t b[16];
    size_t cap = 0;
    *keys = NULL;
    *n = 0;
    int rc = mdb_cursor_open(txn, s->lkeys, &cur);
    if (rc != 0) return mdb_to_kerr(rc);
    lkey_key(b, id, 0);
    MDB_val k = {16, b}, d;
    for (rc = mdb_cursor_get(cur, &k, &d, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
        if (k.mv_size != 16 || get_be64(k.mv_data) != (uint64_t)id) break;
        if (*n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            ProtobufCBinaryData *nk = arena_alloc(a, ncap * sizeof *nk);
            if (*n) memcpy(nk, *keys, *n * sizeof *nk);
            *keys = nk, cap = ncap;
        }
        uint8_t *copy = arena_alloc(a, d.mv_size ? d.mv_size : 1);
        if (d.mv_size) memcpy(copy, d.mv_data, d.mv_size);
        (*keys)[(*n)++] = (ProtobufCBinaryData){d.mv_size, copy};
    }
    mdb_cursor_close(cur);
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : mdb_to_kerr(rc);
}

static int key_order(const void *x, const void *y)
{
    const ProtobufCBinaryData *a = x, *b = y;
    return bytes_cmp(a->data, a->len, b->data, b->len);
}

/* etcd's lessor.Revoke: every attached key is deleted, in key order, in
 * the one write transaction (one revision), then the lease. */
int leasetab_revoke(struct op_ctx *c, const Etcdserverpb__LeaseRevokeRequest *r, arena *a,
                    Etcdserverpb__LeaseRevokeResponse *resp)
{
    (void)resp;
    int rc = leasetab_exists(c->txn, c->s, r->id);
    if (rc < 0) return rc;
    if (rc == 0) return KERR_LEASE_NOT_FOUND;
    ProtobufCBinaryData *keys;
    size_t n;
    if ((rc = collect_keys(c->txn, c->s, r->id, a, &keys, &n)) != 0) return rc;
    if (n > 1) qsort(keys, n, sizeof *keys, key_order);
    for (size_t i = 0; i < n; i++) {
        Etcdserverpb__DeleteRangeRequest d = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
        Etcdserverpb__DeleteRangeResponse dr = ETCDSERVERPB__DELETE_RANGE_RESPONSE__INIT;
        d.key = keys[i];
        /* delete_exec detaches the key (and drops a stale attachment) */
        if ((rc = delete_exec(c, &d, a, &dr)) != 0) return rc;
    }
    /* anything left over (cannot happen unless the index is stale) */
    uint8_t b[16];
    MDB_cursor *cur;
    if ((rc = mdb_cursor_open(c->txn, c->s->lkeys, &cur)) != 0) return mdb_to_kerr(rc);
    lkey_key(b, r->id, 0);
    MDB_val k = {16, b}, dv;
    while ((rc = mdb_cursor_get(cur, &k, &dv, MDB_SET_RANGE)) == 0 && k.mv_size == 16 &&
           get_be64(k.mv_data) == (uint64_t)r->id) {
        if ((rc = mdb_cursor_del(cur, 0)) != 0) break;
        k = (MDB_val){16, b};
    }
    mdb_cursor_close(cur);
    if (rc != 0 && rc != MDB_NOTFOUND) return mdb_to_kerr(rc);
    lease_key(b, r->id);
    k = (MDB_val){8, b};
    return mdb_to_kerr(mdb_del(c->txn, c->s->lease, &k, NULL));
}

/* etcd's lessor.Checkpoint: unknown leases are skipped. */
int leasetab_checkpoint(struct op_ctx *c, const Etcdserverpb__LeaseCheckpointRequest *r)
{
    for (size_t i = 0; i < r->n_checkpoints; i++) {
        const Etcdserverpb__LeaseCheckpoint *cp = r->checkpoints[i];
        uint8_t b[8];
        lease_key(b, cp->id);
        MDB_val k = {8, b}, d;
        int rc = mdb_get(c->txn, c->s->lease, &k, &d);
        if (rc == MDB_NOTFOUND) continue;
        if (rc != 0) return mdb_to_kerr(rc);
        if (d.mv_size != 16) return KERR_CORRUPT;
        int64_t ttl = (int64_t)get_be64(d.mv_data);
        if ((rc = put_lease(c->txn, c->s, cp->id, ttl, cp->remaining_ttl)) != 0) return rc;
    }
    return 0;
}

int mvcc_lease_list(mvcc_store *s, struct mvcc_lease **out, size_t *n)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    size_t cap = 0;
    *out = NULL;
    *n = 0;
    int rc = store_rtxn_begin(s, &txn);
    if (rc != 0) return rc;
    if ((rc = mdb_cursor_open(txn, s->lease, &cur)) != 0) {
        store_rtxn_end(s);
        return mdb_to_kerr(rc);
    }
    MDB_val k, d;
    int ret = 0;
    for (rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
        if (k.mv_size != 8 || d.mv_size != 16) {
            ret = KERR_CORRUPT;
            break;
        }
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            struct mvcc_lease *nl = realloc(*out, cap * sizeof *nl);
            if (nl == NULL) {
                ret = KERR_NOMEM;
                break;
            }
            *out = nl;
        }
        (*out)[(*n)++] = (struct mvcc_lease){(int64_t)get_be64(k.mv_data),
                                             (int64_t)get_be64(d.mv_data),
                                             (int64_t)get_be64((uint8_t *)d.mv_data + 8)};
    }
    if (ret == 0 && rc != MDB_NOTFOUND) ret = mdb_to_kerr(rc);
    mdb_cursor_close(cur);
    store_rtxn_end(s);
    if (ret != 0) {
        free(*out);
        *out = NULL;
        *n = 0;
    }
    return ret;
}

int leasetab_keys(MDB_txn *txn, mvcc_store *s, int64_t id, arena *a, ProtobufCBinaryData **keys,
                  size_t *n)
{
    return collect_keys(txn, s, id, a, keys, n);
}

int mvcc_lease_keys(mvcc_store *s, int64_t id, arena *a, ProtobufCBinaryData **keys, size_t *n)
{
    MDB_txn *txn;
    int rc = store_rtxn_begin(s, &txn);
    if (rc != 0) return rc;
    rc = collect_keys(txn, s, id, a, keys, n);
    store_rtxn_end(s);
    if (rc == 0 && *n > 1) qsort(*keys, *n, sizeof **keys, key_order);
    return rc;
}
