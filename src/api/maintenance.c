/* etcdserverpb.Maintenance (Status, Alarm, Hash, HashKV, Defragment), the
 * backend quota, the compaction sweep and auto-compaction.
 *
 * Quota, as etcd's quotaKVServer / quotaLeaseServer: a Put, a Txn (its
 * bigger branch's puts) or a LeaseGrant whose cost would take the file to
 * the quota or past it is refused with "etcdserver: mvcc: database space
 * exceeded", and the NOSPACE alarm of this member is proposed through
 * Raft, so every member then refuses writes at apply (mvcc's capped
 * apply) until it is disarmed. Reads, deletes and compaction still work.
 *
 * Auto-compaction, as etcd's compactor package, runs on the leader only
 * and proposes an ordinary Compaction entry:
 *   periodic  every min(retention, 1h)/10 the current revision is noted;
 *             once `retention` has passed (then every min(retention, 1h))
 *             the store is compacted to the revision noted `retention` ago;
 *   revision  every 5 minutes, compacted to current - retention.
 * The history a compaction frees is swept in batches of
 * --experimental-compaction-batch-limit changes, one batch per
 * --experimental-compaction-sleep-interval, by a timer on the loop.
 *
 * Defragment: see mvcc.h (copy on libuv's thread pool, catch-up on the
 * loop, a short swap). Concurrent Defragment calls share one run. */
#include "api/maintenance.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/auth.h"
#include "api/propose.h"
#include "util/errors.h"
#include "util/log.h"

/* etcd's quota.go */
#define KV_OVERHEAD 256
#define LEASE_OVERHEAD 64
/* etcd's compactor: revInterval, retryDivisor */
#define REVISION_INTERVAL_MS (5 * 60 * 1000)
#define RETRY_DIVISOR 10
#define HOUR_MS (3600ULL * 1000)
/* defrag catch-up: entries replayed per tick, and how few may be left for
 * the swap */
#define DEFRAG_STEP 512
#define DEFRAG_SWAP_AT 128

struct maint_api {
    api_server *s;
    bool stopping;
    /* compaction sweep */
    uv_timer_t sweep;
    uint64_t sleep_ms;
    size_t batch_limit;
    uint64_t sweep_start_ns; /* 0: no sweep running */
    struct maint_hist pause_ms, total_ms;
    /* auto-compaction */
    uv_timer_t autoc;
    bool periodic;
    uint64_t retention; /* ms (periodic) or revisions */
    uint64_t tick_ms;
    int64_t *revs; /* periodic: revisions noted every tick, oldest first */
    size_t n_revs, max_revs;
    uint64_t last_success, base_interval;
    int64_t prev_rev; /* revision mode: last compacted to */
    bool proposing;
    /* defrag */
    uv_work_t work;
    uv_timer_t catchup;
    int copy_rc;
    bool defragging, copying;
    grpc_call **waiters;
    size_t n_waiters;
    unsigned catchup_ticks;
    /* --experimental-corrupt-check-time */
    uv_timer_t corrupt;
    uint64_t corrupt_ms;
    /* quota: NOSPACE proposed and not yet seen applied */
    bool nospace_proposed;
};

static uint64_t now_ms(void) { return uv_hrtime() / 1000000; }

/* etcd's authMaintenanceServer.isAuthenticated (Defragment, Hash, HashKV
 * and Snapshot): with auth enabled, the caller must be an admin. etcd
 * (3.4 and 3.5) returns the auth package's error as it is, so clients see
 * gRPC Unknown with "auth: ..." texts. */
static int check_admin(api_server *s, grpc_call *call)
{
    if (!mvcc_auth_enabled(s->store)) return 0;
    char *user = NULL;
    uint64_t rev;
    int rv = auth_api_info(s, call, &user, &rev);
    if (rv == 0) rv = mvcc_auth_is_admin(s->store, user);
    free(user);
    switch (rv) {
    case KERR_USER_EMPTY:
        return KERR_MAINT_USER_EMPTY;
    case KERR_USER_NOT_FOUND:
        return KERR_MAINT_USER_NOT_FOUND;
    case KERR_PERMISSION_DENIED:
        return KERR_MAINT_PERMISSION_DENIED;
    case KERR_INVALID_AUTH_TOKEN:
        return KERR_MAINT_INVALID_AUTH_TOKEN;
    default:
        return rv;
    }
}

