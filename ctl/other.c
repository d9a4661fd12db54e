/* watch, lease, member, endpoint, alarm (etcdctl's watch_command.go,
 * lease_command.go, member_command.go, ep_command.go, alarm_command.go). */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl.h"

#define FEND {NULL, 0, 0, NULL, false}

/* ---- watch ---- */

static bool on_watch(void *arg, const uint8_t *data, size_t len)
{
    Etcdserverpb__WatchResponse *w = etcdserverpb__watch_response__unpack(NULL, len, data);
    if (!w)
        return true;
    if (w->created && !w->n_events) {
        /* clientv3 keeps the creation reply to itself */
        etcdserverpb__watch_response__free_unpacked(w, NULL);
        return true;
    }
    if (w->canceled) {
        const char *why = w->compact_revision ? "etcdserver: mvcc: required revision has been compacted"
                                              : (w->cancel_reason ? w->cancel_reason : "");
        fflush(stdout);
        fprintf(stderr, "watch was canceled (%s)\n", why);
    }
    print_watch(w);
    fflush(stdout);
    bool go_on = !w->canceled;
    etcdserverpb__watch_response__free_unpacked(w, NULL);
    return go_on;
}

char *ctl_watch_create(Etcdserverpb__WatchCreateRequest *cr, const char *key, const char *end,
                       bool prefix, int64_t rev, bool prev)
{
    etcdserverpb__watch_create_request__init(cr);
    cr->key = (ProtobufCBinaryData){strlen(key), (uint8_t *)key};
    if (end)
        cr->range_end = (ProtobufCBinaryData){strlen(end), (uint8_t *)end};
    char *e = prefix ? prefix_range(key, &cr->key, &cr->range_end) : NULL;
    cr->start_revision = rev;
    cr->prev_kv = prev;
    return e;
}

int cmd_watch(int argc, char **argv)
{
    bool interactive = false, prefix = false, prev = false;
    int64_t rev = 0;
    struct flag fl[] = {
        {"interactive", 'i', F_BOOL, &interactive, false},
        {"prefix", 0, F_BOOL, &prefix, false},
        {"rev", 0, F_INT, &rev, false},
        {"prev-kv", 0, F_BOOL, &prev, false},
        FEND,
    };
    int n = ctl_parse(argc, argv, fl);
    const char *env_key = getenv("ETCDCTL_WATCH_KEY"), *env_end = getenv("ETCDCTL_WATCH_RANGE_END");
    if ((!env_key || !*env_key) && env_end && *env_end)
        ctl_die(EXIT_BAD_ARGS, "ETCDCTL_WATCH_KEY is empty but got ETCDCTL_WATCH_RANGE_END=\"%s\"", env_end);
    if (interactive) {
        ctl_init_display();
        return ctl_watch_interactive(prefix, rev, prev);
    }
    const char *key, *end = NULL;
    if (env_key && *env_key) {
        if (n > 0)
            ctl_die(EXIT_BAD_ARGS, "bad number of arguments (found conflicting environment key)");
        key = env_key;
        end = env_end && *env_end ? env_end : NULL;
    } else {
        if (n < 1)
            ctl_die(EXIT_BAD_ARGS, "bad number of arguments");
        key = argv[0];
        if (n >= 2)
            end = argv[1];
    }
    if (end && prefix)
        ctl_die(EXIT_BAD_ARGS, "`range_end` and `--prefix` are mutually exclusive");
    ctl_init_display();
    Etcdserverpb__WatchCreateRequest cr;
    ctl_watch_create(&cr, key, end, prefix, rev, prev);
    Etcdserverpb__WatchRequest wr = ETCDSERVERPB__WATCH_REQUEST__INIT;
    wr.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
    wr.create_request = &cr;
    char *msg = NULL;
    int st = ctl_stream("/etcdserverpb.Watch/Watch", &wr.base, on_watch, NULL, 0, &msg);
    if (st == 4 && msg && !strcmp(msg, "context deadline exceeded"))
        ctl_die(EXIT_BAD_CONN, "context deadline exceeded");
    ctl_die(EXIT_INTERRUPTED, "watch is canceled by the server");
}

/* ---- lease ---- */

static int64_t lease_arg(const char *s)
{
    char *end;
    errno = 0;
    long long id = strtoll(s, &end, 16);
    if (!*s || *end || errno)
        ctl_die(EXIT_BAD_ARGS, "bad lease ID arg (strconv.ParseInt: parsing \"%s\": %s), expecting ID in Hex",
                s, errno ? "value out of range" : "invalid syntax");
    return id;
}

