/* MVCC key-value store on LMDB, with etcd's revision semantics.
 *
 * One write request (Put, DeleteRange, Txn, Compaction) = at most one new
 * main revision; the changes inside it get sub-revisions 0, 1, 2...
 * create_revision / mod_revision / version count exactly as etcd's mvcc
 * package does; deletes leave tombstones in history; compaction frees
 * history below the compact revision but keeps the latest version of every
 * key still alive at it. Reads can be served at any revision between the
 * compact revision and the current one.
 *
 * Applies are driven by the Raft member: mvcc_apply() records the Raft
 * index in the same LMDB transaction as the data, so after a crash the
 * member replays only entries above mvcc_applied_index() (as reloaded by
 * mvcc_open: the last committed batch, see mvcc_flush).
 *
 * Memory: everything a response points at (keys, values, KeyValue
 * structs, arrays) is allocated from the caller's arena and lives until the
 * arena is freed. Not thread-safe: call from the loop thread only. */
#ifndef KETCH_MVCC_MVCC_H
#define KETCH_MVCC_MVCC_H

#include <stddef.h>
#include <stdint.h>

#include "ketch.pb-c.h"
#include "rpc.pb-c.h"
#include "util/arena.h"

typedef struct mvcc_store mvcc_store;

/* Opens or creates the LMDB environment in directory `dir` (created if
 * missing). map_size is LMDB's map size in bytes (the upper bound of the
 * database). Returns 0 or a negative KERR_* code. */
int mvcc_open(mvcc_store **out, const char *dir, size_t map_size);
/* Commits the open batch and syncs (as mvcc_sync), then closes. */
void mvcc_close(mvcc_store *s);

/* ---- whole-store copies (install.c), for Raft snapshots ----
 * mvcc_copy_fd writes a compacted copy of the last committed state to fd
 * (one LMDB read txn: consistent). It may run on any thread, concurrently
 * with the loop's applies, but not with mvcc_replace or mvcc_close.
 * mvcc_file_applied reads the applied index of such a copy in file `path`.
 * mvcc_replace swaps the store's environment for the copy in `path`
 * (renamed into the store's directory; same file system): what was applied
 * but not committed is dropped, a defrag in progress is abandoned, and
 * everything (revision, applied index, auth, alarms) is as in the copy.
 * Hooks stay. It refuses (KERR_BUSY, nothing changed) while more than
 * `own_pins` mvcc_pin()s are held (the caller may hold pins of its own
 * whose users it knows have finished). Readers on other threads
 * (mvcc_reader_enter: HashKV, exports, a defrag's copy) are waited for,
 * blocking the calling thread until the last one leaves (logged). Returns
 * 0 or a KERR_* code; on an error after the swap began the old file is
 * reopened, and if even that fails the store is unusable (exit). */
int mvcc_copy_fd(mvcc_store *s, int fd);
int mvcc_file_applied(const char *path, uint64_t *applied);
int mvcc_replace(mvcc_store *s, const char *path, int own_pins);

/* Lease hook: returns nonzero if lease `id` exists. Puts with a nonzero
 * lease (and no ignore_lease) fail with KERR_LEASE_NOT_FOUND when it
 * returns 0. Without a hook (the default, fn NULL) the store's own lease
 * table decides (leases granted by mvcc_apply; none at first, as etcd with
 * an empty lessor). The lease ID is stored in the KeyValue. */
typedef int (*mvcc_lease_exists_fn)(void *ctx, int64_t id);
void mvcc_set_lease_hook(mvcc_store *s, mvcc_lease_exists_fn fn, void *ctx);

int64_t mvcc_revision(const mvcc_store *s);         /* current revision (1 when empty, as etcd) */
int64_t mvcc_compact_revision(const mvcc_store *s); /* last compaction, 0 if none */
uint64_t mvcc_applied_index(const mvcc_store *s);   /* last applied Raft index */
/* Size of the database file, and the bytes actually in use (pages in use
 * times page size), as etcd's dbSize / dbSizeInUse. Commits the open batch
 * first (mvcc_flush), so both are exact. */