/* ---- Status ---- */

void maintenance_status(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    api_server *s = ctx;
    Etcdserverpb__StatusResponse r = ETCDSERVERPB__STATUS_RESPONSE__INIT;
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    api_fill_header(s, &h, mvcc_revision(s->store));
    r.header = &h;
    r.version = (char *)s->version;
    mvcc_db_size(s->store, &r.dbsize, &r.dbsizeinuse);
    if (s->member != NULL) {
        r.leader = member_leader_id(s->member);
        r.raftindex = member_commit_index(s->member);
        r.raftterm = member_term(s->member);
        r.raftappliedindex = member_applied_index(s->member);
        r.islearner = api_cluster_is_learner(s, s->member_id);
    }
    /* as etcd: "etcdserver: no leader", then each alarm in the text form
     * of gogoproto's String() */
    Etcdserverpb__AlarmMember *as = NULL;
    size_t n = 0;
    mvcc_alarm_list(s->store, &as, &n);
    char **errs = calloc(n + 1, sizeof *errs);
    size_t ne = 0;
    if (errs != NULL) {
        if (r.leader == 0) errs[ne++] = strdup(kerr_text(KERR_NO_LEADER));
        for (size_t i = 0; i < n; i++) {
            char buf[96];
            snprintf(buf, sizeof buf, "memberID:%" PRIu64 " alarm:%s ", as[i].memberid,
                     as[i].alarm == ETCDSERVERPB__ALARM_TYPE__NOSPACE ? "NOSPACE" : "CORRUPT");
            errs[ne++] = strdup(buf);
        }
        r.errors = errs;
        r.n_errors = ne;
    }
    grpc_call_reply(call, &r.base);
    for (size_t i = 0; i < ne; i++) free(errs[i]);
    free(errs);
    free(as);
}

/* ---- Alarm ---- */

void maintenance_alarm(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    api_server *s = ctx;
    Etcdserverpb__AlarmRequest *req = etcdserverpb__alarm_request__unpack(NULL, len, msg);
    if (req == NULL) {
        api_fail_unmarshal(call);
        return;
    }
    /* as etcd: every action (GET too) is a Raft entry */
    Ketchpb__InternalRequest ir = KETCHPB__INTERNAL_REQUEST__INIT;
    ir.alarm = req;
    api_propose(s, call, &ir);
    etcdserverpb__alarm_request__free_unpacked(req, NULL);
}

static void alarm_proposed(api_server *s, void *data, int err, const uint8_t *resp, size_t len)
{
    (void)data, (void)resp, (void)len;
    if (s->maint != NULL) s->maint->nospace_proposed = false;
    if (err != 0) log_warn("raising the NOSPACE alarm failed: %s", kerr_text(err));
}

/* Whether this member's NOSPACE alarm is raised (etcd raises one per
 * member whose own file is over the quota). */
static bool own_nospace(api_server *s)
{
    if (mvcc_alarm_count(s->store, ETCDSERVERPB__ALARM_TYPE__NOSPACE) == 0) return false;
    Etcdserverpb__AlarmMember *as = NULL;
    size_t n = 0;
    bool found = false;
    if (mvcc_alarm_list(s->store, &as, &n) != 0) return true; /* do not flood the log */
    for (size_t i = 0; i < n; i++)
        if (as[i].memberid == s->member_id && as[i].alarm == ETCDSERVERPB__ALARM_TYPE__NOSPACE)
            found = true;
    free(as);
    return found;
}

int maint_quota_check(api_server *s, int64_t cost)
{
    if (cost == 0 || s->quota_bytes <= 0) return 0;
    if (mvcc_db_file_size(s->store) + cost < s->quota_bytes) return 0;
    /* etcd's quotaAlarmer.check: raise NOSPACE for this member, refuse */
    struct maint_api *m = s->maint;
    if (m != NULL && !m->nospace_proposed && !own_nospace(s)) {
        Etcdserverpb__AlarmRequest ar = ETCDSERVERPB__ALARM_REQUEST__INIT;
        ar.action = ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__ACTIVATE;
        ar.memberid = s->member_id;
        ar.alarm = ETCDSERVERPB__ALARM_TYPE__NOSPACE;
        Ketchpb__InternalRequest ir = KETCHPB__INTERNAL_REQUEST__INIT;
        ir.alarm = &ar;
        log_warn("database size %" PRId64 " + %" PRId64 " reaches the quota %" PRId64
                 ": raising NOSPACE", mvcc_db_file_size(s->store), cost, s->quota_bytes);
        if (api_propose_internal(s, &ir, alarm_proposed, NULL) == 0) m->nospace_proposed = true;
    }
    return KERR_NO_SPACE;
}

