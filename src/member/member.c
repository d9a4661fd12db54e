/* The Raft member on canonical libraft 0.15 (libuv backend, TCP transport).
 *
 * Applied index. libraft's fsm->apply is not told the entry's index, but it
 * applies committed entries strictly in order and sets raft->last_applied
 * only after fsm->apply returns (replication.c: replicationApply loops
 * index = last_applied + 1 .. commit_index; barrier and configuration
 * entries advance last_applied too, and raft_start sets it to the snapshot
 * index, or to 1 for the bootstrap configuration). So inside fsm->apply the
 * entry's index is raft->last_applied + 1.
 *
 * Durability. The libuv backend acknowledges an append only after the write
 * is on disk (O_DSYNC / fdatasync on the open segment), and a leader counts
 * its own vote for an entry only from that acknowledgement
 * (replication.c: the leader's append callback sets its match_index). For a
 * lone voter an entry is therefore committed, applied, and its raft_apply
 * callback fired only once it is durable.
 *
 * Entry framing. libraft's segment encoder assumes every entry's length is a
 * multiple of 8 (uv_segment.c asserts it; the Debian build compiles asserts
 * out and then writes segments that its own loader rejects as corrupt, or
 * silently truncates when the segment is still open). So each proposal is
 * padded, and its last byte says by how much:
 *
 *   offset     size  field
 *   0          len   the proposal, as given to member_propose
 *   len        k-1   zeros
 *   len+k-1    1     k (1..8), so that len + k is a multiple of 8
 *
 * Snapshot payload. The state machine is LMDB, durable on its own and
 * holding its applied index, so the snapshots libraft takes to compact the
 * log only record where it was:
 *
 *   offset size  field
 *   0      8     magic "KETCHSN1"
 *   8      8     raft index of the snapshot, little endian
 *
 * A leader sends a snapshot to a member whose next entry it no longer has.
 * Then (io_snapshot_get, wrapping the libuv backend's snapshot_get) the
 * payload loaded from disk is replaced, on a worker thread, by a fresh copy
 * of the whole store (cfg.copy: a compacted LMDB copy from one read txn):
 *
 *   offset size  field
 *   0      n     the LMDB file
 *   n      8     applied index A of the copy, little endian (A >= the
 *                snapshot's index: the leader synced its store before
 *                taking it, and only applies more since)
 *   n+8    8     magic "KETCHSN2"
 *
 * The receiver (fsm_restore) installs it when A is above what it has
 * applied, and from then on skips entries up to A (they are in the copy),
 * exactly as after a restart. Memory: the copy is written to a file, the
 * trailer appended, and the file mapped as the one buffer libraft sends;
 * the receiver's libraft allocates the whole message, and that (like any
 * libraft buffer of 16 MiB or more) is a mapping of an unlinked file too
 * (member/bigheap.c), written to install.mdb and renamed into place. So the
 * database is never in anonymous memory: its pages are page cache, which
 * the kernel can write back and evict.
 *
 * Read barriers. libraft has no ReadIndex; a barrier entry is appended and
 * its callback fires when it is applied, i.e. after everything before it.
 * Callers that arrive while a barrier is in flight wait for the next one:
 * the in-flight barrier may have been appended before entries they must
 * see were committed. */
#include "member/member.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <raft.h>
#include <raft/uv.h>

#include "member/bigheap.h"
#include "util/endian.h"
#include "util/errors.h"
#include "util/log.h"

#define SNAP_MAGIC "KETCHSN1"
#define SNAP_LEN 16
#define FULL_MAGIC "KETCHSN2"
#define FULL_TRAILER 16
/* Buffers of libraft at least this big live in files (member/bigheap.c):
 * slower to fill (the kernel writes them back), but a store bigger than
 * RAM can still be received. */
#define BIG_BUFFER_BYTES ((size_t)256 << 20)
/* How long a leader waits for a member to install a snapshot before it
 * sends another (libraft's default is 30 s). A member refuses a snapshot
 * while it takes one of its own (libraft: "already taking or installing
 * snapshot"), without telling the leader, so this is also how soon it gets
 * the next one. A member still installing the previous one ignores the
 * repeat. */
#define INSTALL_SNAPSHOT_TIMEOUT_MS 10000
#define DEFAULT_HEARTBEAT_MS 100
#define DEFAULT_ELECTION_MS 1000
#define DEFAULT_SNAPSHOT_THRESHOLD 10000
#define DEFAULT_SNAPSHOT_TRAILING 5000

struct waiter {
    member_done_fn cb;
    void *data;
    struct waiter *next;
};

struct barrier {
    struct raft_barrier req; /* first: libraft hands it back */
    member *m;
    struct waiter *batch; /* callers this barrier answers */
    raft_term term;       /* when it was issued */
};

/* Proposals made in one turn of the loop go to libraft as one raft_apply
 * of several buffers (flushed before the loop next polls, or at
 * PROPOSE_BATCH_MAX entries / PROPOSE_BATCH_BYTES): libraft sends every
 * raft_apply to each follower as an AppendEntries message of its own, and
 * each follower answers each one, so one entry per raft_apply cost a
 * message and an answer per follower per write (see docs/performance.md,
 * "cluster writes").
 *
 * libraft fires a raft_apply's callback once, after applying its first
 * entry, or with an error while none is applied. So each entry's own
 * completion is fired by fsm_apply: with 0 while this member still leads
 * in the term it appended the batch, else KERR_LEADER_CHANGED (a later
 * leader committed whatever is at that index; the caller checks whether
 * it was its entry, as after any lost leader). */
#define PROPOSE_BATCH_MAX 256
#define PROPOSE_BATCH_BYTES ((size_t)4 << 20)

struct pending {
    member_done_fn cb;
    void *data;
    uint64_t *index; /* member_propose_at's: set when appended */
};

struct batch {
    struct raft_apply req; /* first: libraft hands it back */
    member *m;
    struct batch *next; /* m->batches, in log order */
    uint64_t first;     /* index of items[0] */
    raft_term term;     /* appended as leader of this term */
    unsigned n;
    unsigned done;      /* items[0..done) completed */
    bool released;      /* libraft fired req's callback */
    uint64_t t_append;  /* uv_hrtime() when handed to libraft */
    struct pending items[];
};

#define NOTIFY_MAX 16 /* followers whose heartbeats member_notify_commit tracks */
#define NOTIFY_MS 1   /* its heartbeats' interval (ms) while commits keep coming */

struct member {
    uv_loop_t *loop;
    struct raft raft;
    struct raft_io io;
    struct raft_uv_transport transport; /* libraft's TCP one, unless given */
    struct raft_uv_transport *tr;       /* the one in use */
    struct raft_fsm fsm;
    uint64_t id;
    char *dir;
    char *address;

