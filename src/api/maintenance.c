/* etcdserverpb.Maintenance: Status and Alarm (list only, no alarms yet). */
#include "api/maintenance.h"

#include "util/errors.h"

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
    grpc_call_reply(call, &r.base);
}

void maintenance_alarm(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    api_server *s = ctx;
    Etcdserverpb__AlarmRequest *req = etcdserverpb__alarm_request__unpack(NULL, len, msg);
    if (req == NULL) {
        grpc_call_finish(call, GRPC_INTERNAL, "grpc: error unmarshalling request: unexpected EOF");
        return;
    }
    /* No alarm can be raised yet (quota and corruption checks come with
     * later work): GET lists none, ACTIVATE/DEACTIVATE change nothing. */
    Etcdserverpb__AlarmResponse r = ETCDSERVERPB__ALARM_RESPONSE__INIT;
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    api_fill_header(s, &h, mvcc_revision(s->store));
    r.header = &h;
    grpc_call_reply(call, &r.base);
    etcdserverpb__alarm_request__free_unpacked(req, NULL);
}
