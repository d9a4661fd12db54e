/* etcdserverpb.Cluster and the member table.
 *
 * The table (etcd's membership.RaftCluster) is a ketchpb.ClusterMembers
 * message: replicated through Raft (InternalRequest.member_attr_set and
 * member_change, applied here on every member in log order) and stored
 * packed in the store's meta table under "members", in the same batch as
 * the applied index of the entry that changed it. A fresh store starts from
 * --initial-cluster (peer URLs only). As etcd's publish, every member
 * proposes its name and client URLs once it is up (and again after each
 * restart if they changed), so MemberList shows every member's client URLs
 * and followers know where to forward requests to the leader. */
#include "api/cluster.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "api/forward.h"
#include "api/propose.h"
#include "client/client.h"
#include "member/peer.h"
#include "util/errors.h"
#include "util/endian.h"
#include "util/log.h"

#define META_KEY "members"
#define PUBLISH_RETRY_MS 200

struct cluster_api {
    uv_timer_t timer;
    bool inflight;  /* a publish proposal is pending */
    bool published; /* applied: our attributes are in the table */
    bool reconciling;      /* a barrier or configuration change is pending */
    uint64_t synced_term;  /* term in which the leader's table was synced */
    /* Removal check (as etcd's peers answer a removed member "410 Gone"):
     * a member that hears no leader for a while asks another member for
     * its member list; removed from it (twice in a row), it stops. */
    uint64_t leaderless_since; /* ms; 0 while a leader is known */
    struct client_conn *probe; /* the MemberList call in flight, if any */
    size_t probe_next;         /* which member to ask next */
    unsigned removed_votes;    /* answers in a row that we are removed */
    bool removed;
};

static void reconcile(api_server *s);

/* ---- the table ---- */

size_t api_cluster_size(const api_server *s) { return s->cluster ? s->cluster->n_members : 0; }

static Ketchpb__ClusterMember *find(const api_server *s, uint64_t id)
{
    for (size_t i = 0; s->cluster && i < s->cluster->n_members; i++)
        if (s->cluster->members[i]->id == id) return s->cluster->members[i];
    return NULL;
}

const char *api_cluster_client_url(const api_server *s, uint64_t id)
{
    Ketchpb__ClusterMember *m = find(s, id);
    return m != NULL && m->n_client_urls > 0 ? m->client_urls[0] : NULL;
}

/* Replaces the table with `next` (packed, then unpacked into fresh memory,
 * so `next` may share pointers with the old table) and, when `store` is
 * set, writes it to the meta table. Returns 0 or a KERR_* code (the table
 * is unchanged then). */
static int set_table(api_server *s, const Ketchpb__ClusterMembers *next, bool store)
{
    size_t len = ketchpb__cluster_members__get_packed_size(next);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL) return KERR_NOMEM;
    ketchpb__cluster_members__pack(next, buf);
    Ketchpb__ClusterMembers *t = ketchpb__cluster_members__unpack(NULL, len, buf);
    int rv = t == NULL ? KERR_NOMEM : 0;
    if (rv == 0 && store) rv = mvcc_meta_put(s->store, META_KEY, buf, len);
    free(buf);
    if (rv != 0) {
        if (t != NULL) ketchpb__cluster_members__free_unpacked(t, NULL);
        return rv;
    }
    if (s->cluster != NULL) ketchpb__cluster_members__free_unpacked(s->cluster, NULL);
    s->cluster = t;
    return 0;
}

int api_cluster_init(api_server *s, const struct api_member_info *initial, size_t n)
{
    uint8_t *buf;
    size_t len;
    int rv = mvcc_meta_get(s->store, META_KEY, &buf, &len);
    if (rv == 0) {
        s->cluster = ketchpb__cluster_members__unpack(NULL, len, buf);
        free(buf);
        if (s->cluster == NULL) {
            log_error("cluster: the member table in the store is damaged");
            return KERR_CORRUPT;
        }
        if (s->cluster->cluster_id != 0) s->cluster_id = s->cluster->cluster_id;
        return 0;
    }
    if (rv != KERR_KEY_NOT_FOUND) return rv;
    Ketchpb__ClusterMember *ms = calloc(n ? n : 1, sizeof *ms);
    Ketchpb__ClusterMember **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    if (ms == NULL || ptrs == NULL) {
        free(ms);
        free(ptrs);
        return KERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        ketchpb__cluster_member__init(&ms[i]);
        ms[i].id = initial[i].id;
        ms[i].name = initial[i].name;
        ms[i].peer_urls = initial[i].peer_urls;
        ms[i].n_peer_urls = initial[i].n_peer_urls;
        ms[i].is_learner = initial[i].is_learner;
        ptrs[i] = &ms[i];
    }
    Ketchpb__ClusterMembers t = KETCHPB__CLUSTER_MEMBERS__INIT;
    t.members = ptrs;
    t.n_members = n;
    t.cluster_id = s->cluster_id;
    /* Not stored: the first change (every member publishes) stores it. */
    rv = set_table(s, &t, false);
    free(ms);
    free(ptrs);
    return rv;
}