static int64_t cost_put(const Etcdserverpb__PutRequest *p)
{
    return KV_OVERHEAD + (int64_t)p->key.len + (int64_t)p->value.len;
}

int64_t maint_cost_put(const Etcdserverpb__PutRequest *p) { return cost_put(p); }

int64_t maint_cost_txn(const Etcdserverpb__TxnRequest *t)
{
    int64_t ok = 0, fail = 0;
    for (size_t i = 0; i < t->n_success; i++)
        if (t->success[i]->request_case == ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT)
            ok += cost_put(t->success[i]->request_put);
    for (size_t i = 0; i < t->n_failure; i++)
        if (t->failure[i]->request_case == ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT)
            fail += cost_put(t->failure[i]->request_put);
    return fail > ok ? fail : ok;
}

int64_t maint_cost_lease(void) { return LEASE_OVERHEAD; }

/* ---- Hash, HashKV ---- */

/* One hash on libuv's pool (maint_hash_kv_async, Maintenance.Hash). */
struct hash_job {
    uv_work_t work;
    api_server *s;
    struct mvcc_hash_job *job;
    bool whole; /* Maintenance.Hash */
    int64_t rev;
    struct maint_hash r;
    maint_hash_fn cb;
    void *data;
};

static void hash_run(uv_work_t *w)
{
    struct hash_job *j = w->data;
    j->r.rv = mvcc_hash_kv_run(j->job, &j->r.hash);
    if (!j->whole) j->r.compact = mvcc_hash_kv_compact(j->job);
}

static void hash_done(uv_work_t *w, int status)
{
    struct hash_job *j = w->data;
    mvcc_hash_kv_end(j->job);
    if (status != 0) j->r.rv = KERR_STOPPED;
    j->cb(j->s, j->data, &j->r);
    free(j);
}

static int hash_start(api_server *s, uv_loop_t *loop, bool whole, int64_t rev, maint_hash_fn cb,
                      void *data)
{
    struct hash_job *j = calloc(1, sizeof *j);
    if (j == NULL) return KERR_NOMEM;
    int rv = whole ? mvcc_hash_start(s->store, &j->job)
                   : mvcc_hash_kv_start(s->store, rev, &j->job, &j->r.current, &j->r.compact);
    if (rv != 0) {
        free(j);
        return rv;
    }
    if (whole) j->r.current = mvcc_revision(s->store);
    j->s = s;
    j->whole = whole;
    j->r.hash_rev = rev > 0 ? rev : j->r.current;
    j->cb = cb;
    j->data = data;
    j->work.data = j;
    if (uv_queue_work(loop, &j->work, hash_run, hash_done) != 0) {
        mvcc_hash_kv_end(j->job);
        free(j);
        return KERR_INTERNAL;
    }
    return 0;
}

int maint_hash_kv_async(api_server *s, uv_loop_t *loop, int64_t rev, maint_hash_fn cb,
                        void *data)
{
    return hash_start(s, loop, false, rev, cb, data);
}

static void hash_replied(api_server *s, void *data, const struct maint_hash *h)
{
    grpc_call *call = data;
    if (h->rv != 0) {
        grpc_call_fail(call, h->rv);
    } else {
        Etcdserverpb__HashResponse r = ETCDSERVERPB__HASH_RESPONSE__INIT;
        Etcdserverpb__ResponseHeader hd = ETCDSERVERPB__RESPONSE_HEADER__INIT;
        r.hash = h->hash;
        api_fill_header(s, &hd, h->current);
        r.header = &hd;
        grpc_call_reply(call, &r.base);
    }
    grpc_call_unref(call);
}

static void hash_kv_replied(api_server *s, void *data, const struct maint_hash *h)
{
    grpc_call *call = data;
    if (h->rv != 0) {
        grpc_call_fail(call, h->rv);
    } else {
        Etcdserverpb__HashKVResponse r = ETCDSERVERPB__HASH_KVRESPONSE__INIT;
        Etcdserverpb__ResponseHeader hd = ETCDSERVERPB__RESPONSE_HEADER__INIT;
        r.hash = h->hash;
        r.compact_revision = h->compact;
        r.hash_revision = h->hash_rev;
        /* as etcd: the header carries the revision when the hash began */
        api_fill_header(s, &hd, h->current);
        r.header = &hd;
        grpc_call_reply(call, &r.base);
    }
    grpc_call_unref(call);
}

