/* lock and elect (etcdctl's lock_command.go and elect_command.go), through
 * the server's v3lock and v3election services, which keep the same keys as
 * clientv3's concurrency package (<name>/<lease in hex>); the session lease
 * is kept alive in the background (rpc.c) while the command waits. */
#include <ctype.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"
#include "v3election.pb-c.h"
#include "v3lock.pb-c.h"

#define FEND {NULL, 0, 0, NULL, false}

extern char **environ;

/* concurrency.NewSession: a lease of ttl seconds, kept alive. */
static int64_t new_session(int64_t ttl)
{
    Etcdserverpb__LeaseGrantRequest req = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
    req.ttl = ttl;
    Etcdserverpb__LeaseGrantResponse *r = (Etcdserverpb__LeaseGrantResponse *)ctl_rpc(
        "/etcdserverpb.Lease/LeaseGrant", &req.base, &etcdserverpb__lease_grant_response__descriptor);
    if (r->error && *r->error)
        ctl_die(EXIT_ERR, "%s", r->error);
    int st = ctl_session_start(r->id, ttl);
    if (st)
        ctl_die(EXIT_ERR, "%s", ctl_err_text(st, st == 4 ? "context deadline exceeded" : "connection closed"));
    return r->id;
}

/* Gets key and prints it as `get` would (display.Get). */
static void show_key(const ProtobufCBinaryData key)
{
    Etcdserverpb__RangeRequest req = ETCDSERVERPB__RANGE_REQUEST__INIT;
    req.key = key;
    Etcdserverpb__RangeResponse *r = (Etcdserverpb__RangeResponse *)ctl_rpc(
        "/etcdserverpb.KV/Range", &req.base, &etcdserverpb__range_response__descriptor);
    print_get(r);
    fflush(stdout);
}

static int wait_rpc(const char *path, const ProtobufCMessage *req,
                    const ProtobufCMessageDescriptor *d, ProtobufCMessage **out)
{
    struct ctl_reply r;
    if (ctl_call_wait(path, req, &r, 0))
        ctl_die(EXIT_ERR, "%s", ctl_err_text(r.status, r.message));
    *out = protobuf_c_message_unpack(d, NULL, r.len, r.data);
    if (!*out)
        ctl_die(EXIT_ERR, "cannot decode the reply");
    return 0;
}

static void unlock_key(ProtobufCBinaryData key)
{
    V3lockpb__UnlockRequest req = V3LOCKPB__UNLOCK_REQUEST__INIT;
    req.key = key;
    ctl_rpc("/v3lockpb.Lock/Unlock", &req.base, &v3lockpb__unlock_response__descriptor);
}

int cmd_lock(int argc, char **argv)
{
    int64_t ttl = 10;
    struct flag fl[] = {{"ttl", 0, F_INT, &ttl, false}, FEND};
    int n = ctl_parse(argc, argv, fl);
    if (n == 0)
        ctl_die(EXIT_BAD_ARGS, "lock takes a lock name argument and an optional command to execute");
    ctl_init_display();
    int64_t lease = new_session(ttl);
    V3lockpb__LockRequest req = V3LOCKPB__LOCK_REQUEST__INIT;
    req.name = (ProtobufCBinaryData){strlen(argv[0]), (uint8_t *)argv[0]};
    req.lease = lease;
    V3lockpb__LockResponse *r;
    wait_rpc("/v3lockpb.Lock/Lock", &req.base, &v3lockpb__lock_response__descriptor,
             (ProtobufCMessage **)&r);
    if (n > 1) {
        /* run the command holding the lock: ETCD_LOCK_KEY / ETCD_LOCK_REV */
        size_t ne = 0;
        while (environ[ne])
            ne++;
        char **env = calloc(ne + 3, sizeof *env);
        struct buf k = {0}, v = {0};
        buf_puts(&k, "ETCD_LOCK_KEY=");
        buf_put(&k, r->key.data, r->key.len);
        buf_put(&k, "", 1);
        buf_printf(&v, "ETCD_LOCK_REV=%" PRId64, r->header ? r->header->revision : 0);
        env[0] = k.p;
        env[1] = v.p;
        memcpy(env + 2, environ, ne * sizeof *env);
        char **cmd = calloc((size_t)n, sizeof *cmd);
        memcpy(cmd, argv + 1, (size_t)(n - 1) * sizeof *cmd);
        int sig = 0;
        int st = ctl_spawn_wait(cmd, env, &sig);
        unlock_key(r->key);
        if (st < 0 && st != -1)
            ctl_die(EXIT_ERR, "exec: \"%s\": executable file not found in $PATH", cmd[0]);
        if (sig) {
            /* Go's names are strsignal's, lower-cased ("killed") */
            char name[128];
            snprintf(name, sizeof name, "%s", strsignal(sig));
            name[0] = (char)tolower((unsigned char)name[0]);
            ctl_die(EXIT_ERR, "signal: %s", name);
        }
        if (st)
            ctl_die(EXIT_ERR, "exit status %d", st);
        return 0;
    }
    show_key(r->key);
    if (!ctl_wait_signal())
        ctl_die(EXIT_ERR, "session expired");
    unlock_key(r->key);
    return 0;
}

