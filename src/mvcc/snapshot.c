/* Whole-store export and import (export.h), on the tables described at the
 * top of store.c, lease.c and auth.c. */
#include <stdlib.h>

#include "mvcc/export.h"
#include "mvcc/mvcc_int.h"
#include "util/errors.h"
#include "util/log.h"

struct mvcc_export {
    mvcc_store *s;
    MDB_txn *txn;
};

static int get_u64(MDB_txn *txn, MDB_dbi dbi, const char *name, uint64_t *v)
{
    MDB_val k = {strlen(name), (void *)name}, d;
    int rc = mdb_get(txn, dbi, &k, &d);
    if (rc == MDB_NOTFOUND) return 0;
    if (rc != 0) return mdb_to_kerr(rc);
    if (d.mv_size == 1) *v = *(const uint8_t *)d.mv_data;
    else if (d.mv_size == 8) *v = get_be64(d.mv_data);
    else return KERR_CORRUPT;
    return 1;
}

int mvcc_export_begin(mvcc_store *s, mvcc_export **out, struct mvcc_export_info *info)
{
    mvcc_export *e = calloc(1, sizeof *e);
    if (e == NULL) return KERR_NOMEM;
    e->s = s;
    mvcc_reader_enter(s); /* a defrag swap or a snapshot install waits for us */
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &e->txn);
    if (rc != 0) {
        mvcc_reader_exit(s);
        free(e);
        return mdb_to_kerr(rc);
    }
    uint64_t rev = 1, crev = (uint64_t)-1, applied = 0, en = 0, arev = 1;
    if (get_u64(e->txn, s->meta, "revision", &rev) < 0 ||
        get_u64(e->txn, s->meta, "compact_rev", &crev) < 0 ||
        get_u64(e->txn, s->meta, "applied_index", &applied) < 0 ||
        get_u64(e->txn, s->auth, "e", &en) < 0 || get_u64(e->txn, s->auth, "v", &arev) < 0) {
        mvcc_export_end(e);
        return KERR_IO;
    }
    *info = (struct mvcc_export_info){
        .revision = (int64_t)rev,
        .compact_rev = (int64_t)crev < 0 ? 0 : (int64_t)crev,
        .applied = applied,
        .auth_enabled = en != 0,
        .auth_rev = arev,
    };
    *out = e;
    return 0;
}

void mvcc_export_end(mvcc_export *e)
{
    if (e == NULL) return;
    mdb_txn_abort(e->txn);
    mvcc_reader_exit(e->s);
    free(e);
}

const char *mvcc_export_dir(mvcc_store *s)
{
    const char *p = NULL;
    mdb_env_get_path(s->env, &p);
    return p;
}

/* Walks table dbi from `start` (len bytes, may be 0) calling each(k, v)
 * while it returns 0. */
static int scan(MDB_txn *txn, MDB_dbi dbi, const void *start, size_t slen,
                int (*each)(void *arg, MDB_val *k, MDB_val *v), void *arg)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc != 0) return mdb_to_kerr(rc);
    MDB_val k = {slen, (void *)start}, v;
    rc = mdb_cursor_get(cur, &k, &v, slen ? MDB_SET_RANGE : MDB_FIRST);
    int ret = 0;
    while (rc == 0 && ret == 0) {
        ret = each(arg, &k, &v);
        if (ret == 0) rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (ret == 0 && rc != MDB_NOTFOUND) ret = mdb_to_kerr(rc);
    if (ret == 1) ret = 0; /* 1: stop, not an error */
    mdb_cursor_close(cur);
    return ret;
}

struct hist_arg {
    mvcc_export_rev_fn fn;
    void *ctx;
};

