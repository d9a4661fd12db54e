/* The Raft member: canonical libraft (libuv I/O backend, TCP transport)
 * behind our own interface, so the rest of ketch never calls raft_*.
 *
 * Every write is proposed here, committed (fsynced to the Raft log) and then
 * handed to the apply callback in log order, on this member and on every
 * other. A cluster of one bootstraps itself and elects itself at once.
 * All functions must be called on the loop given to member_start. */
#ifndef KETCH_MEMBER_MEMBER_H
#define KETCH_MEMBER_MEMBER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct member member;
struct raft_uv_transport;

/* Applies one committed entry. `index` is its Raft log index; entries arrive
 * in increasing index order, exactly once per process lifetime, and only
 * those above cfg.applied_index (what the state machine already holds).
 * `buf` is borrowed for the duration of the call. The callback must be
 * deterministic (same log ⇒ same state on every member). It may also be
 * told of entries that carry no command (barriers, configuration): then
 * buf is NULL and it should only record the index. */
typedef void (*member_apply_fn)(void *ctx, uint64_t index, const uint8_t *buf,
                                size_t len);

/* Completion of member_propose / member_read_barrier. status 0: the entry
 * was committed and applied (for a barrier: everything committed before it
 * was applied). Otherwise a negative KERR_* code (KERR_NOT_LEADER,
 * KERR_NO_LEADER, KERR_STOPPED, KERR_LEADER_CHANGED...). */
typedef void (*member_done_fn)(void *data, int status);

struct member_peer {
    uint64_t id;         /* etcd member ID (also the Raft server ID) */
    const char *address; /* host:port of its Raft transport */
};

struct member_config {
    const char *dir;     /* directory for the Raft log (created if missing) */
    uint64_t id;         /* this member's ID */
    const char *address; /* host:port this member advertises (Raft server address) */
    /* host:port the Raft transport listens on (--listen-peer-urls), when it
     * differs from `address` (a proxy or NAT in front of it); NULL: address */
    const char *bind;
    const struct member_peer *peers; /* initial voters, self included */
    size_t n_peers;
    /* Joining an existing cluster (--initial-cluster-state existing): no
     * bootstrap; the leader sends the log once the member was added. */
    bool join;
    uint64_t applied_index; /* highest index already in the state machine */
    unsigned heartbeat_ms;  /* etcd --heartbeat-interval (default 100) */
    unsigned election_ms;   /* etcd --election-timeout (default 1000) */
    unsigned snapshot_threshold; /* entries between snapshots */
    /* entries kept below a snapshot for members a little behind (etcd's
     * --experimental-snapshot-catchup-entries, 5000; at most the
     * threshold); 0: 5000 */
    unsigned snapshot_trailing;
    /* Snapshots sent to members too far behind for the log carry the
     * whole state machine. copy (called on a worker thread, concurrently
     * with apply) writes a consistent copy of the state machine's last
     * durable state to the file `path` and sets *applied to the index it
     * holds; 0 or non-zero. install (on the loop) replaces the state machine
     * with such a copy (the file may be renamed away) and sets *applied;
     * 0, or non-zero if the state machine is left as it was. Both NULL:
     * snapshots only name the applied index (a member behind the leader's
     * log then cannot catch up). Never both running at once. */
    int (*copy)(void *ctx, const char *path, uint64_t *applied);
    int (*install)(void *ctx, const char *path, uint64_t *applied);
    /* On the loop: +1 before a copy is queued, -1 once it is done (so the
     * state machine can keep its files in place meanwhile). May be NULL. */
    void (*copy_pin)(void *ctx, int delta);
    member_apply_fn apply;
    void *apply_ctx;
    /* Makes everything applied so far durable (LMDB: mdb_env_sync), called
     * with apply_ctx before libraft takes a snapshot, because libraft then
     * deletes the log entries up to it. Returns 0, or non-zero to abandon the
     * snapshot (it is retried later). May be NULL if the state machine is
     * always durable. */
    int (*sync)(void *ctx);
    /* The Raft transport (member/peer.h: ours, with TLS), borrowed: must
     * outlive the member; NULL: libraft's cleartext TCP transport. */
    struct raft_uv_transport *transport;
};

/* Opens (or creates and bootstraps) the Raft state in cfg->dir and starts
 * the member. Returns 0, or a negative KERR_* code with a log line saying
 * why (KERR_IO: the directory or the log; KERR_INTERNAL: libraft refused
 * the configuration or the address; KERR_NOMEM). cfg and the strings it
 * points to are copied. A lone voter is leader when this returns; entries
 * committed before a restart (above cfg->applied_index) are re-applied from
 * the loop soon after, and a member_read_barrier completes only once they
 * are. A lone voter commits its whole log as it elects itself, so the
 * apply callback may run (for the replay) before member_start returns: the
 * state machine must be ready first. On error, some of libraft's cleanup may
 * still be pending on the loop: keep running it before uv_loop_close.
 * The process must ignore SIGPIPE (the Raft transport writes to peers'
 * sockets, which may close at any time). */
int member_start(member **out, uv_loop_t *loop, const struct member_config *cfg);

/* Proposes `buf` (copied; len may be 0) as a new log entry. The proposals
 * of one loop turn are appended together (one raft_apply of several
 * entries), before the loop next polls. `cb` runs once, after the entry was
 * applied locally (status 0), or with an error (KERR_LEADER_CHANGED: this
 * member stopped leading before the entry committed; a later leader may
 * still commit it; KERR_NOT_LEADER / KERR_NO_LEADER: leadership was lost
 * before it was appended, so no leader has it). Returns 0, KERR_NOT_LEADER
 * (a leader is known: ask it), KERR_NO_LEADER, KERR_STOPPED or
 * KERR_NOMEM; if this returns non-zero, cb never runs. */