void mvcc_db_size(mvcc_store *s, int64_t *size, int64_t *in_use);
/* Group commit. mvcc_apply() leaves its changes in an open batch (one
 * LMDB write txn; every read sees them at once); mvcc_flush() commits the
 * batch: its data pages are fdatasynced before the meta page that points
 * at them is written, so the store on disk is always a consistent state,
 * even after power loss, at most one batch behind (the meta page itself is
 * not synced: a lost one leaves the previous consistent state). The caller
 * flushes every few ms (the server's timer); mvcc_apply() flushes by itself
 * once a batch holds MVCC_BATCH_MAX applies. After a crash the member
 * replays the Raft log above the committed applied index, so losing a
 * batch loses nothing. Returns 0 or KERR_IO (the batch is lost; fatal). */
#define MVCC_BATCH_MAX 1000
int mvcc_flush(mvcc_store *s);
/* Applies in the open batch (0: nothing to flush). */
size_t mvcc_batch_pending(const mvcc_store *s);
/* The applied index of the last committed batch (what mvcc_open would
 * report now); <= mvcc_applied_index(). */
uint64_t mvcc_durable_index(const mvcc_store *s);
/* mvcc_flush(), then fsyncs the meta page too: everything applied is on
 * disk. Called before libraft drops log entries. Returns 0 or KERR_IO. */
int mvcc_sync(mvcc_store *s);

/* Unmaps the database file's pages from this process (they stay in the page
 * cache) when its file-backed RSS is over the budget, or always with
 * `force`; 1 if it did. The store calls it itself (without force) after a
 * commit when 1024 requests were committed or the file grew by 8 MiB since
 * it last did, and after a commit or a read once a second (mvcc_set_clock's
 * clock). */
int mvcc_map_trim(mvcc_store *s, int force);

/* The clock (monotonic milliseconds) behind the store's periodic checks;
 * NULL: the default (CLOCK_MONOTONIC_COARSE). For tests. */
void mvcc_set_clock(mvcc_store *s, uint64_t (*now_ms)(void *ctx), void *ctx);

/* Range with every RangeRequest field honoured (range_end forms, limit,
 * revision, sort, keys_only, count_only, min/max mod/create revision);
 * fills kvs, n_kvs, more, count of `resp` (not its header).
 * Errors: KERR_COMPACTED, KERR_FUTURE_REV. */
int mvcc_range(mvcc_store *s, const Etcdserverpb__RangeRequest *req, arena *a,
               Etcdserverpb__RangeResponse *resp);

/* Evaluates a txn whose every op (in both branches, nested included) is a
 * range, at the current revision, without writing. Fills resp (not header). */
int mvcc_txn_read(mvcc_store *s, const Etcdserverpb__TxnRequest *req, arena *a,
                  Etcdserverpb__TxnResponse *resp);

/* The outcome of applying one Raft entry. Exactly one of the response
 * pointers is set when err == 0 (the one matching the request); `revision`
 * is the store revision after the apply (the header revision etcd sends). */
struct mvcc_result {
    int err; /* 0 or KERR_*: the request failed and changed nothing */
    int64_t revision;
    Etcdserverpb__PutResponse *put;
    Etcdserverpb__DeleteRangeResponse *delete_range;
    Etcdserverpb__TxnResponse *txn;
    Etcdserverpb__CompactionResponse *compaction;
    Etcdserverpb__LeaseGrantResponse *lease_grant;
    Etcdserverpb__LeaseRevokeResponse *lease_revoke;
    Etcdserverpb__LeaseCheckpointResponse *lease_checkpoint;
    ProtobufCMessage *auth; /* the Auth*Response of an auth request (auth.c) */
    Etcdserverpb__AlarmResponse *alarm; /* of an alarm request (alarm.c) */
};

/* Applies the entry at Raft `index` in a nested txn of the open batch (see
 * mvcc_flush), and records `index` as applied in the same batch. `req` may be NULL
 * (an entry with no command: only the index is recorded). A request that
 * fails (out->err set: e.g. KERR_COMPACTED, KERR_FUTURE_REV,
 * KERR_LEASE_NOT_FOUND) changes nothing but the applied index.
 * Returns 0, or a negative KERR_* code if storage failed (fatal). */
int mvcc_apply(mvcc_store *s, uint64_t index, const Ketchpb__InternalRequest *req,
               arena *a, struct mvcc_result *out);