void api_cluster_fini(api_server *s)
{
    if (s->cluster != NULL) ketchpb__cluster_members__free_unpacked(s->cluster, NULL);
    s->cluster = NULL;
}

static bool strv_equal(char **a, size_t na, char **b, size_t nb)
{
    if (na != nb) return false;
    for (size_t i = 0; i < na; i++)
        if (strcmp(a[i], b[i]) != 0) return false;
    return true;
}

/* Applies a membership entry (every member, in log order). Returns 0 or a
 * storage error (fatal for the caller). Unknown members are ignored, as
 * etcd's applier ignores attributes of removed members. */
int api_cluster_apply(api_server *s, const Ketchpb__InternalRequest *req)
{
    const Ketchpb__ClusterMembers *cur = s->cluster;
    size_t n = cur ? cur->n_members : 0;
    Ketchpb__ClusterMember *ms = calloc(n + 1, sizeof *ms);
    Ketchpb__ClusterMember **ptrs = calloc(n + 1, sizeof *ptrs);
    uint64_t *removed = calloc((cur ? cur->n_removed : 0) + 1, sizeof *removed);
    int rv = 0;
    if (ms == NULL || ptrs == NULL || removed == NULL) {
        rv = KERR_NOMEM;
        goto out;
    }
    size_t k = 0, nr = 0;
    for (size_t i = 0; i < (cur ? cur->n_removed : 0); i++) removed[nr++] = cur->removed[i];
    const Ketchpb__MemberAttrSet *attr = req->member_attr_set;
    const Ketchpb__MemberChange *ch = req->member_change;
    const Ketchpb__ClusterMember *cm = ch != NULL ? ch->member : NULL;
    if (ch != NULL && cm == NULL) goto out; /* malformed: same on every member */
    bool changed = false;
    for (size_t i = 0; i < n; i++) {
        ms[k] = *cur->members[i];
        Ketchpb__ClusterMember *m = &ms[k];
        if (attr != NULL && m->id == attr->id) {
            m->name = attr->name;
            m->client_urls = attr->client_urls;
            m->n_client_urls = attr->n_client_urls;
            changed = true;
        } else if (cm != NULL && m->id == cm->id) {
            switch (ch->kind) {
            case KETCHPB__MEMBER_CHANGE__KIND__ADD: /* replaces (replay on a joiner) */
                *m = *cm;
                break;
            case KETCHPB__MEMBER_CHANGE__KIND__REMOVE:
                removed[nr++] = m->id;
                changed = true;
                continue; /* dropped */
            case KETCHPB__MEMBER_CHANGE__KIND__UPDATE:
                m->peer_urls = cm->peer_urls;
                m->n_peer_urls = cm->n_peer_urls;
                break;
            case KETCHPB__MEMBER_CHANGE__KIND__PROMOTE:
                m->is_learner = false;
                break;
            default:
                break;
            }
            changed = true;
        }
        ptrs[k] = m;
        k++;
    }
    if (cm != NULL && ch->kind == KETCHPB__MEMBER_CHANGE__KIND__ADD && find(s, cm->id) == NULL) {
        ms[k] = *cm;
        ptrs[k] = &ms[k];
        k++;
        changed = true;
    }
    if (ch != NULL && ch->cluster_id != 0 && cur != NULL && ch->cluster_id != cur->cluster_id)
        changed = true;
    if (!changed) goto out;
    Ketchpb__ClusterMembers t = KETCHPB__CLUSTER_MEMBERS__INIT;
    t.members = ptrs;
    t.n_members = k;
    t.removed = removed;
    t.n_removed = nr;
    t.cluster_id = cur ? cur->cluster_id : 0;
    if (ch != NULL && ch->cluster_id != 0 && ch->cluster_id != t.cluster_id) {
        /* a member that joined adopts the cluster's ID, as etcd's */
        t.cluster_id = ch->cluster_id;
        s->cluster_id = ch->cluster_id;
    }
    rv = set_table(s, &t, true);
    if (rv == 0 && attr != NULL && attr->id == s->member_id && s->clus != NULL)
        s->clus->published = true;
out:
    free(ms);
    free(ptrs);
    free(removed);
    return rv;
}

bool api_cluster_is_learner(const api_server *s, uint64_t id)
{
    Ketchpb__ClusterMember *m = find(s, id);
    return m != NULL && m->is_learner;
}

bool api_cluster_is_removed(const api_server *s, uint64_t id)
{
    for (size_t i = 0; s->cluster && i < s->cluster->n_removed; i++)
        if (s->cluster->removed[i] == id) return true;
    return false;
}