static int hist_each(void *arg, MDB_val *k, MDB_val *v)
{
    struct hist_arg *h = arg;
    if (k->mv_size != 16 || v->mv_size < 9) return KERR_CORRUPT;
    const uint8_t *d = v->mv_data;
    int rc = h->fn(h->ctx, (int64_t)get_be64(k->mv_data), (int64_t)get_be64((uint8_t *)k->mv_data + 8),
                   d[0] == CH_TOMBSTONE, d + 9, v->mv_size - 9);
    return rc == 1 ? 2 : rc; /* keep 1 for "stop" of scan */
}

int mvcc_export_history(mvcc_export *e, mvcc_export_rev_fn fn, void *ctx)
{
    struct hist_arg h = {fn, ctx};
    int rc = scan(e->txn, e->s->hist, NULL, 0, hist_each, &h);
    return rc == 2 ? 1 : rc;
}

struct lease_arg {
    mvcc_export_lease_fn fn;
    void *ctx;
};

static int lease_each(void *arg, MDB_val *k, MDB_val *v)
{
    struct lease_arg *l = arg;
    if (k->mv_size != 8 || v->mv_size != 16) return KERR_CORRUPT;
    const uint8_t *d = v->mv_data;
    int rc = l->fn(l->ctx, (int64_t)get_be64(k->mv_data), (int64_t)get_be64(d),
                   (int64_t)get_be64(d + 8));
    return rc == 1 ? 2 : rc;
}

int mvcc_export_leases(mvcc_export *e, mvcc_export_lease_fn fn, void *ctx)
{
    struct lease_arg l = {fn, ctx};
    int rc = scan(e->txn, e->s->lease, NULL, 0, lease_each, &l);
    return rc == 2 ? 1 : rc;
}

struct auth_arg {
    mvcc_export_auth_fn fn;
    void *ctx;
    char kind;
};

static int auth_each(void *arg, MDB_val *k, MDB_val *v)
{
    struct auth_arg *a = arg;
    const uint8_t *key = k->mv_data;
    if (k->mv_size < 1 || key[0] != (uint8_t)a->kind) return 1; /* past the kind */
    int rc = a->fn(a->ctx, a->kind == 'r', key + 1, k->mv_size - 1, v->mv_data, v->mv_size);
    return rc == 1 ? 2 : rc;
}

int mvcc_export_auth(mvcc_export *e, mvcc_export_auth_fn fn, void *ctx)
{
    struct auth_arg a = {fn, ctx, 'u'};
    int rc = scan(e->txn, e->s->auth, "u", 1, auth_each, &a);
    if (rc != 0) return rc == 2 ? 1 : rc;
    a.kind = 'r';
    rc = scan(e->txn, e->s->auth, "r", 1, auth_each, &a);
    return rc == 2 ? 1 : rc;
}

/* ================= import ================= */

/* Changes per LMDB commit while importing (keeps the dirty page list of one
 * write txn well below LMDB's limit). */
#define IMPORT_BATCH 20000

struct mvcc_import {
    mvcc_store *s;
    MDB_txn *txn;
    size_t n; /* changes in txn */
    int64_t last_main, last_sub;
    int64_t max_main;
    uint64_t next_kid;
};

static int import_txn(mvcc_import *im)
{
    if (im->txn != NULL && im->n < IMPORT_BATCH) return 0;
    if (im->txn != NULL) {
        int rc = mdb_txn_commit(im->txn);
        im->txn = NULL;
        if (rc != 0) return mdb_to_kerr(rc);
    }
    im->n = 0;
    int rc = mdb_txn_begin(im->s->env, NULL, 0, &im->txn);
    if (rc != 0) {
        im->txn = NULL;
        return mdb_to_kerr(rc);
    }
    return 0;
}

int mvcc_import_begin(mvcc_import **out, const char *dir)
{
    mvcc_import *im = calloc(1, sizeof *im);
    if (im == NULL) return KERR_NOMEM;
    /* the map bounds the store; import's data is at most the snapshot's */
    int rc = mvcc_open(&im->s, dir, (size_t)64 << 30);
    if (rc != 0) {
        free(im);
        return rc;
    }
    if (im->s->rev > 1 || im->s->applied > 0) {
        log_error("mvcc: import into %s: the store is not empty", dir);
        mvcc_close(im->s);
        free(im);
        return KERR_INTERNAL;
    }
    im->next_kid = im->s->next_kid;
    *out = im;
    return 0;
}