static int lease_grant(int argc, char **argv)
{
    int n = ctl_parse(argc, argv, (struct flag[]){FEND});
    if (n != 1)
        ctl_die(EXIT_BAD_ARGS, "lease grant command needs TTL argument");
    char *end;
    errno = 0;
    long long ttl = strtoll(argv[0], &end, 10);
    if (!*argv[0] || *end || errno)
        ctl_die(EXIT_BAD_ARGS, "bad TTL (strconv.ParseInt: parsing \"%s\": %s)", argv[0],
                errno ? "value out of range" : "invalid syntax");
    ctl_init_display();
    Etcdserverpb__LeaseGrantRequest req = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
    req.ttl = ttl;
    print_grant((Etcdserverpb__LeaseGrantResponse *)ctl_rpc_at(
        NULL, "/etcdserverpb.Lease/LeaseGrant", &req.base,
        &etcdserverpb__lease_grant_response__descriptor, EXIT_ERR, "failed to grant lease (%s)"));
    return 0;
}

static int lease_revoke(int argc, char **argv)
{
    int n = ctl_parse(argc, argv, (struct flag[]){FEND});
    if (n != 1)
        ctl_die(EXIT_BAD_ARGS, "lease revoke command needs 1 argument");
    int64_t id = lease_arg(argv[0]);
    ctl_init_display();
    Etcdserverpb__LeaseRevokeRequest req = ETCDSERVERPB__LEASE_REVOKE_REQUEST__INIT;
    req.id = id;
    print_revoke(id, (Etcdserverpb__LeaseRevokeResponse *)ctl_rpc_at(
        NULL, "/etcdserverpb.Lease/LeaseRevoke", &req.base,
        &etcdserverpb__lease_revoke_response__descriptor, EXIT_ERR, "failed to revoke lease (%s)"));
    return 0;
}

static int lease_ttl(int argc, char **argv)
{
    bool keys = false;
    struct flag fl[] = {{"keys", 0, F_BOOL, &keys, false}, FEND};
    int n = ctl_parse(argc, argv, fl);
    if (n != 1)
        ctl_die(EXIT_BAD_ARGS, "lease timetolive command needs lease ID as argument");
    int64_t id = lease_arg(argv[0]);
    ctl_init_display();
    Etcdserverpb__LeaseTimeToLiveRequest req = ETCDSERVERPB__LEASE_TIME_TO_LIVE_REQUEST__INIT;
    req.id = id;
    req.keys = keys;
    print_ttl((Etcdserverpb__LeaseTimeToLiveResponse *)ctl_rpc_at(
                  NULL, "/etcdserverpb.Lease/LeaseTimeToLive", &req.base,
                  &etcdserverpb__lease_time_to_live_response__descriptor, EXIT_BAD_CONN, NULL),
              keys);
    return 0;
}

static int lease_list(int argc, char **argv)
{
    ctl_parse(argc, argv, (struct flag[]){FEND});
    ctl_init_display();
    Etcdserverpb__LeaseLeasesRequest req = ETCDSERVERPB__LEASE_LEASES_REQUEST__INIT;
    print_leases((Etcdserverpb__LeaseLeasesResponse *)ctl_rpc_at(
        NULL, "/etcdserverpb.Lease/LeaseLeases", &req.base,
        &etcdserverpb__lease_leases_response__descriptor, EXIT_BAD_CONN, NULL));
    return 0;
}

struct ka {
    int64_t id;
    bool once;
    bool expired;
    int count;
};

static bool on_keepalive(void *arg, const uint8_t *data, size_t len)
{
    struct ka *k = arg;
    Etcdserverpb__LeaseKeepAliveResponse *r =
        etcdserverpb__lease_keep_alive_response__unpack(NULL, len, data);
    if (!r)
        return true;
    if (r->ttl <= 0) {
        k->expired = true;
        etcdserverpb__lease_keep_alive_response__free_unpacked(r, NULL);
        return false;
    }
    print_keepalive(r);
    k->count++;
    /* clientv3 renews every TTL/3 seconds */
    ctl_stream_interval_ms = r->ttl * 1000 / 3;
    if (ctl_stream_interval_ms < 500)
        ctl_stream_interval_ms = 500;
    etcdserverpb__lease_keep_alive_response__free_unpacked(r, NULL);
    return !k->once;
}