    uint64_t floor;   /* cfg.applied_index: entries up to it are not applied */
    uint64_t applied; /* highest index handed to (or skipped by) apply */
    member_apply_fn apply;
    int (*sync)(void *ctx);
    int (*copy)(void *ctx, const char *path, uint64_t *applied);
    int (*install)(void *ctx, const char *path, uint64_t *applied);
    void (*copy_pin)(void *ctx, int delta);
    void *apply_ctx;
    unsigned sync_failures; /* in a row */

    /* the libuv backend's snapshot_get, which io_snapshot_get wraps */
    int (*uv_snapshot_get)(struct raft_io *io, struct raft_io_snapshot_get *req,
                           raft_io_snapshot_get_cb cb);
    pthread_mutex_t copy_lock; /* a copy (worker) and an install (loop) */
    unsigned copies;           /* store copies in flight */
    unsigned copy_seq;

    struct barrier *inflight; /* at most one raft barrier at a time */
    raft_term read_term;      /* term of the last barrier that completed */
    struct waiter *wait_head, *wait_tail; /* for the next barrier */

    /* member_notify_commit: libraft's tick, as the libuv backend's start
     * was given it, and a timer that runs it once per loop turn */
    int (*uv_start)(struct raft_io *io, unsigned msecs, raft_io_tick_cb tick,
                    raft_io_recv_cb recv);
    raft_io_tick_cb tick;
    uv_timer_t notify;
    uint64_t notify_upto;  /* the commit index followers are to learn */
    uint64_t notify_since; /* uv_now() when notify_upto was last raised */
    struct {
        raft_id id;
        uint64_t told; /* commit index of the last heartbeat it was sent */
    } told[NOTIFY_MAX];
    /* proposals of this loop turn, not yet given to libraft */
    struct raft_buffer *pend_bufs;
    struct pending *pend;
    unsigned n_pend, cap_pend;
    size_t pend_bytes;
    uv_prepare_t flush; /* hands them over before the loop polls */
    struct batch *batches, *batches_tail; /* appended, entries not all completed */
    struct member_stats stats;

    bool stopping;
    uv_timer_t leader_watch; /* forget a leader silent for an election timeout */
    uv_timer_t drain;  /* member_stop: waits for in-flight writes */
    uint64_t drain_start;
    void (*stop_cb)(void *data);
    void *stop_data;
};

static int map_raft_error(const member *m, int rv)
{
    switch (rv) {
    case 0:
        return 0;
    case RAFT_NOTLEADER:
        return member_leader_id(m) != 0 ? KERR_NOT_LEADER : KERR_NO_LEADER;
    case RAFT_LEADERSHIPLOST:
        return m->stopping ? KERR_STOPPED : KERR_LEADER_CHANGED;
    case RAFT_SHUTDOWN:
    case RAFT_CANCELED:
        return KERR_STOPPED;
    case RAFT_NOMEM:
        return KERR_NOMEM;
    case RAFT_IOERR:
    case RAFT_NOSPACE:
    case RAFT_CORRUPT:
        return KERR_IO;
    default:
        return KERR_INTERNAL;
    }
}

/* ---- proposal batches (see struct batch) ------------------------------ */

static void batch_unlink(member *m, struct batch *b)
{
    struct batch **pp = &m->batches, *prev = NULL;

    while (*pp != NULL && *pp != b) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp == NULL)
        return;
    *pp = b->next;
    if (m->batches_tail == b)
        m->batches_tail = prev;
}

/* Completes b's items up to (not including) `upto` with `status`; b is
 * unlinked once all are, and freed if libraft is done with it too. */
static void batch_fire(member *m, struct batch *b, unsigned upto, int status)
{
    if (status == 0 && b->done < upto) {
        m->stats.applied += upto - b->done;
        m->stats.append_to_apply_ns += (upto - b->done) * (uv_hrtime() - b->t_append);
    }
    while (b->done < upto) {
        struct pending *it = &b->items[b->done++];
        it->cb(it->data, status);
    }
    if (b->done == b->n) {
        batch_unlink(m, b);
        if (b->released)
            free(b);
    }
}

/* Entries up to `index` are applied: complete the proposals among them. */
static void complete_applied(member *m, uint64_t index)
{
    while (m->batches != NULL && m->batches->first + m->batches->done <= index) {
        struct batch *b = m->batches;
        uint64_t upto = index - b->first + 1;
        int st = raft_state(&m->raft) == RAFT_LEADER && m->raft.current_term == b->term
                     ? 0
                     : map_raft_error(m, RAFT_LEADERSHIPLOST);
        batch_fire(m, b, upto < b->n ? (unsigned)upto : b->n, st);
    }
}

static void batch_cb(struct raft_apply *req, int status, void *result)
{
    struct batch *b = (struct batch *)req;

    (void)result;
    b->released = true;
    if (status != 0 && b->done < b->n) {
        batch_fire(b->m, b, b->n, map_raft_error(b->m, status)); /* frees b */
        return;
    }
    if (b->done == b->n)
        free(b); /* unlinked when its last item completed */
}

/* Hands the proposals of this loop turn to libraft as one raft_apply. */
static void flush_proposals(member *m)
{
    unsigned n = m->n_pend;
    struct batch *b;
    int rv;

    if (n == 0)
        return;
    b = malloc(sizeof *b + n * sizeof b->items[0]);
    if (b == NULL)
        return; /* still pending: the next loop turn tries again */
    memcpy(b->items, m->pend, n * sizeof b->items[0]);
    b->m = m;
    b->next = NULL;
    b->n = n;
    b->done = 0;
    b->released = false;
    b->term = m->raft.current_term;
    m->n_pend = 0;
    m->pend_bytes = 0;
    rv = raft_apply(&m->raft, &b->req, m->pend_bufs, n, batch_cb);
    if (rv != 0) {
        /* nothing was appended: the callers may still send them elsewhere */
        int st = map_raft_error(m, rv);
        for (unsigned k = 0; k < n; k++)
            raft_free(m->pend_bufs[k].base);
        for (unsigned k = 0; k < n; k++)
            b->items[k].cb(b->items[k].data, st);
        free(b);
        return;
    }
    b->first = b->req.index;
    b->t_append = uv_hrtime();
    m->stats.appends++;
    m->stats.proposals += n;
    for (unsigned k = 0; k < n; k++)
        if (b->items[k].index != NULL)
            *b->items[k].index = b->first + k;
    if (m->batches_tail != NULL)
        m->batches_tail->next = b;
    else
        m->batches = b;
    m->batches_tail = b;
}

static void flush_cb(uv_prepare_t *h)
{
    member *m = h->data;

    flush_proposals(m);
    if (m->n_pend == 0)
        uv_prepare_stop(h);
}

