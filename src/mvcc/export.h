/* Whole-store export and import, for snapshots in etcd's format
 * (src/snapshot). Kept apart from mvcc.h: only the snapshot code uses it.
 *
 * Export reads one consistent state of the store through its own LMDB read
 * transaction, so it may run on a worker thread while the loop keeps
 * applying (LMDB readers never block the writer; the environment is opened
 * MDB_NOTLS). Import builds a fresh store directory from a stream of
 * revisions; nothing else may have it open. */
#ifndef KETCH_MVCC_EXPORT_H
#define KETCH_MVCC_EXPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mvcc/mvcc.h"

typedef struct mvcc_export mvcc_export;

struct mvcc_export_info {
    int64_t revision;     /* current revision */
    int64_t compact_rev;  /* 0: never compacted */
    uint64_t applied;     /* applied Raft index */
    bool auth_enabled;
    uint64_t auth_rev;
};

/* Begins the export of the last committed state (call mvcc_flush on the
 * loop first to include every apply). Thread-safe: may be called from any
 * thread while the loop uses the store; the export is then used by that
 * one thread. `s` must stay open until mvcc_export_end. Returns 0, KERR_NOMEM
 * or KERR_IO. */
int mvcc_export_begin(mvcc_store *s, mvcc_export **out, struct mvcc_export_info *info);
void mvcc_export_end(mvcc_export *e);
/* The store's directory (borrowed until mvcc_close): where temporary
 * snapshot files go, on the same file system as the data. */
const char *mvcc_export_dir(mvcc_store *s);

/* Every change still in history, in (main, sub) order: the packed
 * mvccpb.KeyValue as stored (a tombstone's holds the key and mod_revision).
 * kv is borrowed for the call. fn returns 0 to go on; anything else stops
 * and is returned. Returns 0, fn's value, KERR_CORRUPT or KERR_IO. */
typedef int (*mvcc_export_rev_fn)(void *ctx, int64_t main, int64_t sub, int tombstone,
                                  const uint8_t *kv, size_t len);
int mvcc_export_history(mvcc_export *e, mvcc_export_rev_fn fn, void *ctx);
/* Every lease in ID order (unsigned, as bytes compare). */
typedef int (*mvcc_export_lease_fn)(void *ctx, int64_t id, int64_t ttl, int64_t remaining);
int mvcc_export_leases(mvcc_export *e, mvcc_export_lease_fn fn, void *ctx);
/* Every auth user (role 0) then every role (role 1), by name: the packed
 * authpb.User / authpb.Role as etcd stores them. */
typedef int (*mvcc_export_auth_fn)(void *ctx, int role, const uint8_t *name, size_t nlen,
                                   const uint8_t *pb, size_t len);
int mvcc_export_auth(mvcc_export *e, mvcc_export_auth_fn fn, void *ctx);
/* Every raised alarm (member ID, etcdserverpb AlarmType), in table order. */
typedef int (*mvcc_export_alarm_fn)(void *ctx, uint64_t member, int type);
int mvcc_export_alarms(mvcc_export *e, mvcc_export_alarm_fn fn, void *ctx);

/* ---- import ---- */
typedef struct mvcc_import mvcc_import;

/* Opens a fresh store in `dir` (created if missing; refused with
 * KERR_INTERNAL if it already holds data). Returns 0 or a KERR_* code. */
int mvcc_import_begin(mvcc_import **out, const char *dir);
/* One change, in strictly increasing (main, sub) order: kv is a packed
 * mvccpb.KeyValue (a tombstone's needs only the key). KERR_CORRUPT if kv
 * does not decode or the order is broken. */
int mvcc_import_rev(mvcc_import *im, int64_t main, int64_t sub, int tombstone,
                    const uint8_t *kv, size_t len);
int mvcc_import_lease(mvcc_import *im, int64_t id, int64_t ttl, int64_t remaining);
/* A packed authpb.User (role 0) or authpb.Role (role 1) named `name`. */
int mvcc_import_auth(mvcc_import *im, int role, const uint8_t *name, size_t nlen,
                     const uint8_t *pb, size_t len);
int mvcc_import_auth_state(mvcc_import *im, bool enabled, uint64_t auth_rev);
/* Finishes: compaction mark `compact_rev` (0: none; history below it is
 * expected to be compacted already, as in etcd's file), then compacts up to
 * `scheduled` if that is higher (a compaction etcd had not finished), sets
 * the revision to the highest seen (at least compact_rev), the applied
 * index to 0 (a new Raft log starts), commits, syncs and closes. *revision
 * (may be NULL) gets the store revision. Frees im. Returns 0 or KERR_*. */
int mvcc_import_finish(mvcc_import *im, int64_t compact_rev, int64_t scheduled, int64_t *revision);
/* Drops everything (the directory is left as it is; the caller removes it). */
void mvcc_import_abort(mvcc_import *im);

#endif
