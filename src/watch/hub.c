/* The watch hub (see watch.h): synced watchers of one key in a hash table
 * keyed by the key, synced range / prefix / from-key watchers in a list,
 * unsynced watchers in a third list. Matching a revision costs one hash
 * probe per event plus one range test per range watcher, never a scan of
 * every single-key watcher. */
#include "watch/watch.h"

#include <stdlib.h>
#include <string.h>

#include "util/errors.h"

/* A catch-up reads at most about this many events of history per sync
 * (cut at a revision boundary); watchers not finished continue at the next
 * sync. Bounds the memory of one sync when a watcher starts far back. */
#define SYNC_MAX_EVENTS 100000

enum wstate { W_KEY, W_RANGE, W_UNSYNCED, W_DEAD };

struct watch_watcher {
    struct watch_watcher *prev, *next; /* in its group's list */
    uint64_t hash;                     /* W_KEY: hash of key */
    uint8_t *key, *end;
    size_t klen, elen;
    int end_kind;
    int64_t min_rev; /* next revision this watcher wants */
    unsigned filters;
    bool prev_kv;
    enum wstate state;
    const struct watch_sink *sink;
    void *user;
    /* the batch being assembled by a notify or a sync */
    uint32_t *batch;
    size_t nb, capb;
    int64_t brevs, blast, more_rev;
    bool touched, full;
    struct watch_watcher *tnext;
};

struct watch_hub {
    mvcc_store *s;
    struct watch_watcher **buckets; /* W_KEY chains */
    size_t nbuckets, nkeyed;
    struct watch_watcher *ranges;   /* W_RANGE */
    struct watch_watcher *unsynced; /* W_UNSYNCED */
    size_t count, nunsynced;
};