/* ---- FSM ---------------------------------------------------------------- */

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf,
                     void **result)
{
    member *m = fsm->data;
    uint64_t index = m->raft.last_applied + 1;

    const uint8_t *p = buf->base;
    size_t pad;

    *result = NULL;
    if (index > m->applied)
        m->applied = index;
    if (index <= m->floor) {
        complete_applied(m, index);
        return 0; /* already in the state machine: replay after restart */
    }
    pad = buf->len > 0 ? p[buf->len - 1] : 0;
    if (buf->len % 8 != 0 || pad < 1 || pad > 8) {
        /* Not written by member_propose: refusing it stops libraft from
         * applying anything further, rather than diverging. */
        log_error("member: entry %" PRIu64 " is not a ketch entry (%zu bytes)",
                  index, buf->len);
        return RAFT_MALFORMED;
    }
    m->apply(m->apply_ctx, index, p, buf->len - pad);
    complete_applied(m, index);
    return 0;
}

static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[],
                        unsigned *n_bufs)
{
    member *m = fsm->data;
    uint64_t index = m->raft.last_applied;
    uint8_t *p;
    int rv;

    /* libraft deletes log entries once the snapshot is stored: the state
     * machine must hold them durably first. */
    if (m->sync != NULL) {
        rv = m->sync(m->apply_ctx);
        if (rv != 0) {
            /* libraft retries after every apply: log the first of a run. */
            if (m->sync_failures++ % 1000 == 0)
                log_warn("member: snapshot at %" PRIu64 " abandoned: state "
                         "machine sync failed (%d; %u times)",
                         index, rv, m->sync_failures);
            return RAFT_IOERR;
        }
        m->sync_failures = 0;
    }
    *bufs = raft_malloc(sizeof **bufs);
    if (*bufs == NULL)
        return RAFT_NOMEM;
    p = raft_malloc(SNAP_LEN);
    if (p == NULL) {
        raft_free(*bufs);
        *bufs = NULL;
        return RAFT_NOMEM;
    }
    memcpy(p, SNAP_MAGIC, 8);
    put_le64(p + 8, index);
    (*bufs)[0].base = p;
    (*bufs)[0].len = SNAP_LEN;
    *n_bufs = 1;
    log_debug("member: snapshot at index %" PRIu64, index);
    return 0;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Installs a whole-store snapshot (see the top of this file). */
static int restore_full(member *m, const uint8_t *p, size_t len)
{
    uint64_t applied = get_le64(p + len - FULL_TRAILER), now = 0;
    char path[4096];
    int fd, rv;

    if (applied <= m->applied) {
        /* This member already holds it (a restart after an install). */
        log_debug("member: snapshot store at %" PRIu64 " not newer than ours (%" PRIu64 ")",
                  applied, m->applied);
        return 0;
    }
    if (m->install == NULL) {
        log_error("member: cannot install a snapshot store");
        return RAFT_INVALID;
    }
    snprintf(path, sizeof path, "%s/install.mdb", m->dir);
    fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0) {
        log_error("member: create %s: %s", path, strerror(errno));
        return RAFT_IOERR;
    }
    if (write_all(fd, p, len - FULL_TRAILER) != 0 || fsync(fd) != 0) {
        log_error("member: write %s: %s", path, strerror(errno));
        close(fd);
        unlink(path);
        return RAFT_IOERR;
    }
    close(fd);
    log_info("member: installing a snapshot of the store at index %" PRIu64
             " (%zu bytes; applied here %" PRIu64 ")",
             applied, len - FULL_TRAILER, m->applied);
    pthread_mutex_lock(&m->copy_lock);
    rv = m->install(m->apply_ctx, path, &now);
    pthread_mutex_unlock(&m->copy_lock);
    unlink(path);
    if (rv != 0) {
        log_error("member: installing the snapshot failed");
        return RAFT_IOERR;
    }
    m->applied = now;
    m->floor = now;
    return 0;
}

/* On success the buffer is ours to free; on error libraft frees it. */
static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    member *m = fsm->data;
    const uint8_t *p = buf->base;
    uint64_t index = 0;
    int rv;

    if (buf->len >= FULL_TRAILER && memcmp(p + buf->len - 8, FULL_MAGIC, 8) == 0) {
        rv = restore_full(m, p, buf->len);
        if (rv != 0)
            return rv;
        raft_free(buf->base);
        return 0;
    }
    if (buf->len != SNAP_LEN || memcmp(p, SNAP_MAGIC, 8) != 0) {
        log_error("member: snapshot in %s is not a ketch snapshot", m->dir);
        return RAFT_MALFORMED;
    }
    index = get_le64(p + 8);
    if (index > m->applied) {
        /* The state machine is behind its own snapshot: only a leader's
         * whole-store snapshot could help. */
        log_error("member: snapshot at %" PRIu64 " is ahead of the state machine"
                  " (applied %" PRIu64 ")", index, m->applied);
        return RAFT_INVALID;
    }
    raft_free(buf->base);
    return 0;
}

/* ---- whole-store snapshots for members behind (leader side) ------------ */

struct snap_get {
    struct raft_io_snapshot_get inner; /* first: handed to the backend */
    struct raft_io_snapshot_get *outer;
    raft_io_snapshot_get_cb cb;
    member *m;
    struct raft_snapshot *snapshot;
    uv_work_t work;
    unsigned seq;
    int status;
    uint8_t *buf; /* the payload: a mapped file (raft_free unmaps it) */
    size_t len;
};

static void snapshot_destroy(struct raft_snapshot *s)
{
    for (unsigned i = 0; i < s->n_bufs; i++)
        raft_free(s->bufs[i].base);
    raft_free(s->bufs);
    raft_configuration_close(&s->configuration);
    raft_free(s);
}

/* Worker thread: copy the store into a file, append the trailer, and map
 * the file as the buffer to send. */
static void copy_work(uv_work_t *w)
{
    struct snap_get *g = w->data;
    member *m = g->m;
    char path[4096];
    uint8_t trailer[FULL_TRAILER];
    uint64_t applied = 0;
    struct stat st;
    int fd;

    g->status = RAFT_IOERR;
    snprintf(path, sizeof path, "%s/send-%u.mdb", m->dir, g->seq);
    pthread_mutex_lock(&m->copy_lock);
    if (m->copy(m->apply_ctx, path, &applied) != 0) {
        pthread_mutex_unlock(&m->copy_lock);
        unlink(path);
        return;
    }
    pthread_mutex_unlock(&m->copy_lock);
    fd = open(path, O_RDWR | O_CLOEXEC);
    unlink(path);
    if (fd < 0)
        return;
    put_le64(trailer, applied);
    memcpy(trailer + 8, FULL_MAGIC, 8);
    if (fstat(fd, &st) != 0 ||
        pwrite(fd, trailer, sizeof trailer, st.st_size) != (ssize_t)sizeof trailer) {
        close(fd);
        return;
    }
    g->len = (size_t)st.st_size + FULL_TRAILER;
    g->buf = bigheap_map_fd(fd, g->len);
    close(fd);
    if (g->buf != NULL)
        g->status = 0;
}

