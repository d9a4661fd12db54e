/* Reads: etcd's rangeKeys (mvcc/kvstore_txn.go) over our tables, and the
 * RangeRequest options applied on top of it (etcdserver/apply.go Range). */
#include <stdlib.h>

#include "mvcc/mvcc_int.h"
#include "util/errors.h"

struct krange krange_make(ProtobufCBinaryData key, ProtobufCBinaryData end)
{
    struct krange r = {key.data, key.len, end.data, end.len, END_RANGE};
    if (end.len == 0)
        r.kind = END_SINGLE;
    else if (end.len == 1 && end.data[0] == 0)
        r.kind = END_FROM;
    return r;
}

struct kvvec {
    Mvccpb__KeyValue **v;
    size_t n, cap;
};

static int kvvec_push(struct kvvec *vec, Mvccpb__KeyValue *kv)
{
    if (vec->n == vec->cap) {
        size_t cap = vec->cap ? vec->cap * 2 : 16;
        Mvccpb__KeyValue **v = realloc(vec->v, cap * sizeof *v);
        if (v == NULL) return KERR_NOMEM;
        vec->v = v, vec->cap = cap;
    }
    vec->v[vec->n++] = kv;
    return 0;
}

/* The kv of one key as of `rev`; *out NULL if the key was not alive then.
 * With `materialize` 0, only says whether it was alive (*alive). */
static int key_at(struct op_ctx *c, const uint8_t *key, size_t klen, const struct krec *rec,
                  int64_t rev, int materialize, int want_values, arena *a, int *alive,
                  Mvccpb__KeyValue **out)
{
    int64_t main = rec->main, sub = rec->sub;
    int kind = rec->deleted ? CH_TOMBSTONE : CH_PUT;
    *alive = 0;
    *out = NULL;
    if (rec->main > rev) {
        int rc = idx_find(c->txn, c->s, rec->kid, rev, &main, &sub, &kind);
        if (rc < 0) return rc;
        if (rc == 0) return 0;
    }
    if (kind != CH_PUT) return 0;
    *alive = 1;
    if (!materialize) return 0;
    if (main == rec->main && !want_values) {
        /* the latest put: the record has all but the value */
        Mvccpb__KeyValue *kv = arena_alloc(a, sizeof *kv);
        mvccpb__key_value__init(kv);
        kv->key.data = arena_dup(a, key, klen);
        kv->key.len = klen;
        kv->create_revision = rec->create;
        kv->mod_revision = rec->main;
        kv->version = rec->version;
        kv->lease = rec->lease;
        *out = kv;
        return 0;
    }
    int rc = hist_load(c->txn, c->s, main, sub, a, out);
    if (rc != 0) return rc;
    if (!want_values) (*out)->value = (ProtobufCBinaryData){0, NULL};
    return 0;
}

int range_keys(struct op_ctx *c, const struct krange *r, int64_t rev, int64_t limit,
               int count_only, int want_values, arena *a, Mvccpb__KeyValue ***kvs,
               size_t *n, int64_t *count)
{
    int64_t cur = ctx_rev(c);
    if (rev > cur) return KERR_FUTURE_REV;
    if (rev <= 0) rev = cur;
    if (rev < c->s->compact_rev) return KERR_COMPACTED;

    struct kvvec vec = {0};
    int64_t cnt = 0;
    int rc;
    Mvccpb__KeyValue *kv;
    int alive;
    *kvs = NULL;
    *n = 0;
    if (r->kind == END_SINGLE) {
        struct krec rec;
        rc = krec_get(c->txn, c->s, r->key, r->klen, &rec);
        if (rc == 1) {
            rc = key_at(c, r->key, r->klen, &rec, rev, !count_only, want_values, a, &alive, &kv);
            if (rc == 0 && alive) cnt = 1;
            if (rc == 0 && kv) rc = kvvec_push(&vec, kv);
        }
        if (rc < 0) goto out;
    } else {
        struct kiter it;
        rc = kiter_seek(&it, c->txn, c->s, r->key, r->klen);
        while (rc == 1) {
            if (r->kind == END_RANGE && bytes_cmp(it.key, it.klen, r->end, r->elen) >= 0) break;
            int mat = !count_only && (limit <= 0 || (int64_t)vec.n < limit);
            rc = key_at(c, it.key, it.klen, &it.rec, rev, mat, want_values, a, &alive, &kv);
            if (rc < 0) break;
            cnt += alive;
            if (kv && (rc = kvvec_push(&vec, kv)) < 0) break;
            rc = kiter_next(&it);
        }
        kiter_close(&it);
        if (rc < 0) goto out;
    }
    rc = 0;
    *count = cnt;
    *n = vec.n;
    if (vec.n) *kvs = arena_dup(a, vec.v, vec.n * sizeof *vec.v);
out:
    free(vec.v);
    return rc;
}

int kv_current(struct op_ctx *c, const uint8_t *key, size_t klen, arena *a,
               Mvccpb__KeyValue **out, struct krec *rec, int *exists)
{
    *out = NULL;
    *exists = 0;
    int rc = krec_get(c->txn, c->s, key, klen, rec);
    if (rc <= 0) return rc;
    *exists = 1;
    if (rec->deleted) return 0;
    return hist_load(c->txn, c->s, rec->main, rec->sub, a, out);
}

/* ---- sort, as etcd's kvSortBy* ---- */

typedef int (*kv_cmp_fn)(const Mvccpb__KeyValue *, const Mvccpb__KeyValue *);

