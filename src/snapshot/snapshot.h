/* Snapshots in etcd's format: a bbolt file with etcd's buckets and
 * encodings, followed by the sha256 of everything before it (what
 * Maintenance.Snapshot streams and `etcdctl snapshot save` stores).
 *
 * All of it is blocking file work: run it on a worker thread (the server)
 * or in a command line tool (ketchctl). */
#ifndef KETCH_SNAPSHOT_SNAPSHOT_H
#define KETCH_SNAPSHOT_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mvcc/mvcc.h"

#define SNAPSHOT_SHA_SIZE 32

struct snapshot_written {
    uint64_t db_size;  /* bytes of the bbolt file (the trailer follows) */
    int64_t revision;
    uint8_t sha[SNAPSHOT_SHA_SIZE]; /* with a trailer only */
};

/* Writes the snapshot of store `s` (its last committed state, read through
 * a read transaction of its own: the loop may keep applying) to `path`,
 * created or truncated, then appends the sha256 trailer. `members` (may be
 * NULL) is a packed ketchpb.ClusterMembers for etcd's members buckets
 * (borrowed); `cluster_version` (e.g. "3.5.0", may be NULL) goes to the
 * cluster bucket. Memory stays bounded whatever the store's size. Returns 0
 * or a KERR_* code (the file is then removed). */
int snapshot_write(mvcc_store *s, const char *path, const uint8_t *members, size_t members_len,
                   const char *cluster_version, struct snapshot_written *out);
/* As snapshot_write, for a file that is streamed and deleted at once (the
 * server, which hashes while it sends): no trailer, no fsync. */
int snapshot_write_temp(mvcc_store *s, const char *path, const uint8_t *members,
                        size_t members_len, const char *cluster_version,
                        struct snapshot_written *out);

/* `etcdctl snapshot status`: crc32c over every bucket name, key and value,
 * the revision of the last key of the "key" bucket, the entries of every
 * bucket, and the bbolt size (pages in use * page size). */
struct snapshot_status {
    uint32_t hash;
    int64_t revision;
    int64_t total_keys;
    int64_t total_size;
};
/* Returns 0, or a KERR_* code with a message in err (errlen bytes), as
 * etcdctl words it where it says something. */
int snapshot_status(const char *path, struct snapshot_status *st, char *err, size_t errlen);

/* Builds a store in kv_dir (must not hold one) from snapshot file `path`
 * (from etcd or ketch): keys with their revisions and history, the
 * compaction mark, leases (TTL and checkpointed remaining TTL), auth
 * users, roles, enabled flag and revision. Unless skip_hash_check, the
 * sha256 trailer must be present and match (etcd's messages: "snapshot
 * missing hash but --skip-hash-check=false", "expected sha256 ..., got
 * ..."). *revision (may be NULL) gets the restored revision. Returns 0 or
 * a KERR_* code with a message in err. */
int snapshot_restore(const char *path, const char *kv_dir, bool skip_hash_check,
                     int64_t *revision, char *err, size_t errlen);

/* Temporary snapshot files (the server's, see api/snapshot.c) are named
 * <store dir>/snapshot.<pid>.<n>.tmp; snapshot_clean_temp removes any that a
 * crashed process left in `dir`. */
#define SNAPSHOT_TEMP_PREFIX "snapshot."
#define SNAPSHOT_TEMP_SUFFIX ".tmp"
void snapshot_clean_temp(const char *dir);

/* strerror(e) as Go's syscall errors read ("no such file or directory"):
 * a static buffer. */
const char *snapshot_strerror(int e);

/* sha256 of the first n bytes of fd (from offset 0). 0 or KERR_IO. */
int snapshot_sha256_fd(int fd, uint64_t n, uint8_t sha[SNAPSHOT_SHA_SIZE]);

#endif
