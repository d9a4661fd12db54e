/* The watch hub: matches the events of every applied revision against the
 * watchers' key ranges, and catches up watchers that are behind from the
 * store's history — etcd's watchableStore (mvcc/watchable_store.go) with
 * its synced and unsynced watcher groups.
 *
 * A watcher is "synced" when it has seen everything up to the store's
 * revision: the events of each new revision are offered to it as they are
 * applied (watch_hub_notify, the mvcc event hook). A watcher that starts at
 * a past revision, or whose owner is congested when a revision arrives, is
 * "unsynced": watch_hub_sync() later reads the history table from its next
 * revision (etcd's syncWatchers, up to WATCH_BATCH_MAX_REVS revisions per
 * response) and moves it back to the synced group. Nothing is buffered
 * per watcher, so a slow client costs memory only in its stream's send
 * queue (bounded by the owner's congestion test).
 *
 * Guarantees: each watcher sees its events in revision order, none skipped
 * while it lives; all events of one revision are handed over in one
 * delivery. A watcher whose next revision has been compacted away gets one
 * delivery with compact_rev set and is then inert (etcd keeps its ID until
 * cancelled; so does the owner).
 *
 * No I/O, no timers: the owner calls watch_hub_sync() when it wants (etcd:
 * every 100 ms while there are unsynced watchers). Loop thread only. */
#ifndef KETCH_WATCH_WATCH_H
#define KETCH_WATCH_WATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mvcc/mvcc.h"

typedef struct watch_hub watch_hub;
typedef struct watch_watcher watch_watcher;

/* etcd's watchBatchMaxRevs: a catch-up response holds at most this many
 * distinct revisions. */
#define WATCH_BATCH_MAX_REVS 1000

enum { WATCH_NOPUT = 1, WATCH_NODELETE = 2 };

/* What the hub asks of a watcher's owner. `user` is the pointer given to
 * watch_hub_add. */
struct watch_sink {
    /* True if the owner cannot take more now (e.g. its stream has too many
     * bytes queued): the watcher becomes unsynced instead of being sent to. */
    bool (*congested)(void *user);
    /* One response for the watcher: `n` events (borrowed for the call;
     * prev_kv already filled when the watcher asked for it) with header
     * revision `rev` (etcd's WatchResponse.Revision: the event revision
     * when synced, the store revision for a catch-up, 0 for a compaction
     * notice). compact_rev != 0: the watcher's start was compacted (no
     * events); it receives nothing more. Must not add or cancel watchers. */
    void (*deliver)(void *user, int64_t rev, Mvccpb__Event **evs, size_t n, int64_t compact_rev);
};

struct watch_opts {
    /* etcd's normalised range (v3rpc/watch.go): key non-empty; end_kind
     * WATCH_KEY one key, WATCH_FROM every key >= key, WATCH_RANGE [key,
     * end). Copied by watch_hub_add. */
    const uint8_t *key;
    size_t klen;
    const uint8_t *end;
    size_t elen;
    enum { WATCH_KEY, WATCH_FROM, WATCH_RANGE } end_kind;
    /* First revision wanted; <= the store revision: replay from history.
     * (The owner passes etcd's: start_revision, or store revision + 1.) */
    int64_t start_rev;
    unsigned filters; /* WATCH_NOPUT | WATCH_NODELETE */
    bool prev_kv;
};

/* Creates a hub over `store` (borrowed; must outlive the hub). The hub sets
 * the store's event hook while it has watchers. Returns 0 or KERR_NOMEM. */
int watch_hub_new(watch_hub **out, mvcc_store *store);
/* Frees the hub and every watcher left (their owners are not told). */
void watch_hub_free(watch_hub *h);

/* Adds a watcher. `sink` (borrowed, must outlive the watcher) and `user`
 * receive its deliveries, which never happen inside this call. Returns 0
 * (*out set) or KERR_NOMEM. */
int watch_hub_add(watch_hub *h, const struct watch_opts *o, const struct watch_sink *sink,
                  void *user, watch_watcher **out);
/* Removes and frees a watcher; it gets no delivery after this. Not from
 * inside a deliver callback. */
void watch_hub_cancel(watch_hub *h, watch_watcher *w);

/* True if the watcher is in the synced group (etcd: progress notifications
 * go to synced watchers only). */
bool watch_watcher_synced(const watch_watcher *w);

/* The mvcc event hook: offers revision `rev`'s events to synced watchers. */
void watch_hub_notify(watch_hub *h, int64_t rev, Mvccpb__Event **evs, size_t n);

/* Catches up unsynced watchers whose owner is not congested (compacted
 * ones get their notice). Returns the number still unsynced. */
size_t watch_hub_sync(watch_hub *h);

/* The store was replaced by a snapshot (cluster): every synced watcher
 * becomes unsynced, wanting revisions from `from` on (the old store
 * revision + 1), and catches up from the new store's history. */
void watch_hub_resync(watch_hub *h, int64_t from);

size_t watch_hub_count(const watch_hub *h);    /* live watchers */
size_t watch_hub_unsynced(const watch_hub *h); /* of which unsynced */

#endif