/* ---- elect ---- */

static bool on_observe(void *arg, const uint8_t *data, size_t len)
{
    V3electionpb__LeaderResponse *l = v3electionpb__leader_response__unpack(NULL, len, data);
    if (!l)
        return true;
    /* clientv3's Observe hands out a GetResponse holding the leader's key */
    Etcdserverpb__RangeResponse rr = ETCDSERVERPB__RANGE_RESPONSE__INIT;
    Mvccpb__KeyValue *kvs[1] = {l->kv};
    rr.header = l->header;
    if (l->kv) {
        rr.kvs = kvs;
        rr.n_kvs = 1;
    }
    print_get(&rr);
    fflush(stdout);
    v3electionpb__leader_response__free_unpacked(l, NULL);
    return true;
}

static void on_int(int sig)
{
    (void)sig;
    _exit(0); /* etcdctl: an interrupted observer ends without error */
}

int cmd_elect(int argc, char **argv)
{
    bool listen = false;
    struct flag fl[] = {{"listen", 'l', F_BOOL, &listen, false}, FEND};
    int n = ctl_parse(argc, argv, fl);
    if (n != 1 && n != 2)
        ctl_die(EXIT_BAD_ARGS, "elect takes one election name argument and an optional proposal argument");
    if (n == 1 && !listen)
        ctl_die(EXIT_BAD_ARGS, "no proposal argument but -l not set");
    if (n == 2 && listen)
        ctl_die(EXIT_BAD_ARGS, "proposal given but -l is set");
    ctl_init_display();
    ProtobufCBinaryData name = {strlen(argv[0]), (uint8_t *)argv[0]};
    if (listen) {
        signal(SIGINT, on_int);
        signal(SIGTERM, on_int);
        V3electionpb__LeaderRequest req = V3ELECTIONPB__LEADER_REQUEST__INIT;
        req.name = name;
        char *msg = NULL;
        int st = ctl_stream("/v3electionpb.Election/Observe", &req.base, on_observe, NULL, 0, &msg);
        if (st)
            ctl_die(EXIT_ERR, "%s", ctl_err_text(st, msg ? msg : ""));
        ctl_die(EXIT_ERR, "elect: observer lost");
    }
    int64_t lease = new_session(60);
    V3electionpb__CampaignRequest req = V3ELECTIONPB__CAMPAIGN_REQUEST__INIT;
    req.name = name;
    req.lease = lease;
    req.value = (ProtobufCBinaryData){strlen(argv[1]), (uint8_t *)argv[1]};
    V3electionpb__CampaignResponse *r;
    wait_rpc("/v3electionpb.Election/Campaign", &req.base,
             &v3electionpb__campaign_response__descriptor, (ProtobufCMessage **)&r);
    if (!r->leader)
        ctl_die(EXIT_ERR, "campaign: no leader key in the reply");
    show_key(r->leader->key);
    if (!ctl_wait_signal())
        ctl_die(EXIT_ERR, "elect: session expired");
    V3electionpb__ResignRequest rq = V3ELECTIONPB__RESIGN_REQUEST__INIT;
    rq.leader = r->leader;
    ctl_rpc("/v3electionpb.Election/Resign", &rq.base, &v3electionpb__resign_response__descriptor);
    return 0;
}