void mvcc_import_abort(mvcc_import *im)
{
    if (im == NULL) return;
    if (im->txn != NULL) mdb_txn_abort(im->txn);
    mvcc_close(im->s);
    free(im);
}

int mvcc_import_rev(mvcc_import *im, int64_t main, int64_t sub, int tombstone,
                    const uint8_t *kvb, size_t len)
{
    if (main < 1 || sub < 0 || main < im->last_main ||
        (main == im->last_main && sub <= im->last_sub))
        return KERR_CORRUPT;
    Mvccpb__KeyValue *kv = mvccpb__key_value__unpack(NULL, len, kvb);
    if (kv == NULL) return KERR_CORRUPT;
    int rc = KERR_CORRUPT;
    if (kv->key.len == 0) goto out;
    if ((rc = import_txn(im)) != 0) goto out;
    mvcc_store *s = im->s;
    struct krec old, rec;
    int found = krec_get(im->txn, s, kv->key.data, kv->key.len, &old);
    if (found < 0) {
        rc = found;
        goto out;
    }
    rec = (struct krec){.kid = found ? old.kid : im->next_kid++, .main = main, .sub = sub};
    if (tombstone) {
        rec.deleted = 1;
        /* ours hold the key and the deletion revision */
        kv->mod_revision = main;
        kv->create_revision = kv->version = kv->lease = 0;
        kv->value.len = 0;
    } else {
        rec.create = kv->create_revision;
        rec.version = kv->version;
        rec.lease = kv->lease;
    }
    uint8_t hk[16], ik[24], kind = tombstone ? CH_TOMBSTONE : CH_PUT;
    put_be64(hk, (uint64_t)main);
    put_be64(hk + 8, (uint64_t)sub);
    put_be64(ik, rec.kid);
    memcpy(ik + 8, hk, 16);
    size_t n = mvccpb__key_value__get_packed_size(kv);
    MDB_val k = {16, hk}, d = {9 + n, NULL};
    if ((rc = mdb_put(im->txn, s->hist, &k, &d, MDB_RESERVE | MDB_APPEND)) != 0) {
        rc = rc == MDB_KEYEXIST ? KERR_CORRUPT : mdb_to_kerr(rc);
        goto out;
    }
    uint8_t *p = d.mv_data;
    p[0] = kind;
    put_be64(p + 1, rec.kid);
    mvccpb__key_value__pack(kv, p + 9);
    k = (MDB_val){24, ik};
    d = (MDB_val){1, &kind};
    if ((rc = mdb_to_kerr(mdb_put(im->txn, s->idx, &k, &d, 0))) != 0) goto out;
    if ((rc = krec_put(im->txn, s, kv->key.data, kv->key.len, &rec)) != 0) goto out;
    int64_t from = found && !old.deleted ? old.lease : 0;
    if ((rc = leasetab_move(im->txn, s, rec.kid, kv->key.data, kv->key.len, from, rec.lease)) != 0)
        goto out;
    im->n++;
    im->last_main = main;
    im->last_sub = sub;
    if (main > im->max_main) im->max_main = main;
out:
    mvccpb__key_value__free_unpacked(kv, NULL);
    return rc;
}

int mvcc_import_lease(mvcc_import *im, int64_t id, int64_t ttl, int64_t remaining)
{
    int rc = import_txn(im);
    if (rc != 0) return rc;
    /* lease table record (store.c): granted TTL | remaining TTL */
    uint8_t kb[8], vb[16];
    put_be64(kb, (uint64_t)id);
    put_be64(vb, (uint64_t)ttl);
    put_be64(vb + 8, (uint64_t)(remaining > 0 ? remaining : 0));
    MDB_val k = {8, kb}, d = {16, vb};
    im->n++;
    return mdb_to_kerr(mdb_put(im->txn, im->s->lease, &k, &d, 0));
}

