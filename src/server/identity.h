/* Member and cluster IDs, derived as etcd derives them, and the data dir's
 * record of whose it is. */
#ifndef KETCH_SERVER_IDENTITY_H
#define KETCH_SERVER_IDENTITY_H

#include <stddef.h>
#include <stdint.h>

struct identity_member {
    char *name;
    char **peer_urls; /* sorted, NULL-terminated */
    size_t n_peer_urls;
    uint64_t id;
};

struct identity {
    struct identity_member *members; /* in --initial-cluster order */
    size_t n_members;
    size_t self; /* index of this member */
    uint64_t cluster_id;
};

/* etcd's membership.NewMember: sha1(sorted peer URLs ++ token), first 8
 * bytes big-endian. */
uint64_t identity_member_id(char *const *sorted_peer_urls, size_t n, const char *token);
/* etcd's RaftCluster.genID: sha1 of the sorted member IDs (8 bytes
 * big-endian each), first 8 bytes big-endian. */
uint64_t identity_cluster_id(const uint64_t *ids, size_t n);

/* Builds the identity from --initial-cluster ("name=url,name=url,..."),
 * --initial-cluster-token and --name. Returns 0, or -1 with a message on
 * stderr (bad list, or `name` not in it). */
int identity_from_cluster(struct identity *id, const char *initial_cluster,
                          const char *token, const char *name);
void identity_free(struct identity *id);

/* Checks and prepares `data_dir` for member `name`: creates it (0700) and
 * member/, member/kv, member/raft if missing, checks it is writable, and
 * reads member/identity if present (so the stored IDs win over the flags, as
 * etcd's WAL does) or writes it. A data dir that belongs to another member
 * name is refused. Returns 0, or -1 with a message on stderr. */
int identity_prepare_data_dir(struct identity *id, const char *data_dir);

#endif
