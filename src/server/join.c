#include "server/join.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "client/client.h"
#include "member/peer.h"
#include "net/tls.h"
#include "server/security.h"
#include "util/log.h"

#include "rpc.pb-c.h"

/* etcd's GetClusterFromRemotePeers: 10 s per peer. */
#define JOIN_PEER_TIMEOUT_MS 10000
/* How long to keep asking, and the pause between passes over the peers. */
#define JOIN_RETRY_MS 5000
#define JOIN_PAUSE_MS 200

struct attempt {
    bool done;
    peer_dial *dial;
    Etcdserverpb__MemberListResponse *ml;
    char why[200];
};

static void dial_done(void *arg, int status)
{
    struct attempt *a = arg;
    a->dial = NULL;
    if (status != 0) snprintf(a->why, sizeof a->why, "%s", uv_strerror(status));
}

static void conn_event(struct client_conn *conn, int err, void *arg)
{
    (void)conn, (void)err, (void)arg; /* a failed connection fails the call */
}

static void list_reply(void *arg, const struct client_reply *r)
{
    struct attempt *a = arg;
    a->done = true;
    if (r->status != 0 || r->data == NULL) {
        if (a->why[0] == 0) snprintf(a->why, sizeof a->why, "grpc status %d: %s", r->status, r->message);
        return;
    }
    a->ml = etcdserverpb__member_list_response__unpack(NULL, r->len, r->data);
    if (a->ml == NULL) snprintf(a->why, sizeof a->why, "cannot unmarshal the member list");
    else if (a->ml->n_members == 0 || a->ml->header == NULL) {
        snprintf(a->why, sizeof a->why, "failed to get raft cluster member(s) from the given URLs");
        etcdserverpb__member_list_response__free_unpacked(a->ml, NULL);
        a->ml = NULL;
    }
}

static void on_timeout(uv_timer_t *t)
{
    struct attempt *a = t->data;
    snprintf(a->why, sizeof a->why, "timed out");
    a->done = true;
}

/* "http://localhost:2380" → "127.0.0.1:2380", as main's raft_address. */
static char *peer_address(const char *url)
{
    char *host;
    int port;
    if (config_parse_url(url, &host, &port) != 0) return NULL;
    char *out = malloc(strlen(host) + 16);
    if (out != NULL)
        sprintf(out, "%s:%d", strcmp(host, "localhost") == 0 ? "127.0.0.1" : host, port);
    free(host);
    return out;
}

/* One MemberList call to `url`; the list, or NULL (why logged). */
static Etcdserverpb__MemberListResponse *ask(uv_loop_t *loop, peer_net *pn, uv_timer_t *timer,
                                             const char *url, bool quiet)
{
    struct attempt a = {0};
    char *addr = peer_address(url);
    if (addr == NULL) return NULL;
    uv_os_sock_t fd;
    struct client_conn *conn = NULL;
    if (peer_net_dial(pn, addr, dial_done, &a, &fd, &a.dial) != 0) {
        free(addr);
        return NULL;
    }
    if (client_conn_adopt(loop, fd, addr, conn_event, &a, &conn) != 0) {
        peer_dial_cancel(a.dial);
        free(addr);
        return NULL;
    }
    Etcdserverpb__MemberListRequest req = ETCDSERVERPB__MEMBER_LIST_REQUEST__INIT;
    if (client_unary(conn, "/etcdserverpb.Cluster/MemberList", (const ProtobufCMessage *)&req,
                     list_reply, &a) != 0)
        a.done = true;
    timer->data = &a;
    uv_timer_start(timer, on_timeout, JOIN_PEER_TIMEOUT_MS, 0);
    while (!a.done) uv_run(loop, UV_RUN_ONCE);
    uv_timer_stop(timer);
    if (a.dial != NULL) peer_dial_cancel(a.dial);
    a.dial = NULL;
    client_conn_close(conn); /* a pending call ends here, with CANCELLED */
    if (a.ml == NULL && !quiet)
        log_warn("failed to get cluster response from %s: %s", url, a.why[0] ? a.why : "no answer");
    free(addr);
    return a.ml;
}

static bool same_urls(char *const *sorted_local, size_t n, char **remote, size_t m)
{
    if (n != m) return false;
    for (size_t i = 0; i < m; i++) {
        bool found = false;
        for (size_t j = 0; j < n && !found; j++) found = strcmp(sorted_local[j], remote[i]) == 0;
        if (!found) return false;
    }
    return true;
}

static void print_urls(char **urls, size_t n)
{
    for (size_t i = 0; i < n; i++) fprintf(stderr, "%s%s", i ? " " : "", urls[i]);
}

/* etcd's RaftCluster.String(), for the message. */
static void print_cluster(const Etcdserverpb__MemberListResponse *ml)
{
    fprintf(stderr, "{ClusterID:%" PRIx64 " Members:[", ml->header->cluster_id);
    for (size_t i = 0; i < ml->n_members; i++) {
        const Etcdserverpb__Member *m = ml->members[i];
        fprintf(stderr, "%s&{ID:%" PRIx64 " RaftAttributes:{PeerURLs:[", i ? " " : "", m->id);
        print_urls(m->peerurls, m->n_peerurls);
        fprintf(stderr, "] IsLearner:%s} Attributes:{Name:%s ClientURLs:[",
                m->islearner ? "true" : "false", m->name ? m->name : "");
        print_urls(m->clienturls, m->n_clienturls);
        fprintf(stderr, "]}}");
    }
    fprintf(stderr, "] RemovedMemberIDs:[]}");
}