static uint64_t hash_key(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

static int bcmp_go(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    size_t n = al < bl ? al : bl;
    int c = n ? memcmp(a, b, n) : 0;
    if (c != 0) return c;
    return al < bl ? -1 : al > bl;
}

static void list_add(struct watch_watcher **head, struct watch_watcher *w)
{
    w->prev = NULL;
    w->next = *head;
    if (*head) (*head)->prev = w;
    *head = w;
}

static void list_del(struct watch_watcher **head, struct watch_watcher *w)
{
    if (w->prev) w->prev->next = w->next;
    else *head = w->next;
    if (w->next) w->next->prev = w->prev;
    w->prev = w->next = NULL;
}

static void on_events(void *ctx, int64_t rev, Mvccpb__Event **evs, size_t n)
{
    watch_hub_notify(ctx, rev, evs, n);
}

int watch_hub_new(watch_hub **out, mvcc_store *store)
{
    watch_hub *h = calloc(1, sizeof *h);
    if (h == NULL) return KERR_NOMEM;
    h->s = store;
    h->nbuckets = 64;
    h->buckets = calloc(h->nbuckets, sizeof *h->buckets);
    if (h->buckets == NULL) {
        free(h);
        return KERR_NOMEM;
    }
    *out = h;
    return 0;
}

static void watcher_free(struct watch_watcher *w)
{
    free(w->key);
    free(w->end);
    free(w->batch);
    free(w);
}

static void free_list(struct watch_watcher *w)
{
    while (w) {
        struct watch_watcher *n = w->next;
        watcher_free(w);
        w = n;
    }
}

void watch_hub_free(watch_hub *h)
{
    if (h == NULL) return;
    if (h->count) mvcc_set_event_hook(h->s, NULL, NULL);
    for (size_t i = 0; i < h->nbuckets; i++) free_list(h->buckets[i]);
    free_list(h->ranges);
    free_list(h->unsynced);
    free(h->buckets);
    free(h);
}

static void grow_buckets(watch_hub *h)
{
    size_t nb = h->nbuckets * 2;
    struct watch_watcher **b = calloc(nb, sizeof *b);
    if (b == NULL) return; /* keep the longer chains */
    for (size_t i = 0; i < h->nbuckets; i++) {
        struct watch_watcher *w = h->buckets[i];
        while (w) {
            struct watch_watcher *n = w->next;
            list_add(&b[w->hash & (nb - 1)], w);
            w = n;
        }
    }
    free(h->buckets);
    h->buckets = b;
    h->nbuckets = nb;
}

/* Moves w (not in any list) into the synced group. */
static void make_synced(watch_hub *h, struct watch_watcher *w)
{
    if (w->end_kind == WATCH_KEY) {
        if (h->nkeyed >= h->nbuckets) grow_buckets(h);
        w->state = W_KEY;
        list_add(&h->buckets[w->hash & (h->nbuckets - 1)], w);
        h->nkeyed++;
    } else {
        w->state = W_RANGE;
        list_add(&h->ranges, w);
    }
}

static void make_unsynced(watch_hub *h, struct watch_watcher *w)
{
    w->state = W_UNSYNCED;
    list_add(&h->unsynced, w);
    h->nunsynced++;
}

/* Takes w out of whatever list it is in. */
static void detach(watch_hub *h, struct watch_watcher *w)
{
    switch (w->state) {
    case W_KEY:
        list_del(&h->buckets[w->hash & (h->nbuckets - 1)], w);
        h->nkeyed--;
        break;
    case W_RANGE:
        list_del(&h->ranges, w);
        break;
    case W_UNSYNCED:
        list_del(&h->unsynced, w);
        h->nunsynced--;
        break;
    case W_DEAD:
        break;
    }
    w->state = W_DEAD;
}

int watch_hub_add(watch_hub *h, const struct watch_opts *o, const struct watch_sink *sink,
                  void *user, watch_watcher **out)
{
    struct watch_watcher *w = calloc(1, sizeof *w);
    if (w == NULL) return KERR_NOMEM;
    w->key = malloc(o->klen ? o->klen : 1);
    w->end = malloc(o->elen ? o->elen : 1);
    if (w->key == NULL || w->end == NULL) {
        watcher_free(w);
        return KERR_NOMEM;
    }
    if (o->klen) memcpy(w->key, o->key, o->klen);
    if (o->elen) memcpy(w->end, o->end, o->elen);
    w->klen = o->klen;
    w->elen = o->end_kind == WATCH_RANGE ? o->elen : 0;
    w->end_kind = o->end_kind;
    w->hash = hash_key(w->key, w->klen);
    w->filters = o->filters;
    w->prev_kv = o->prev_kv;
    w->sink = sink;
    w->user = user;
    /* as etcd's watchableStore.watch */
    int64_t cur = mvcc_revision(h->s);
    if (o->start_rev > cur || o->start_rev == 0) {
        w->min_rev = o->start_rev > cur + 1 ? o->start_rev : cur + 1;
        make_synced(h, w);
    } else {
        w->min_rev = o->start_rev;
        make_unsynced(h, w);
    }
    if (h->count++ == 0) mvcc_set_event_hook(h->s, on_events, h);
    *out = w;
    return 0;
}

void watch_hub_cancel(watch_hub *h, watch_watcher *w)
{
    detach(h, w);
    watcher_free(w);
    if (--h->count == 0) mvcc_set_event_hook(h->s, NULL, NULL);
}

bool watch_watcher_synced(const watch_watcher *w) { return w->state == W_KEY || w->state == W_RANGE; }
size_t watch_hub_count(const watch_hub *h) { return h->count; }
size_t watch_hub_unsynced(const watch_hub *h) { return h->nunsynced; }

static bool in_range(const struct watch_watcher *w, const ProtobufCBinaryData *k)
{
    int c = bcmp_go(k->data, k->len, w->key, w->klen);
    switch (w->end_kind) {
    case WATCH_KEY: return c == 0;
    case WATCH_FROM: return c >= 0;
    default: return c >= 0 && bcmp_go(k->data, k->len, w->end, w->elen) < 0;
    }
}

static int batch_push(struct watch_watcher *w, uint32_t i)
{
    if (w->nb == w->capb) {
        size_t cap = w->capb ? w->capb * 2 : 4;
        uint32_t *b = realloc(w->batch, cap * sizeof *b);
        if (b == NULL) return KERR_NOMEM;
        w->batch = b, w->capb = cap;
    }
    w->batch[w->nb++] = i;
    return 0;
}

/* The events of one notify or sync, with the prev_kv variants made once. */
struct evset {
    mvcc_store *s;
    Mvccpb__Event **evs;
    Mvccpb__Event **with_prev; /* lazily: a copy with prev_kv filled */
    size_t n;
    arena *a;
};

/* etcd's sendLoop: prev_kv is the key at mod_revision - 1, except for the
 * event that created the key. */
static Mvccpb__Event *event_with_prev(struct evset *es, uint32_t i)
{
    if (es->with_prev == NULL) es->with_prev = arena_calloc(es->a, es->n, sizeof *es->with_prev);
    if (es->with_prev[i]) return es->with_prev[i];
    Mvccpb__Event *ev = es->evs[i], *c = arena_alloc(es->a, sizeof *c);
    *c = *ev;
    bool create = ev->type == MVCCPB__EVENT__EVENT_TYPE__PUT &&
                  ev->kv->create_revision == ev->kv->mod_revision;
    if (!create) {
        Etcdserverpb__RangeRequest rq = ETCDSERVERPB__RANGE_REQUEST__INIT;
        Etcdserverpb__RangeResponse rs = ETCDSERVERPB__RANGE_RESPONSE__INIT;
        rq.key = ev->kv->key;
        rq.revision = ev->kv->mod_revision - 1;
        if (mvcc_range(es->s, &rq, es->a, &rs) == 0 && rs.n_kvs > 0) c->prev_kv = rs.kvs[0];
    }
    es->with_prev[i] = c;
    return c;
}

static bool filtered(const struct watch_watcher *w, const Mvccpb__Event *ev)
{
    if ((w->filters & WATCH_NOPUT) && ev->type == MVCCPB__EVENT__EVENT_TYPE__PUT) return true;
    if ((w->filters & WATCH_NODELETE) && ev->type == MVCCPB__EVENT__EVENT_TYPE__DELETE) return true;
    return false;
}

/* Sends w's batch (filters applied; nothing if they removed every event,
 * as etcd's watcher.send). */
static void send_batch(struct evset *es, struct watch_watcher *w, int64_t rev)
{
    Mvccpb__Event **out = arena_alloc(es->a, w->nb * sizeof *out);
    size_t k = 0;
    for (size_t j = 0; j < w->nb; j++) {
        Mvccpb__Event *ev = es->evs[w->batch[j]];
        if (filtered(w, ev)) continue;
        out[k++] = w->prev_kv ? event_with_prev(es, w->batch[j]) : ev;
    }
    if (k > 0) w->sink->deliver(w->user, rev, out, k, 0);
}

static void touch(struct watch_watcher **touched, struct watch_watcher *w, uint32_t i)
{
    if (batch_push(w, i) != 0) return; /* out of memory: the server aborts soon anyway */
    if (!w->touched) {
        w->touched = true;
        w->tnext = *touched;
        *touched = w;
    }
}

void watch_hub_notify(watch_hub *h, int64_t rev, Mvccpb__Event **evs, size_t n)
{
    struct watch_watcher *touched = NULL;
    for (size_t i = 0; i < n; i++) {
        const ProtobufCBinaryData *k = &evs[i]->kv->key;
        if (h->nkeyed) {
            uint64_t hv = hash_key(k->data, k->len);
            for (struct watch_watcher *w = h->buckets[hv & (h->nbuckets - 1)]; w; w = w->next)
                if (w->hash == hv && w->klen == k->len && !memcmp(w->key, k->data, k->len) &&
                    rev >= w->min_rev)
                    touch(&touched, w, (uint32_t)i);
        }
        for (struct watch_watcher *w = h->ranges; w; w = w->next)
            if (rev >= w->min_rev && in_range(w, k)) touch(&touched, w, (uint32_t)i);
    }
    if (touched == NULL) return;
    arena a = ARENA_INIT;
    struct evset es = {h->s, evs, NULL, n, &a};
    while (touched) {
        struct watch_watcher *w = touched;
        touched = w->tnext;
        w->touched = false;
        if (w->sink->congested(w->user)) {
            /* etcd's victims: this revision is read back from history */
            detach(h, w);
            w->min_rev = rev;
            make_unsynced(h, w);
        } else {
            send_batch(&es, w, rev);
        }
        w->nb = 0;
    }
    arena_free(&a);
}

/* etcd's eventBatch.add: at most WATCH_BATCH_MAX_REVS revisions. */
static void batch_add(struct watch_watcher *w, uint32_t i, int64_t rev)
{
    if (w->full) return;
    if (w->nb == 0) {
        w->brevs = 1;
    } else if (rev > w->blast) {
        if (++w->brevs > WATCH_BATCH_MAX_REVS) {
            w->more_rev = rev;
            w->full = true;
            return;
        }
    }
    w->blast = rev;
    batch_push(w, i);
}

size_t watch_hub_sync(watch_hub *h)
{
    if (h->nunsynced == 0) return 0;
    int64_t cur = mvcc_revision(h->s), crev = mvcc_compact_revision(h->s);
    struct watch_watcher *cand = NULL, *w, *next;
    int64_t from = INT64_MAX;
    for (w = h->unsynced; w; w = next) {
        next = w->next;
        if (w->sink->congested(w->user)) continue;
        if (w->min_rev < crev) {
            /* etcd's chooseAll: the compaction notice, then nothing */
            detach(h, w);
            w->sink->deliver(w->user, 0, NULL, 0, crev);
            continue;
        }
        w->nb = 0, w->full = false, w->more_rev = 0;
        w->touched = true;
        w->tnext = cand;
        cand = w;
        if (w->min_rev < from) from = w->min_rev;
    }
    if (cand == NULL) return h->nunsynced;

    arena a = ARENA_INIT;
    Mvccpb__Event **evs = NULL;
    size_t n = 0;
    int64_t next_rev = cur + 1;
    int rc = mvcc_events(h->s, from, cur, SYNC_MAX_EVENTS, &a, &evs, &n, &next_rev);
    if (rc != 0) {
        /* cannot read history now: retry at the next sync */
        for (w = cand; w; w = w->tnext) w->touched = false;
        arena_free(&a);
        return h->nunsynced;
    }
    for (size_t i = 0; i < n; i++) {
        int64_t rev = evs[i]->kv->mod_revision;
        for (w = cand; w; w = w->tnext)
            if (rev >= w->min_rev && in_range(w, &evs[i]->kv->key)) batch_add(w, (uint32_t)i, rev);
    }
    struct evset es = {h->s, evs, NULL, n, &a};
    for (w = cand; w; w = next) {
        next = w->tnext;
        w->touched = false;
        if (!w->full && next_rev <= cur) {
            /* the read stopped early: continue from where it stopped */
            w->full = true;
            w->more_rev = next_rev;
        }
        if (w->nb > 0) send_batch(&es, w, cur);
        w->nb = 0;
        if (w->full) {
            w->min_rev = w->more_rev;
            w->full = false;
            continue; /* stays unsynced: more to come */
        }
        detach(h, w);
        w->min_rev = cur + 1;
        make_synced(h, w);
    }
    arena_free(&a);
    return h->nunsynced;
}

/* ---- snapshot install (cluster) ---- */

static void resync_list(watch_hub *h, struct watch_watcher *w, int64_t from)
{
    while (w != NULL) {
        struct watch_watcher *next = w->next;
        detach(h, w);
        if (w->min_rev < from) w->min_rev = from;
        make_unsynced(h, w);
        w = next;
    }
}

void watch_hub_resync(watch_hub *h, int64_t from)
{
    /* as etcd's watchableStore.Restore: every synced watcher becomes
     * unsynced and catches up from the (new) history */
    for (size_t i = 0; i < h->nbuckets; i++) resync_list(h, h->buckets[i], from);
    resync_list(h, h->ranges, from);
}
