/* The method table and what every service shares. */
#include "api/api.h"
#include "util/errors.h"

#include <time.h>

#include "api/auth.h"
#include "api/cluster.h"
#include "api/election.h"
#include "api/forward.h"
#include "api/kv.h"
#include "api/lease.h"
#include "api/lock.h"
#include "api/maintenance.h"
#include "api/snapshot.h"
#include "api/watch.h"

static const grpc_method methods[] = {
    {"/etcdserverpb.KV/Range", GRPC_UNARY, kv_range, NULL},
    {"/etcdserverpb.KV/Put", GRPC_UNARY, kv_put, NULL},
    {"/etcdserverpb.KV/DeleteRange", GRPC_UNARY, kv_delete_range, NULL},
    {"/etcdserverpb.KV/Txn", GRPC_UNARY, kv_txn, NULL},
    {"/etcdserverpb.KV/Compact", GRPC_UNARY, kv_compact, NULL},
    {"/etcdserverpb.Maintenance/Status", GRPC_UNARY, maintenance_status, NULL},
    {"/etcdserverpb.Maintenance/Alarm", GRPC_UNARY, maintenance_alarm, NULL},
    {"/etcdserverpb.Maintenance/Hash", GRPC_UNARY, maintenance_hash, NULL},
    {"/etcdserverpb.Maintenance/HashKV", GRPC_UNARY, maintenance_hash_kv, NULL},
    {"/etcdserverpb.Maintenance/Defragment", GRPC_UNARY, maintenance_defragment, NULL},
    {"/etcdserverpb.Maintenance/Snapshot", GRPC_STREAM, maintenance_snapshot,
     maintenance_snapshot_close},
    {"/etcdserverpb.Cluster/MemberList", GRPC_UNARY, cluster_member_list, NULL},
    {"/etcdserverpb.Cluster/MemberAdd", GRPC_UNARY, cluster_member_add, NULL},
    {"/etcdserverpb.Cluster/MemberRemove", GRPC_UNARY, cluster_member_remove, NULL},
    {"/etcdserverpb.Cluster/MemberUpdate", GRPC_UNARY, cluster_member_update, NULL},
    {"/etcdserverpb.Cluster/MemberPromote", GRPC_UNARY, cluster_member_promote, NULL},
    {"/etcdserverpb.Maintenance/MoveLeader", GRPC_UNARY, cluster_move_leader, NULL},
    {"/etcdserverpb.Lease/LeaseGrant", GRPC_UNARY, lease_grant, NULL},
    {"/etcdserverpb.Lease/LeaseRevoke", GRPC_UNARY, lease_revoke, NULL},
    {"/etcdserverpb.Lease/LeaseKeepAlive", GRPC_STREAM, lease_keep_alive, lease_keep_alive_close},
    {"/etcdserverpb.Lease/LeaseTimeToLive", GRPC_UNARY, lease_time_to_live, NULL},
    {"/etcdserverpb.Lease/LeaseLeases", GRPC_UNARY, lease_leases, NULL},
    {"/etcdserverpb.Watch/Watch", GRPC_STREAM, watch_watch, watch_watch_close},
    {"/v3lockpb.Lock/Lock", GRPC_UNARY, lock_lock, NULL},
    {"/v3lockpb.Lock/Unlock", GRPC_UNARY, lock_unlock, NULL},
    {"/v3electionpb.Election/Campaign", GRPC_UNARY, election_campaign, NULL},
    {"/v3electionpb.Election/Proclaim", GRPC_UNARY, election_proclaim, NULL},
    {"/v3electionpb.Election/Leader", GRPC_UNARY, election_leader, NULL},
    {"/v3electionpb.Election/Observe", GRPC_STREAM, election_observe, election_observe_close},
    {"/v3electionpb.Election/Resign", GRPC_UNARY, election_resign, NULL},
    {"/etcdserverpb.Auth/AuthEnable", GRPC_UNARY, auth_enable, NULL},
    {"/etcdserverpb.Auth/AuthDisable", GRPC_UNARY, auth_disable, NULL},
    {"/etcdserverpb.Auth/AuthStatus", GRPC_UNARY, auth_status, NULL},
    {"/etcdserverpb.Auth/Authenticate", GRPC_UNARY, auth_authenticate, NULL},
    {"/etcdserverpb.Auth/UserAdd", GRPC_UNARY, auth_user_add, NULL},
    {"/etcdserverpb.Auth/UserGet", GRPC_UNARY, auth_user_get, NULL},
    {"/etcdserverpb.Auth/UserList", GRPC_UNARY, auth_user_list, NULL},
    {"/etcdserverpb.Auth/UserDelete", GRPC_UNARY, auth_user_delete, NULL},
    {"/etcdserverpb.Auth/UserChangePassword", GRPC_UNARY, auth_user_change_password, NULL},
    {"/etcdserverpb.Auth/UserGrantRole", GRPC_UNARY, auth_user_grant_role, NULL},
    {"/etcdserverpb.Auth/UserRevokeRole", GRPC_UNARY, auth_user_revoke_role, NULL},
    {"/etcdserverpb.Auth/RoleAdd", GRPC_UNARY, auth_role_add, NULL},
    {"/etcdserverpb.Auth/RoleGet", GRPC_UNARY, auth_role_get, NULL},
    {"/etcdserverpb.Auth/RoleList", GRPC_UNARY, auth_role_list, NULL},
    {"/etcdserverpb.Auth/RoleDelete", GRPC_UNARY, auth_role_delete, NULL},
    {"/etcdserverpb.Auth/RoleGrantPermission", GRPC_UNARY, auth_role_grant_permission, NULL},
    {"/etcdserverpb.Auth/RoleRevokePermission", GRPC_UNARY, auth_role_revoke_permission, NULL},
};