/* ---- publishing this member's attributes ---- */

static bool attrs_current(const api_server *s)
{
    Ketchpb__ClusterMember *m = find(s, s->member_id);
    return m != NULL && strcmp(m->name, s->self_name) == 0 &&
           strv_equal(m->client_urls, m->n_client_urls, s->self_client_urls,
                      s->n_self_client_urls);
}

static void publish_done(api_server *s, void *data, int err, const uint8_t *resp, size_t len)
{
    (void)data, (void)resp, (void)len;
    if (s->clus == NULL) return;
    s->clus->inflight = false;
    if (err != 0) log_debug("cluster: publishing our attributes failed: %s; retrying", kerr_text(err));
}

/* ---- a removed member stops itself ---- */

/* Leaderless this long (in election timeouts) before asking others. */
#define REMOVED_PROBE_ELECTIONS 3

static void removed_stop(api_server *s)
{
    struct cluster_api *c = s->clus;
    if (c == NULL || c->removed) return;
    c->removed = true;
    /* as etcd's EtcdServer.run on errMemberRemoved */
    log_warn("server error: the member has been permanently removed from the cluster "
             "(member %016llx); stopping", (unsigned long long)s->member_id);
    log_warn("data-dir used by this member must be removed");
    raise(SIGTERM); /* the server's orderly stop */
}

static void probe_reply(void *arg, const struct client_reply *r)
{
    api_server *s = arg;
    struct cluster_api *c = s->clus;
    if (c == NULL) return; /* stopped: the connection is closing */
    struct client_conn *conn = c->probe;
    c->probe = NULL;
    if (r->status == 0 && r->data != NULL) {
        Etcdserverpb__MemberListResponse *ml =
            etcdserverpb__member_list_response__unpack(NULL, r->len, r->data);
        if (ml != NULL) {
            bool listed = false;
            for (size_t i = 0; i < ml->n_members; i++)
                if (ml->members[i]->id == s->member_id) listed = true;
            bool same = ml->header != NULL && ml->header->cluster_id == s->cluster_id;
            etcdserverpb__member_list_response__free_unpacked(ml, NULL);
            if (same && !listed) {
                if (++c->removed_votes >= 2) removed_stop(s);
            } else if (same) {
                c->removed_votes = 0;
            }
        }
    }
    if (conn != NULL) client_conn_close(conn);
}

static void probe_event(struct client_conn *conn, int err, void *arg)
{
    (void)conn, (void)err, (void)arg; /* a failed connection fails the call */
}

static void check_removed(api_server *s)
{
    struct cluster_api *c = s->clus;
    if (api_cluster_is_removed(s, s->member_id) && find(s, s->member_id) == NULL) {
        removed_stop(s);
        return;
    }
    uint64_t now = uv_now(s->loop);
    if (member_leader_id(s->member) != 0) {
        c->leaderless_since = 0;
        return;
    }
    if (c->leaderless_since == 0) c->leaderless_since = now;
    unsigned election = s->election_ms ? s->election_ms : 1000;
    if (c->probe != NULL || s->peer == NULL ||
        now - c->leaderless_since < REMOVED_PROBE_ELECTIONS * election)
        return;
    /* as etcd, whose removed member learns it from its peers' answer on
     * the peer port: another member's peer URL, with peer TLS */
    size_t n = api_cluster_size(s);
    for (size_t k = 0; k < n; k++) {
        const Ketchpb__ClusterMember *m = s->cluster->members[(c->probe_next + k) % n];
        if (m->id == s->member_id || m->n_peer_urls == 0) continue;
        c->probe_next = (c->probe_next + k + 1) % n;
        if (api_cluster_peer_open(s, s->peer, s->loop, m->id, probe_event, s, &c->probe) != 0) {
            c->probe = NULL;
            return;
        }
        Etcdserverpb__MemberListRequest req = ETCDSERVERPB__MEMBER_LIST_REQUEST__INIT;
        if (client_unary(c->probe, "/etcdserverpb.Cluster/MemberList",
                         (const ProtobufCMessage *)&req, probe_reply, s) != 0) {
            client_conn_close(c->probe);
            c->probe = NULL;
        }
        /* the next probe no sooner than one more election timeout */
        c->leaderless_since = now - (REMOVED_PROBE_ELECTIONS - 1) * election;
        return;
    }
}

static void publish_tick(uv_timer_t *t)
{
    api_server *s = t->data;
    struct cluster_api *c = s->clus;
    if (s->member == NULL) return;
    check_removed(s);
    if (c->removed) return;
    reconcile(s);
    if (c->inflight || c->published) return;
    if (attrs_current(s)) {
        c->published = true;
        log_info("cluster: published name %s and client URLs of member %016llx", s->self_name,
                 (unsigned long long)s->member_id);
        return;
    }
    if (member_leader_id(s->member) == 0) return;
    Ketchpb__MemberAttrSet a = KETCHPB__MEMBER_ATTR_SET__INIT;
    a.id = s->member_id;
    a.name = (char *)s->self_name;
    a.client_urls = s->self_client_urls;
    a.n_client_urls = s->n_self_client_urls;
    Ketchpb__InternalRequest ir = KETCHPB__INTERNAL_REQUEST__INIT;
    ir.member_attr_set = &a;
    if (api_propose_internal(s, &ir, publish_done, NULL) == 0) c->inflight = true;
}

