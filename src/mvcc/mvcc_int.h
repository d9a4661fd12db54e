/* MVCC internals shared by the files of src/mvcc (the on-disk layout is
 * described at the top of store.c). */
#ifndef KETCH_MVCC_MVCC_INT_H
#define KETCH_MVCC_MVCC_INT_H

#include <lmdb.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "kv.pb-c.h"
#include "mvcc/mvcc.h"
#include "util/endian.h"

/* User keys up to KEY_PREFIX bytes are LMDB keys of the keys table as they
 * are; longer keys live in a bucket under their first KEY_PREFIX bytes. */
enum { KEY_PREFIX = 500, KREC_SIZE = 49 };

enum { CH_PUT = 0, CH_TOMBSTONE = 1 };

struct mvcc_store {
    MDB_env *env;
    MDB_dbi keys, idx, hist, meta;
    MDB_dbi lease, lkeys; /* leases and lease -> key attachments (lease.c) */
    MDB_txn *rtxn; /* reusable read txn, kept reset between reads */
    int rtxn_live; /* rtxn renewed by store_rtxn_begin, not yet reset */
    MDB_txn *wtxn; /* open batch write txn (store.c), NULL if none */
    size_t batch_n; /* applies in wtxn */
    uint64_t durable; /* applied index as of the last commit */
    int64_t rev;
    int64_t compact_rev; /* -1: never compacted (as etcd's compactMainRev) */
    uint64_t applied;
    uint64_t next_kid;
    mvcc_lease_exists_fn lease_exists;
    void *lease_ctx;
    mvcc_event_fn event_fn; /* watch hook (events.c); NULL: none */
    void *event_ctx;
    /* auth (auth.c): the table, and its state as of the last apply */
    MDB_dbi auth;
    bool auth_enabled;
    uint64_t auth_rev;
    int bcrypt_cost;
    /* alarms (alarm.c): the table, and how many of each type are raised */
    MDB_dbi alarm;
    int alarm_nospace, alarm_corrupt;
    /* where the environment lives (defrag.c reopens it) */
    char *dir;
    size_t map_size;
    /* physical compaction (compact.c): history at or below phys_target is
     * still to be swept, from hist key phys_pos on */
    int64_t phys_target;
    uint8_t phys_pos[16];
    /* Readers of the environment on other threads hold env_lock for
     * reading (mvcc_reader_enter); whatever closes or swaps the environment
     * (the defrag swap) takes it for writing. offloop_readers counts the
     * loop-held pins (mvcc_pin). */
    pthread_rwlock_t *env_lock;
    int offloop_readers;
    /* defragmentation in progress (defrag.c); NULL if none */
    struct defrag *defrag;
    /* resident-map trimming (store.c, store_map_tick): reads since the
     * last look at the clock; when and at which file size (last page) the
     * process's file-backed RSS was last checked */
    uint32_t trim_work;
    uint64_t trim_checked_ms;
    size_t trim_applies; /* requests committed since */
    size_t trim_pgno;
    size_t page_size;
    uint64_t (*now_ms)(void *ctx); /* mvcc_set_clock */
    void *now_ctx;
    void *map_addr; /* the env's map (NULL: not looked up yet) */
};

/* The keys-table record of one user key: its id and its latest change. */
struct krec {
    uint64_t kid;
    int64_t main, sub;               /* revision of the latest change */
    int64_t create, version, lease;  /* of the latest put; 0 if deleted */
    int deleted;                     /* latest change is a tombstone */
};

/* One request's view of the store: a read or write LMDB txn. */
struct op_ctx {
    mvcc_store *s;
    MDB_txn *txn;
    int64_t begin_rev; /* store revision when the request began */
    int64_t nchanges;  /* changes made so far (next sub-revision) */
    uint64_t next_kid;
    int write;
};

/* The revision reads see: the new one once the request changed something
 * (etcd's storeTxnWrite.Range). */
static inline int64_t ctx_rev(const struct op_ctx *c)
{
    return c->begin_rev + (c->nchanges > 0 ? 1 : 0);
}