/* Followers to the leader (api/forward.c), on the peer port only: these
 * trust the user named in the request, so a client must never reach them
 * (on the client port they are unknown, as grpc-go answers). */
static const grpc_method peer_methods[] = {
    {"/ketchpb.Internal/Propose", GRPC_UNARY, internal_propose, NULL},
    {"/ketchpb.Internal/ReadIndex", GRPC_UNARY, internal_read_index, NULL},
    {"/ketchpb.Internal/LeaseKeepAlive", GRPC_UNARY, internal_lease_keep_alive, NULL},
    /* the corruption checks of other members (api/corrupt.c) */
    {"/ketchpb.Internal/HashKV", GRPC_UNARY, internal_hash_kv, NULL},
    /* client calls a follower hands to the leader as they are */
    /* a member joining with --initial-cluster-state existing (server/join.c),
     * and the removed-member probe (api/cluster.c) */
    {"/etcdserverpb.Cluster/MemberList", GRPC_UNARY, cluster_member_list, NULL},
    {"/etcdserverpb.Cluster/MemberAdd", GRPC_UNARY, cluster_member_add, NULL},
    {"/etcdserverpb.Cluster/MemberRemove", GRPC_UNARY, cluster_member_remove, NULL},
    {"/etcdserverpb.Cluster/MemberUpdate", GRPC_UNARY, cluster_member_update, NULL},
    {"/etcdserverpb.Cluster/MemberPromote", GRPC_UNARY, cluster_member_promote, NULL},
    {"/etcdserverpb.Lease/LeaseTimeToLive", GRPC_UNARY, lease_time_to_live, NULL},
};

const grpc_method *api_methods(size_t *n)
{
    *n = sizeof methods / sizeof methods[0];
    return methods;
}

const grpc_method *api_peer_methods(size_t *n)
{
    *n = sizeof peer_methods / sizeof peer_methods[0];
    return peer_methods;
}

void api_fail_unmarshal(grpc_call *call)
{
    grpc_call_finish(call, GRPC_INTERNAL, "grpc: error unmarshalling request: unexpected EOF");
}

void api_init(api_server *s)
{
    s->proposals = (u64map){0};
    /* Request IDs as etcd's idutil: the member ID's low 16 bits on top, so
     * IDs from different members never collide, then a counter started
     * from the clock, so IDs do not repeat across restarts. */
    uint64_t ms = (uint64_t)time(NULL) * 1000;
    s->next_request_id = (s->member_id << 48) | ((ms & 0xFFFFFFFFFFULL) << 8);
}

void api_fini(api_server *s)
{
    u64map_free(&s->proposals);
    auth_api_fini(s);
}

void api_fill_header(api_server *s, Etcdserverpb__ResponseHeader *h, int64_t revision)
{
    h->cluster_id = s->cluster_id;
    h->member_id = s->member_id;
    h->revision = revision;
    h->raft_term = s->member ? member_term(s->member) : 0;
}