/* ---- leases (tables in the same LMDB environment, written by mvcc_apply
 * in the same transaction as the keys they delete or attach) ----
 *
 * mvcc_apply of a lease_grant: KERR_LEASE_NOT_FOUND if its ID is 0 (etcd's
 * lessor.Grant), KERR_LEASE_TTL_TOO_LARGE above MVCC_MAX_LEASE_TTL,
 * KERR_LEASE_EXIST if the ID is taken; the TTL is stored as given (the
 * proposer raises it to the minimum). lease_revoke: KERR_LEASE_NOT_FOUND,
 * else deletes every attached key (in key order, as etcd sorts them) in one
 * revision (none if it has no keys) and the lease. lease_checkpoint:
 * records remaining_TTL of each listed lease that exists. A put attaches
 * its key to its lease (detaching it from the previous one); a delete
 * detaches. */
#define MVCC_MAX_LEASE_TTL 9000000000LL

struct mvcc_lease {
    int64_t id;
    int64_t ttl;       /* granted TTL, seconds */
    int64_t remaining; /* last checkpointed remaining TTL; 0 if none */
};

/* Every lease, in ID order (as unsigned). *out is malloc'd (free() it; NULL
 * when *n is 0). Returns 0, KERR_NOMEM or KERR_IO. */
int mvcc_lease_list(mvcc_store *s, struct mvcc_lease **out, size_t *n);

/* The keys attached to lease `id`, sorted; in arena memory. An unknown lease
 * has none. Returns 0 or a negative KERR_* code. */
int mvcc_lease_keys(mvcc_store *s, int64_t id, arena *a, ProtobufCBinaryData **keys,
                    size_t *n);

/* ---- auth (auth.c; the tables are described there) ----
 *
 * mvcc_apply of an auth request (auth_enable ... auth_role_revoke_permission,
 * authenticate) applies it as etcd's authStore (errors: KERR_USER_*,
 * KERR_ROLE_*, KERR_ROOT_*, KERR_INVALID_AUTH_MGMT, KERR_AUTH_*,
 * KERR_PERMISSION_*) and sets out->auth. While auth is enabled every entry
 * not marked auth_system is first checked as etcd's authApplierV3 does
 * (user from auth_user, token revision auth_revision): KERR_USER_EMPTY,
 * KERR_AUTH_OLD_REVISION, KERR_PERMISSION_DENIED, KERR_USER_NOT_FOUND. */
#include <stdbool.h>
bool mvcc_auth_enabled(const mvcc_store *s);
uint64_t mvcc_auth_revision(const mvcc_store *s);
/* bcrypt cost for entries that carry a plain password (old proposers). */
void mvcc_auth_set_bcrypt_cost(mvcc_store *s, int cost);
/* etcd's IsRangePermitted (write 0) / IsPutPermitted, IsDeleteRangePermitted
 * (write 1) for `user` holding a token of auth revision `rev` (0: no user):
 * 0 (also when auth is disabled) or KERR_USER_EMPTY, KERR_AUTH_OLD_REVISION,
 * KERR_PERMISSION_DENIED, KERR_IO. */
int mvcc_auth_check(mvcc_store *s, const char *user, uint64_t rev, const uint8_t *key,
                    size_t klen, const uint8_t *end, size_t elen, int write);
/* etcd's checkTxnAuth. */
int mvcc_auth_check_txn(mvcc_store *s, const char *user, uint64_t rev,
                        const Etcdserverpb__TxnRequest *t);
/* etcd's IsAdminPermitted: 0, KERR_USER_EMPTY, KERR_USER_NOT_FOUND,
 * KERR_PERMISSION_DENIED. */
int mvcc_auth_is_admin(mvcc_store *s, const char *user);
/* The bcrypt hash of `name`'s password (*hash malloc'd), for Authenticate:
 * 0, KERR_AUTH_NOT_ENABLED, KERR_AUTH_FAILED (no such user, or a
 * --no-password one), KERR_NOMEM, KERR_IO. */
int mvcc_auth_password(mvcc_store *s, const char *name, char **hash);

/* ---- watch events (events.c) ----
 *
 * mvcc_apply calls the event hook (if set) at the end of every
 * request that made a new revision, with that revision and its changes in
 * sub-revision order: PUT events carry the stored KeyValue, DELETE events a
 * KeyValue holding only the key and mod_revision (the deletion revision),
 * as etcd's. The events are borrowed for the duration of the call; the
 * store's revision is already `rev` then. The hook may read the store but
 * must not apply. fn NULL removes the hook. */