void api_cluster_start(api_server *s)
{
    struct cluster_api *c = calloc(1, sizeof *c);
    if (c == NULL) {
        log_error("cluster: out of memory; client URLs not published");
        return;
    }
    s->clus = c;
    uv_timer_init(s->loop, &c->timer);
    c->timer.data = s;
    uv_timer_start(&c->timer, publish_tick, 0, PUBLISH_RETRY_MS);
}

static void free_on_close(uv_handle_t *h) { free(h->data); }

void api_cluster_stop(api_server *s)
{
    struct cluster_api *c = s->clus;
    if (c == NULL) return;
    s->clus = NULL;
    if (c->probe != NULL) client_conn_close(c->probe); /* probe_reply sees s->clus NULL */
    c->probe = NULL;
    uv_timer_stop(&c->timer);
    c->timer.data = c;
    uv_close((uv_handle_t *)&c->timer, free_on_close);
}

/* ---- the Cluster service ---- */

void cluster_member_list(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    api_server *s = ctx;
    Etcdserverpb__MemberListResponse r = ETCDSERVERPB__MEMBER_LIST_RESPONSE__INIT;
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    /* as etcd's clusterServer.header(): no revision */
    api_fill_header(s, &h, 0);
    r.header = &h;
    size_t n = api_cluster_size(s);
    Etcdserverpb__Member *ms = calloc(n ? n : 1, sizeof *ms);
    Etcdserverpb__Member **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    if (ms == NULL || ptrs == NULL) {
        free(ms);
        free(ptrs);
        grpc_call_fail(call, KERR_NOMEM);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const Ketchpb__ClusterMember *mi = s->cluster->members[i];
        etcdserverpb__member__init(&ms[i]);
        ms[i].id = mi->id;
        ms[i].name = mi->name;
        ms[i].peerurls = mi->peer_urls;
        ms[i].n_peerurls = mi->n_peer_urls;
        ms[i].clienturls = mi->client_urls;
        ms[i].n_clienturls = mi->n_client_urls;
        ms[i].islearner = mi->is_learner;
        ptrs[i] = &ms[i];
    }
    r.members = ptrs;
    r.n_members = n;
    grpc_call_reply(call, &r.base);
    free(ms);
    free(ptrs);
}

/* ---- membership changes (etcdctl member add/remove/update/promote) ----
 *
 * As etcd, changes are decided by the leader (followers forward the call
 * to it) and replicated as one entry (member_change) that updates the
 * table on every member. libraft's own configuration then follows the
 * table: the leader's reconciler (below) adds new members as standbys
 * (etcd's learners: they replicate, they do not vote), turns standbys of
 * voting members into voters once they have caught up (libraft's
 * catch-up rounds), and removes members no longer in the table. So a
 * voter added with `member add` counts in the quorum once it runs and has
 * the log, not before (etcd counts it at once, which can make a cluster
 * of two unavailable until the new member starts). */

#define LEARNERS_MAX 1 /* etcd's --experimental-max-learners default */

struct mop {
    api_server *s;
    grpc_call *call;
    int kind;
    uint64_t id; /* ADD: the new member */
};

static void reply_forwarded(api_server *s, void *data, int kerr, const struct client_reply *r)
{
    grpc_call *call = data;
    (void)s, (void)kerr;
    if (r->status == 0) {
        grpc_call_send(call, r->data ? r->data : (const uint8_t *)"", r->len);
        grpc_call_finish(call, GRPC_OK, NULL);
    } else {
        grpc_call_finish(call, r->status, r->message);
    }
    grpc_call_unref(call);
}

/* Not the leader: hand the call to the leader as it is. Returns true if
 * the call was taken care of (forwarded or failed). */
static bool forward_if_follower(api_server *s, grpc_call *call, const char *path,
                                const uint8_t *msg, size_t len)
{
    if (s->member == NULL) {
        grpc_call_fail(call, KERR_STOPPED);
        return true;
    }
    if (member_is_leader(s->member)) return false;
    grpc_call_ref(call);
    int rv = api_forward_unary(s, path, msg, len, api_forward_deadline(s, call), reply_forwarded,
                               call);
    if (rv != 0) {
        grpc_call_fail(call, rv);
        grpc_call_unref(call);
    }
    return true;
}