static void copy_done(uv_work_t *w, int status)
{
    struct snap_get *g = w->data;
    member *m = g->m;
    struct raft_snapshot *s = g->snapshot;

    m->copies--;
    if (m->copy_pin != NULL)
        m->copy_pin(m->apply_ctx, -1);
    if (status != 0 || g->status != 0) {
        log_warn("member: cannot copy the store for a snapshot: %s",
                 status != 0 ? uv_strerror(status) : raft_strerror(g->status));
        snapshot_destroy(s);
        g->cb(g->outer, NULL, RAFT_IOERR);
    } else {
        s->bufs[0].base = g->buf;
        s->bufs[0].len = g->len;
        s->n_bufs = 1;
        log_info("member: sending a snapshot at index %" PRIu64 " with the store at %" PRIu64
                 " (%zu bytes)", (uint64_t)s->index, get_le64(g->buf + g->len - FULL_TRAILER),
                 g->len - FULL_TRAILER);
        g->cb(g->outer, s, 0);
    }
    free(g);
}

static void uv_get_cb(struct raft_io_snapshot_get *req, struct raft_snapshot *s, int status)
{
    struct snap_get *g = (struct snap_get *)req;
    member *m = g->m;

    if (status != 0 || s == NULL || s->n_bufs < 1 || m->stopping) {
        g->cb(g->outer, s, status != 0 ? status : RAFT_IOERR);
        free(g);
        return;
    }
    /* What was loaded from disk (its index only, or a store this member
     * once installed) is replaced: free it now, not next to the copy. */
    for (unsigned i = 0; i < s->n_bufs; i++) {
        raft_free(s->bufs[i].base);
        s->bufs[i].base = NULL;
        s->bufs[i].len = 0;
    }
    g->snapshot = s;
    g->work.data = g;
    g->seq = m->copy_seq++;
    if (m->copy_pin != NULL)
        m->copy_pin(m->apply_ctx, +1);
    if (uv_queue_work(m->loop, &g->work, copy_work, copy_done) != 0) {
        if (m->copy_pin != NULL)
            m->copy_pin(m->apply_ctx, -1);
        snapshot_destroy(s);
        g->cb(g->outer, NULL, RAFT_IOERR);
        free(g);
        return;
    }
    m->copies++;
}

static int io_snapshot_get(struct raft_io *io, struct raft_io_snapshot_get *req,
                           raft_io_snapshot_get_cb cb)
{
    member *m = (member *)((char *)io - offsetof(struct member, io));
    struct snap_get *g;
    int rv;

    if (m->copy == NULL)
        return m->uv_snapshot_get(io, req, cb);
    g = calloc(1, sizeof *g);
    if (g == NULL)
        return RAFT_NOMEM;
    g->outer = req;
    g->cb = cb;
    g->m = m;
    g->inner.data = g;
    rv = m->uv_snapshot_get(io, &g->inner, uv_get_cb);
    if (rv != 0)
        free(g);
    return rv;
}

/* ---- a lost leader ------------------------------------------------------
 *
 * libraft 0.15 refuses every vote (and pre-vote) while a follower still
 * knows a leader, however long ago it heard from it (recv_request_vote.c:
 * `current_leader.id != 0`), and a follower only forgets its leader when
 * its own randomized timer fires. So after a leader dies the first follower
 * to time out is refused by the others until they time out too: elections
 * wait for the last timer instead of the first. Raft's rule (§4.2.3) and
 * later libraft versions only count a leader heard from within the
 * election timeout; this timer applies that rule from outside: a follower
 * that has not heard from its leader for a whole election timeout forgets
 * it (the id only; libraft sets it again from the leader's next message). */
static void leader_watch_tick(uv_timer_t *t)
{
    member *m = t->data;
    struct raft *r = &m->raft;

    if (r->state == RAFT_FOLLOWER && r->follower_state.current_leader.id != 0 &&
        uv_now(m->loop) - r->election_timer_start >= r->election_timeout) {
        log_info("member: no word from leader %" PRIx64 " for %u ms: it is lost",
                 (uint64_t)r->follower_state.current_leader.id, r->election_timeout);
        r->follower_state.current_leader.id = 0;
    }
    /* Entries of a batch libraft is done with (its first one applied) that
     * this member appended as a leader it no longer is: do not wait for
     * their index to be applied here (it may be long), say now that the
     * leader changed; the caller resolves it as after any lost leader. */
    if (r->state != RAFT_LEADER) {
        struct batch *b = m->batches;
        while (b != NULL) {
            struct batch *next = b->next;
            if (b->released)
                batch_fire(m, b, b->n, map_raft_error(m, RAFT_LEADERSHIPLOST));
            b = next;
        }
    }
}

/* ---- start -------------------------------------------------------------- */

static int mkdir_p(const char *dir)
{
    char path[4096];
    size_t n = strlen(dir);

    if (n == 0 || n >= sizeof path)
        return -1;
    memcpy(path, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (path[i] != '/' && path[i] != '\0')
            continue;
        char c = path[i];
        path[i] = '\0';
        if (mkdir(path, 0700) != 0 && errno != EEXIST)
            return -1;
        path[i] = c;
    }
    return 0;
}

/* ---- telling followers of a commit soon -------------------------------- */

/* libraft 0.15 tells followers that an entry committed only with its next
 * AppendEntries: new entries, or the heartbeat its tick sends to a
 * follower it has sent nothing to for a heartbeat interval (progress.c:
 * progressShouldReplicate; the tick runs every --heartbeat-interval). The
 * libuv backend's start is wrapped to learn the tick callback, so that
 * member_notify_commit can run an extra tick with a follower's last_send
 * set a heartbeat interval back: that sends it a heartbeat carrying the
 * commit index, and adds no log entry. An extra
 * tick is otherwise harmless (the leader's quorum check and a transfer's
 * expiry go by the clock, not by the number of ticks). */
static int io_start(struct raft_io *io, unsigned msecs, raft_io_tick_cb tick,
                    raft_io_recv_cb recv)
{
    member *m = (member *)((char *)io - offsetof(member, io));

    m->tick = tick;
    return m->uv_start(io, msecs, tick, recv);
}

/* What this member last told follower `id` (a slot for it, reused from a
 * server no longer in the configuration; NULL if there are more than
 * NOTIFY_MAX followers: they learn with the regular heartbeat). */