typedef void (*mvcc_event_fn)(void *ctx, int64_t rev, Mvccpb__Event **evs, size_t n);
void mvcc_set_event_hook(mvcc_store *s, mvcc_event_fn fn, void *ctx);

/* Reads the history of revisions from..to (inclusive) as events, in
 * (main, sub) order, into arena `a` (*evs NULL when *n is 0). With
 * max_events > 0 it stops once it has that many, but only at a revision
 * boundary (a revision is never split). *next is the first revision not
 * read (to + 1 when all were). Compaction removed the changes it removed:
 * the caller checks mvcc_compact_revision() first, as etcd's watchers do.
 * Returns 0 or KERR_CORRUPT / KERR_IO. */
int mvcc_events(mvcc_store *s, int64_t from, int64_t to, size_t max_events, arena *a,
                Mvccpb__Event ***evs, size_t *n, int64_t *next);

/* ---- opaque meta records (meta.c), for the layers above ----
 *
 * mvcc_meta_put writes `name` -> val (len bytes, copied) in the open batch
 * (see mvcc_flush): call it from the apply path, right after mvcc_apply of
 * the same entry, so the record and the applied index commit together.
 * Returns 0, KERR_INTERNAL (a name the store uses itself) or KERR_IO.
 * mvcc_meta_get reads it into a malloc'd copy (*val, free() it): returns 0,
 * KERR_KEY_NOT_FOUND, KERR_NOMEM or KERR_IO. */
int mvcc_meta_put(mvcc_store *s, const char *name, const uint8_t *val, size_t len);
int mvcc_meta_get(mvcc_store *s, const char *name, uint8_t **val, size_t *len);

/* ---- maintenance: alarms, quota, hashes, compaction, defrag ---- */

/* The file's size as of the last commit (no flush; cheap: the quota check
 * calls it for every write). */
int64_t mvcc_db_file_size(const mvcc_store *s);

/* Alarms (alarm.c), as etcd's alarmStore, kept in the `alarm` table and
 * changed only by mvcc_apply of an `alarm` entry (AlarmRequest: GET lists
 * those of its type, all for NONE; ACTIVATE raises (memberID, type) and
 * answers it; DEACTIVATE lowers it and answers it, nothing if it was not
 * raised). While a NOSPACE alarm is raised, put, txns that write and lease
 * grants fail with KERR_NO_SPACE at apply (etcd's applierV3Capped); while a
 * CORRUPT one is, every write fails with KERR_ALARM_CORRUPT
 * (applierV3Corrupt). */
int mvcc_alarm_count(const mvcc_store *s, Etcdserverpb__AlarmType type);
/* Every raised alarm, ordered by (type, member); *out malloc'd (free()),
 * NULL when *n is 0. Returns 0, KERR_NOMEM or KERR_IO. */
int mvcc_alarm_list(mvcc_store *s, Etcdserverpb__AlarmMember **out, size_t *n);

/* etcd 3.5's HashKV (mvcc/kvstore.go hashByRev): crc32c (Castagnoli) of
 * "key" then, in revision order, of each (bbolt revision key, marshalled
 * mvccpb.KeyValue) that etcd's key bucket holds for revisions in
 * (compact, rev] plus those at or below the compact revision that a
 * compaction at `rev` would keep. rev 0: the current revision. Fills
 * *hash, *current (store revision) and *compact (compact revision, -1 if
 * never, as etcd answers). Errors: KERR_COMPACTED (rev <= compact), KERR_FUTURE_REV,
 * KERR_CORRUPT, KERR_IO. Runs on the loop (reads every change kept). */
int mvcc_hash_kv(mvcc_store *s, int64_t rev, uint32_t *hash, int64_t *current,
                 int64_t *compact);
/* The same off the loop: mvcc_hash_kv_start (loop) checks rev and commits
 * the batch; mvcc_hash_kv_run computes on any thread, from a read snapshot
 * taken there (under mvcc_reader_enter; a compaction applied meanwhile is
 * taken into account as if the request came then: *compact of start may
 * change, see mvcc_hash_kv_compact); mvcc_hash_kv_end (loop) frees the
 * job. start: the errors of mvcc_hash_kv, KERR_NOMEM; run: the same. */
