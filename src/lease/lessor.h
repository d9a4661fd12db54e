/* The lessor: the in-memory view of the leases that the store holds, with
 * the one thing the store does not know, time. As etcd's lease/lessor.go:
 *
 *  - Every member mirrors the lease table (lessor_add / lessor_remove /
 *    lessor_checkpoint, called as entries are applied; lessor_add at start
 *    for every lease in the store), so the lease set is the same everywhere.
 *  - Only the primary (the Raft leader) has deadlines. On promotion every
 *    lease gets a fresh deadline: now + extend + its remaining TTL (the last
 *    checkpoint, else its granted TTL), so no lease expires early because
 *    of a restart or a leader change. A demoted lessor has no deadlines.
 *  - Keep-alives renew in memory on the primary only (not through Raft).
 *  - The primary asks lessor_expired() which leases to revoke and proposes
 *    the revokes; lessor_revoking() keeps a lease from being proposed again
 *    until LESSOR_RETRY_MS later (etcd's expiredLeaseRetryInterval).
 *
 * No I/O and no clock: every time is a `now` in milliseconds from the
 * caller (any monotonic origin), so tests can drive it with a fake clock.
 * Not thread-safe. */
#ifndef KETCH_LEASE_LESSOR_H
#define KETCH_LEASE_LESSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LESSOR_FOREVER UINT64_MAX
#define LESSOR_RETRY_MS 3000

typedef struct lessor lessor;

struct lessor_lease {
    int64_t id;
    int64_t ttl;       /* granted TTL, seconds */
    int64_t remaining; /* checkpointed remaining TTL, seconds (0: none) */
    uint64_t deadline; /* ms; LESSOR_FOREVER when not primary */
    uint64_t retry_at; /* ms; no revoke proposed again before this */
};

/* etcd's minimum TTL: ceil(((3 * election ticks) / 2) * heartbeat) in
 * seconds, election ticks = election_ms / heartbeat_ms (defaults 100 ms /
 * 1000 ms: 2 s). */
int64_t lessor_min_ttl(unsigned heartbeat_ms, unsigned election_ms);

/* Returns NULL out of memory. Starts as not primary. */
lessor *lessor_new(void);
void lessor_free(lessor *l);

size_t lessor_count(const lessor *l);

/* A lease was granted (or found in the store at start). Replaces an
 * existing entry with the same id. Its deadline is now + ttl (or
 * remaining, if > 0) if primary. Returns 0 or KERR_NOMEM. id must not be
 * 0. */
int lessor_add(lessor *l, int64_t id, int64_t ttl, int64_t remaining, uint64_t now);
/* A lease was revoked: forget it (no-op if unknown). */
void lessor_remove(lessor *l, int64_t id);
/* A checkpoint was applied: records the remaining TTL (unknown: no-op). */
void lessor_checkpoint(lessor *l, int64_t id, int64_t remaining);
/* The lease, or NULL. Borrowed until the next change of the lessor. */
const struct lessor_lease *lessor_get(const lessor *l, int64_t id);

bool lessor_is_primary(const lessor *l);
/* Becomes primary: every deadline = now + extend_ms + remaining TTL. */
void lessor_promote(lessor *l, uint64_t now, uint64_t extend_ms);
/* Stops being primary: no deadlines. */
void lessor_demote(lessor *l);

/* etcd's lessor.Renew on the primary: deadline = now + ttl, and the
 * checkpointed remaining TTL is cleared (*clear_checkpoint set true when
 * there was one: the caller should propose a checkpoint of 0 so that the
 * store forgets it too). Returns 0 with *ttl set, KERR_LEASE_NOT_FOUND
 * (unknown, or already expired: its revoke is on its way), or
 * KERR_NOT_LEADER if not primary. */
int lessor_renew(lessor *l, int64_t id, uint64_t now, int64_t *ttl, bool *clear_checkpoint);

/* Milliseconds left before lease `e` expires (negative once past; INT64_MAX
 * if it has no deadline). */
int64_t lessor_remaining_ms(const struct lessor_lease *e, uint64_t now);
/* etcd's TimeToLive TTL: whole seconds left, truncated toward zero. */
int64_t lessor_remaining_s(const struct lessor_lease *e, uint64_t now);

/* The leases to revoke at `now`: on the primary, those whose deadline is
 * <= now (never before) and that are not waiting for a retry. Writes at
 * most `max` IDs to `ids`, lowest deadline first; returns how many. Changes
 * nothing. */
size_t lessor_expired(const lessor *l, uint64_t now, int64_t *ids, size_t max);
/* A revoke of `id` was proposed at `now`: do not report it again before
 * now + LESSOR_RETRY_MS. */
void lessor_revoking(lessor *l, int64_t id, uint64_t now);

/* etcd's lease checkpointing: the remaining TTL of every lease whose
 * granted TTL is longer than min_ttl seconds, on the primary, rounded up
 * to whole seconds (so that a later promotion never expires it early).
 * Fills at most `max` entries of ids/remaining; returns how many. Changes
 * nothing: the caller proposes them, and lessor_checkpoint records them as
 * they are applied. */
size_t lessor_checkpoints(const lessor *l, uint64_t now, int64_t min_ttl, int64_t *ids,
                          int64_t *remaining, size_t max);

/* Every lease ID, soonest deadline first (ties by ID), as etcd's Leases()
 * sorts them. *ids is malloc'd (free() it; NULL when *n is 0). Returns 0 or
 * KERR_NOMEM. */
int lessor_list(const lessor *l, int64_t **ids, size_t *n);

#endif