/* Bytewise order of Go's bytes.Compare. */
static inline int bytes_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    size_t n = al < bl ? al : bl, i = 0;
    /* 8 bytes at a time inline: a range compares every key it walks with
     * its end, and the call to memcmp cost more than the short keys' compare */
    for (; i + 8 <= n; i += 8) {
        uint64_t x = get_be64(a + i), y = get_be64(b + i);
        if (x != y) return x < y ? -1 : 1;
    }
    for (; i < n; i++)
        if (a[i] != b[i]) return a[i] < b[i] ? -1 : 1;
    return al < bl ? -1 : al > bl ? 1 : 0;
}

/* ---- store.c ---- */
int mdb_to_kerr(int rc);
/* The txn reads use: the open batch write txn, else the reusable read txn
 * (renewed; store_rtxn_end resets it). */
int store_rtxn_begin(mvcc_store *s, MDB_txn **out);
void store_rtxn_end(mvcc_store *s);
/* The batch write txn, begun if none is open. */
int store_wtxn(mvcc_store *s, MDB_txn **out);

/* Looks up user key; returns 1 found (rec filled), 0 not, or KERR_*. */
int krec_get(MDB_txn *txn, mvcc_store *s, const uint8_t *key, size_t klen, struct krec *rec);
int krec_put(MDB_txn *txn, mvcc_store *s, const uint8_t *key, size_t klen, const struct krec *rec);
int krec_del(MDB_txn *txn, mvcc_store *s, const uint8_t *key, size_t klen);

/* Iterates the keys table in user-key order. key/rec are borrowed from
 * LMDB until the txn changes or ends. */
struct kiter {
    MDB_cursor *cur;
    MDB_val k, v;
    int in_bucket;
    size_t boff;
    const uint8_t *key;
    size_t klen;
    struct krec rec;
};
/* Positions at the first key >= start. Returns 1, 0 at end, or KERR_*. */
int kiter_seek(struct kiter *it, MDB_txn *txn, mvcc_store *s, const uint8_t *start, size_t len);
int kiter_next(struct kiter *it);
void kiter_close(struct kiter *it);

/* History: hist (main, sub) -> change; idx (kid, main, sub) -> kind. */
int hist_put(struct op_ctx *c, uint64_t kid, int kind, const Mvccpb__KeyValue *kv);
/* Loads the KeyValue stored at (main, sub) into arena memory. */
int hist_load(MDB_txn *txn, mvcc_store *s, int64_t main, int64_t sub, arena *a,
              Mvccpb__KeyValue **out);
/* Finds the newest change of kid at or below rev. Returns 1 (main, sub,
 * kind set), 0 if none, or KERR_*. */
int idx_find(MDB_txn *txn, mvcc_store *s, uint64_t kid, int64_t rev, int64_t *main,
             int64_t *sub, int *kind);
/* Logical compaction at apply: records the compact revision and schedules
 * the physical sweep (compact.c). */
int store_compact(struct op_ctx *c, int64_t rev);
void compact_scheduled(mvcc_store *s, int64_t rev);
/* Opens the environment in s->dir (s->map_size) and its tables, and loads
 * the state (revision, compact revision, applied index, auth, alarms). */
int store_env_open(mvcc_store *s);
/* Closes what store_env_open opened (the batch must be committed), with
 * the last commit's meta page synced first if `sync`. */
void store_env_close(mvcc_store *s, bool sync);
int meta_put_u64(MDB_txn *txn, mvcc_store *s, const char *name, uint64_t v);

/* ---- read.c ---- */
enum end_kind { END_SINGLE, END_FROM, END_RANGE };
struct krange {
    const uint8_t *key;
    size_t klen;
    const uint8_t *end;
    size_t elen;
    enum end_kind kind;
};
/* etcd's mkGteRange: range_end "" = one key, "\0" = from key on. */
struct krange krange_make(ProtobufCBinaryData key, ProtobufCBinaryData end);