struct mvcc_hash_job;
int mvcc_hash_kv_start(mvcc_store *s, int64_t rev, struct mvcc_hash_job **job, int64_t *current,
                       int64_t *compact);
int mvcc_hash_kv_run(struct mvcc_hash_job *job, uint32_t *hash);
int64_t mvcc_hash_kv_compact(const struct mvcc_hash_job *job);
/* The same for Maintenance.Hash (mvcc_hash): run with mvcc_hash_kv_run,
 * end with mvcc_hash_kv_end. Returns 0, KERR_NOMEM or KERR_IO. */
int mvcc_hash_start(mvcc_store *s, struct mvcc_hash_job **job);
void mvcc_hash_kv_end(struct mvcc_hash_job *job);
/* Maintenance.Hash: crc32c of every table's records (the meta table's
 * applied index and member records excluded, which differ between
 * members), so members with the same history and the same sweep progress
 * agree. etcd hashes its bbolt file instead; the values never match
 * etcd's. Returns 0 or KERR_IO. */
int mvcc_hash(mvcc_store *s, uint32_t *hash);

/* The physical half of compaction (compact.c): whether history below the
 * compact revision is still to be swept, and one sweep step over at most
 * `limit` changes, written to the open batch. Returns 0 or KERR_*. */
bool mvcc_compact_pending(const mvcc_store *s);
int mvcc_compact_step(mvcc_store *s, size_t limit);

/* Defragmentation without a stall (defrag.c):
 *  1. mvcc_defrag_begin (loop): commits the batch and starts recording
 *     every apply and meta record from now on.
 *  2. mvcc_defrag_copy (any thread, e.g. libuv's pool): a compacted copy
 *     of the committed state (mdb_env_copy2 MDB_CP_COMPACT, its own read
 *     txn) into <dir>/defrag, fsynced. Applies go on meanwhile.
 *  3. mvcc_defrag_step (loop, repeatedly): replays at most `max` recorded
 *     entries into the copy; *left is how many remain.
 *  4. mvcc_defrag_swap (loop): replays the rest, commits, and puts the
 *     copy in place of the file (rename), then reopens it. The pause is
 *     the replay of the last few entries and an environment reopen.
 * mvcc_defrag_abort drops a defrag in progress (the copy is removed).
 * Errors: KERR_BUSY (one already running: begin), KERR_IO, KERR_NOMEM;
 * swap: KERR_BUSY (a snapshot is in use on another thread: retry later;
 * nothing changed), KERR_DEFRAG_FAILED (the store is as it was) or KERR_IO
 * (the store could not be reopened: fatal).
 * Nothing else may use the store from another thread during the swap. */
int mvcc_defrag_begin(mvcc_store *s);
int mvcc_defrag_copy(mvcc_store *s);
int mvcc_defrag_step(mvcc_store *s, size_t max, size_t *left);
int mvcc_defrag_swap(mvcc_store *s);
void mvcc_defrag_abort(mvcc_store *s);
/* After a swap: removes the old file and the copy's directory (slow for
 * a big file: call it from another thread, before the next begin). */
void mvcc_defrag_cleanup(mvcc_store *s);
/* Removes what a crash during a defrag left in the store directory `dir`
 * (a partial copy or the old file, as big as the store): neither is ever
 * read again. Call before the store serves, under the data dir's lock. */
void mvcc_defrag_clean_temp(const char *dir);
bool mvcc_defrag_running(const mvcc_store *s);
/* Anything that uses the environment from another thread (its own read
 * txn, mdb_env_copy*: snapshot streams, Raft snapshot copies) brackets
 * that use with mvcc_reader_enter / mvcc_reader_exit (a read lock, any
 * thread, never held across a wait for the loop): a defrag swap (or
 * anything else that closes the environment, which takes the lock for
 * writing) then waits for it. mvcc_pin / mvcc_unpin (loop thread only) do
 * the same for readers the loop holds between callbacks. */
void mvcc_reader_enter(mvcc_store *s);
void mvcc_reader_exit(mvcc_store *s);
void mvcc_pin(mvcc_store *s);
void mvcc_unpin(mvcc_store *s);

#endif