/* etcd's ValidateClusterAndAssignIDs; the message only if `report`. */
static int assign_ids(struct identity *id, const Etcdserverpb__MemberListResponse *ml, bool report)
{
    const char *err = NULL;
    const Etcdserverpb__Member *unmatched = NULL;
    uint64_t *ids = calloc(id->n_members ? id->n_members : 1, sizeof *ids);
    if (ids == NULL) return -1;
    if (ml->n_members != id->n_members) err = "member count is unequal";
    for (size_t i = 0; err == NULL && i < ml->n_members; i++) {
        const Etcdserverpb__Member *m = ml->members[i];
        bool ok = false;
        for (size_t j = 0; j < id->n_members && !ok; j++) {
            const struct identity_member *lm = &id->members[j];
            if (ids[j] == 0 && same_urls(lm->peer_urls, lm->n_peer_urls, m->peerurls, m->n_peerurls)) {
                ids[j] = m->id;
                ok = true;
            }
        }
        if (!ok) {
            unmatched = m;
            err = "PeerURLs: no match found for existing member";
        }
    }
    if (err != NULL && !report) {
        free(ids);
        return -1;
    }
    if (err != NULL) {
        fprintf(stderr, "ketch: error validating peerURLs ");
        print_cluster(ml);
        fprintf(stderr, ": %s", err);
        if (unmatched != NULL) {
            fprintf(stderr, " (%" PRIx64 ", [", unmatched->id);
            print_urls(unmatched->peerurls, unmatched->n_peerurls);
            fprintf(stderr, "]), last resolver error (<nil>)");
        }
        fprintf(stderr, "\n");
        free(ids);
        return -1;
    }
    for (size_t j = 0; j < id->n_members; j++) id->members[j].id = ids[j];
    id->cluster_id = ml->header->cluster_id;
    free(ids);
    return 0;
}

int join_fetch_identity(struct identity *id, const struct config *cfg)
{
    if (strcmp(cfg->initial_cluster_state, "existing") != 0) return 0;
    char path[4200];
    snprintf(path, sizeof path, "%s/member/identity", cfg->data_dir);
    if (access(path, F_OK) == 0) return 0; /* a restart: the data dir knows */
    /* --peer-auto-tls keeps its certificate in the data dir */
    if (mkdir(cfg->data_dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "ketch: cannot create directory %s: %s\n", cfg->data_dir, strerror(errno));
        return -1;
    }
    const char *self_url = id->members[id->self].peer_urls[0];
    bool https = strncmp(self_url, "https://", 8) == 0 ||
                 strncmp(cfg->listen_peer_urls, "https://", 8) == 0;
    tls_ctx *server_tls = NULL, *client_tls = NULL;
    if (security_peer_setup(cfg, https, &server_tls, &client_tls) != 0) return -1;
    uv_loop_t loop;
    uv_loop_init(&loop);
    peer_net *pn = NULL;
    Etcdserverpb__MemberListResponse *ml = NULL; /* the last list that disagreed */
    bool ok = false;
    if (peer_net_new(&pn, &loop, server_tls, client_tls, NULL, NULL) == 0) {
        uv_timer_t timer;
        uv_timer_init(&loop, &timer);
        /* Unlike etcd, passes over the peers go on for a while: a member
         * started right after `member add` may ask a follower that has not
         * applied the add yet, or a peer that is restarting. */
        uv_update_time(&loop);
        uint64_t deadline = uv_now(&loop) + JOIN_RETRY_MS;
        for (unsigned pass = 0;; pass++) {
            for (size_t j = 0; j < id->n_members && !ok; j++) {
                if (j == id->self) continue;
                const struct identity_member *m = &id->members[j];
                for (size_t k = 0; k < m->n_peer_urls && !ok; k++) {
                    Etcdserverpb__MemberListResponse *got =
                        ask(&loop, pn, &timer, m->peer_urls[k], pass > 0);
                    if (got == NULL) continue;
                    if (ml != NULL) etcdserverpb__member_list_response__free_unpacked(ml, NULL);
                    ml = got;
                    ok = assign_ids(id, ml, false) == 0;
                }
            }
            uv_update_time(&loop);
            if (ok || uv_now(&loop) >= deadline) break;
            usleep(JOIN_PAUSE_MS * 1000); /* nothing else runs yet */
        }
        uv_close((uv_handle_t *)&timer, NULL);
        peer_net_free(pn);
    }
    uv_run(&loop, UV_RUN_DEFAULT); /* the closes */
    if (uv_loop_close(&loop) != 0) log_warn("join: a handle is still open on the join loop");
    tls_ctx_free(server_tls);
    tls_ctx_free(client_tls);
    if (ml == NULL) {
        fprintf(stderr, "ketch: cannot fetch cluster info from peer urls: could not retrieve "
                        "cluster information from the given URLs\n");
        return -1;
    }
    int rv = ok ? 0 : assign_ids(id, ml, true);
    if (rv == 0)
        log_info("join: member %s is %016" PRIx64 " of cluster %016" PRIx64 " (from the cluster)",
                 id->members[id->self].name, id->members[id->self].id, id->cluster_id);
    etcdserverpb__member_list_response__free_unpacked(ml, NULL);
    return rv;
}