/* Starts a hash for `call` (referenced until it is answered); fails the
 * call if it cannot. */
static void hash_for_call(api_server *s, grpc_call *call, bool whole, int64_t rev)
{
    grpc_call_ref(call);
    int rv = hash_start(s, s->loop, whole, rev, whole ? hash_replied : hash_kv_replied, call);
    if (rv != 0) {
        grpc_call_fail(call, rv);
        grpc_call_unref(call);
    }
}

/* Maintenance.Hash, on libuv's pool as HashKV below. */
void maintenance_hash(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    api_server *s = ctx;
    Etcdserverpb__HashRequest *req = etcdserverpb__hash_request__unpack(NULL, len, msg);
    if (req == NULL) {
        api_fail_unmarshal(call);
        return;
    }
    etcdserverpb__hash_request__free_unpacked(req, NULL);
    int rv = check_admin(s, call);
    if (rv != 0) grpc_call_fail(call, rv);
    else hash_for_call(s, call, true, 0);
}

/* Computed on libuv's pool from a read snapshot, so a big store does not
 * hold the loop (etcd computes it under its own read lock). */
void maintenance_hash_kv(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    api_server *s = ctx;
    Etcdserverpb__HashKVRequest *req = etcdserverpb__hash_kvrequest__unpack(NULL, len, msg);
    if (req == NULL) {
        api_fail_unmarshal(call);
        return;
    }
    int rv = check_admin(s, call);
    if (rv != 0) grpc_call_fail(call, rv);
    else hash_for_call(s, call, false, req->revision);
    etcdserverpb__hash_kvrequest__free_unpacked(req, NULL);
}

/* ketchpb.Internal/HashKV (peer port only): Maintenance.HashKV for the
 * corruption checks of other members (api/corrupt.c), as etcd's peer
 * handler /members/hashkv; the peer was authenticated by the peer port's
 * TLS, so there is no user to check. */
void internal_hash_kv(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    api_server *s = ctx;
    Etcdserverpb__HashKVRequest *req = etcdserverpb__hash_kvrequest__unpack(NULL, len, msg);
    if (req == NULL) {
        api_fail_unmarshal(call);
        return;
    }
    hash_for_call(s, call, false, req->revision);
    etcdserverpb__hash_kvrequest__free_unpacked(req, NULL);
}

/* ---- Defragment ---- */

static void defrag_copy(uv_work_t *w);
static void defrag_copied(uv_work_t *w, int status);
static void defrag_finish(api_server *s, int rv);

/* Begins a run for the waiting calls (failing them if it cannot). */
static void start_defrag(api_server *s)
{
    struct maint_api *m = s->maint;
    int rv = mvcc_defrag_begin(s->store);
    if (rv == 0) {
        log_info("defragmenting the store");
        m->work.data = m;
        if (uv_queue_work(s->loop, &m->work, defrag_copy, defrag_copied) == 0) {
            m->defragging = m->copying = true;
            return;
        }
        mvcc_defrag_abort(s->store);
        rv = KERR_DEFRAG_FAILED;
    }
    defrag_finish(s, rv);
}

static void defrag_cleanup(uv_work_t *w)
{
    struct maint_api *m = w->data;
    mvcc_defrag_cleanup(m->s->store);
}

static void defrag_cleaned(uv_work_t *w, int status)
{
    struct maint_api *m = w->data;
    (void)status;
    m->defragging = m->copying = false;
    if (m->n_waiters > 0 && m->stopping) defrag_finish(m->s, KERR_STOPPED);
    else if (m->n_waiters > 0) start_defrag(m->s);
}

