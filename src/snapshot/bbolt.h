/* bbolt database files (go.etcd.io/bbolt, the format of etcd's backend and
 * of its snapshots): a streaming writer and a bounds-checked reader.
 *
 * Only what etcd's files use: one level of buckets under the root bucket
 * (no nested buckets inside them), keys and values of any size. The on-disk
 * layout is described at the top of bbolt.c.
 *
 * Neither side knows anything of etcd; src/snapshot/etcd.c puts etcd's
 * buckets and encodings on top. Both are plain blocking file code, meant
 * for a worker thread or a command line tool, never the event loop. */
#ifndef KETCH_SNAPSHOT_BBOLT_H
#define KETCH_SNAPSHOT_BBOLT_H

#include <stddef.h>
#include <stdint.h>

#define BBOLT_PAGE_SIZE 4096

/* ---- writer ----
 * Builds a fresh file bottom-up: the leaf pages of each bucket are written
 * as its keys arrive (so memory holds one page plus the first key of every
 * leaf page of the open bucket), then its branch pages; bbolt_writer_finish
 * writes the root bucket, an empty freelist and both meta pages. Every
 * page below the high-water mark is reachable, as bbolt's tx.Check wants. */
typedef struct bbolt_writer bbolt_writer;

/* Creates (truncates) `path`. Returns 0, KERR_NOMEM or KERR_IO. */
int bbolt_writer_open(bbolt_writer **out, const char *path);
/* Starts bucket `name` (copied; bucket names given in any order, each once).
 * The previous bucket, if any, is closed first. Returns 0 or a KERR_* code. */
int bbolt_writer_bucket(bbolt_writer *w, const char *name);
/* Appends key -> value to the open bucket. Keys must come in strictly
 * increasing bytewise order (not checked beyond an assertion-like
 * KERR_INTERNAL) and be non-empty. Returns 0, KERR_INTERNAL, KERR_NOMEM or
 * KERR_IO. */
int bbolt_writer_put(bbolt_writer *w, const uint8_t *key, size_t klen, const uint8_t *val,
                     size_t vlen);
/* Closes the last bucket, writes the root bucket, freelist and meta pages,
 * fsyncs and closes the file. *size (may be NULL) is the file size. Frees
 * w in every case. Returns 0 or a KERR_* code. */
int bbolt_writer_finish(bbolt_writer *w, uint64_t *size);
/* The file is for the moment only (a snapshot streamed then deleted):
 * bbolt_writer_finish skips its fsync. */
void bbolt_writer_no_sync(bbolt_writer *w);
/* Frees w and its file descriptor without finishing (the file is left
 * incomplete; the caller unlinks it). */
void bbolt_writer_abort(bbolt_writer *w);

/* ---- reader ----
 * Maps the file read-only; every offset and length read from it is checked
 * against the map, so a corrupt or truncated file gives KERR_CORRUPT, never
 * a crash. */
typedef struct bbolt_db {
    const uint8_t *map;
    size_t size;      /* bytes used (the file size, or the limit given) */
    size_t map_size;  /* bytes mapped */
    uint32_t psize;   /* page size from the meta page */
    uint64_t hwm;     /* pages below the high-water mark */
    uint64_t root;    /* root bucket's root page */
    uint64_t txid;
} bbolt_db;

/* A bucket: its root page, or (root 0) its inline page. */
typedef struct bbolt_bucket {
    uint64_t root;
    const uint8_t *inl;
    size_t inl_len;
} bbolt_bucket;

/* Opens `path`, reading at most `limit` bytes of it (0: the whole file; a
 * snapshot with etcd's sha256 trailer passes the size without it). Picks
 * the valid meta page (magic, version 2, FNV-64a checksum) with the higher
 * txid, as bbolt does. Returns 0, KERR_IO (cannot open/map; errno kept) or
 * KERR_CORRUPT (not a bbolt file, bad meta pages). */
int bbolt_open(bbolt_db *db, const char *path, uint64_t limit);
void bbolt_close(bbolt_db *db);

/* Calls fn for every entry of bucket b in key order (is_bucket: the value
 * is a sub-bucket header). fn returns 0 to go on, anything else stops the
 * walk and is returned. key/val point into the map (valid until
 * bbolt_close). Returns 0, fn's value, or KERR_CORRUPT. */
typedef int (*bbolt_each_fn)(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val,
                             size_t vlen, int is_bucket);
int bbolt_foreach(const bbolt_db *db, const bbolt_bucket *b, bbolt_each_fn fn, void *ctx);
/* The root bucket (whose entries are the top-level buckets). */
void bbolt_root(const bbolt_db *db, bbolt_bucket *b);
/* Finds top-level bucket `name`: 1 found (*b set), 0 not, KERR_CORRUPT. */
int bbolt_find_bucket(const bbolt_db *db, const char *name, bbolt_bucket *b);
/* Parses a sub-bucket value (what fn got with is_bucket). 0 or KERR_CORRUPT. */
int bbolt_bucket_from_value(const uint8_t *val, size_t vlen, bbolt_bucket *b);

/* bbolt's tx.Check, as `etcdctl snapshot status` runs it: every page below
 * the high-water mark referenced exactly once (or free). 0 or KERR_CORRUPT
 * (with a line on stderr naming the first problem when `why` is not NULL,
 * written there, at most whylen bytes). */
int bbolt_check(const bbolt_db *db, char *why, size_t whylen);

#endif
