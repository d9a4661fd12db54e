/* Unit tests for src/member: a real libuv loop, a real libraft log in a
 * temporary directory and a free loopback port. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <ftw.h>
#include <signal.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "member/member.h"
#include "util/errors.h"
#include "util/log.h"

#define MAX_ENTRIES 40000

/* What the apply callback saw. */
struct fsm {
    size_t n;
    uint64_t index[MAX_ENTRIES];
    uint32_t seq[MAX_ENTRIES]; /* payload: "e" + sequence number */
    uint64_t last_index;
    unsigned nulls;
    unsigned syncs;
    uint64_t synced_index; /* last_index at the last sync */
    int fail_sync;
};

static void fsm_apply(void *ctx, uint64_t index, const uint8_t *buf, size_t len)
{
    struct fsm *f = ctx;

    assert_true(index > f->last_index);
    f->last_index = index;
    if (buf == NULL) {
        f->nulls++;
        return;
    }
    assert_int_equal(len, 5);
    assert_int_equal(buf[0], 'e');
    assert_true(f->n < MAX_ENTRIES);
    f->index[f->n] = index;
    memcpy(&f->seq[f->n], buf + 1, 4);
    f->n++;
}

static int fsm_sync(void *ctx)
{
    struct fsm *f = ctx;

    f->syncs++;
    if (f->fail_sync)
        return -1;
    f->synced_index = f->last_index;
    return 0;
}

/* ---- loop helpers ---------------------------------------------------------- */

static bool timed_out;
static void on_timeout(uv_timer_t *t)
{
    timed_out = true;
}

/* Runs the loop until *flag becomes true or ms elapse; returns *flag. */
static bool run_until(uv_loop_t *loop, bool (*cond)(void *), void *arg, unsigned ms)
{
    uv_timer_t t;

    timed_out = false;
    uv_timer_init(loop, &t);
    uv_timer_start(&t, on_timeout, ms, 0);
    while (!cond(arg) && !timed_out)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return cond(arg);
}

static bool flag_set(void *arg)
{
    return *(bool *)arg;
}