/* The table as etcdserverpb.Member structs pointing into it. */
static int members_pb(const api_server *s, Etcdserverpb__Member **ms, Etcdserverpb__Member ***ptrs,
                      size_t *n)
{
    *n = api_cluster_size(s);
    *ms = calloc(*n ? *n : 1, sizeof **ms);
    *ptrs = calloc(*n ? *n : 1, sizeof **ptrs);
    if (*ms == NULL || *ptrs == NULL) {
        free(*ms);
        free(*ptrs);
        return KERR_NOMEM;
    }
    for (size_t i = 0; i < *n; i++) {
        const Ketchpb__ClusterMember *mi = s->cluster->members[i];
        Etcdserverpb__Member *m = &(*ms)[i];
        etcdserverpb__member__init(m);
        m->id = mi->id;
        m->name = mi->name;
        m->peerurls = mi->peer_urls;
        m->n_peerurls = mi->n_peer_urls;
        m->clienturls = mi->client_urls;
        m->n_clienturls = mi->n_client_urls;
        m->islearner = mi->is_learner;
        (*ptrs)[i] = m;
    }
    return 0;
}

static void mop_done(api_server *s, void *data, int err, const uint8_t *resp, size_t len)
{
    struct mop *op = data;
    (void)resp, (void)len;
    if (err != 0) {
        grpc_call_fail(op->call, err);
        goto out;
    }
    Etcdserverpb__Member *ms, **ptrs;
    size_t n;
    if (members_pb(s, &ms, &ptrs, &n) != 0) {
        grpc_call_fail(op->call, KERR_NOMEM);
        goto out;
    }
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    api_fill_header(s, &h, 0);
    switch (op->kind) {
    case KETCHPB__MEMBER_CHANGE__KIND__ADD: {
        Etcdserverpb__MemberAddResponse r = ETCDSERVERPB__MEMBER_ADD_RESPONSE__INIT;
        r.header = &h;
        r.members = ptrs;
        r.n_members = n;
        for (size_t i = 0; i < n; i++)
            if (ms[i].id == op->id) r.member = &ms[i];
        grpc_call_reply(op->call, &r.base);
        break;
    }
    case KETCHPB__MEMBER_CHANGE__KIND__REMOVE: {
        Etcdserverpb__MemberRemoveResponse r = ETCDSERVERPB__MEMBER_REMOVE_RESPONSE__INIT;
        r.header = &h;
        r.members = ptrs;
        r.n_members = n;
        grpc_call_reply(op->call, &r.base);
        break;
    }
    case KETCHPB__MEMBER_CHANGE__KIND__UPDATE: {
        Etcdserverpb__MemberUpdateResponse r = ETCDSERVERPB__MEMBER_UPDATE_RESPONSE__INIT;
        r.header = &h;
        r.members = ptrs;
        r.n_members = n;
        grpc_call_reply(op->call, &r.base);
        break;
    }
    default: {
        Etcdserverpb__MemberPromoteResponse r = ETCDSERVERPB__MEMBER_PROMOTE_RESPONSE__INIT;
        r.header = &h;
        r.members = ptrs;
        r.n_members = n;
        grpc_call_reply(op->call, &r.base);
        break;
    }
    }
    free(ms);
    free(ptrs);
out:
    grpc_call_unref(op->call);
    free(op);
}

static void propose_change(api_server *s, grpc_call *call, int kind, Ketchpb__ClusterMember *cm)
{
    struct mop *op = calloc(1, sizeof *op);
    if (op == NULL) return grpc_call_fail(call, KERR_NOMEM);
    op->s = s;
    op->call = call;
    op->kind = kind;
    op->id = cm->id;
    Ketchpb__MemberChange ch = KETCHPB__MEMBER_CHANGE__INIT;
    ch.kind = kind;
    ch.member = cm;
    ch.cluster_id = s->cluster_id;
    Ketchpb__InternalRequest ir = KETCHPB__INTERNAL_REQUEST__INIT;
    ir.member_change = &ch;
    grpc_call_ref(call);
    int rv = api_propose_internal(s, &ir, mop_done, op);
    if (rv != 0) {
        grpc_call_unref(call);
        free(op);
        grpc_call_fail(call, rv);
    }
}

/* etcd's member ID for `member add`: sha1(sorted peer URLs ++ decimal Unix
 * seconds), first 8 bytes big-endian (v3rpc's MemberAdd calls
 * membership.NewMember with an empty cluster name, not the token, and the
 * time), so a member re-added with the peer URLs of a removed one gets a
 * new ID. The member being added learns it from the cluster at start
 * (server/join.c). */