static int lease_keepalive(int argc, char **argv)
{
    bool once = false;
    struct flag fl[] = {{"once", 0, F_BOOL, &once, false}, FEND};
    int n = ctl_parse(argc, argv, fl);
    if (n != 1)
        ctl_die(EXIT_BAD_ARGS, "lease keep-alive command needs lease ID as argument");
    int64_t id = lease_arg(argv[0]);
    ctl_init_display();
    Etcdserverpb__LeaseKeepAliveRequest req = ETCDSERVERPB__LEASE_KEEP_ALIVE_REQUEST__INIT;
    req.id = id;
    struct ka k = {.id = id, .once = once};
    char *msg = NULL;
    int st = ctl_stream("/etcdserverpb.Lease/LeaseKeepAlive", &req.base, on_keepalive, &k,
                        once ? g.command_timeout_ms : 0, &msg);
    if (once) {
        if (k.expired)
            ctl_die(EXIT_BAD_CONN, "etcdserver: requested lease not found");
        if (!k.count)
            ctl_die(EXIT_BAD_CONN, "%s", st ? ctl_err_text(st, msg ? msg : "") : "context canceled");
        return 0;
    }
    if (g.out == OUT_SIMPLE)
        printf("lease %016" PRIx64 " expired or revoked.\n", (uint64_t)id);
    return 0;
}

int cmd_lease(int argc, char **argv)
{
    if (argc < 1) {
        printf("lease <subcommand>: grant, revoke, timetolive, list, keep-alive\n");
        return 0;
    }
    const char *sub = argv[0];
    if (!strcmp(sub, "grant"))
        return lease_grant(argc - 1, argv + 1);
    if (!strcmp(sub, "revoke"))
        return lease_revoke(argc - 1, argv + 1);
    if (!strcmp(sub, "timetolive"))
        return lease_ttl(argc - 1, argv + 1);
    if (!strcmp(sub, "list"))
        return lease_list(argc - 1, argv + 1);
    if (!strcmp(sub, "keep-alive"))
        return lease_keepalive(argc - 1, argv + 1);
    ctl_die(EXIT_ERR, "unknown command \"%s\" for \"ketchctl lease\"", sub);
}

/* ---- member ---- */

static Etcdserverpb__MemberListResponse *member_list_call(void)
{
    Etcdserverpb__MemberListRequest req = ETCDSERVERPB__MEMBER_LIST_REQUEST__INIT;
    return (Etcdserverpb__MemberListResponse *)ctl_rpc(
        "/etcdserverpb.Cluster/MemberList", &req.base, &etcdserverpb__member_list_response__descriptor);
}

int cmd_member(int argc, char **argv)
{
    if (argc < 1 || strcmp(argv[0], "list")) {
        int rc = argc >= 1 ? ctl_member_admin(argv[0], argc - 1, argv + 1) : -1;
        if (rc >= 0)
            return rc;
        ctl_die(EXIT_ERR, "member <subcommand>: list, add, remove, update, promote");
    }
    ctl_parse(argc - 1, argv + 1, (struct flag[]){FEND});
    ctl_init_display();
    print_members(member_list_call());
    return 0;
}

/* ---- endpoint ---- */