static uint64_t *told_slot(member *m, raft_id id)
{
    const struct raft_configuration *c = &m->raft.configuration;
    int free_slot = -1;

    for (int k = 0; k < NOTIFY_MAX; k++) {
        if (m->told[k].id == id)
            return &m->told[k].told;
        bool used = false;
        for (unsigned i = 0; i < c->n && !used; i++)
            used = m->told[k].id != 0 && c->servers[i].id == m->told[k].id;
        if (!used && free_slot < 0)
            free_slot = k;
    }
    if (free_slot < 0)
        return NULL;
    m->told[free_slot].id = id;
    m->told[free_slot].told = 0;
    return &m->told[free_slot].told;
}

/* Every NOTIFY_MS while followers are to learn notify_upto (the first
 * time on the next turn of the loop): a follower that holds the entry (its
 * match index) and was not told yet gets a heartbeat. One that does not
 * hold it yet (the entry committed with another follower's copy) gets it
 * once it has acknowledged the entry; after a heartbeat interval the
 * regular heartbeats take over. The timer stops after a round with
 * nothing to do, so a busy leader sends at most one such heartbeat per
 * follower per NOTIFY_MS (its new entries carry the commit index too). */
static void notify_tick(uv_timer_t *h)
{
    member *m = h->data;
    struct raft *r = &m->raft;
    bool sent = false, waiting = false;

    if (m->stopping || m->tick == NULL || r->state != RAFT_LEADER ||
        r->leader_state.progress == NULL) {
        uv_timer_stop(h);
        return;
    }
    raft_time now = r->io->time(r->io);
    raft_time back = now > r->heartbeat_timeout ? now - r->heartbeat_timeout : 0;
    for (unsigned i = 0; i < r->configuration.n; i++) {
        raft_id id = r->configuration.servers[i].id;
        uint64_t *told = id != m->id ? told_slot(m, id) : NULL;
        if (told == NULL || *told >= m->notify_upto)
            continue;
        if (r->leader_state.progress[i].match_index < m->notify_upto) {
            waiting = true;
            continue;
        }
        /* what the heartbeat lets it apply */
        *told = r->commit_index < r->leader_state.progress[i].match_index
                    ? r->commit_index
                    : r->leader_state.progress[i].match_index;
        if (r->leader_state.progress[i].last_send > back)
            r->leader_state.progress[i].last_send = back;
        sent = true;
    }
    if ((!waiting && !sent) || uv_now(m->loop) - m->notify_since >= r->heartbeat_timeout)
        uv_timer_stop(h);
    if (sent)
        m->tick(r->io);
}

void member_notify_commit(member *m)
{
    if (m->stopping || m->raft.state != RAFT_LEADER)
        return;
    if (m->raft.commit_index > m->notify_upto) {
        m->notify_upto = m->raft.commit_index;
        m->notify_since = uv_now(m->loop);
    }
    if (!uv_is_active((uv_handle_t *)&m->notify))
        uv_timer_start(&m->notify, notify_tick, 0, NOTIFY_MS);
}

static void free_member(member *m)
{
    free(m->pend_bufs);
    free(m->pend);
    pthread_mutex_destroy(&m->copy_lock);
    free(m->dir);
    free(m->address);
    free(m);
}

static void start_failed_close_cb(struct raft *r)
{
    member *m = r->data;

    raft_uv_close(&m->io);
    if (m->tr == &m->transport) raft_uv_tcp_close(&m->transport);
    free_member(m);
}

static int bootstrap(member *m, const struct member_config *cfg)
{
    struct raft_configuration conf;
    int rv;

    if (cfg->join) {
        log_info("member: joining an existing cluster (no bootstrap)");
        return 0;
    }
    raft_configuration_init(&conf);
    for (size_t i = 0; i < cfg->n_peers; i++) {
        rv = raft_configuration_add(&conf, cfg->peers[i].id, cfg->peers[i].address,
                                    RAFT_VOTER);
        if (rv != 0) {
            log_error("member: bad peer %" PRIx64 " at %s: %s", cfg->peers[i].id,
                      cfg->peers[i].address, raft_strerror(rv));
            raft_configuration_close(&conf);
            return rv == RAFT_NOMEM ? KERR_NOMEM : KERR_INTERNAL;
        }
    }
    rv = raft_bootstrap(&m->raft, &conf);
    raft_configuration_close(&conf);
    if (rv == RAFT_CANTBOOTSTRAP)
        return 0; /* the log already has state: a restart */
    if (rv != 0) {
        log_error("member: bootstrap in %s: %s", m->dir, raft_errmsg(&m->raft));
        return KERR_IO;
    }
    log_info("member: bootstrapped a cluster of %zu in %s", cfg->n_peers, m->dir);
    return 0;
}