static uint64_t new_member_id(char **sorted, size_t n, int64_t unix_s)
{
    char t[24];
    snprintf(t, sizeof t, "%" PRId64, unix_s);
    unsigned char md[EVP_MAX_MD_SIZE];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx == NULL) return 0;
    EVP_DigestInit_ex(ctx, EVP_sha1(), NULL);
    for (size_t i = 0; i < n; i++) EVP_DigestUpdate(ctx, sorted[i], strlen(sorted[i]));
    EVP_DigestUpdate(ctx, t, strlen(t));
    EVP_DigestFinal_ex(ctx, md, NULL);
    EVP_MD_CTX_free(ctx);
    return get_be64(md);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* "http://host:port" → "host:port" for libraft (localhost → 127.0.0.1);
 * NULL if it is not such a URL. Heap string. */
static char *raft_address_of(const char *url)
{
    const char *p = strstr(url, "://");
    if (p == NULL) return NULL;
    p += 3;
    size_t n = strcspn(p, "/");
    const char *colon = memrchr(p, ':', n);
    if (colon == NULL || colon == p || (size_t)(colon - p) + 1 >= n) return NULL;
    for (const char *d = colon + 1; d < p + n; d++)
        if (*d < '0' || *d > '9') return NULL;
    char *out = malloc(n + 16);
    if (out == NULL) return NULL;
    if ((size_t)(colon - p) == 9 && strncmp(p, "localhost", 9) == 0)
        snprintf(out, n + 16, "127.0.0.1%.*s", (int)(p + n - colon), colon);
    else
        snprintf(out, n + 16, "%.*s", (int)n, p);
    return out;
}

char *api_cluster_peer_address(const api_server *s, uint64_t id)
{
    Ketchpb__ClusterMember *m = find(s, id);
    return m != NULL && m->n_peer_urls > 0 ? raft_address_of(m->peer_urls[0]) : NULL;
}

int api_cluster_peer_open(const api_server *s, peer_net *pn, uv_loop_t *loop, uint64_t id,
                          client_conn_cb on_event, void *arg, struct client_conn **out)
{
    char *addr = api_cluster_peer_address(s, id);
    if (addr == NULL) return KERR_MEMBER_NOT_FOUND;
    uv_os_sock_t fd;
    peer_dial *d;
    /* no dial callback: if the peer cannot be reached, the socket sees EOF
     * and the connection fails its calls */
    if (peer_net_dial(pn, addr, NULL, NULL, &fd, &d) != 0) {
        free(addr);
        return KERR_NOMEM;
    }
    int rv = client_conn_adopt(loop, fd, addr, on_event, arg, out); /* closes fd on failure */
    free(addr);
    return rv == 0 ? 0 : KERR_NOMEM;
}

/* Whether any of `urls` is a peer URL of a member other than `except`. */
static bool peer_url_taken(const api_server *s, char **urls, size_t n, uint64_t except)
{
    for (size_t i = 0; i < api_cluster_size(s); i++) {
        const Ketchpb__ClusterMember *m = s->cluster->members[i];
        if (m->id == except) continue;
        for (size_t j = 0; j < m->n_peer_urls; j++)
            for (size_t k = 0; k < n; k++)
                if (strcmp(m->peer_urls[j], urls[k]) == 0) return true;
    }
    return false;
}

static bool urls_valid(char **urls, size_t n)
{
    if (n == 0) return false;
    for (size_t i = 0; i < n; i++) {
        char *a = raft_address_of(urls[i]);
        if (a == NULL) return false;
        free(a);
    }
    return true;
}

void cluster_member_add(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    api_server *s = ctx;
    Etcdserverpb__MemberAddRequest *req = etcdserverpb__member_add_request__unpack(NULL, len, msg);
    if (req == NULL) return api_fail_unmarshal(call);
    if (forward_if_follower(s, call, "/etcdserverpb.Cluster/MemberAdd", msg, len)) goto out;
    if (!urls_valid(req->peerurls, req->n_peerurls)) {
        grpc_call_fail(call, KERR_MEMBER_BAD_URLS);
        goto out;
    }
    if (peer_url_taken(s, req->peerurls, req->n_peerurls, 0)) {
        grpc_call_fail(call, KERR_PEER_URL_EXIST);
        goto out;
    }
    size_t learners = 0;
    for (size_t i = 0; i < api_cluster_size(s); i++) learners += s->cluster->members[i]->is_learner;
    if (req->islearner && learners >= LEARNERS_MAX) {
        grpc_call_fail(call, KERR_TOO_MANY_LEARNERS);
        goto out;
    }
    char **sorted = calloc(req->n_peerurls, sizeof *sorted);
    if (sorted == NULL) {
        grpc_call_fail(call, KERR_NOMEM);
        goto out;
    }
    memcpy(sorted, req->peerurls, req->n_peerurls * sizeof *sorted);
    qsort(sorted, req->n_peerurls, sizeof *sorted, cmp_str);
    Ketchpb__ClusterMember cm = KETCHPB__CLUSTER_MEMBER__INIT;
    /* as etcd, the time in seconds; unlike etcd, a clash with a member or a
     * removed member (the same URLs re-added within a second) takes the
     * next second rather than failing */
    int64_t now = (int64_t)time(NULL);
    cm.id = new_member_id(sorted, req->n_peerurls, now);
    for (int k = 1; k < 8 && (find(s, cm.id) != NULL || api_cluster_is_removed(s, cm.id)); k++)
        cm.id = new_member_id(sorted, req->n_peerurls, now + k);
    cm.name = "";
    cm.peer_urls = sorted;
    cm.n_peer_urls = req->n_peerurls;
    cm.is_learner = req->islearner;
    if (cm.id == 0 || find(s, cm.id) != NULL || api_cluster_is_removed(s, cm.id))
        grpc_call_fail(call, KERR_MEMBER_EXIST);
    else
        propose_change(s, call, KETCHPB__MEMBER_CHANGE__KIND__ADD, &cm);
    free(sorted);
out:
    etcdserverpb__member_add_request__free_unpacked(req, NULL);
}

