/* etcdserverpb.Cluster: MemberList (membership changes come with clustering). */
#include "api/cluster.h"

#include <stdlib.h>

#include "util/errors.h"

void cluster_member_list(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    api_server *s = ctx;
    Etcdserverpb__MemberListResponse r = ETCDSERVERPB__MEMBER_LIST_RESPONSE__INIT;
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    api_fill_header(s, &h, mvcc_revision(s->store));
    r.header = &h;
    Etcdserverpb__Member *ms = calloc(s->n_members ? s->n_members : 1, sizeof *ms);
    Etcdserverpb__Member **ptrs = calloc(s->n_members ? s->n_members : 1, sizeof *ptrs);
    if (ms == NULL || ptrs == NULL) {
        free(ms);
        free(ptrs);
        grpc_call_fail(call, KERR_NOMEM);
        return;
    }
    for (size_t i = 0; i < s->n_members; i++) {
        const struct api_member_info *mi = &s->members[i];
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
    r.n_members = s->n_members;
    grpc_call_reply(call, &r.base);
    free(ms);
    free(ptrs);
}