int member_start(member **out, uv_loop_t *loop, const struct member_config *cfg)
{
    member *m;
    unsigned threshold, trailing;
    int rv;

    *out = NULL;
    if (cfg->dir == NULL || cfg->address == NULL || cfg->id == 0 ||
        cfg->apply == NULL) {
        log_error("member: incomplete configuration");
        return KERR_INTERNAL;
    }
    m = calloc(1, sizeof *m);
    if (m == NULL)
        return KERR_NOMEM;
    m->loop = loop;
    m->id = cfg->id;
    m->floor = cfg->applied_index;
    m->applied = cfg->applied_index;
    m->apply = cfg->apply;
    m->sync = cfg->sync;
    m->copy = cfg->copy;
    m->install = cfg->install;
    m->copy_pin = cfg->copy_pin;
    pthread_mutex_init(&m->copy_lock, NULL);
    m->apply_ctx = cfg->apply_ctx;
    m->dir = strdup(cfg->dir);
    m->address = strdup(cfg->address);
    if (m->dir == NULL || m->address == NULL || bigheap_install(m->dir, BIG_BUFFER_BYTES) != 0) {
        rv = KERR_NOMEM;
        goto err_after_alloc;
    }
    if (mkdir_p(m->dir) != 0) {
        log_error("member: cannot create %s: %s", m->dir, strerror(errno));
        rv = KERR_IO;
        goto err_after_alloc;
    }

    if (cfg->transport != NULL) {
        m->tr = cfg->transport;
    } else {
        rv = raft_uv_tcp_init(&m->transport, loop);
        if (rv != 0) {
            log_error("member: raft transport: %s", raft_strerror(rv));
            rv = KERR_INTERNAL;
            goto err_after_alloc;
        }
        m->tr = &m->transport;
    }
    if (cfg->transport == NULL && cfg->bind != NULL && strcmp(cfg->bind, cfg->address) != 0) {
        rv = raft_uv_tcp_set_bind_address(&m->transport, cfg->bind);
        if (rv != 0) {
            log_error("member: cannot listen for peers on %s: %s", cfg->bind,
                      raft_strerror(rv));
            rv = KERR_INTERNAL;
            goto err_after_transport;
        }
    }
    rv = raft_uv_init(&m->io, loop, m->dir, m->tr);
    if (rv != 0) {
        log_error("member: raft log in %s: %s", m->dir, m->io.errmsg);
        rv = KERR_IO;
        goto err_after_transport;
    }

    m->fsm.version = 1;
    m->fsm.data = m;
    m->fsm.apply = fsm_apply;
    m->fsm.snapshot = fsm_snapshot;
    m->fsm.restore = fsm_restore;
    /* whole-store snapshots for members behind: see the top of this file */
    m->uv_snapshot_get = m->io.snapshot_get;
    m->io.snapshot_get = io_snapshot_get;
    m->uv_start = m->io.start;
    m->io.start = io_start;
    rv = raft_init(&m->raft, &m->io, &m->fsm, cfg->id, m->address);
    if (rv != 0) {
        log_error("member: raft init: %s", raft_errmsg(&m->raft));
        rv = KERR_IO;
        goto err_after_io;
    }
    m->raft.data = m;

    rv = bootstrap(m, cfg);
    if (rv != 0)
        goto err_after_raft;

    raft_set_heartbeat_timeout(&m->raft,
                               cfg->heartbeat_ms ? cfg->heartbeat_ms : DEFAULT_HEARTBEAT_MS);
    raft_set_election_timeout(&m->raft,
                              cfg->election_ms ? cfg->election_ms : DEFAULT_ELECTION_MS);
    threshold = cfg->snapshot_threshold ? cfg->snapshot_threshold
                                        : DEFAULT_SNAPSHOT_THRESHOLD;
    raft_set_snapshot_threshold(&m->raft, threshold);
    trailing = cfg->snapshot_trailing ? cfg->snapshot_trailing : DEFAULT_SNAPSHOT_TRAILING;
    raft_set_snapshot_trailing(&m->raft, threshold < trailing ? threshold : trailing);
    raft_set_pre_vote(&m->raft, true);
    raft_set_install_snapshot_timeout(&m->raft, INSTALL_SNAPSHOT_TIMEOUT_MS);

    /* A lone voter elects itself inside raft_start (start.c: maybeSelfElect). */
    rv = raft_start(&m->raft);
    if (rv != 0) {
        /* libraft 0.15 does not copy the transport's message (a peer port
         * that cannot listen) into its own */
        const char *why = raft_errmsg(&m->raft)[0] ? raft_errmsg(&m->raft)
                          : m->tr->errmsg[0]      ? m->tr->errmsg
                                                  : "fsm restore failed";
        log_error("member: raft start in %s on %s: %s (%s)", m->dir, m->address, why,
                  raft_strerror(rv));
        rv = rv == RAFT_NOMEM ? KERR_NOMEM : KERR_IO;
        goto err_after_raft;
    }
    uv_timer_init(loop, &m->notify);
    m->notify.data = m;
    uv_prepare_init(loop, &m->flush);
    m->flush.data = m;
    uv_timer_init(loop, &m->leader_watch);
    m->leader_watch.data = m;
    uv_timer_start(&m->leader_watch, leader_watch_tick, m->raft.heartbeat_timeout,
                   m->raft.heartbeat_timeout);
    log_info("member %" PRIx64 " started on %s, term %" PRIu64 ", %s", m->id,
             m->address, (uint64_t)m->raft.current_term,
             member_is_leader(m) ? "leader" : "follower");
    *out = m;
    return 0;

err_after_raft:
    /* raft_init acquired resources that only raft_close releases, and that is
     * asynchronous: the rest is freed from its callback. */
    raft_close(&m->raft, start_failed_close_cb);
    return rv;
err_after_io:
    raft_uv_close(&m->io);
err_after_transport:
    if (m->tr == &m->transport) raft_uv_tcp_close(&m->transport);
err_after_alloc:
    free_member(m);
    return rv;
}

/* ---- propose ------------------------------------------------------------ */

int member_propose(member *m, const uint8_t *buf, size_t len, member_done_fn cb,
                   void *data)
{
    return member_propose_at(m, buf, len, cb, data, NULL);
}

int member_propose_at(member *m, const uint8_t *buf, size_t len, member_done_fn cb,
                      void *data, uint64_t *index)
{
    struct raft_buffer rb;

    if (m->stopping)
        return KERR_STOPPED;
    /* as raft_apply would answer, so that the caller can forward it now */
    if (raft_state(&m->raft) != RAFT_LEADER || m->raft.transfer != NULL)
        return map_raft_error(m, RAFT_NOTLEADER);
    if (m->n_pend == m->cap_pend) {
        unsigned cap = m->cap_pend ? 2 * m->cap_pend : 16;
        struct raft_buffer *bufs = realloc(m->pend_bufs, cap * sizeof *bufs);
        if (bufs == NULL)
            return KERR_NOMEM;
        m->pend_bufs = bufs;
        struct pending *pend = realloc(m->pend, cap * sizeof *pend);
        if (pend == NULL)
            return KERR_NOMEM;
        m->pend = pend;
        m->cap_pend = cap;
    }
    rb.len = (len + 8) & ~(size_t)7; /* framing: see the top of this file */
    rb.base = raft_malloc(rb.len);
    if (rb.base == NULL)
        return KERR_NOMEM;
    if (len)
        memcpy(rb.base, buf, len);
    memset((uint8_t *)rb.base + len, 0, rb.len - len);
    ((uint8_t *)rb.base)[rb.len - 1] = (uint8_t)(rb.len - len);
    if (index != NULL)
        *index = 0;
    m->pend_bufs[m->n_pend] = rb;
    m->pend[m->n_pend] = (struct pending){.cb = cb, .data = data, .index = index};
    m->n_pend++;
    m->pend_bytes += rb.len;
    if (m->n_pend >= PROPOSE_BATCH_MAX || m->pend_bytes >= PROPOSE_BATCH_BYTES)
        flush_proposals(m);
    if (m->n_pend > 0 && !uv_is_active((uv_handle_t *)&m->flush))
        uv_prepare_start(&m->flush, flush_cb);
    return 0;
}

/* ---- read barrier ------------------------------------------------------- */

static void fire_waiters(struct waiter *w, int status)
{
    while (w != NULL) {
        struct waiter *next = w->next;
        member_done_fn cb = w->cb;
        void *data = w->data;
        free(w);
        cb(data, status);
        w = next;
    }
}

static void barrier_cb(struct raft_barrier *req, int status);

/* Issues a raft barrier for `batch`. Returns 0, or a KERR_* code (then the
 * batch is untouched and still the caller's). */