void cluster_member_remove(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    api_server *s = ctx;
    Etcdserverpb__MemberRemoveRequest *req =
        etcdserverpb__member_remove_request__unpack(NULL, len, msg);
    if (req == NULL) return api_fail_unmarshal(call);
    if (forward_if_follower(s, call, "/etcdserverpb.Cluster/MemberRemove", msg, len)) goto out;
    if (find(s, req->id) == NULL) {
        grpc_call_fail(call, KERR_MEMBER_NOT_FOUND);
        goto out;
    }
    Ketchpb__ClusterMember cm = KETCHPB__CLUSTER_MEMBER__INIT;
    cm.id = req->id;
    propose_change(s, call, KETCHPB__MEMBER_CHANGE__KIND__REMOVE, &cm);
out:
    etcdserverpb__member_remove_request__free_unpacked(req, NULL);
}

void cluster_member_update(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    api_server *s = ctx;
    Etcdserverpb__MemberUpdateRequest *req =
        etcdserverpb__member_update_request__unpack(NULL, len, msg);
    if (req == NULL) return api_fail_unmarshal(call);
    if (forward_if_follower(s, call, "/etcdserverpb.Cluster/MemberUpdate", msg, len)) goto out;
    if (find(s, req->id) == NULL) {
        grpc_call_fail(call, KERR_MEMBER_NOT_FOUND);
        goto out;
    }
    if (!urls_valid(req->peerurls, req->n_peerurls)) {
        grpc_call_fail(call, KERR_MEMBER_BAD_URLS);
        goto out;
    }
    if (peer_url_taken(s, req->peerurls, req->n_peerurls, req->id)) {
        grpc_call_fail(call, KERR_PEER_URL_EXIST);
        goto out;
    }
    Ketchpb__ClusterMember cm = KETCHPB__CLUSTER_MEMBER__INIT;
    cm.id = req->id;
    cm.peer_urls = req->peerurls;
    cm.n_peer_urls = req->n_peerurls;
    propose_change(s, call, KETCHPB__MEMBER_CHANGE__KIND__UPDATE, &cm);
out:
    etcdserverpb__member_update_request__free_unpacked(req, NULL);
}

/* etcd's isLearnerReady: the learner holds at least 90% of the leader's log. */
static bool learner_ready(api_server *s, uint64_t id)
{
    uint64_t last = member_last_index(s->member);
    return member_match_index(s->member, id) * 10 >= last * 9;
}

void cluster_member_promote(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    api_server *s = ctx;
    Etcdserverpb__MemberPromoteRequest *req =
        etcdserverpb__member_promote_request__unpack(NULL, len, msg);
    if (req == NULL) return api_fail_unmarshal(call);
    if (forward_if_follower(s, call, "/etcdserverpb.Cluster/MemberPromote", msg, len)) goto out;
    Ketchpb__ClusterMember *m = find(s, req->id);
    if (m == NULL) {
        grpc_call_fail(call, KERR_MEMBER_NOT_FOUND);
    } else if (!m->is_learner) {
        grpc_call_fail(call, KERR_MEMBER_NOT_LEARNER);
    } else if (!learner_ready(s, req->id)) {
        grpc_call_fail(call, KERR_LEARNER_NOT_READY);
    } else {
        Ketchpb__ClusterMember cm = KETCHPB__CLUSTER_MEMBER__INIT;
        cm.id = req->id;
        propose_change(s, call, KETCHPB__MEMBER_CHANGE__KIND__PROMOTE, &cm);
    }
out:
    etcdserverpb__member_promote_request__free_unpacked(req, NULL);
}

/* ---- etcdctl move-leader (Maintenance.MoveLeader) ---- */

static void moved(void *data, int status)
{
    grpc_call *call = data;
    api_server *s = grpc_call_get_data(call);
    if (status != 0) {
        grpc_call_fail(call, status);
    } else {
        Etcdserverpb__MoveLeaderResponse r = ETCDSERVERPB__MOVE_LEADER_RESPONSE__INIT;
        Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
        api_fill_header(s, &h, mvcc_revision(s->store));
        r.header = &h;
        grpc_call_reply(call, &r.base);
    }
    grpc_call_unref(call);
}

