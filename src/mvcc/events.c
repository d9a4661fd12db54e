/* Watch events: the history table read as mvccpb.Events, and the hook that
 * hands the events of every applied revision to the watch hub.
 *
 * Events are built as etcd builds them: a PUT carries the stored KeyValue;
 * a DELETE carries the tombstone KeyValue, which holds the key and
 * mod_revision = the deletion revision only (etcd's watchableStoreTxnWrite
 * End and kvsToEvents patch the same two fields in). */
#include <stdlib.h>

#include "mvcc/mvcc_int.h"
#include "util/errors.h"

static void *pb_alloc(void *data, size_t size) { return arena_alloc(data, size); }
static void pb_free(void *data, void *p) { (void)data, (void)p; }

void mvcc_set_event_hook(mvcc_store *s, mvcc_event_fn fn, void *ctx)
{
    s->event_fn = fn;
    s->event_ctx = ctx;
}

int mvcc_events(mvcc_store *s, int64_t from, int64_t to, size_t max_events, arena *a,
                Mvccpb__Event ***evs, size_t *n, int64_t *next)
{
    *evs = NULL, *n = 0, *next = to + 1;
    if (from < 1) from = 1;
    if (from > to) return 0;
    MDB_txn *txn;
    int rc = store_rtxn_begin(s, &txn);
    if (rc != 0) return rc;
    MDB_cursor *cur;
    if ((rc = mdb_cursor_open(txn, s->hist, &cur)) != 0) {
        store_rtxn_end(s);
        return mdb_to_kerr(rc);
    }
    size_t cap = 0;
    uint8_t hk[16];
    put_be64(hk, (uint64_t)from);
    put_be64(hk + 8, 0);
    MDB_val k = {16, hk}, d;
    ProtobufCAllocator al = {pb_alloc, pb_free, a};
    int64_t last = -1;
    int ret = 0;
    for (rc = mdb_cursor_get(cur, &k, &d, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
        if (k.mv_size != 16 || d.mv_size < 9) {
            ret = KERR_CORRUPT;
            break;
        }
        int64_t main = (int64_t)get_be64(k.mv_data);
        if (main > to) break;
        /* only at a revision boundary: a revision is never split */
        if (max_events && *n >= max_events && main != last) {
            *next = main;
            break;
        }
        last = main;
        if (*n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            Mvccpb__Event **v = arena_alloc(a, ncap * sizeof *v);
            if (cap) memcpy(v, *evs, cap * sizeof *v);
            *evs = v, cap = ncap;
        }
        Mvccpb__Event *ev = arena_alloc(a, sizeof *ev);
        mvccpb__event__init(ev);
        ev->kv = mvccpb__key_value__unpack(&al, d.mv_size - 9, (const uint8_t *)d.mv_data + 9);
        if (ev->kv == NULL) {
            ret = KERR_CORRUPT;
            break;
        }
        if (((uint8_t *)d.mv_data)[0] == CH_TOMBSTONE) {
            ev->type = MVCCPB__EVENT__EVENT_TYPE__DELETE;
            ev->kv->mod_revision = main;
        } else {
            ev->type = MVCCPB__EVENT__EVENT_TYPE__PUT;
        }
        (*evs)[(*n)++] = ev;
    }
    if (ret == 0 && rc != 0 && rc != MDB_NOTFOUND) ret = mdb_to_kerr(rc);
    mdb_cursor_close(cur);
    store_rtxn_end(s);
    return ret;
}

void events_notify(mvcc_store *s, int64_t rev)
{
    if (s->event_fn == NULL) return;
    arena a = ARENA_INIT;
    Mvccpb__Event **evs;
    size_t n;
    int64_t next;
    int rc = mvcc_events(s, rev, rev, 0, &a, &evs, &n, &next);
    /* A read of what was just committed cannot fail short of a broken
     * store; the watchers then catch up from history or see the error. */
    if (rc == 0 && n > 0) s->event_fn(s->event_ctx, rev, evs, n);
    arena_free(&a);
}
