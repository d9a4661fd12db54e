/* A new member joining a running cluster (--initial-cluster-state
 * existing) learns its member ID and the cluster ID from the cluster, as
 * etcd's GetClusterFromRemotePeers + ValidateClusterAndAssignIDs. */
#ifndef KETCH_SERVER_JOIN_H
#define KETCH_SERVER_JOIN_H

#include "server/config.h"
#include "server/identity.h"

/* With --initial-cluster-state existing and no member/identity in the data
 * dir yet: asks the other members of --initial-cluster for the member list
 * (etcdserverpb.Cluster/MemberList on their peer port, with the --peer-*
 * TLS), the first one that answers wins. The lists must agree (same count,
 * every remote member matched by its peer URLs); then every member of `id`
 * takes the remote ID and `id` the remote cluster ID. Does nothing
 * otherwise (a new cluster, or a restart: the identity file wins). Runs
 * its own loop and blocks until done. Returns 0, or -1 with etcd's message
 * on stderr. */
int join_fetch_identity(struct identity *id, const struct config *cfg);

#endif