static int cmp_i64(int64_t a, int64_t b) { return a < b ? -1 : a > b; }
static int by_key(const Mvccpb__KeyValue *a, const Mvccpb__KeyValue *b)
{
    return bytes_cmp(a->key.data, a->key.len, b->key.data, b->key.len);
}
static int by_version(const Mvccpb__KeyValue *a, const Mvccpb__KeyValue *b)
{
    return cmp_i64(a->version, b->version);
}
static int by_create(const Mvccpb__KeyValue *a, const Mvccpb__KeyValue *b)
{
    return cmp_i64(a->create_revision, b->create_revision);
}
static int by_mod(const Mvccpb__KeyValue *a, const Mvccpb__KeyValue *b)
{
    return cmp_i64(a->mod_revision, b->mod_revision);
}
static int by_value(const Mvccpb__KeyValue *a, const Mvccpb__KeyValue *b)
{
    return bytes_cmp(a->value.data, a->value.len, b->value.data, b->value.len);
}

/* Stable merge sort; `desc` reverses the comparison (sort.Reverse), so
 * equal elements keep their key order either way, as Go's insertion sort
 * does for the small inputs etcd sorts most often. */
static void msort(Mvccpb__KeyValue **v, Mvccpb__KeyValue **tmp, size_t n, kv_cmp_fn cmp, int desc)
{
    if (n < 2) return;
    size_t h = n / 2;
    msort(v, tmp, h, cmp, desc);
    msort(v + h, tmp, n - h, cmp, desc);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n) {
        int c = desc ? cmp(v[i], v[j]) : cmp(v[j], v[i]);
        /* take from the right only if strictly before the left */
        if (c < 0)
            tmp[k++] = v[j++];
        else
            tmp[k++] = v[i++];
    }
    while (i < h) tmp[k++] = v[i++];
    while (j < n) tmp[k++] = v[j++];
    memcpy(v, tmp, n * sizeof *v);
}

static size_t prune(Mvccpb__KeyValue **v, size_t n, int (*drop)(const Mvccpb__KeyValue *, int64_t),
                    int64_t arg)
{
    size_t j = 0;
    for (size_t i = 0; i < n; i++)
        if (!drop(v[i], arg)) v[j++] = v[i];
    return j;
}
static int mod_gt(const Mvccpb__KeyValue *kv, int64_t r) { return kv->mod_revision > r; }
static int mod_lt(const Mvccpb__KeyValue *kv, int64_t r) { return kv->mod_revision < r; }
static int create_gt(const Mvccpb__KeyValue *kv, int64_t r) { return kv->create_revision > r; }
static int create_lt(const Mvccpb__KeyValue *kv, int64_t r) { return kv->create_revision < r; }

int range_apply(struct op_ctx *c, const Etcdserverpb__RangeRequest *req, arena *a,
                Etcdserverpb__RangeResponse *resp)
{
    int64_t limit = req->limit;
    /* as etcd: with sort or filters, fetch everything then trim */
    if (req->sort_order != ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__NONE ||
        req->min_mod_revision != 0 || req->max_mod_revision != 0 ||
        req->min_create_revision != 0 || req->max_create_revision != 0)
        limit = 0;
    if (limit > 0) limit++; /* one extra for `more` */

    struct krange r = krange_make(req->key, req->range_end);
    int want_values = !req->keys_only ||
                      req->sort_target == ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__VALUE;
    Mvccpb__KeyValue **kvs;
    size_t n;
    int64_t count;
    int rc = range_keys(c, &r, req->revision, limit, req->count_only, want_values, a, &kvs, &n,
                        &count);
    if (rc != 0) return rc;

    if (req->max_mod_revision != 0) n = prune(kvs, n, mod_gt, req->max_mod_revision);
    if (req->min_mod_revision != 0) n = prune(kvs, n, mod_lt, req->min_mod_revision);
    if (req->max_create_revision != 0) n = prune(kvs, n, create_gt, req->max_create_revision);
    if (req->min_create_revision != 0) n = prune(kvs, n, create_lt, req->min_create_revision);

    int order = req->sort_order;
    if (req->sort_target != ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__KEY &&
        order == ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__NONE)
        order = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__ASCEND;
    if (order != ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__NONE && n > 1) {
        kv_cmp_fn cmp = by_key;
        switch (req->sort_target) {
        case ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__VERSION: cmp = by_version; break;
        case ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__CREATE: cmp = by_create; break;
        case ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__MOD: cmp = by_mod; break;
        case ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__VALUE: cmp = by_value; break;
        default: break;
        }
        if (order == ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__ASCEND ||
            order == ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__DESCEND) {
            Mvccpb__KeyValue **tmp = malloc(n * sizeof *tmp);
            if (tmp == NULL) return KERR_NOMEM;
            msort(kvs, tmp, n, cmp, order == ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__DESCEND);
            free(tmp);
        }
    }

    resp->more = 0;
    if (req->limit > 0 && (int64_t)n > req->limit) {
        n = (size_t)req->limit;
        resp->more = 1;
    }
    if (req->keys_only)
        for (size_t i = 0; i < n; i++) kvs[i]->value = (ProtobufCBinaryData){0, NULL};
    resp->count = count;
    resp->n_kvs = n;
    resp->kvs = n ? kvs : NULL;
    return 0;
}

int mvcc_range(mvcc_store *s, const Etcdserverpb__RangeRequest *req, arena *a,
               Etcdserverpb__RangeResponse *resp)
{
    struct op_ctx c = {.s = s, .begin_rev = s->rev, .next_kid = s->next_kid};
    int rc = store_rtxn_begin(s, &c.txn);
    if (rc != 0) return rc;
    rc = range_apply(&c, req, a, resp);
    store_rtxn_end(s);
    return rc;
}
