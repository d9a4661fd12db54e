/* The etcd services (KV, Maintenance, Cluster) on top of mvcc and member.
 *
 * api turns gRPC calls into reads of the store or Raft proposals, and is
 * the member's apply callback: every committed entry is applied to the
 * store here, and the client waiting for it (if it was proposed by this
 * process) gets its response. */
#ifndef KETCH_API_API_H
#define KETCH_API_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "grpc/grpc.h"
#include "member/member.h"
#include "mvcc/mvcc.h"
#include "util/u64map.h"
#include "ketch.pb-c.h"

/* One member of the cluster as MemberList reports it. */
struct api_member_info {
    uint64_t id;
    char *name;
    char **peer_urls;
    size_t n_peer_urls;
    char **client_urls;
    size_t n_client_urls;
    bool is_learner;
};

typedef struct api_server {
    uv_loop_t *loop;
    mvcc_store *store;
    member *member; /* set once member_start succeeded */
    uint64_t cluster_id;
    uint64_t member_id;
    /* Membership (api/cluster.c). The table is replicated through Raft
     * and stored in the store's meta table; `self_*` are this member's
     * attributes, published into it once the member is up (borrowed from
     * the server layer). */
    Ketchpb__ClusterMembers *cluster;
    const char *self_name;
    char **self_client_urls;
    size_t n_self_client_urls;
    unsigned election_ms;        /* --election-timeout */
    struct cluster_api *clus;    /* publish timer; NULL until api_cluster_start */
    struct fwd_api *fwd;         /* forwarding to the leader (api/forward.c) */
    struct peer_net *peer;       /* the peer port (member/peer.h), to dial the leader */
    size_t max_request_bytes; /* --max-request-bytes */
    unsigned max_txn_ops;     /* --max-txn-ops */
    int64_t quota_bytes;      /* --quota-backend-bytes */
    const char *version;      /* reported by Status */

    /* In-flight proposals by request ID (struct proposal *). */
    u64map proposals;
    uint64_t next_request_id;
    /* The highest Raft index of a write this member forwarded and answered
     * at the leader's apply (read-your-writes: local reads wait until the
     * store has applied it; api_read). */
    uint64_t ryw_index;
    bool fatal; /* storage failed during apply: stop serving writes */
    struct lease_api *lease; /* leases (api/lease.c); NULL until lease_api_init */
    struct conc_api *conc;   /* lock/election waiters (api/concurrency.c); NULL when none */
    struct watch_api *watch; /* watch streams and hub (api/watch.c); NULL until watch_api_init */
    struct auth_api *auth;   /* tokens and auth options (api/auth.c); NULL until first used */
    struct maint_api *maint; /* quota, compaction sweep, auto-compaction, defrag (api/maintenance.c) */
} api_server;

/* Prepares `s` (fields above the line must be filled by the caller). */
void api_init(api_server *s);
/* grpc-go's answer to a request message it cannot decode. */
void api_fail_unmarshal(grpc_call *call);
void api_fini(api_server *s);

/* The method table to give grpc_server_new, with `s` as server_ctx. */
const grpc_method *api_methods(size_t *n);
/* The methods served on the peer port only (ketchpb.Internal). */
const grpc_method *api_peer_methods(size_t *n);

/* member_apply_fn: applies one committed entry (ctx is the api_server). */
void api_apply(void *ctx, uint64_t index, const uint8_t *buf, size_t len);

/* ---- membership (api/cluster.c) ----
 * api_cluster_init loads the member table from the store, or, on a fresh
 * store, takes `initial` (n entries, copied: --initial-cluster). Returns 0
 * or a KERR_* code. api_cluster_start begins publishing this member's
 * name and client URLs through Raft (retried until applied);
 * api_cluster_stop stops that; api_cluster_fini frees the table. */
int api_cluster_init(api_server *s, const struct api_member_info *initial, size_t n);
void api_cluster_start(api_server *s);
void api_cluster_stop(api_server *s);
void api_cluster_fini(api_server *s);
/* Members in the table (learners included). */
size_t api_cluster_size(const api_server *s);
/* Whether member `id` is a learner (etcd's; a libraft standby). */
bool api_cluster_is_learner(const api_server *s, uint64_t id);
/* The first client URL that member `id` published, or NULL (borrowed until
 * the table next changes). */
const char *api_cluster_client_url(const api_server *s, uint64_t id);
/* Member `id`'s first peer URL as host:port (localhost → 127.0.0.1),
 * malloc'd (free()), or NULL. */
char *api_cluster_peer_address(const api_server *s, uint64_t id);

/* ---- forwarding to the leader (api/forward.c) ----
 * api_forward_init prepares it (0 or KERR_NOMEM); api_forward_stop fails
 * every waiting request with KERR_STOPPED and closes the connection to the
 * leader (call when the server stops, before the member stops);
 * api_forward_fini frees what is left. */
int api_forward_init(api_server *s);
void api_forward_stop(api_server *s);
void api_forward_fini(api_server *s);

/* ---- maintenance (api/maintenance.c) ----
 * periodic: retention in ms, else a revision count (0: no auto-compaction);
 * sleep_ms / batch_limit: the compaction sweep's pace;
 * revision_interval_ms: how often revision mode compacts (0: etcd's 5 min);
 * corrupt_check_ms: how often the leader compares HashKV with the others.
 * maint_api_init: 0 or KERR_NOMEM; maint_api_start begins the timers (after
 * the member started); maint_api_stop closes them (a defrag still copying
 * ends on its own); maint_api_kick starts the compaction sweep if there is
 * history to sweep (after a compaction applied). */
struct maint_config {
    bool periodic;
    uint64_t retention;
    uint64_t sleep_ms;
    size_t batch_limit;
    uint64_t revision_interval_ms;
    uint64_t corrupt_check_ms; /* --experimental-corrupt-check-time; 0: none */
};
int maint_api_init(api_server *s, const struct maint_config *c);
void maint_api_start(api_server *s);
void maint_api_stop(api_server *s);
void maint_api_fini(api_server *s);
void maint_api_kick(api_server *s);

/* A Prometheus histogram of milliseconds with fixed upper bounds. */
#define MAINT_HIST_MAX 14
struct maint_hist {
    size_t n_bounds;
    double bounds[MAINT_HIST_MAX];
    uint64_t counts[MAINT_HIST_MAX]; /* per bucket, not cumulative */
    uint64_t count;
    double sum;
};
/* The compaction sweep's histograms, as etcd's mvcc metrics: `pause`
 * observes each batch after which the sweep goes on (so its count is the
 * number of times requests could run between batches), `total` each
 * finished sweep. NULL outputs are skipped; zeros before
 * maint_api_init. */
void maint_compaction_hists(const api_server *s, struct maint_hist *pause,
                            struct maint_hist *total);

/* Fills a response header as etcd does (cluster_id, member_id, revision,
 * raft_term). `h` must be initialised. */
void api_fill_header(api_server *s, Etcdserverpb__ResponseHeader *h, int64_t revision);

#endif