static void defrag_finish(api_server *s, int rv)
{
    struct maint_api *m = s->maint;
    /* the old file goes on the pool; a new defrag waits for that */
    if (rv == 0 && uv_queue_work(s->loop, &m->work, defrag_cleanup, defrag_cleaned) == 0)
        m->copying = true;
    else
        m->defragging = false;
    Etcdserverpb__DefragmentResponse r = ETCDSERVERPB__DEFRAGMENT_RESPONSE__INIT;
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    api_fill_header(s, &h, mvcc_revision(s->store));
    r.header = &h;
    for (size_t i = 0; i < m->n_waiters; i++) {
        if (rv == 0)
            grpc_call_reply(m->waiters[i], &r.base);
        else
            grpc_call_fail(m->waiters[i], rv);
        grpc_call_unref(m->waiters[i]);
    }
    free(m->waiters);
    m->waiters = NULL;
    m->n_waiters = 0;
}

static void on_catchup(uv_timer_t *t)
{
    struct maint_api *m = t->data;
    api_server *s = m->s;
    size_t left = 0;
    int rv = m->stopping ? KERR_STOPPED : mvcc_defrag_step(s->store, DEFRAG_STEP, &left);
    m->catchup_ticks++;
    if (rv == 0 && left > DEFRAG_SWAP_AT && m->catchup_ticks < 1000) return;
    uv_timer_stop(t);
    if (rv != 0) {
        log_error("defrag: catching up failed: %s", kerr_text(rv));
        mvcc_defrag_abort(s->store);
        defrag_finish(s, KERR_DEFRAG_FAILED);
        return;
    }
    int64_t before, in_use, after;
    mvcc_db_size(s->store, &before, &in_use);
    uint64_t t0 = uv_hrtime();
    rv = mvcc_defrag_swap(s->store);
    if (rv == KERR_BUSY) {
        /* a HashKV snapshot is in use on the pool: catch up until it ends */
        m->catchup_ticks = 0;
        uv_timer_start(t, on_catchup, 1, 1);
        return;
    }
    uint64_t pause_ns = uv_hrtime() - t0;
    if (rv == KERR_IO) {
        /* the store could not be reopened: nothing can be served */
        log_error("defrag: the store is gone; stopping");
        abort();
    }
    if (rv != 0) {
        log_error("defrag failed: %s", kerr_text(rv));
        defrag_finish(s, KERR_DEFRAG_FAILED);
        return;
    }
    mvcc_db_size(s->store, &after, &in_use);
    log_info("defragmented: %" PRId64 " -> %" PRId64 " bytes; paused %.3f ms at the swap", before,
             after, (double)pause_ns / 1e6);
    defrag_finish(s, 0);
    /* the sweep position was reset by the reopen */
    maint_api_kick(s);
}

static void defrag_copy(uv_work_t *w)
{
    struct maint_api *m = w->data;
    m->copy_rc = mvcc_defrag_copy(m->s->store);
}

static void defrag_copied(uv_work_t *w, int status)
{
    struct maint_api *m = w->data;
    api_server *s = m->s;
    m->copying = false;
    int rv = status != 0 ? KERR_DEFRAG_FAILED : m->copy_rc;
    if (rv == 0 && m->stopping) rv = KERR_STOPPED;
    if (rv != 0) {
        mvcc_defrag_abort(s->store);
        defrag_finish(s, rv == KERR_STOPPED ? rv : KERR_DEFRAG_FAILED);
        return;
    }
    m->catchup_ticks = 0;
    uv_timer_start(&m->catchup, on_catchup, 0, 1);
}

void maintenance_defragment(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    api_server *s = ctx;
    struct maint_api *m = s->maint;
    Etcdserverpb__DefragmentRequest *req =
        etcdserverpb__defragment_request__unpack(NULL, len, msg);
    if (req == NULL) {
        api_fail_unmarshal(call);
        return;
    }
    etcdserverpb__defragment_request__free_unpacked(req, NULL);
    if (m == NULL || m->stopping) {
        grpc_call_fail(call, KERR_STOPPED);
        return;
    }
    int rv = check_admin(s, call);
    if (rv != 0) {
        grpc_call_fail(call, rv);
        return;
    }
    grpc_call **w = realloc(m->waiters, (m->n_waiters + 1) * sizeof *w);
    if (w == NULL) {
        grpc_call_fail(call, KERR_NOMEM);
        return;
    }
    m->waiters = w;
    grpc_call_ref(call);
    m->waiters[m->n_waiters++] = call;
    /* joins the run in progress (or, while the last one's old file is
     * being removed, starts once that is done) */
    if (!m->defragging) start_defrag(s);
}

/* ---- the compaction sweep ---- */