static int issue_barrier(member *m, struct waiter *batch)
{
    struct barrier *b = malloc(sizeof *b);
    int rv;

    if (b == NULL)
        return KERR_NOMEM;
    b->m = m;
    b->batch = batch;
    b->term = m->raft.current_term;
    b->req.data = b;
    flush_proposals(m); /* writes proposed before the read come first */
    rv = raft_barrier(&m->raft, &b->req, barrier_cb);
    if (rv != 0) {
        free(b);
        return map_raft_error(m, rv);
    }
    m->inflight = b;
    return 0;
}

static void barrier_cb(struct raft_barrier *req, int status)
{
    struct barrier *b = (struct barrier *)req;
    member *m = b->m;
    struct waiter *batch = b->batch;
    int st = map_raft_error(m, status);

    if (status == 0 && req->index > m->applied)
        m->applied = req->index;
    if (status == 0 && b->term == m->raft.current_term)
        m->read_term = b->term;
    m->inflight = NULL;
    free(b);

    /* Start the next barrier before running callbacks, which may add more.
     * Not after a failure: libraft fails barriers while it steps down from
     * leader (RAFT_LEADERSHIPLOST from inside its conversion to follower),
     * and a raft_barrier issued from that callback still sees the leader
     * state being torn down and crashes libraft (SIGSEGV found by
     * tests/integration/test_faults.py, no-majority partition). The
     * waiters queued behind it fail the same way. */
    if (m->wait_head != NULL) {
        struct waiter *next = m->wait_head;
        m->wait_head = m->wait_tail = NULL;
        int rv = m->stopping ? KERR_STOPPED : status != 0 ? st : issue_barrier(m, next);
        if (rv != 0)
            fire_waiters(next, rv);
    }
    fire_waiters(batch, st);
}

int member_read_barrier(member *m, member_done_fn cb, void *data)
{
    struct waiter *w;
    int rv;

    if (m->stopping)
        return KERR_STOPPED;
    w = malloc(sizeof *w);
    if (w == NULL)
        return KERR_NOMEM;
    w->cb = cb;
    w->data = data;
    w->next = NULL;
    if (m->inflight != NULL) {
        if (m->wait_tail != NULL)
            m->wait_tail->next = w;
        else
            m->wait_head = w;
        m->wait_tail = w;
        return 0;
    }
    rv = issue_barrier(m, w);
    if (rv != 0)
        free(w);
    return rv;
}

bool member_read_local(const member *m)
{
    const struct raft *r = &m->raft;
    unsigned voters = 0;
    bool self = false;

    if (m->stopping || r->state != RAFT_LEADER || m->read_term != r->current_term ||
        r->leader_state.change != NULL)
        return false;
    for (unsigned i = 0; i < r->configuration.n; i++) {
        if (r->configuration.servers[i].role != RAFT_VOTER)
            continue;
        voters++;
        self = self || r->configuration.servers[i].id == m->id;
    }
    return voters == 1 && self && member_applied_index(m) >= r->commit_index;
}

/* ---- getters ------------------------------------------------------------ */

void member_get_stats(const member *m, struct member_stats *out)
{
    *out = m->stats;
}

uint64_t member_id(const member *m)
{
    return m->id;
}

uint64_t member_term(const member *m)
{
    return m->raft.current_term;
}

uint64_t member_leader_id(const member *m)
{
    raft_id id = 0;
    const char *address = NULL;

    raft_leader((struct raft *)&m->raft, &id, &address);
    return id;
}

uint64_t member_commit_index(const member *m)
{
    /* A member that installed a whole-store snapshot has applied entries
     * past libraft's commit index (the copy's); they were committed. */
    return m->raft.commit_index > m->applied ? m->raft.commit_index : m->applied;
}

uint64_t member_applied_index(const member *m)
{
    /* raft->last_applied lags by one inside apply callbacks. */
    return m->applied > m->raft.last_applied ? m->applied : m->raft.last_applied;
}

bool member_is_leader(const member *m)
{
    return m->raft.state == RAFT_LEADER;
}

/* ---- membership ------------------------------------------------------- */

struct change {
    struct raft_change req; /* first */
    member *m;
    member_done_fn cb;
    void *data;
};

static int map_change_error(const member *m, int rv)
{
    switch (rv) {
    case RAFT_CANTCHANGE:
        return KERR_BUSY;
    case RAFT_BADROLE:
    case RAFT_BADID:
    case RAFT_NOTFOUND:
    case RAFT_DUPLICATEID:
    case RAFT_DUPLICATEADDRESS:
        return KERR_BAD_REQUEST;
    default:
        return map_raft_error(m, rv);
    }
}

enum member_role member_role_of(const member *m, uint64_t id)
{
    for (unsigned i = 0; i < m->raft.configuration.n; i++)
        if (m->raft.configuration.servers[i].id == id)
            return (enum member_role)m->raft.configuration.servers[i].role;
    return MEMBER_ABSENT;
}

size_t member_config_ids(const member *m, uint64_t **ids)
{
    unsigned n = m->raft.configuration.n;
    *ids = malloc((n ? n : 1) * sizeof **ids);
    if (*ids == NULL)
        return 0;
    for (unsigned i = 0; i < n; i++)
        (*ids)[i] = m->raft.configuration.servers[i].id;
    return n;
}

uint64_t member_match_index(const member *m, uint64_t id)
{
    if (m->raft.state != RAFT_LEADER || m->raft.leader_state.progress == NULL)
        return 0;
    for (unsigned i = 0; i < m->raft.configuration.n; i++)
        if (m->raft.configuration.servers[i].id == id)
            return m->raft.leader_state.progress[i].match_index;
    return 0;
}

uint64_t member_last_index(const member *m)
{
    return raft_last_index((struct raft *)&m->raft);
}

bool member_changing(const member *m)
{
    return m->raft.configuration_uncommitted_index != 0 ||
           (m->raft.state == RAFT_LEADER && m->raft.leader_state.change != NULL);
}

static void change_cb(struct raft_change *req, int status)
{
    struct change *c = (struct change *)req;
    member_done_fn cb = c->cb;
    void *data = c->data;
    int st = status == 0 ? 0 : map_change_error(c->m, status);

    free(c);
    cb(data, st);
}

static struct change *new_change(member *m, member_done_fn cb, void *data)
{
    struct change *c = calloc(1, sizeof *c);

    if (c == NULL)
        return NULL;
    c->m = m;
    c->cb = cb;
    c->data = data;
    c->req.data = c;
    return c;
}

int member_add(member *m, uint64_t id, const char *address, member_done_fn cb, void *data)
{
    struct change *c;
    int rv;

    if (m->stopping)
        return KERR_STOPPED;
    if ((c = new_change(m, cb, data)) == NULL)
        return KERR_NOMEM;
    rv = raft_add(&m->raft, &c->req, id, address, change_cb);
    if (rv != 0) {
        free(c);
        return map_change_error(m, rv);
    }
    return 0;
}