static bool count_reached(void *arg)
{
    size_t *c = arg;
    return c[0] >= c[1];
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof sa;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

/* ---- fixture ---------------------------------------------------------------- */

struct fix {
    uv_loop_t loop;
    char dir[64];
    char address[32];
    struct member_peer peer;
    struct fsm *fsm;
    member *m;
    /* proposals */
    uint32_t next_seq;  /* sequence number of the next proposal */
    size_t to_propose;  /* how many more to start */
    size_t done[2];     /* done count, target */
    int bad_status;
    bool stopped;
    member **stopped_members; /* member_free'd in teardown */
    size_t n_stopped;
};

static int setup(void **state)
{
    struct fix *f = calloc(1, sizeof *f);

    log_set_level(LOG_WARN);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    strcpy(f->dir, "/tmp/ketch-member-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    strcat(f->dir, "/raft"); /* exercise directory creation */
    snprintf(f->address, sizeof f->address, "127.0.0.1:%d", free_port());
    f->peer.id = 0x8e9e05c52164694dULL;
    f->peer.address = f->address;
    f->fsm = calloc(1, sizeof *f->fsm);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fix *f = *state;
    char *slash = strrchr(f->dir, '/');

    assert_null(f->m);
    *slash = '\0';
    if (getenv("KEEP_DIR") != NULL)
        printf("  kept %s\n", f->dir);
    else
        nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    uv_run(&f->loop, UV_RUN_DEFAULT); /* libraft's last handles close */
    for (size_t i = 0; i < f->n_stopped; i++)
        member_free(f->stopped_members[i]);
    free(f->stopped_members);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f->fsm);
    free(f);
    return 0;
}

static int start(struct fix *f, uint64_t applied, unsigned threshold)
{
    struct member_config cfg = {
        .dir = f->dir,
        .id = f->peer.id,
        .address = f->address,
        .peers = &f->peer,
        .n_peers = 1,
        .applied_index = applied,
        .snapshot_threshold = threshold,
        .apply = fsm_apply,
        .apply_ctx = f->fsm,
        .sync = fsm_sync,
    };
    return member_start(&f->m, &f->loop, &cfg);
}

static bool is_leader(void *arg)
{
    return member_is_leader(arg);
}

static void start_leader(struct fix *f, uint64_t applied, unsigned threshold)
{
    uint64_t t0 = uv_hrtime();

    assert_int_equal(start(f, applied, threshold), 0);
    double returned = (uv_hrtime() - t0) / 1e6;
    bool at_once = member_is_leader(f->m);
    assert_true(run_until(&f->loop, is_leader, f->m, 5000));
    printf("  start to leader: %.3f ms (member_start returned after %.3f ms, %s)\n",
           (uv_hrtime() - t0) / 1e6, returned, at_once ? "already leader" : "not yet leader");
    assert_int_equal(member_leader_id(f->m), f->peer.id);
    assert_int_equal(member_id(f->m), f->peer.id);
    assert_true(member_term(f->m) >= 1);
}

static void stop_cb(void *data)
{
    struct fix *f = data;
    f->stopped = true;
}

static void stop(struct fix *f)
{
    member *m = f->m;

    f->stopped = false;
    member_stop(m, stop_cb, f);
    f->m = NULL;
    assert_true(run_until(&f->loop, flag_set, &f->stopped, 5000));
    /* freed in teardown, once the loop has run dry (other members of a
     * cluster test share it) */
    f->stopped_members = realloc(f->stopped_members,
                                 (f->n_stopped + 1) * sizeof *f->stopped_members);
    f->stopped_members[f->n_stopped++] = m;
}

/* Proposals: each completion starts the next one until to_propose runs out. */
static void propose_next(struct fix *f);

static void propose_done(void *data, int status)
{
    struct fix *f = data;

    if (status != 0)
        f->bad_status = status;
    f->done[0]++;
    if (f->to_propose > 0 && f->m != NULL)
        propose_next(f);
}

static void propose_next(struct fix *f)
{
    uint8_t buf[5] = {'e'};

    memcpy(buf + 1, &f->next_seq, 4);
    assert_int_equal(member_propose(f->m, buf, sizeof buf, propose_done, f), 0);
    f->next_seq++;
    f->to_propose--;
}

/* Proposes n entries with `concurrency` in flight; waits for all. */
static double propose_many(struct fix *f, size_t n, size_t concurrency)
{
    uint64_t t0 = uv_hrtime();

    f->to_propose = n;
    f->done[0] = 0;
    f->done[1] = n;
    f->bad_status = 0;
    for (size_t i = 0; i < concurrency && f->to_propose > 0; i++)
        propose_next(f);
    assert_true(run_until(&f->loop, count_reached, f->done, 60000));
    assert_int_equal(f->bad_status, 0);
    return n / ((uv_hrtime() - t0) / 1e9);
}

struct barrier_wait {
    bool fired;
    int status;
    struct fix *f;
    size_t applied_before; /* proposals issued before the barrier */
};

static void barrier_done(void *data, int status)
{
    struct barrier_wait *w = data;

    assert_false(w->fired);
    w->fired = true;
    w->status = status;
    if (status == 0 && w->f != NULL)
        assert_true(w->f->fsm->n >= w->applied_before);
}

/* Waits for a read barrier; `before`: entries the fsm must have seen. */
static void barrier(struct fix *f, size_t before)
{
    struct barrier_wait w = {.f = f, .applied_before = before};

    assert_int_equal(member_read_barrier(f->m, barrier_done, &w), 0);
    assert_true(run_until(&f->loop, flag_set, &w.fired, 5000));
    assert_int_equal(w.status, 0);
}

/* Checks the fsm saw sequence numbers from..to-1 in order, increasing indexes. */
static void check_applied(struct fsm *s, uint32_t from, uint32_t to)
{
    assert_int_equal(s->n, to - from);
    for (size_t i = 0; i < s->n; i++) {
        assert_int_equal(s->seq[i], from + i);
        if (i > 0)
            assert_true(s->index[i] > s->index[i - 1]);
    }
}

static bool replayed(void *arg)
{
    return ((struct fsm *)arg)->n >= 550;
}

/* ---- tests -------------------------------------------------------------------- */

static void test_propose_restart_replay(void **state)
{
    struct fix *f = *state;
    struct fsm first;

    start_leader(f, 0, 0);
    propose_many(f, 1000, 8);
    check_applied(f->fsm, 0, 1000);
    assert_true(member_applied_index(f->m) >= f->fsm->index[999]);
    assert_true(member_commit_index(f->m) >= f->fsm->index[999]);

    /* A barrier issued behind proposals sees them applied. */
    struct barrier_wait w[10];
    memset(w, 0, sizeof w);
    f->to_propose = 50;
    f->done[0] = 0;
    f->done[1] = 50;
    for (int i = 0; i < 50; i++) {
        propose_next(f);
        f->to_propose++;
    }
    f->to_propose = 0;
    for (int i = 0; i < 10; i++) {
        w[i].f = f;
        w[i].applied_before = f->next_seq;
        assert_int_equal(member_read_barrier(f->m, barrier_done, &w[i]), 0);
    }
    for (int i = 0; i < 10; i++) {
        assert_true(run_until(&f->loop, flag_set, &w[i].fired, 5000));
        assert_int_equal(w[i].status, 0);
    }
    assert_true(run_until(&f->loop, count_reached, f->done, 5000));
    check_applied(f->fsm, 0, 1050);

    /* Barrier latency, one at a time. */
    uint64_t t0 = uv_hrtime();
    for (int i = 0; i < 200; i++)
        barrier(f, 1050);
    printf("  read barrier: %.1f us each (sequential)\n",
           (uv_hrtime() - t0) / 1e3 / 200);
    stop(f);
    memcpy(&first, f->fsm, sizeof first);
    uint64_t last = first.index[first.n - 1];

    /* Restart with everything applied: nothing is re-applied. */
    memset(f->fsm, 0, sizeof *f->fsm);
    start_leader(f, last, 0);
    /* a lone voter reads locally (no barrier) only once a barrier of its
     * term has completed: before, entries of the earlier term may not be
     * applied yet */
    assert_false(member_read_local(f->m));
    barrier(f, 0);
    assert_true(member_read_local(f->m));
    assert_int_equal(f->fsm->n, 0);
    assert_true(member_applied_index(f->m) > last);
    stop(f);

    /* Crash recovery: the state machine holds only the first 500. */
    memset(f->fsm, 0, sizeof *f->fsm);
    start_leader(f, first.index[499], 0);
    /* A lone voter commits its whole log when it elects itself, inside
     * member_start: the replay needs no barrier. */
    t0 = uv_hrtime();
    assert_true(run_until(&f->loop, replayed, f->fsm, 5000));
    printf("  replay of 550 entries done %.3f ms after member_start returned\n",
           (uv_hrtime() - t0) / 1e6);
    barrier(f, 0);
    assert_int_equal(f->fsm->n, 550);
    for (size_t i = 0; i < 550; i++) {
        assert_int_equal(f->fsm->seq[i], 500 + i);
        assert_int_equal(f->fsm->index[i], first.index[500 + i]);
    }
    /* And new proposals continue after the log. */
    f->fsm->n = 0;
    f->next_seq = 2000;
    propose_many(f, 10, 1);
    check_applied(f->fsm, 2000, 2010);
    assert_true(f->fsm->index[0] > last);
    stop(f);
}

static void test_snapshot(void **state)
{
    struct fix *f = *state;

    start_leader(f, 0, 64);
    propose_many(f, 600, 16);
    check_applied(f->fsm, 0, 600);
    assert_true(f->fsm->syncs >= 1);
    uint64_t last = f->fsm->index[599];
    stop(f);
    uint64_t snap = f->fsm->synced_index;
    assert_true(snap > 0);

    /* Crash recovery after a snapshot: the state machine holds what it had
     * at its last sync (at least the snapshot's index); the log above it
     * replays. */
    memset(f->fsm, 0, sizeof *f->fsm);
    start_leader(f, snap, 64);
    barrier(f, 0);
    assert_int_equal(f->fsm->n, last - snap);
    for (size_t i = 0; i < f->fsm->n; i++) {
        assert_int_equal(f->fsm->index[i], snap + 1 + i);
        assert_int_equal(f->fsm->seq[i], 600 - (last - snap) + i);
    }
    f->fsm->n = 0;
    f->next_seq = 5000;
    propose_many(f, 100, 4);
    check_applied(f->fsm, 5000, 5100);
    last = f->fsm->index[99];
    stop(f);

    /* Restart from the snapshot plus the log after it, all applied. */
    memset(f->fsm, 0, sizeof *f->fsm);
    start_leader(f, last, 64);
    barrier(f, 0);
    assert_int_equal(f->fsm->n, 0);
    stop(f);

    /* A state machine behind the snapshot cannot be caught up locally. */
    memset(f->fsm, 0, sizeof *f->fsm);
    assert_int_not_equal(start(f, 0, 64), 0);
    assert_null(f->m);
    uv_run(&f->loop, UV_RUN_DEFAULT); /* let libraft's cleanup finish */
}

static void test_failed_sync_keeps_log(void **state)
{
    struct fix *f = *state;

    f->fsm->fail_sync = 1;
    start_leader(f, 0, 32);
    propose_many(f, 200, 8);
    assert_true(f->fsm->syncs >= 1);
    stop(f);
    /* No snapshot was taken: the whole log replays from scratch. */
    memset(f->fsm, 0, sizeof *f->fsm);
    start_leader(f, 0, 32);
    barrier(f, 0);
    check_applied(f->fsm, 0, 200);
    stop(f);
}

static void late_done(void *data, int status)
{
    int *st = data;
    assert_int_equal(*st, 1); /* fires once */
    *st = status;
}

static void test_stop_with_pending(void **state)
{
    struct fix *f = *state;
    int pst[20], bst[5];
    uint8_t buf[5] = {'e', 0, 0, 0, 0};

    start_leader(f, 0, 0);
    int np = getenv("NP") ? atoi(getenv("NP")) : 20;
    int nb = getenv("NB") ? atoi(getenv("NB")) : 5;
    for (int i = 0; i < 20; i++)
        pst[i] = 0;
    for (int i = 0; i < 5; i++)
        bst[i] = 0;
    for (int i = 0; i < np; i++) {
        pst[i] = 1;
        memcpy(buf + 1, &i, 4);
        assert_int_equal(member_propose(f->m, buf, sizeof buf, late_done, &pst[i]), 0);
    }
    for (int i = 0; i < nb; i++) {
        bst[i] = 1;
        assert_int_equal(member_read_barrier(f->m, late_done, &bst[i]), 0);
    }
    stop(f);
    for (int i = 0; i < 20; i++)
        assert_true(pst[i] == 0 || pst[i] == KERR_STOPPED);
    for (int i = 0; i < 5; i++)
        assert_true(bst[i] == 0 || bst[i] == KERR_STOPPED);
}

static void test_throughput(void **state)
{
    struct fix *f = *state;

    start_leader(f, 0, 0);
    double one = propose_many(f, 2000, 1);
    f->fsm->n = 0;
    f->fsm->last_index = 0;
    double many = propose_many(f, 20000, 64);
    printf("  proposals: %.0f/s one at a time, %.0f/s with 64 in flight\n", one, many);
    stop(f);
}

/* Proposals made in one loop turn reach libraft as one raft_apply: on a
 * cluster of three, 64 proposals cost one append (one AppendEntries per
 * follower, not 64), and each one still completes once, with status 0,
 * after its own entry was applied. */
static void propose_burst(struct fix *f, size_t n, struct member_stats *before,
                          struct member_stats *after)
{
    member_get_stats(f->m, before);
    f->to_propose = n;
    f->done[0] = 0;
    f->done[1] = n;
    f->bad_status = 0;
    size_t applied0 = f->fsm->n;
    for (size_t i = 0; i < n; i++)
        propose_next(f); /* no loop turn in between */
    assert_int_equal(f->done[0], 0); /* nothing completes synchronously */
    assert_true(run_until(&f->loop, count_reached, f->done, 10000));
    assert_int_equal(f->bad_status, 0);
    assert_int_equal(f->fsm->n, applied0 + n);
    for (size_t i = applied0 + 1; i < f->fsm->n; i++)
        assert_int_equal(f->fsm->index[i], f->fsm->index[i - 1] + 1);
    member_get_stats(f->m, after);
}

static void test_batched_proposals(void **state)
{
    struct fix *f = *state;
    struct member_stats a, b;

    start_leader(f, 0, 0);
    propose_burst(f, 64, &a, &b);
    assert_int_equal(b.proposals - a.proposals, 64);
    assert_int_equal(b.appends - a.appends, 1);
    assert_int_equal(b.applied - a.applied, 64);
    /* over the batch limit: split */
    propose_burst(f, 300, &a, &b);
    assert_int_equal(b.proposals - a.proposals, 300);
    assert_int_equal(b.appends - a.appends, 2);
    stop(f);
}

/* Three members on one loop: one is elected, a proposal on it is applied on
 * all three, a proposal on a follower is refused with KERR_NOT_LEADER. */
struct cluster {
    member *m[3];
};

static bool has_leader(void *arg)
{
    struct cluster *c = arg;
    for (int i = 0; i < 3; i++)
        if (c->m[i] != NULL && member_is_leader(c->m[i]))
            return true;
    return false;
}

static bool all_applied(void *arg)
{
    struct fsm **s = arg;
    for (int i = 0; i < 3; i++)
        if (s[i]->n < 100)
            return false;
    return true;
}

struct at_index {
    struct fsm **fsm;
    uint64_t index;
};

static bool all_at_index(void *arg)
{
    struct at_index *w = arg;
    for (int i = 0; i < 3; i++)
        if (w->fsm[i]->last_index < w->index)
            return false;
    return true;
}

static void test_cluster_of_three(void **state)
{
    struct fix *f = *state;
    struct member_peer peers[3];
    char addr[3][32], dir[3][96];
    struct fsm *fsm[3];
    struct cluster c = {{0}};

    for (int i = 0; i < 3; i++) {
        snprintf(addr[i], sizeof addr[i], "127.0.0.1:%d", free_port());
        snprintf(dir[i], sizeof dir[i], "%s%d", f->dir, i);
        peers[i].id = 100 + i;
        peers[i].address = addr[i];
        fsm[i] = calloc(1, sizeof *fsm[i]);
    }
    for (int i = 0; i < 3; i++) {
        struct member_config cfg = {
            .dir = dir[i], .id = peers[i].id, .address = addr[i],
            .peers = peers, .n_peers = 3,
            .heartbeat_ms = 20, .election_ms = 200,
            .apply = fsm_apply, .apply_ctx = fsm[i], .sync = fsm_sync,
        };
        assert_int_equal(member_start(&c.m[i], &f->loop, &cfg), 0);
    }
    uint64_t t0 = uv_hrtime();
    assert_true(run_until(&f->loop, has_leader, &c, 10000));
    printf("  cluster of 3: leader after %.1f ms\n", (uv_hrtime() - t0) / 1e6);
    int l = 0;
    while (!member_is_leader(c.m[l]))
        l++;
    int fo = (l + 1) % 3;
    /* Followers learn the leader with its first heartbeat. */
    for (int i = 0; i < 50 && member_leader_id(c.m[fo]) == 0; i++)
        run_until(&f->loop, flag_set, &(bool){false}, 10);
    assert_int_equal(member_leader_id(c.m[fo]), peers[l].id);
    uint8_t buf[5] = {'e'};
    assert_int_equal(member_propose(c.m[fo], buf, sizeof buf, propose_done, f),
                     KERR_NOT_LEADER);

    f->m = c.m[l];
    propose_many(f, 100, 8);
    assert_true(run_until(&f->loop, all_applied, fsm, 5000));
    for (int i = 0; i < 3; i++) {
        check_applied(fsm[i], 0, 100);
        assert_memory_equal(fsm[i]->index, fsm[l]->index, 100 * sizeof(uint64_t));
    }
    /* a burst on the leader: one append, and every member applies it */
    struct member_stats a, b;
    struct fsm *own = f->fsm;
    f->fsm = fsm[l];
    propose_burst(f, 64, &a, &b);
    f->fsm = own;
    assert_int_equal(b.appends - a.appends, 1);
    assert_int_equal(b.applied - a.applied, 64);
    struct at_index want = {fsm, fsm[l]->last_index};
    assert_true(run_until(&f->loop, all_at_index, &want, 5000));
    for (int i = 0; i < 3; i++)
        assert_int_equal(fsm[i]->n, 164);
    barrier(f, 0);
    /* with other voters, a linearizable read always needs a barrier */
    for (int i = 0; i < 3; i++)
        assert_false(member_read_local(c.m[i]));
    for (int i = 0; i < 3; i++) {
        f->m = c.m[i];
        stop(f); /* the temporary directory goes in teardown */
        free(fsm[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_propose_restart_replay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_sync_keeps_log, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_with_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_throughput, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batched_proposals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cluster_of_three, setup, teardown),
    };
    /* As the server does: a peer closing its socket must not kill us. */
    signal(SIGPIPE, SIG_IGN);
    if (getenv("TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