/* etcd's buckets: prometheus.ExponentialBuckets(start, 2, n). */
static void hist_init(struct maint_hist *h, double start, size_t n)
{
    memset(h, 0, sizeof *h);
    h->n_bounds = n;
    for (size_t i = 0; i < n; i++) h->bounds[i] = start * (double)(1ULL << i);
}

static void hist_observe(struct maint_hist *h, double v)
{
    for (size_t i = 0; i < h->n_bounds; i++) {
        if (v <= h->bounds[i]) {
            h->counts[i]++;
            break;
        }
    }
    h->count++;
    h->sum += v;
}

static void on_sweep(uv_timer_t *t)
{
    struct maint_api *m = t->data;
    api_server *s = m->s;
    if (!mvcc_compact_pending(s->store) || m->stopping) {
        uv_timer_stop(t);
        return;
    }
    uint64_t t0 = uv_hrtime();
    int rv = mvcc_compact_step(s->store, m->batch_limit);
    if (rv != 0) {
        log_error("compaction sweep failed: %s", kerr_text(rv));
        uv_timer_stop(t);
        m->sweep_start_ns = 0;
        return;
    }
    uint64_t now = uv_hrtime();
    if (mvcc_compact_pending(s->store)) {
        /* as etcd's scheduleCompaction: the batches it pauses after */
        hist_observe(&m->pause_ms, (double)((now - t0) / 1000000));
        return;
    }
    uint64_t took = now - (m->sweep_start_ns ? m->sweep_start_ns : t0);
    m->sweep_start_ns = 0;
    hist_observe(&m->total_ms, (double)(took / 1000000));
    log_info("finished scheduled compaction: compact-revision=%" PRId64 " took=%.3fms",
             mvcc_compact_revision(s->store), (double)took / 1e6);
}

void maint_compaction_hists(const api_server *s, struct maint_hist *pause,
                            struct maint_hist *total)
{
    const struct maint_api *m = s->maint;
    if (pause != NULL) *pause = m ? m->pause_ms : (struct maint_hist){0};
    if (total != NULL) *total = m ? m->total_ms : (struct maint_hist){0};
}

void maint_api_kick(api_server *s)
{
    struct maint_api *m = s->maint;
    if (m == NULL || m->stopping || !mvcc_compact_pending(s->store)) return;
    if (!uv_is_active((uv_handle_t *)&m->sweep)) {
        if (m->sweep_start_ns == 0) m->sweep_start_ns = uv_hrtime();
        uv_timer_start(&m->sweep, on_sweep, 0, m->sleep_ms ? m->sleep_ms : 1);
    }
}

/* ---- auto-compaction ---- */

static void compacted(api_server *s, void *data, int err, const uint8_t *resp, size_t len)
{
    (void)resp, (void)len;
    struct maint_api *m = s->maint;
    int64_t rev = (int64_t)(intptr_t)data;
    if (m == NULL) return;
    m->proposing = false;
    if (err == 0 || err == KERR_COMPACTED) {
        log_info("completed auto %s compaction to revision %" PRId64,
                 m->periodic ? "periodic" : "revision", rev);
        m->last_success = now_ms();
        m->prev_rev = rev;
    } else {
        log_warn("auto compaction to revision %" PRId64 " failed: %s (retrying)", rev,
                 kerr_text(err));
    }
}

static void propose_compaction(api_server *s, int64_t rev)
{
    struct maint_api *m = s->maint;
    Etcdserverpb__CompactionRequest cr = ETCDSERVERPB__COMPACTION_REQUEST__INIT;
    cr.revision = rev;
    Ketchpb__InternalRequest ir = KETCHPB__INTERNAL_REQUEST__INIT;
    ir.compaction = &cr;
    log_info("starting auto %s compaction to revision %" PRId64,
             m->periodic ? "periodic" : "revision", rev);
    if (api_propose_internal(s, &ir, compacted, (void *)(intptr_t)rev) == 0) m->proposing = true;
}