void cluster_move_leader(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    api_server *s = ctx;
    Etcdserverpb__MoveLeaderRequest *req =
        etcdserverpb__move_leader_request__unpack(NULL, len, msg);
    if (req == NULL) return api_fail_unmarshal(call);
    uint64_t target = req->targetid;
    etcdserverpb__move_leader_request__free_unpacked(req, NULL);
    if (s->member == NULL) return grpc_call_fail(call, KERR_STOPPED);
    /* as etcd: only the leader moves leadership (etcdctl finds it) */
    if (!member_is_leader(s->member)) return grpc_call_fail(call, KERR_NOT_LEADER);
    Ketchpb__ClusterMember *m = find(s, target);
    if (m == NULL || m->is_learner || target == s->member_id)
        return grpc_call_fail(call, KERR_BAD_LEADER_TRANSFEREE);
    grpc_call_set_data(call, s);
    grpc_call_ref(call);
    int rv = member_transfer(s->member, target, moved, call);
    if (rv != 0) {
        grpc_call_unref(call);
        grpc_call_fail(call, rv == KERR_BAD_REQUEST ? KERR_BAD_LEADER_TRANSFEREE : rv);
    }
}

/* ---- the leader's reconciler: libraft's configuration follows the table ---- */

static void reconciled(void *data, int status)
{
    api_server *s = data;
    if (s->clus != NULL) s->clus->reconciling = false;
    if (status != 0) log_debug("cluster: configuration change failed: %s", kerr_text(status));
}

static void synced(void *data, int status)
{
    api_server *s = data;
    if (s->clus == NULL) return;
    s->clus->reconciling = false;
    if (status == 0 && s->member != NULL) s->clus->synced_term = member_term(s->member);
}

static void reconcile(api_server *s)
{
    struct cluster_api *c = s->clus;
    member *mb = s->member;
    if (mb == NULL || c->reconciling || !member_is_leader(mb) || member_changing(mb)) return;
    if (c->synced_term != member_term(mb)) {
        /* the table must include every entry committed before this term:
         * apply them first (a barrier) */
        if (member_read_barrier(mb, synced, s) == 0) c->reconciling = true;
        return;
    }
    int rv = -1;
    for (size_t i = 0; i < api_cluster_size(s) && rv != 0; i++) {
        const Ketchpb__ClusterMember *m = s->cluster->members[i];
        enum member_role role = member_role_of(mb, m->id);
        if (role == MEMBER_ABSENT && m->n_peer_urls > 0) {
            char *addr = raft_address_of(m->peer_urls[0]);
            if (addr == NULL) continue;
            rv = member_add(mb, m->id, addr, reconciled, s);
            free(addr);
            if (rv == 0) log_info("cluster: adding member %016llx to the Raft configuration",
                                  (unsigned long long)m->id);
        } else if (role == MEMBER_SPARE) {
            rv = member_assign(mb, m->id, MEMBER_STANDBY, reconciled, s);
        } else if (role == MEMBER_STANDBY && !m->is_learner &&
                   member_match_index(mb, m->id) > 0) {
            /* it runs and replicates: make it a voter (libraft catches it
             * up first) */
            rv = member_assign(mb, m->id, MEMBER_VOTER, reconciled, s);
            if (rv == 0) log_info("cluster: member %016llx becomes a voter",
                                  (unsigned long long)m->id);
        }
    }
    if (rv != 0) {
        uint64_t *ids;
        size_t n = member_config_ids(mb, &ids);
        for (size_t i = 0; i < n && rv != 0; i++) {
            if (find(s, ids[i]) != NULL) continue;
            rv = member_remove(mb, ids[i], reconciled, s);
            if (rv == 0) log_info("cluster: removing member %016llx from the Raft configuration",
                                  (unsigned long long)ids[i]);
        }
        free(ids);
    }
    if (rv == 0) c->reconciling = true;
}

int api_cluster_reload(api_server *s)
{
    uint8_t *buf;
    size_t len;
    int rv = mvcc_meta_get(s->store, META_KEY, &buf, &len);
    if (rv == KERR_KEY_NOT_FOUND) return 0; /* the snapshot's table was never stored */
    if (rv != 0) return rv;
    Ketchpb__ClusterMembers *t = ketchpb__cluster_members__unpack(NULL, len, buf);
    free(buf);
    if (t == NULL) return KERR_CORRUPT;
    if (s->cluster != NULL) ketchpb__cluster_members__free_unpacked(s->cluster, NULL);
    s->cluster = t;
    if (t->cluster_id != 0) s->cluster_id = t->cluster_id;
    return 0;
}