int mvcc_import_auth(mvcc_import *im, int role, const uint8_t *name, size_t nlen,
                     const uint8_t *pb, size_t len)
{
    if (nlen == 0 || nlen > 500) return KERR_CORRUPT;
    int rc = import_txn(im);
    if (rc != 0) return rc;
    uint8_t kb[501];
    kb[0] = role ? 'r' : 'u';
    memcpy(kb + 1, name, nlen);
    MDB_val k = {nlen + 1, kb}, d = {len, (void *)pb};
    im->n++;
    return mdb_to_kerr(mdb_put(im->txn, im->s->auth, &k, &d, 0));
}

int mvcc_import_auth_state(mvcc_import *im, bool enabled, uint64_t auth_rev)
{
    int rc = import_txn(im);
    if (rc != 0) return rc;
    uint8_t en = enabled ? 1 : 0, rb[8];
    put_be64(rb, auth_rev ? auth_rev : 1);
    MDB_val k = {1, "e"}, d = {1, &en};
    if ((rc = mdb_put(im->txn, im->s->auth, &k, &d, 0)) != 0) return mdb_to_kerr(rc);
    k = (MDB_val){1, "v"};
    d = (MDB_val){8, rb};
    return mdb_to_kerr(mdb_put(im->txn, im->s->auth, &k, &d, 0));
}

int mvcc_import_finish(mvcc_import *im, int64_t compact_rev, int64_t scheduled, int64_t *revision)
{
    int rc = import_txn(im);
    if (rc != 0) goto out;
    mvcc_store *s = im->s;
    int64_t rev = im->max_main;
    if (rev < compact_rev) rev = compact_rev;
    if (rev < scheduled) rev = scheduled;
    if (rev < 1) rev = 1;
    if ((rc = meta_put_u64(im->txn, s, "revision", (uint64_t)rev)) != 0 ||
        (rc = meta_put_u64(im->txn, s, "compact_rev",
                           compact_rev > 0 ? (uint64_t)compact_rev : (uint64_t)-1)) != 0 ||
        (rc = meta_put_u64(im->txn, s, "applied_index", 0)) != 0 ||
        (rc = meta_put_u64(im->txn, s, "next_kid", im->next_kid)) != 0)
        goto out;
    if (scheduled > compact_rev && scheduled > 0) {
        struct op_ctx c = {.s = s, .txn = im->txn, .begin_rev = rev, .next_kid = im->next_kid,
                           .write = 1};
        if ((rc = store_compact(&c, scheduled)) != 0) goto out;
    }
    rc = mdb_txn_commit(im->txn);
    im->txn = NULL;
    if (rc != 0) {
        rc = mdb_to_kerr(rc);
        goto out;
    }
    if (revision != NULL) *revision = rev;
out:
    mvcc_import_abort(im);
    return rc;
}

struct alarm_arg {
    mvcc_export_alarm_fn fn;
    void *ctx;
};

static int alarm_each(void *arg, MDB_val *k, MDB_val *v)
{
    struct alarm_arg *a = arg;
    if (k->mv_size != 9) return 0; /* alarm.c: member u64 | type u8 */
    const uint8_t *key = k->mv_data;
    int rc = a->fn(a->ctx, get_be64(key), key[8]);
    return rc == 1 ? 2 : rc;
}

int mvcc_export_alarms(mvcc_export *e, mvcc_export_alarm_fn fn, void *ctx)
{
    struct alarm_arg a = {fn, ctx};
    int rc = scan(e->txn, e->s->alarm, NULL, 0, alarm_each, &a);
    return rc == 2 ? 1 : rc;
}
