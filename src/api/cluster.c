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

#include <stdlib.h>
#include <string.h>

#include "api/propose.h"
#include "util/errors.h"
#include "util/log.h"

#define META_KEY "members"
#define PUBLISH_RETRY_MS 200

struct cluster_api {
    uv_timer_t timer;
    bool inflight;  /* a publish proposal is pending */
    bool published; /* applied: our attributes are in the table */
};

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
    if (!changed) goto out;
    Ketchpb__ClusterMembers t = KETCHPB__CLUSTER_MEMBERS__INIT;
    t.members = ptrs;
    t.n_members = k;
    t.removed = removed;
    t.n_removed = nr;
    rv = set_table(s, &t, true);
    if (rv == 0 && attr != NULL && attr->id == s->member_id && s->clus != NULL)
        s->clus->published = true;
out:
    free(ms);
    free(ptrs);
    free(removed);
    return rv;
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

static void publish_tick(uv_timer_t *t)
{
    api_server *s = t->data;
    struct cluster_api *c = s->clus;
    if (c->inflight || s->member == NULL) return;
    if (c->published || attrs_current(s)) {
        c->published = true;
        uv_timer_stop(t);
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