int member_assign(member *m, uint64_t id, enum member_role role, member_done_fn cb, void *data)
{
    struct change *c;
    int rv;

    if (m->stopping)
        return KERR_STOPPED;
    if ((c = new_change(m, cb, data)) == NULL)
        return KERR_NOMEM;
    rv = raft_assign(&m->raft, &c->req, id, (int)role, change_cb);
    if (rv != 0) {
        free(c);
        return map_change_error(m, rv);
    }
    return 0;
}

int member_remove(member *m, uint64_t id, member_done_fn cb, void *data)
{
    struct change *c;
    int rv;

    if (m->stopping)
        return KERR_STOPPED;
    if ((c = new_change(m, cb, data)) == NULL)
        return KERR_NOMEM;
    rv = raft_remove(&m->raft, &c->req, id, change_cb);
    if (rv != 0) {
        free(c);
        return map_change_error(m, rv);
    }
    return 0;
}

struct transfer {
    struct raft_transfer req; /* first */
    member *m;
    uint64_t target;
    member_done_fn cb;
    void *data;
};

static void transfer_cb(struct raft_transfer *req)
{
    struct transfer *t = (struct transfer *)req;
    member_done_fn cb = t->cb;
    void *data = t->data;
    int st = member_leader_id(t->m) == t->target ? 0 : KERR_TIMEOUT_LEADER_TRANSFER;

    free(t);
    cb(data, st);
}

int member_transfer(member *m, uint64_t id, member_done_fn cb, void *data)
{
    struct transfer *t;
    int rv;

    if (m->stopping)
        return KERR_STOPPED;
    if (m->raft.state != RAFT_LEADER)
        return member_leader_id(m) ? KERR_NOT_LEADER : KERR_NO_LEADER;
    if (id == m->id || member_role_of(m, id) != MEMBER_VOTER)
        return KERR_BAD_REQUEST;
    if (m->raft.transfer != NULL)
        return KERR_BUSY;
    t = calloc(1, sizeof *t);
    if (t == NULL)
        return KERR_NOMEM;
    t->m = m;
    t->target = id;
    t->cb = cb;
    t->data = data;
    t->req.data = t;
    flush_proposals(m); /* libraft refuses them once a transfer started */
    rv = raft_transfer(&m->raft, &t->req, id, transfer_cb);
    if (rv != 0) {
        free(t);
        return rv == RAFT_BADID || rv == RAFT_NOTFOUND ? KERR_BAD_REQUEST : map_raft_error(m, rv);
    }
    return 0;
}

/* ---- stop --------------------------------------------------------------- */

/* How long member_stop waits for in-flight log writes before closing. */
#define DRAIN_TIMEOUT_MS 5000

static void drain_closed(uv_handle_t *h)
{
    member *m = h->data;

    if (m->stop_cb != NULL)
        m->stop_cb(m->stop_data);
}

/* libraft 0.15's libuv backend fires its close callback (libraft's
 * ioCloseCb, which ends in stop_close_cb) from uvMaybeFireCloseCb, and that
 * has no "already fired" guard: a close callback of one of its own handles
 * that runs after the close completed calls it again. Had we freed the
 * backend by then, that second call read its freed memory and crashed
 * (SEGV inside libraft.so, from uv_run, during shutdown). So the backend and
 * this member live until member_free, after the loop has run dry, and once
 * closed the io points at an empty raft: a repeated ioCloseCb then frees
 * nothing (NULL address, empty log and configuration, no close_cb). */
static struct raft closed_raft;

static void stop_close_cb(struct raft *r)
{
    member *m = r->data;
    struct waiter *waiting = m->wait_head;

    m->wait_head = m->wait_tail = NULL;
    m->io.data = &closed_raft;
    /* libraft failed the in-flight barrier (RAFT_LEADERSHIPLOST) while
     * closing; this is only a safety net. */
    if (m->inflight != NULL) {
        log_warn("member: barrier still in flight after close");
        fire_waiters(m->inflight->batch, KERR_STOPPED);
        free(m->inflight);
        m->inflight = NULL;
    }
    fire_waiters(waiting, KERR_STOPPED);
    /* libraft failed the batches it still held while closing; what is left
     * are entries of batches whose first entry applied, each waiting for
     * its own apply, which will not come now */
    while (m->batches != NULL)
        batch_fire(m, m->batches, m->batches->n, KERR_STOPPED);
    uv_close((uv_handle_t *)&m->drain, drain_closed);
}

/* libraft 0.15 crashes in raft_close when more than one log write is queued
 * in the libuv backend (the queued ones are cancelled synchronously and its
 * cancellation path touches freed state). So member_stop first lets the
 * writes in flight finish (their entries then commit and apply normally),
 * and closes once the log is all on disk and no snapshot is being stored. */
static bool writes_in_flight(const member *m)
{
    return m->raft.last_stored < raft_last_index((struct raft *)&m->raft) ||
           m->raft.snapshot.put.data != NULL;
}

static void drain_tick(uv_timer_t *t)
{
    member *m = t->data;

    if (m->copies > 0)
        return; /* store copies always end; their callbacks need libraft */
    if (writes_in_flight(m) &&
        uv_now(m->loop) - m->drain_start < DRAIN_TIMEOUT_MS)
        return;
    if (writes_in_flight(m))
        log_warn("member: closing with log writes still in flight");
    uv_timer_stop(t);
    raft_close(&m->raft, stop_close_cb);
}

void member_free(member *m)
{
    if (m == NULL)
        return;
    raft_uv_close(&m->io);
    if (m->tr == &m->transport) raft_uv_tcp_close(&m->transport);
    free_member(m);
}

void member_stop(member *m, void (*cb)(void *data), void *data)
{
    if (m->stopping)
        return;
    m->stopping = true;
    uv_timer_stop(&m->leader_watch);
    uv_close((uv_handle_t *)&m->leader_watch, NULL); /* long before free_member */
    uv_timer_stop(&m->notify);
    uv_close((uv_handle_t *)&m->notify, NULL);
    /* proposals of this turn were never appended */
    for (unsigned k = 0; k < m->n_pend; k++)
        raft_free(m->pend_bufs[k].base);
    for (unsigned k = 0, n = m->n_pend; k < n; k++)
        m->pend[k].cb(m->pend[k].data, KERR_STOPPED);
    m->n_pend = 0;
    uv_close((uv_handle_t *)&m->flush, NULL);
    m->stop_cb = cb;
    m->stop_data = data;
    uv_timer_init(m->loop, &m->drain);
    m->drain.data = m;
    m->drain_start = uv_now(m->loop);
    uv_timer_start(&m->drain, drain_tick, 0, 1);
}