/* endpointsFromCluster: --cluster asks the member list for client URLs. */
char **ctl_endpoints(bool cluster, size_t *n)
{
    if (!cluster) {
        *n = g.n_endpoints;
        return g.endpoints;
    }
    Etcdserverpb__MemberListResponse *m = member_list_call();
    char **eps = NULL;
    *n = 0;
    for (size_t i = 0; i < m->n_members; i++)
        for (size_t j = 0; j < m->members[i]->n_clienturls; j++) {
            eps = realloc(eps, (*n + 1) * sizeof *eps);
            eps[(*n)++] = m->members[i]->clienturls[j];
        }
    return eps;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int cmd_endpoint(int argc, char **argv)
{
    bool cluster = false;
    int64_t rev = 0;
    if (argc < 1)
        ctl_die(EXIT_ERR, "endpoint <subcommand>: health, status");
    const char *sub = argv[0];
    struct flag fl[] = {{"cluster", 0, F_BOOL, &cluster, false}, {"rev", 0, F_INT, &rev, false}, FEND};
    ctl_parse(argc - 1, argv + 1, fl);
    ctl_init_display();
    size_t n;
    char **eps = ctl_endpoints(cluster, &n);
    if (!strcmp(sub, "status")) {
        struct ep_status *st = calloc(n + 1, sizeof *st);
        size_t ok = 0;
        bool err = false;
        for (size_t i = 0; i < n; i++) {
            Etcdserverpb__StatusRequest req = ETCDSERVERPB__STATUS_REQUEST__INIT;
            st[ok].ep = eps[i];
            st[ok].resp = (Etcdserverpb__StatusResponse *)ctl_rpc_each(
                eps[i], "/etcdserverpb.Maintenance/Status", &req.base,
                &etcdserverpb__status_response__descriptor,
                "Failed to get the status of endpoint %s (%s)\n", NULL);
            if (st[ok].resp)
                ok++;
            else
                err = true;
        }
        print_ep_status(st, ok);
        if (err)
            ctl_die(EXIT_ERR, "context deadline exceeded");
        return 0;
    }
    if (!strcmp(sub, "health")) {
        struct ep_health *h = calloc(n + 1, sizeof *h);
        bool err = false;
        for (size_t i = 0; i < n; i++) {
            Etcdserverpb__RangeRequest req = ETCDSERVERPB__RANGE_REQUEST__INIT;
            req.key = (ProtobufCBinaryData){6, (uint8_t *)"health"};
            struct ctl_reply r;
            int64_t t0 = now_ns();
            int st = ctl_call_ep(eps[i], "/etcdserverpb.KV/Range", &req.base, &r);
            struct buf b = {0};
            out_duration(&b, now_ns() - t0);
            h[i].ep = eps[i];
            snprintf(h[i].took, sizeof h[i].took, "%s", b.p);
            buf_free(&b);
            h[i].health = st == 0 || !strcmp(r.message ? r.message : "", "etcdserver: permission denied");
            if (!h[i].health) {
                h[i].error = strdup(ctl_err_text(st, r.message));
                err = true;
            }
        }
        print_ep_health(h, n);
        if (err)
            ctl_die(EXIT_ERR, "unhealthy cluster");
        return 0;
    }
    if (!strcmp(sub, "hashkv"))
        return ctl_endpoint_hashkv(eps, n, rev);
    ctl_die(EXIT_ERR, "unknown command \"%s\" for \"ketchctl endpoint\"", sub);
}

/* ---- alarm ---- */

static Etcdserverpb__AlarmResponse *alarm_call(const Etcdserverpb__AlarmRequest *req)
{
    return (Etcdserverpb__AlarmResponse *)ctl_rpc("/etcdserverpb.Maintenance/Alarm", &req->base,
                                                  &etcdserverpb__alarm_response__descriptor);
}

int cmd_alarm(int argc, char **argv)
{
    if (argc < 1)
        ctl_die(EXIT_ERR, "alarm <subcommand>: list, disarm");
    const char *sub = argv[0];
    int n = ctl_parse(argc - 1, argv + 1, (struct flag[]){FEND});
    Etcdserverpb__AlarmRequest req = ETCDSERVERPB__ALARM_REQUEST__INIT;
    if (!strcmp(sub, "list")) {
        if (n)
            ctl_die(EXIT_BAD_ARGS, "alarm list command accepts no arguments");
        req.action = ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__GET;
    } else if (!strcmp(sub, "disarm")) {
        if (n)
            ctl_die(EXIT_BAD_ARGS, "alarm disarm command accepts no arguments");
        /* clientv3's AlarmDisarm of every alarm: list them, disarm each,
         * and answer with the disarmed ones (no header) */
        ctl_init_display();
        req.action = ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__GET;
        Etcdserverpb__AlarmResponse *list = alarm_call(&req);
        Etcdserverpb__AlarmResponse ret = ETCDSERVERPB__ALARM_RESPONSE__INIT;
        ret.alarms = calloc(list->n_alarms + 1, sizeof *ret.alarms);
        for (size_t i = 0; i < list->n_alarms; i++) {
            Etcdserverpb__AlarmRequest d = ETCDSERVERPB__ALARM_REQUEST__INIT;
            d.action = ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__DEACTIVATE;
            d.memberid = list->alarms[i]->memberid;
            d.alarm = list->alarms[i]->alarm;
            Etcdserverpb__AlarmResponse *dresp = alarm_call(&d);
            for (size_t j = 0; j < dresp->n_alarms; j++) {
                ret.alarms = realloc(ret.alarms, (ret.n_alarms + 1) * sizeof *ret.alarms);
                ret.alarms[ret.n_alarms++] = dresp->alarms[j];
            }
        }
        print_alarm(&ret);
        return 0;
    } else {
        ctl_die(EXIT_ERR, "unknown command \"%s\" for \"ketchctl alarm\"", sub);
    }
    ctl_init_display();
    print_alarm(alarm_call(&req));
    return 0;
}