static void on_auto(uv_timer_t *t)
{
    struct maint_api *m = t->data;
    api_server *s = m->s;
    bool leader = s->member != NULL && member_is_leader(s->member);
    if (m->periodic) {
        /* etcd's Periodic.Run: the revision is noted every tick, also
         * while paused (not leader) */
        if (m->n_revs == m->max_revs) {
            memmove(m->revs, m->revs + 1, (m->n_revs - 1) * sizeof *m->revs);
            m->n_revs--;
        }
        m->revs[m->n_revs++] = mvcc_revision(s->store);
        if (!leader || m->proposing) return;
        if (now_ms() - m->last_success < m->base_interval) return;
        uint64_t every = m->retention > HOUR_MS ? HOUR_MS : m->retention;
        m->base_interval = every;
        int64_t rev = m->revs[0];
        if (rev > mvcc_compact_revision(s->store)) propose_compaction(s, rev);
        else m->last_success = now_ms();
    } else {
        if (!leader || m->proposing) return;
        int64_t rev = mvcc_revision(s->store) - (int64_t)m->retention;
        if (rev <= 0 || rev == m->prev_rev) return;
        propose_compaction(s, rev);
    }
}

/* ---- corruption check (api/corrupt.c) ---- */

static void on_corrupt(uv_timer_t *t)
{
    struct maint_api *m = t->data;
    if (!m->stopping) maint_corrupt_check(m->s);
}

/* ---- life cycle ---- */

int maint_api_init(api_server *s, const struct maint_config *c)
{
    struct maint_api *m = calloc(1, sizeof *m);
    if (m == NULL) return KERR_NOMEM;
    m->s = s;
    m->sleep_ms = c->sleep_ms;
    /* etcd's mvcc/metrics.go */
    hist_init(&m->pause_ms, 1, 13);
    hist_init(&m->total_ms, 100, 14);
    m->batch_limit = c->batch_limit ? c->batch_limit : 1000;
    m->periodic = c->periodic;
    m->retention = c->retention;
    uv_timer_init(s->loop, &m->sweep);
    uv_timer_init(s->loop, &m->autoc);
    uv_timer_init(s->loop, &m->catchup);
    uv_timer_init(s->loop, &m->corrupt);
    m->sweep.data = m->autoc.data = m->catchup.data = m->corrupt.data = m;
    m->corrupt_ms = c->corrupt_check_ms;
    if (m->retention > 0) {
        if (m->periodic) {
            uint64_t every = m->retention > HOUR_MS ? HOUR_MS : m->retention;
            m->tick_ms = every / RETRY_DIVISOR;
            if (m->tick_ms == 0) m->tick_ms = 1;
            m->max_revs = (size_t)(m->retention / m->tick_ms) + 1;
            m->revs = calloc(m->max_revs, sizeof *m->revs);
            if (m->revs == NULL) {
                free(m);
                return KERR_NOMEM;
            }
            m->base_interval = m->retention;
        } else {
            m->tick_ms = c->revision_interval_ms ? c->revision_interval_ms : REVISION_INTERVAL_MS;
        }
    }
    s->maint = m;
    return 0;
}

void maint_api_start(api_server *s)
{
    struct maint_api *m = s->maint;
    if (m == NULL) return;
    m->last_success = now_ms();
    /* as etcd's Periodic.Run: the revision at the start is the first noted */
    if (m->periodic && m->revs != NULL) m->revs[m->n_revs++] = mvcc_revision(s->store);
    if (m->retention > 0) {
        uv_timer_start(&m->autoc, on_auto, m->tick_ms, m->tick_ms);
        log_info("auto compaction: %s, retention %" PRIu64 "%s", m->periodic ? "periodic" : "revision",
                 m->retention, m->periodic ? " ms" : " revisions");
    }
    if (m->corrupt_ms > 0)
        uv_timer_start(&m->corrupt, on_corrupt, m->corrupt_ms, m->corrupt_ms);
    maint_api_kick(s);
}

void maint_api_stop(api_server *s)
{
    struct maint_api *m = s->maint;
    if (m == NULL || m->stopping) return;
    m->stopping = true;
    uv_close((uv_handle_t *)&m->sweep, NULL);
    uv_close((uv_handle_t *)&m->autoc, NULL);
    uv_close((uv_handle_t *)&m->corrupt, NULL);
    maint_corrupt_stop();
    uv_timer_stop(&m->catchup);
    uv_close((uv_handle_t *)&m->catchup, NULL);
    if (m->defragging && !m->copying) {
        mvcc_defrag_abort(s->store);
        defrag_finish(s, KERR_STOPPED);
    }
    /* a copy still running finishes on the pool; defrag_copied drops it */
}

void maint_api_fini(api_server *s)
{
    struct maint_api *m = s->maint;
    if (m == NULL) return;
    free(m->revs);
    free(m->waiters);
    free(m);
    s->maint = NULL;
}
