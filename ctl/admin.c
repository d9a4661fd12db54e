/* member add/update/remove/promote, defrag, endpoint hashkv, move-leader
 * (etcdctl's member_command.go, defrag_command.go, ep_command.go,
 * move_leader_command.go and their printers). */
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <sys/stat.h>
#include <unistd.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "util/dirlock.h"
#include "util/errors.h"

#define FEND {NULL, 0, 0, NULL, false}

/* strconv.ParseUint(s, 16, 64) or etcdctl's "bad member ID arg". */
static uint64_t member_id_arg(const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 16);
    if (!*s || *end || errno || *s == '-' || *s == '+' || (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')))
        ctl_die(EXIT_BAD_ARGS,
                "bad member ID arg (strconv.ParseUint: parsing \"%s\": %s), expecting ID in Hex", s,
                errno == ERANGE ? "value out of range" : "invalid syntax");
    return v;
}

/* --peer-urls: a comma list; each must be an http(s) or unix(s) URL. */
static char **split_urls(const char *s, size_t *n)
{
    char *copy = strdup(s);
    char **v = calloc(strlen(s) + 2, sizeof *v);
    *n = 0;
    /* strings.Split: empty items stay (and are refused) */
    for (char *t = copy;;) {
        char *comma = strchr(t, ',');
        if (comma)
            *comma = 0;
        if (strncmp(t, "http://", 7) && strncmp(t, "https://", 8) && strncmp(t, "unix://", 7) &&
            strncmp(t, "unixs://", 8))
            ctl_die(EXIT_ERR, "URL scheme must be http, https, unix, or unixs: %s", t);
        v[(*n)++] = t;
        if (!comma)
            break;
        t = comma + 1;
    }
    return v;
}

static uint64_t cluster_id(const Etcdserverpb__ResponseHeader *h) { return h ? h->cluster_id : 0; }

static int member_add(int argc, char **argv)
{
    const char *peers = "";
    bool learner = false;
    struct flag fl[] = {{"peer-urls", 0, F_STR, &peers, false},
                        {"learner", 0, F_BOOL, &learner, false}, FEND};
    int n = ctl_parse(argc, argv, fl);
    if (n < 1)
        ctl_die(EXIT_BAD_ARGS, "member name not provided");
    if (n > 1)
        ctl_die(EXIT_BAD_ARGS, "too many arguments");
    const char *name = argv[0];
    if (!*peers)
        ctl_die(EXIT_BAD_ARGS, "member peer urls not provided");
    ctl_init_display();
    size_t np;
    char **urls = split_urls(peers, &np);
    Etcdserverpb__MemberAddRequest req = ETCDSERVERPB__MEMBER_ADD_REQUEST__INIT;
    req.peerurls = urls;
    req.n_peerurls = np;
    req.islearner = learner;
    Etcdserverpb__MemberAddResponse *r = (Etcdserverpb__MemberAddResponse *)ctl_rpc(
        "/etcdserverpb.Cluster/MemberAdd", &req.base, &etcdserverpb__member_add_response__descriptor);
    uint64_t id = r->member ? r->member->id : 0;
    if (print_rpc(&r->base, false))
        return 0;
    /* etcdctl 3.4's printer says nothing about learners (3.5 says "as learner") */
    printf("Member %16" PRIx64 " added to cluster %16" PRIx64 "\n", id, cluster_id(r->header));
    /* the simple printer then shows the new member's configuration */
    Etcdserverpb__MemberListRequest lr = ETCDSERVERPB__MEMBER_LIST_REQUEST__INIT;
    Etcdserverpb__MemberListResponse *l = (Etcdserverpb__MemberListResponse *)ctl_rpc(
        "/etcdserverpb.Cluster/MemberList", &lr.base, &etcdserverpb__member_list_response__descriptor);
    struct buf conf = {0}, b = {0};
    for (size_t i = 0; i < l->n_members; i++) {
        const Etcdserverpb__Member *m = l->members[i];
        for (size_t j = 0; j < m->n_peerurls; j++)
            buf_printf(&conf, "%s%s=%s", conf.len ? "," : "", m->id == id ? name : m->name,
                       m->peerurls[j]);
    }
    buf_puts(&b, "\nETCD_NAME=");
    out_goquote(&b, name, strlen(name));
    buf_puts(&b, "\nETCD_INITIAL_CLUSTER=");
    out_goquote(&b, conf.p ? conf.p : "", conf.len);
    buf_puts(&b, "\nETCD_INITIAL_ADVERTISE_PEER_URLS=");
    struct buf pj = {0};
    for (size_t i = 0; i < np; i++)
        buf_printf(&pj, "%s%s", i ? "," : "", urls[i]);
    out_goquote(&b, pj.p ? pj.p : "", pj.len);
    buf_puts(&b, "\nETCD_INITIAL_CLUSTER_STATE=\"existing\"\n");
    fwrite(b.p, 1, b.len, stdout);
    buf_free(&b);
    buf_free(&conf);
    buf_free(&pj);
    return 0;
}

/* remove and promote: a member ID, the same one-line answer */
static int member_remove_or_promote(int argc, char **argv, bool promote)
{
    int n = ctl_parse(argc, argv, (struct flag[]){FEND});
    if (n != 1)
        ctl_die(EXIT_BAD_ARGS, "member ID is not provided");
    uint64_t id = member_id_arg(argv[0]);
    ctl_init_display();
    Etcdserverpb__MemberRemoveRequest rm = ETCDSERVERPB__MEMBER_REMOVE_REQUEST__INIT;
    Etcdserverpb__MemberPromoteRequest pr = ETCDSERVERPB__MEMBER_PROMOTE_REQUEST__INIT;
    rm.id = pr.id = id;
    ProtobufCMessage *m =
        promote ? ctl_rpc("/etcdserverpb.Cluster/MemberPromote", &pr.base,
                          &etcdserverpb__member_promote_response__descriptor)
                : ctl_rpc("/etcdserverpb.Cluster/MemberRemove", &rm.base,
                          &etcdserverpb__member_remove_response__descriptor);
    print_line(m, false, "Member %16" PRIx64 " %s cluster %16" PRIx64, id,
               promote ? "promoted in" : "removed from", cluster_id(resp_header(m)));
    return 0;
}

static int member_update(int argc, char **argv)
{
    const char *peers = "";
    struct flag fl[] = {{"peer-urls", 0, F_STR, &peers, false}, FEND};
    int n = ctl_parse(argc, argv, fl);
    if (n != 1)
        ctl_die(EXIT_BAD_ARGS, "member ID is not provided");
    if (!*peers)
        ctl_die(EXIT_BAD_ARGS, "member peer urls not provided");
    uint64_t id = member_id_arg(argv[0]);
    ctl_init_display();
    size_t np;
    char **urls = split_urls(peers, &np);
    Etcdserverpb__MemberUpdateRequest req = ETCDSERVERPB__MEMBER_UPDATE_REQUEST__INIT;
    req.id = id;
    req.peerurls = urls;
    req.n_peerurls = np;
    Etcdserverpb__MemberUpdateResponse *r = (Etcdserverpb__MemberUpdateResponse *)ctl_rpc(
        "/etcdserverpb.Cluster/MemberUpdate", &req.base,
        &etcdserverpb__member_update_response__descriptor);
    print_line(&r->base, false, "Member %16" PRIx64 " updated in cluster %16" PRIx64, id,
               cluster_id(r->header));
    return 0;
}

int ctl_member_admin(const char *sub, int argc, char **argv)
{
    if (!strcmp(sub, "add"))
        return member_add(argc, argv);
    if (!strcmp(sub, "remove") || !strcmp(sub, "promote"))
        return member_remove_or_promote(argc, argv, sub[0] == 'p');
    if (!strcmp(sub, "update"))
        return member_update(argc, argv);
    return -1;
}

/* ---- defrag ---- */

/* defrag --data-dir: a ketch data dir not in use by a server (etcdctl's
 * defragData on member/snap/db; ours is the LMDB store in member/kv):
 * waits for the dir's lock as etcdctl waits for bbolt's, copies the store
 * with compaction next to it, then renames the copy over it. */
static int defrag_data_dir(const char *dir, char *err, size_t errlen)
{
    char kv[4200], db[4300], tmp[4300], tmpdb[4400];
    snprintf(kv, sizeof kv, "%s/member/kv", dir);
    snprintf(db, sizeof db, "%s/data.mdb", kv);
    snprintf(tmp, sizeof tmp, "%s/member/kv.defrag", dir);
    snprintf(tmpdb, sizeof tmpdb, "%s/data.mdb", tmp);
    struct stat st;
    if (stat(db, &st) != 0) {
        char e[128];
        snprintf(err, errlen, "open %s: %s", db, errno_text_go(e, sizeof e, errno));
        return -1;
    }
    int lock = dirlock_take(dir, false);
    if (lock < 0 && errno == EWOULDBLOCK) {
        fprintf(stderr, "waiting for ketch to close and release its lock on \"%s\". "
                        "To defrag a running ketch instance, omit --data-dir.\n", kv);
        lock = dirlock_take(dir, true);
    }
    if (lock < 0) {
        snprintf(err, errlen, "lock %s/member/lock: %s", dir, strerror(errno));
        return -1;
    }
    MDB_env *env;
    int rc = mdb_env_create(&env);
    if (rc == 0) {
        mdb_env_set_maxdbs(env, 16);
        mdb_env_set_mapsize(env, (size_t)st.st_size * 2 + (64u << 20));
        rc = mdb_env_open(env, kv, MDB_NOTLS, 0600);
        if (rc == 0) {
            rmdir(tmpdb); /* a leftover of an interrupted run */
            unlink(tmpdb);
            rmdir(tmp);
            if (mkdir(tmp, 0700) != 0) rc = errno;
            else rc = mdb_env_copy2(env, tmp, MDB_CP_COMPACT);
        }
        mdb_env_close(env);
    }
    if (rc == 0 && rename(tmpdb, db) != 0) rc = errno;
    if (rc == 0) {
        int dfd = open(kv, O_RDONLY | O_DIRECTORY);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    unlink(tmpdb);
    rmdir(tmp);
    close(lock);
    if (rc != 0) {
        snprintf(err, errlen, "%s", mdb_strerror(rc));
        return -1;
    }
    return 0;
}

int cmd_defrag(int argc, char **argv)
{
    bool cluster = false;
    const char *data_dir = "";
    struct flag fl[] = {{"cluster", 0, F_BOOL, &cluster, false},
                        {"data-dir", 0, F_STR, &data_dir, false}, FEND};
    ctl_parse(argc, argv, fl);
    if (*data_dir) {
        char err[8192];
        if (defrag_data_dir(data_dir, err, sizeof err) != 0) {
            fprintf(stderr, "Failed to defragment etcd data[%s] (%s)\n", data_dir, err);
            exit(EXIT_ERR);
        }
        return 0;
    }
    ctl_init_display();
    size_t n;
    char **eps = ctl_endpoints(cluster, &n);
    int failures = 0;
    for (size_t i = 0; i < n; i++) {
        Etcdserverpb__DefragmentRequest req = ETCDSERVERPB__DEFRAGMENT_REQUEST__INIT;
        ProtobufCMessage *m = ctl_rpc_each(eps[i], "/etcdserverpb.Maintenance/Defragment",
                                           &req.base, &etcdserverpb__defragment_response__descriptor,
                                           "Failed to defragment etcd member[%s] (%s)\n", NULL);
        if (m)
            printf("Finished defragmenting etcd member[%s]\n", eps[i]);
        else
            failures++;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    fflush(stdout);
    return failures ? EXIT_ERR : 0;
}

/* ---- endpoint hashkv ---- */

int ctl_endpoint_hashkv(char **eps, size_t n, int64_t rev)
{
    Etcdserverpb__HashKVResponse **resp = calloc(n + 1, sizeof *resp);
    const char **ok_eps = calloc(n + 1, sizeof *ok_eps);
    size_t ok = 0;
    char *last_err = NULL;
    for (size_t i = 0; i < n; i++) {
        Etcdserverpb__HashKVRequest req = ETCDSERVERPB__HASH_KVREQUEST__INIT;
        req.revision = rev;
        resp[ok] = (Etcdserverpb__HashKVResponse *)ctl_rpc_each(
            eps[i], "/etcdserverpb.Maintenance/HashKV", &req.base,
            &etcdserverpb__hash_kvresponse__descriptor,
            "Failed to get the hash of endpoint %s (%s)\n", &last_err);
        if (!resp[ok])
            continue;
        /* as the etcdctl we match (3.4) knows the reply: without etcd
         * 3.5's hash_revision, which 3.4 drops when it prints */
        resp[ok]->hash_revision = 0;
        ok_eps[ok++] = eps[i];
    }
    struct buf b = {0};
    if (g.out == OUT_SIMPLE) {
        for (size_t i = 0; i < ok; i++)
            buf_printf(&b, "%s, %" PRIu32 "\n", ok_eps[i], resp[i]->hash);
    } else if (g.out == OUT_JSON) {
        buf_puts(&b, "[");
        for (size_t i = 0; i < ok; i++) {
            buf_puts(&b, i ? ",{\"Endpoint\":" : "{\"Endpoint\":");
            out_json_str(&b, ok_eps[i], strlen(ok_eps[i]));
            buf_puts(&b, ",\"HashKV\":");
            out_pb_json(&b, &resp[i]->base);
            buf_puts(&b, "}");
        }
        buf_puts(&b, "]\n");
    } else if (g.out == OUT_FIELDS) {
        fwrite(b.p ? b.p : "", 1, b.len, stdout);
        for (size_t i = 0; i < ok; i++) {
            fflush(stdout);
            print_fields_header(resp[i]->header);
            struct buf e = {0};
            buf_puts(&e, "\"Endpoint\" : ");
            out_goquote(&e, ok_eps[i], strlen(ok_eps[i]));
            buf_printf(&e, "\n\"Hash\" : %" PRIu32 "\n\n", resp[i]->hash);
            fwrite(e.p, 1, e.len, stdout);
            buf_free(&e);
        }
    } else if (g.out == OUT_TABLE) {
        static const char *const hdr[] = {"endpoint", "hash"};
        char ***rows = calloc(ok + 1, sizeof *rows);
        for (size_t i = 0; i < ok; i++) {
            rows[i] = calloc(2, sizeof(char *));
            rows[i][0] = (char *)ok_eps[i];
            struct buf h = {0};
            buf_printf(&h, "%" PRIu32, resp[i]->hash);
            rows[i][1] = h.p;
        }
        out_table(stdout, hdr, 2, rows, ok, true);
    } else {
        print_need_rpc_printer();
    }
    if (b.len && g.out != OUT_FIELDS)
        fwrite(b.p, 1, b.len, stdout);
    buf_free(&b);
    if (last_err)
        ctl_die(EXIT_ERR, "%s", last_err);
    return 0;
}

/* ---- move-leader ---- */

int cmd_move_leader(int argc, char **argv)
{
    int n = ctl_parse(argc, argv, (struct flag[]){FEND});
    if (n != 1)
        ctl_die(EXIT_BAD_ARGS, "move-leader command needs 1 argument");
    char *end;
    errno = 0;
    uint64_t target = strtoull(argv[0], &end, 16);
    if (!*argv[0] || *end || errno || argv[0][0] == '-' || argv[0][0] == '+')
        ctl_die(EXIT_BAD_ARGS, "strconv.ParseUint: parsing \"%s\": %s", argv[0],
                errno == ERANGE ? "value out of range" : "invalid syntax");
    ctl_init_display();
    /* find the leader among the endpoints: MoveLeader must go to it */
    const char *leader_ep = NULL;
    uint64_t leader = 0;
    for (size_t i = 0; i < g.n_endpoints && !leader_ep; i++) {
        Etcdserverpb__StatusRequest req = ETCDSERVERPB__STATUS_REQUEST__INIT;
        Etcdserverpb__StatusResponse *s = (Etcdserverpb__StatusResponse *)ctl_rpc_at(
            g.endpoints[i], "/etcdserverpb.Maintenance/Status", &req.base,
            &etcdserverpb__status_response__descriptor, EXIT_ERR, NULL);
        if (s->header && s->header->member_id == s->leader) {
            leader_ep = g.endpoints[i];
            leader = s->leader;
        }
        etcdserverpb__status_response__free_unpacked(s, NULL);
    }
    if (!leader_ep) {
        struct buf b = {0};
        for (size_t i = 0; i < g.n_endpoints; i++)
            buf_printf(&b, "%s%s", i ? " " : "", g.endpoints[i]);
        ctl_die(EXIT_BAD_ARGS, "no leader endpoint given at [%s]", b.p ? b.p : "");
    }
    Etcdserverpb__MoveLeaderRequest req = ETCDSERVERPB__MOVE_LEADER_REQUEST__INIT;
    req.targetid = target;
    ProtobufCMessage *m = ctl_rpc_at(leader_ep, "/etcdserverpb.Maintenance/MoveLeader", &req.base,
                                     &etcdserverpb__move_leader_response__descriptor, EXIT_ERR,
                                     NULL);
    print_line(m, true, "Leadership transferred from %" PRIx64 " to %" PRIx64, leader, target);
    return 0;
}