/* etcd's rangeKeys at revision `rev` (<= 0: current): the live kvs of the
 * range (at most `limit` if > 0; none if count_only) and their count. */
int range_keys(struct op_ctx *c, const struct krange *r, int64_t rev, int64_t limit,
               int count_only, int want_values, arena *a, Mvccpb__KeyValue ***kvs,
               size_t *n, int64_t *count);
/* etcd's applierV3backend.Range. */
int range_apply(struct op_ctx *c, const Etcdserverpb__RangeRequest *req, arena *a,
                Etcdserverpb__RangeResponse *resp);
/* The current kv of one key, or NULL. */
int kv_current(struct op_ctx *c, const uint8_t *key, size_t klen, arena *a,
               Mvccpb__KeyValue **out, struct krec *rec, int *exists);

/* ---- lease.c ---- */
/* 1 if lease id exists in the table, 0 if not, or KERR_*. */
int leasetab_exists(MDB_txn *txn, mvcc_store *s, int64_t id);
/* Moves key `kid` (user key `key`) from lease `from` to lease `to` (either
 * may be 0: no lease). */
int leasetab_move(MDB_txn *txn, mvcc_store *s, uint64_t kid, const uint8_t *key, size_t klen,
                  int64_t from, int64_t to);
int leasetab_grant(struct op_ctx *c, const Etcdserverpb__LeaseGrantRequest *r, arena *a,
                   Etcdserverpb__LeaseGrantResponse *resp);
int leasetab_revoke(struct op_ctx *c, const Etcdserverpb__LeaseRevokeRequest *r, arena *a,
                    Etcdserverpb__LeaseRevokeResponse *resp);
int leasetab_checkpoint(struct op_ctx *c, const Etcdserverpb__LeaseCheckpointRequest *r);

/* The keys attached to lease `id` (unsorted), in arena memory. */
int leasetab_keys(MDB_txn *txn, mvcc_store *s, int64_t id, arena *a, ProtobufCBinaryData **keys,
                  size_t *n);

/* ---- auth.c ---- */
/* Reads the auth state (enabled, revision) into s; creates the revision
 * (1) if the table is new. */
int auth_load(MDB_txn *txn, mvcc_store *s);
/* etcd's authApplierV3 checks of one entry against the proposer's user and
 * auth revision (req->auth_user / auth_revision): 0 or a KERR_* code. */
int auth_check_request(struct op_ctx *c, const Ketchpb__InternalRequest *req);
/* Applies an auth request (out->auth set); returns 1 if req is none. */
int auth_exec(struct op_ctx *c, const Ketchpb__InternalRequest *req, arena *a,
              struct mvcc_result *out);

/* ---- alarm.c ---- */
/* Recounts the raised alarms from the table. */
int alarm_load(MDB_txn *txn, mvcc_store *s);
/* Applies an AlarmRequest (out->alarm set). */
int alarm_exec(struct op_ctx *c, const Etcdserverpb__AlarmRequest *r, arena *a,
               struct mvcc_result *out);

/* ---- defrag.c ---- */
/* Records an apply / a meta record for the defragmentation in progress. */
void defrag_log_apply(mvcc_store *s, uint64_t index, const Ketchpb__InternalRequest *req);
void defrag_log_meta(mvcc_store *s, const char *name, const uint8_t *val, size_t len);

/* ---- events.c ---- */
/* Hands the events of revision `rev` (just committed) to the event hook. */
void events_notify(mvcc_store *s, int64_t rev);

/* ---- txn.c ---- */
int txn_exec(struct op_ctx *c, const Etcdserverpb__TxnRequest *req, arena *a,
             Etcdserverpb__TxnResponse *resp);
int put_exec(struct op_ctx *c, const Etcdserverpb__PutRequest *p, int checked, arena *a,
             Etcdserverpb__PutResponse *resp);
int delete_exec(struct op_ctx *c, const Etcdserverpb__DeleteRangeRequest *d, arena *a,
                Etcdserverpb__DeleteRangeResponse *resp);

#endif