int member_propose(member *m, const uint8_t *buf, size_t len, member_done_fn cb,
                   void *data);
/* As member_propose, and `*index` is the entry's Raft index once it is
 * appended: 0 until then (at the latest before the loop next polls, or
 * until cb runs with KERR_NOT_LEADER / KERR_NO_LEADER). `index` must stay
 * valid until cb runs. */
int member_propose_at(member *m, const uint8_t *buf, size_t len, member_done_fn cb,
                      void *data, uint64_t *index);

/* On the leader: have every follower told of the current commit index
 * soon, rather than with the next entry or regular heartbeat: a heartbeat
 * on the next turn of the loop to each follower that holds the committed
 * entries, and to each other one once it has acknowledged them (checked
 * every millisecond, for up to a heartbeat interval). While calls keep
 * coming, at most one such heartbeat per follower per millisecond. No log
 * entry is added. Does nothing on a follower or a stopping member. */
void member_notify_commit(member *m);

/* Linearizable read barrier: cb runs once everything committed before the
 * call has been applied here. Concurrent barriers are batched behind one
 * Raft barrier. If this returns non-zero, cb never runs. */
int member_read_barrier(member *m, member_done_fn cb, void *data);

/* True when a linearizable read may run at once on the local state, with
 * no barrier: this member is the only voter and the leader, a barrier of
 * the current term has completed (so everything committed by an earlier
 * term is applied), no configuration change is in flight, and everything
 * committed is applied. etcd's raft answers a lone voter's ReadIndex the
 * same way, without a round (raft.go, IsSingleton). */
bool member_read_local(const member *m);

/* What this member's proposals cost (while it led), for /metrics and
 * tests: entries per raft_apply is proposals / appends. */
struct member_stats {
    uint64_t proposals;          /* entries handed to libraft */
    uint64_t appends;            /* raft_apply calls that carried them */
    uint64_t applied;            /* of them, applied here as leader (status 0) */
    uint64_t append_to_apply_ns; /* sum over `applied`: raft_apply → local apply */
};
void member_get_stats(const member *m, struct member_stats *out);

uint64_t member_id(const member *m);
uint64_t member_term(const member *m);
uint64_t member_leader_id(const member *m); /* 0 if none known */
uint64_t member_commit_index(const member *m);
uint64_t member_applied_index(const member *m);
bool member_is_leader(const member *m);

/* ---- membership (leader only) ----
 * Roles as libraft's: a voter counts in elections and commits; a standby
 * (etcd's learner) replicates the log without a vote; a spare only sits
 * in the configuration. */
enum member_role { MEMBER_ABSENT = -1, MEMBER_STANDBY = 0, MEMBER_VOTER = 1, MEMBER_SPARE = 2 };

/* The role of server `id` in the configuration last appended (committed
 * or not), or MEMBER_ABSENT. */
enum member_role member_role_of(const member *m, uint64_t id);
/* The IDs in the configuration last appended; *ids is malloc'd (free()).
 * Returns the count (0 with *ids NULL on allocation failure). */
size_t member_config_ids(const member *m, uint64_t **ids);
/* Leader only: the highest log index server `id` is known to hold (0 if
 * unknown or not leader), and this member's last log index. */
uint64_t member_match_index(const member *m, uint64_t id);
uint64_t member_last_index(const member *m);
/* Whether a configuration change is still in progress (libraft allows one
 * at a time). */
bool member_changing(const member *m);

/* Adds server `id` at `address` (host:port) as a spare; changes the role
 * of `id`; removes `id`. cb runs once the change is committed (status 0)
 * or failed (a KERR_* code; for a promotion to voter, after libraft's
 * catch-up rounds, aborted after 30 s if the server is not catching up).
 * Returns 0, or KERR_NOT_LEADER / KERR_NO_LEADER, KERR_BUSY (another change
 * is in progress), KERR_BAD_REQUEST (unknown id, same role), KERR_NOMEM,
 * KERR_STOPPED; then cb never runs. */
int member_add(member *m, uint64_t id, const char *address, member_done_fn cb, void *data);
int member_assign(member *m, uint64_t id, enum member_role role, member_done_fn cb, void *data);
int member_remove(member *m, uint64_t id, member_done_fn cb, void *data);

/* Transfers leadership to voter `id` (etcd's MoveLeader). cb runs when the
 * transfer ended: 0 if `id` leads now, else KERR_TIMEOUT_LEADER_TRANSFER
 * (libraft gave up after an election timeout, or this member has not heard
 * of the new leader yet). Returns 0, or
 * KERR_NOT_LEADER, KERR_BAD_REQUEST (not a voter, or this member), KERR_BUSY
 * (a transfer is in progress), KERR_NOMEM; then cb never runs. */
int member_transfer(member *m, uint64_t id, member_done_fn cb, void *data);

/* Stops the member: new calls fail with KERR_STOPPED; log writes already in
 * flight are first let finish (up to 5 s), so their proposals may still
 * complete with 0; every other pending callback runs with KERR_STOPPED.
 * `cb` runs when libraft has closed everything; it never runs inside
 * member_stop. `m` stays allocated: free it with member_free once the loop
 * has no handle left (libraft may still call into it until then). */
void member_stop(member *m, void (*cb)(void *data), void *data);

/* Releases a stopped member and libraft's backend; NULL is a no-op. */
void member_free(member *m);

#endif
