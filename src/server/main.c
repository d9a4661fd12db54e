/* ketch: start-up, the loop, and an orderly stop on SIGTERM/SIGINT. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <uv.h>

#include "api/api.h"
#include "api/auth.h"
#include "api/lease.h"
#include "api/catchup.h"
#include "api/maintenance.h"
#include "gateway/gateway.h"
#include "api/watch.h"
#include "grpc/grpc.h"
#include "member/member.h"
#include "member/peer.h"
#include "mvcc/mvcc.h"
#include "server/config.h"
#include "server/identity.h"
#include "server/join.h"
#include "server/security.h"
#include "snapshot/snapshot.h"
#include "util/dirlock.h"
#include "util/errors.h"
#include "util/log.h"

#define KETCH_VERSION "0.1.0"
#define ETCD_API_VERSION "3.5"
/* What Status reports as the server version: the etcd release whose API we
 * match, so clients that gate features on it behave as with etcd. */
#define ETCD_COMPAT_VERSION "3.5.0"

/* Grpc-go's server allows this much over --max-request-bytes for framing
 * (etcd's grpcOverheadBytes), so "request is too large" comes from etcd's
 * own check rather than from the transport. */
#define GRPC_OVERHEAD_BYTES (512 * 1024)
#define DEFAULT_QUOTA_BYTES (2LL * 1024 * 1024 * 1024)
#define MAX_QUOTA_BYTES (8LL * 1024 * 1024 * 1024)
/* LMDB's map is address space, not disk: make it comfortably larger than
 * the quota so the quota (not the map) is what refuses writes. */
#define MIN_MAP_BYTES (8LL * 1024 * 1024 * 1024)
/* Group commit of the store (mvcc_flush): at most this long after an apply.
 * A commit costs one fdatasync of the new pages (~0.15 ms measured on the
 * development disk) and blocks the loop; replies do not wait for it (the
 * Raft log is the durable record). */
#define FLUSH_MS 10

struct server {
    uv_loop_t *loop;
    struct config cfg;
    struct identity id;
    api_server api;
    grpc_server *grpc;
    grpc_server *metrics; /* --listen-metrics-urls; NULL when none */
    tls_ctx *client_tls; /* NULL unless some client URL is https */
    tls_ctx *peer_server_tls, *peer_client_tls; /* NULL unless the peer URLs are https */
    peer_net *peer;         /* the peer port: Raft transport and ketchpb.Internal */
    grpc_server *peer_grpc; /* ketchpb.Internal, fed by `peer` */
    struct gateway gateway; /* HTTP/1.1 on the client ports */
    mvcc_store *store;
    member *member;
    member *stopped_member; /* freed once the loop has run dry */
    uv_signal_t sigterm, sigint;
    uv_check_t flush_check; /* arms flush_timer when the store has a batch */
    uv_timer_t flush_timer;
    struct member_peer *peers;
    char **peer_addrs;
    int exit_code;
    bool stopping;
};

/* Called before libraft drops log entries: the store must be on disk. */
static int member_sync(void *ctx) { return mvcc_sync(((api_server *)ctx)->store); }

static void on_flush_timer(uv_timer_t *t)
{
    struct server *srv = t->data;
    int rv = mvcc_flush(srv->store);
    if (rv != 0) {
        /* the batch is lost but was applied in memory: only a restart (which
         * replays the Raft log from the last commit) is consistent */
        log_error("store commit failed (%s): exiting", kerr_text(rv));
        exit(1);
    }
}

static void on_flush_check(uv_check_t *c)
{
    struct server *srv = c->data;
    if (mvcc_batch_pending(srv->store) > 0 && !uv_is_active((uv_handle_t *)&srv->flush_timer))
        uv_timer_start(&srv->flush_timer, on_flush_timer, FLUSH_MS, 0);
}

static void on_member_stopped(void *data)
{
    struct server *srv = data;
    srv->stopped_member = srv->member;
    srv->member = NULL;
    srv->api.member = NULL;
    uv_close((uv_handle_t *)&srv->sigterm, NULL);
    uv_close((uv_handle_t *)&srv->sigint, NULL);
    uv_close((uv_handle_t *)&srv->flush_check, NULL);
    uv_close((uv_handle_t *)&srv->flush_timer, NULL); /* main syncs the store after the loop */
}

static void on_grpc_closed(void *data)
{
    struct server *srv = data;
    srv->grpc = NULL;
    if (srv->member != NULL)
        member_stop(srv->member, on_member_stopped, srv);
    else
        on_member_stopped(srv);
}

static void server_stop(struct server *srv)
{
    if (srv->stopping) return;
    srv->stopping = true;
    log_info("stopping");
    lease_api_stop(&srv->api);
    maint_api_stop(&srv->api);
    watch_api_stop(&srv->api);
    if (srv->metrics != NULL) grpc_server_close(srv->metrics, NULL, NULL);
    srv->metrics = NULL;
    if (srv->peer_grpc != NULL) grpc_server_close(srv->peer_grpc, NULL, NULL);
    srv->peer_grpc = NULL;
    api_cluster_stop(&srv->api);
    api_forward_stop(&srv->api);
    if (srv->grpc != NULL)
        grpc_server_close(srv->grpc, on_grpc_closed, srv);
    else
        on_grpc_closed(srv);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct server *srv = h->data;
    log_info("received %s", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    server_stop(srv);
}

/* "http://localhost:2380" → "127.0.0.1:2380" for libraft's transport. */
static char *raft_address(const char *url)
{
    char *host;
    int port;
    if (config_parse_url(url, &host, &port) != 0) return NULL;
    char *out = malloc(strlen(host) + 16);
    sprintf(out, "%s:%d", strcmp(host, "localhost") == 0 ? "127.0.0.1" : host, port);
    free(host);
    return out;
}

static int listen_clients(struct server *srv)
{
    size_t n;
    char **urls = config_split(srv->cfg.listen_client_urls, &n);
    int rv = 0;
    bool need_tls = false;
    for (size_t i = 0; i < n; i++) need_tls |= strncmp(urls[i], "https://", 8) == 0;
    if (security_setup(&srv->cfg, need_tls, &srv->client_tls) != 0) rv = -1;
    for (size_t i = 0; i < n && rv == 0; i++) {
        char *host;
        int port;
        bool tls = strncmp(urls[i], "https://", 8) == 0;
        if ((!tls && strncmp(urls[i], "http://", 7) != 0) ||
            config_parse_url(urls[i], &host, &port) != 0) {
            fprintf(stderr, "ketch: --listen-client-urls: unsupported URL %s (want http:// or "
                            "https://host:port)\n", urls[i]);
            rv = -1;
            break;
        }
        int err = grpc_server_listen_tls(srv->grpc, host, port, tls ? srv->client_tls : NULL);
        if (err != 0) {
            fprintf(stderr, "ketch: listen tcp %s:%d: bind: %s\n", host, port,
                    err == UV_EADDRINUSE ? "address already in use" : uv_strerror(err));
            rv = -1;
        } else {
            log_info("serving client requests on %s", urls[i]);
        }
        free(host);
    }
    config_strv_free(urls);
    return rv;
}

/* etcd's --listen-metrics-urls: GET /metrics and /health only (https ones
 * with the client TLS settings, as etcd). */
static int listen_metrics(struct server *srv)
{
    size_t n;
    char **urls = config_split(srv->cfg.listen_metrics_urls, &n);
    int rv = 0;
    if (n > 0 && grpc_server_new(&srv->metrics, srv->loop, NULL, 0, NULL, 64 * 1024) != 0) {
        fprintf(stderr, "ketch: cannot create the metrics server\n");
        rv = -1;
    }
    if (srv->metrics) {
        uint64_t ms = 0;
        config_parse_duration_ms(srv->cfg.connection_timeout, &ms);
        grpc_server_set_handshake_timeout(srv->metrics, ms);
        gateway_start_metrics(&srv->gateway, srv->metrics);
    }
    for (size_t i = 0; i < n && rv == 0; i++) {
        char *host;
        int port;
        bool tls = strncmp(urls[i], "https://", 8) == 0;
        if ((!tls && strncmp(urls[i], "http://", 7) != 0) ||
            config_parse_url(urls[i], &host, &port) != 0) {
            fprintf(stderr, "ketch: --listen-metrics-urls: unsupported URL %s (want http:// or "
                            "https://host:port)\n", urls[i]);
            rv = -1;
            break;
        }
        if (tls && srv->client_tls == NULL) {
            fprintf(stderr, "ketch: --listen-metrics-urls: %s needs the client TLS flags "
                            "(--cert-file, --key-file or --auto-tls) and an https client URL\n",
                    urls[i]);
            free(host);
            rv = -1;
            break;
        }
        int err = grpc_server_listen_tls(srv->metrics, host, port, tls ? srv->client_tls : NULL);
        if (err != 0) {
            fprintf(stderr, "ketch: listen tcp %s:%d: bind: %s\n", host, port,
                    err == UV_EADDRINUSE ? "address already in use" : uv_strerror(err));
            rv = -1;
        } else {
            log_info("serving metrics and health on %s", urls[i]);
        }
        free(host);
    }
    config_strv_free(urls);
    return rv;
}

/* --restore-snapshot FILE: a data dir without a store yet gets one built
 * from an etcd-format snapshot (src/snapshot), as `ketchctl snapshot
 * restore` would; once the store exists the flag is ignored, so a member
 * restarted with the same flags keeps what it wrote since. */
static int restore_snapshot(struct server *srv, const char *kv_dir)
{
    const char *file = srv->cfg.restore_snapshot;
    if (file == NULL || file[0] == 0) return 0;
    char db[4200];
    snprintf(db, sizeof db, "%s/data.mdb", kv_dir);
    if (access(db, F_OK) == 0) {
        log_info("--restore-snapshot %s ignored: %s already holds a store", file, kv_dir);
        return 0;
    }
    char err[600] = "";
    int64_t rev = 0;
    if (snapshot_restore(file, kv_dir, srv->cfg.restore_skip_hash_check, &rev, err, sizeof err) != 0) {
        fprintf(stderr, "ketch: cannot restore snapshot %s: %s\n", file, err);
        return -1;
    }
    log_info("restored snapshot %s into %s (revision %" PRId64 ")", file, kv_dir, rev);
    return 0;
}

/* The member table of a fresh store: --initial-cluster. */
static int init_members(struct server *srv)
{
    api_server *a = &srv->api;
    size_t n = srv->id.n_members;
    struct api_member_info *ms = calloc(n ? n : 1, sizeof *ms);
    if (ms == NULL) return KERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        struct identity_member *im = &srv->id.members[i];
        ms[i].id = im->id;
        ms[i].name = im->name;
        ms[i].peer_urls = im->peer_urls;
        ms[i].n_peer_urls = im->n_peer_urls;
    }
    int rv = api_cluster_init(a, ms, n);
    free(ms);
    return rv;
}

/* HTTP/2 on the peer port: a follower forwarding to us. */
static void serve_peer_http2(void *ctx, uv_os_sock_t fd, const uint8_t *pre, size_t n)
{
    struct server *srv = ctx;
    if (srv->peer_grpc == NULL || grpc_server_adopt_data(srv->peer_grpc, fd, NULL, pre, n) != 0)
        close(fd);
}

/* The peer port: TLS from the --peer-* flags when the peer URLs are https,
 * our libraft transport, and the gRPC server for ketchpb.Internal. */
static int setup_peer(struct server *srv)
{
    const char *self_url = srv->id.members[srv->id.self].peer_urls[0];
    bool https = strncmp(self_url, "https://", 8) == 0 ||
                 strncmp(srv->cfg.listen_peer_urls, "https://", 8) == 0;
    if (security_peer_setup(&srv->cfg, https, &srv->peer_server_tls, &srv->peer_client_tls) != 0)
        return -1;
    size_t n;
    const grpc_method *methods = api_peer_methods(&n);
    if (grpc_server_new(&srv->peer_grpc, srv->loop, methods, n, &srv->api,
                        srv->cfg.max_request_bytes + GRPC_OVERHEAD_BYTES) != 0 ||
        peer_net_new(&srv->peer, srv->loop, srv->peer_server_tls, srv->peer_client_tls,
                     serve_peer_http2, srv) != 0) {
        fprintf(stderr, "ketch: cannot set up the peer port\n");
        return -1;
    }
    if (srv->peer_server_tls != NULL &&
        peer_net_set_allowed_cn(srv->peer, srv->cfg.peer_cert_allowed_cn) != 0)
        return -1;
    /* listen on every --listen-peer-urls URL, advertise
     * --initial-advertise-peer-urls, as etcd: they differ behind a proxy,
     * and a peer dials the first of our advertised URLs in sorted order */
    size_t n_listen = 0;
    char **listen = config_split(srv->cfg.listen_peer_urls, &n_listen);
    char **binds = calloc(n_listen + 1, sizeof *binds);
    int rv = binds != NULL ? 0 : -1;
    for (size_t i = 0; i < n_listen && rv == 0; i++)
        if ((binds[i] = raft_address(listen[i])) == NULL) {
            fprintf(stderr, "ketch: --listen-peer-urls: unsupported URL %s (want http:// or "
                            "https://host:port)\n", listen[i]);
            rv = -1;
        }
    if (rv == 0 && n_listen > PEER_MAX_BINDS) {
        fprintf(stderr, "ketch: --listen-peer-urls: at most %d URLs\n", PEER_MAX_BINDS);
        rv = -1;
    }
    if (rv == 0) rv = peer_net_set_bind_addresses(srv->peer, binds, n_listen);
    config_strv_free(binds);
    config_strv_free(listen);
    if (rv != 0) return -1;
    srv->api.peer = srv->peer;
    return 0;
}

static int start_member(struct server *srv)
{
    size_t n = srv->id.n_members;
    srv->peers = calloc(n, sizeof *srv->peers);
    srv->peer_addrs = calloc(n + 1, sizeof *srv->peer_addrs);
    for (size_t i = 0; i < n; i++) {
        srv->peer_addrs[i] = raft_address(srv->id.members[i].peer_urls[0]);
        if (srv->peer_addrs[i] == NULL) {
            fprintf(stderr, "ketch: bad peer URL %s\n", srv->id.members[i].peer_urls[0]);
            return -1;
        }
        srv->peers[i].id = srv->id.members[i].id;
        srv->peers[i].address = srv->peer_addrs[i];
    }
    char raft_dir[4096];
    snprintf(raft_dir, sizeof raft_dir, "%s/member/raft", srv->cfg.data_dir);
    /* the peer transport listens on --listen-peer-urls (setup_peer) */
    struct member_config mc = {
        .dir = raft_dir,
        .id = srv->id.members[srv->id.self].id,
        .address = srv->peer_addrs[srv->id.self],
        .peers = srv->peers,
        .n_peers = n,
        .join = strcmp(srv->cfg.initial_cluster_state, "existing") == 0,
        .applied_index = mvcc_applied_index(srv->store),
        .heartbeat_ms = (unsigned)srv->cfg.heartbeat_interval,
        .election_ms = (unsigned)srv->cfg.election_timeout,
        .snapshot_threshold = (unsigned)srv->cfg.snapshot_count,
        .snapshot_trailing = (unsigned)srv->cfg.snapshot_catchup_entries,
        .copy = api_catchup_copy, /* whole-store snapshots (api/catchup.c) */
        .install = api_catchup_install,
        .copy_pin = api_catchup_pin,
        .apply = api_apply,
        .apply_ctx = &srv->api,
        .sync = member_sync,
        .transport = peer_net_transport(srv->peer),
    };
    int rv = member_start(&srv->member, srv->loop, &mc);
    if (rv != 0) {
        fprintf(stderr, "ketch: cannot start the Raft member: %s\n", kerr_text(rv));
        return -1;
    }
    srv->api.member = srv->member;
    return 0;
}

/* As Go's runtime does at start (since Go 1.19): the soft limit on open
 * files goes up to the hard limit, so thousands of client connections
 * (Kubernetes' watchers) do not run out of descriptors. */
/* go-humanize's Bytes (SI units), which etcd's quota log lines use:
 * 10737418240 -> "11 GB", 8589934592 -> "8.6 GB". */
static void humanize_bytes(char *out, size_t len, int64_t n)
{
    static const char *const units[] = {"B", "kB", "MB", "GB", "TB", "PB", "EB"};
    if (n < 10) {
        snprintf(out, len, "%lld B", (long long)n);
        return;
    }
    double v = (double)n;
    int e = 0;
    while (v >= 1000 && e < 6) v /= 1000, e++;
    v = (double)(long long)(v * 10 + 0.5) / 10;
    snprintf(out, len, v < 10 ? "%.1f %s" : "%.0f %s", v, units[e]);
}

/* etcd's NewBackendQuota log lines (etcd 3.5's texts). As etcd, a quota
 * above 8 GiB is only warned about, then used as it is. */
static void log_quota(int64_t configured, int64_t quota)
{
    char size[32], max[32];
    humanize_bytes(size, sizeof size, quota);
    humanize_bytes(max, sizeof max, MAX_QUOTA_BYTES);
    if (configured < 0) {
        log_info("disabled backend quota: quota-name=v3-applier quota-size-bytes=%lld",
                 (long long)configured);
        return;
    }
    if (configured == 0) {
        log_info("enabled backend quota with default value: quota-name=v3-applier "
                 "quota-size-bytes=%lld quota-size=\"%s\"", (long long)quota, size);
        return;
    }
    if (quota > MAX_QUOTA_BYTES)
        log_warn("quota exceeds the maximum value: quota-name=v3-applier quota-size-bytes=%lld "
                 "quota-size=\"%s\" quota-maximum-size-bytes=%lld quota-maximum-size=\"%s\"",
                 (long long)quota, size, (long long)MAX_QUOTA_BYTES, max);
    log_info("enabled backend quota: quota-name=v3-applier quota-size-bytes=%lld quota-size=\"%s\"",
             (long long)quota, size);
}

/* The largest map of at most `want` bytes the address space can hold
 * (halving from `want`, not below `floor`): LMDB maps the whole map at
 * open, and Linux gives a process 128 TiB, less under ulimit -v. */
static int64_t mappable(int64_t want, int64_t floor)
{
    for (int64_t m = want; m > floor; m /= 2) {
        void *p = mmap(NULL, (size_t)m, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                       -1, 0);
        if (p != MAP_FAILED) {
            munmap(p, (size_t)m);
            return m;
        }
    }
    return floor;
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max) return;
    rlim_t was = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
        log_debug("open files limit raised from %llu to %llu", (unsigned long long)was,
                  (unsigned long long)rl.rlim_max);
}

int main(int argc, char **argv)
{
    static struct server srv;
    char **self_client_urls = NULL;
    int rv = config_parse(&srv.cfg, argc, argv);
    if (rv != 0) {
        config_free(&srv.cfg);
        return rv;
    }
    if (srv.cfg.show_help) {
        config_usage(stdout);
        config_free(&srv.cfg);
        return 0;
    }
    if (srv.cfg.show_version) {
        printf("ketch Version: %s\netcd API Version: %s\n", KETCH_VERSION, ETCD_API_VERSION);
        config_free(&srv.cfg);
        return 0;
    }
    enum log_level level;
    if (log_parse_level(srv.cfg.log_level, &level) != 0) {
        fprintf(stderr, "invalid value \"%s\" for flag -log-level: want debug, info, warn or error\n",
                srv.cfg.log_level);
        config_free(&srv.cfg);
        return 2;
    }
    log_set_level(level);
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();

    srv.exit_code = 1;
    srv.loop = uv_default_loop();
    if (identity_from_cluster(&srv.id, srv.cfg.initial_cluster, srv.cfg.initial_cluster_token,
                              srv.cfg.name) != 0)
        goto out_config;

    api_server *a = &srv.api;
    a->loop = srv.loop;
    a->max_request_bytes = srv.cfg.max_request_bytes;
    a->max_txn_ops = (unsigned)srv.cfg.max_txn_ops;
    /* as etcd: 0 is the default quota, a negative one disables it, one
     * above 8 GiB is warned about and used as it is */
    a->quota_bytes = srv.cfg.quota_backend_bytes == 0 ? DEFAULT_QUOTA_BYTES
                                                      : srv.cfg.quota_backend_bytes;
    log_quota(srv.cfg.quota_backend_bytes, a->quota_bytes);
    a->version = ETCD_COMPAT_VERSION;

    size_t n_methods;
    const grpc_method *methods = api_methods(&n_methods);
    if (grpc_server_new(&srv.grpc, srv.loop, methods, n_methods, a,
                        srv.cfg.max_request_bytes + GRPC_OVERHEAD_BYTES) != 0) {
        fprintf(stderr, "ketch: cannot create the gRPC server\n");
        goto out_identity;
    }
    srv.gateway = (struct gateway){.grpc = srv.grpc, .api = a, .version = ETCD_COMPAT_VERSION,
                                   .cluster_version = ETCD_COMPAT_VERSION};
    gateway_start(&srv.gateway);
    uint64_t conn_timeout_ms = 0;
    config_parse_duration_ms(srv.cfg.connection_timeout, &conn_timeout_ms);
    grpc_server_set_handshake_timeout(srv.grpc, conn_timeout_ms);
    /* Bind the client ports before touching the data dir: a port in use
     * stops us with nothing written. */
    if (listen_clients(&srv) != 0 || listen_metrics(&srv) != 0) goto out_grpc;
    if (join_fetch_identity(&srv.id, &srv.cfg) != 0) goto out_grpc; /* issue 5 */
    if (identity_prepare_data_dir(&srv.id, srv.cfg.data_dir) != 0) goto out_grpc;
    /* held until exit (the kernel drops it, also on kill -9) */
    if (dirlock_take(srv.cfg.data_dir, false) < 0) {
        fprintf(stderr, "ketch: data dir %s is in use by another process (%s/member/lock: %s)\n",
                srv.cfg.data_dir, srv.cfg.data_dir,
                errno == EWOULDBLOCK ? "locked" : strerror(errno));
        goto out_grpc;
    }
    a->member_id = srv.id.members[srv.id.self].id;
    a->cluster_id = srv.id.cluster_id;
    a->self_name = srv.cfg.name;
    self_client_urls = config_split(srv.cfg.advertise_client_urls, &a->n_self_client_urls);
    a->self_client_urls = self_client_urls;
    a->election_ms = (unsigned)srv.cfg.election_timeout;
    if (api_forward_init(a) != 0) goto out_members;

    char kv_dir[4096];
    snprintf(kv_dir, sizeof kv_dir, "%s/member/kv", srv.cfg.data_dir);
    if (restore_snapshot(&srv, kv_dir) != 0) goto out_members;
    snapshot_clean_temp(kv_dir); /* left by a crash while sending a snapshot */
    mvcc_defrag_clean_temp(kv_dir); /* left by a crash during a defrag */
    /* Twice the quota (at least 8 GiB): writes are refused at the quota,
     * so LMDB itself never runs out of map in an apply; deletes and
     * compaction, still allowed past the quota, have the other half.
     * Without a quota: 64 GiB. A quota too big for the address space
     * (etcd takes any) gets the largest map that fits; the disk runs out
     * long before such a map does. */
    int64_t want = a->quota_bytes <= 0 ? 8 * MIN_MAP_BYTES
                   : a->quota_bytes > INT64_MAX / 2 ? INT64_MAX / 2 + 1
                   : a->quota_bytes * 2 > MIN_MAP_BYTES ? a->quota_bytes * 2 : MIN_MAP_BYTES;
    int64_t map = mappable(want, MIN_MAP_BYTES);
    if (map < want)
        log_warn("mvcc: a map of %lld bytes does not fit in the address space; using %lld",
                 (long long)want, (long long)map);
    rv = mvcc_open(&srv.store, kv_dir, (size_t)map);
    if (rv != 0) {
        fprintf(stderr, "ketch: cannot open the store in %s: %s\n", kv_dir, kerr_text(rv));
        goto out_members;
    }
    a->store = srv.store;
    api_init(a);
    if (auth_api_configure(a, srv.cfg.auth_token, srv.cfg.auth_token_ttl,
                           (int)srv.cfg.bcrypt_cost, srv.cfg.client_cert_auth) != 0)
        goto out_store;
    if (init_members(&srv) != 0) {
        fprintf(stderr, "ketch: cannot load the member table from %s\n", kv_dir);
        goto out_store;
    }
    log_info("member %s (%016" PRIx64 ") of cluster %016" PRIx64 ", data in %s, revision %" PRId64
             ", applied index %" PRIu64,
             srv.cfg.name, a->member_id, a->cluster_id, srv.cfg.data_dir, mvcc_revision(srv.store),
             mvcc_applied_index(srv.store));
    if (lease_api_init(a, (unsigned)srv.cfg.heartbeat_interval,
                       (unsigned)srv.cfg.election_timeout) != 0) {
        fprintf(stderr, "ketch: cannot load the leases from %s\n", kv_dir);
        goto out_store;
    }
    uint64_t progress_ms = 0;
    config_parse_duration_ms(srv.cfg.watch_progress_notify_interval, &progress_ms);
    if (watch_api_init(a, progress_ms) != 0) {
        fprintf(stderr, "ketch: cannot create the watch hub\n");
        goto out_store;
    }
    uint64_t retention = 0, sleep_ms = 10;
    config_compaction_retention(&srv.cfg, &retention);
    config_parse_duration_ms(srv.cfg.compaction_sleep_interval, &sleep_ms);
    struct maint_config mcfg = {
        .periodic = strcmp(srv.cfg.auto_compaction_mode, "periodic") == 0,
        .retention = retention,
        .sleep_ms = sleep_ms,
        .batch_limit = (size_t)srv.cfg.compaction_batch_limit,
    };
    config_parse_duration_ms(srv.cfg.corrupt_check_time, &mcfg.corrupt_check_ms);
    config_parse_duration_ms(srv.cfg.compaction_revision_interval, &mcfg.revision_interval_ms);
    if (maint_api_init(a, &mcfg) != 0) goto out_store;
    /* the peer port's TLS and transport (nothing listens before
     * start_member), so the initial check dials with the peer TLS */
    if (setup_peer(&srv) != 0) goto out_store;
    /* etcd's CheckInitialHashKV: only a member that has data already (a
     * new one has nothing to compare), before Raft and the ports serve;
     * the timeout is etcd's ReqTimeout (5s + 2 election timeouts) */
    if (srv.cfg.initial_corrupt_check && mvcc_applied_index(srv.store) > 0 &&
        maint_initial_check(a, srv.peer_client_tls,
                            5000 + 2 * (uint64_t)srv.cfg.election_timeout) != 0)
        goto out_store;
    if (start_member(&srv) != 0) goto out_store;
    lease_api_start(a);
    maint_api_start(a);
    api_cluster_start(a);

    uv_signal_init(srv.loop, &srv.sigterm);
    uv_signal_init(srv.loop, &srv.sigint);
    srv.sigterm.data = srv.sigint.data = &srv;
    uv_signal_start(&srv.sigterm, on_signal, SIGTERM);
    uv_signal_start(&srv.sigint, on_signal, SIGINT);
    uv_check_init(srv.loop, &srv.flush_check);
    uv_timer_init(srv.loop, &srv.flush_timer);
    srv.flush_check.data = srv.flush_timer.data = &srv;
    uv_check_start(&srv.flush_check, on_flush_check);

    uv_run(srv.loop, UV_RUN_DEFAULT);
    srv.exit_code = 0;
    mvcc_sync(srv.store);
    watch_api_fini(a);
    lease_api_fini(a);
    maint_api_fini(a);
    api_fini(a);
    api_cluster_fini(a);
    mvcc_close(srv.store);
    api_forward_fini(a);
    config_strv_free(self_client_urls);
    goto out_peers;

out_store:
    maint_api_stop(a); /* its timers close in the uv_run below; freed at the end */
    watch_api_fini(a);
    lease_api_fini(a);
    api_fini(a);
    api_cluster_fini(a);
    mvcc_close(srv.store);
out_members:
    if (a->fwd != NULL) api_forward_stop(a);
    config_strv_free(self_client_urls);
out_grpc:
    /* the listeners too, or the loop below never ends */
    if (srv.metrics != NULL) grpc_server_close(srv.metrics, NULL, NULL);
    if (srv.peer_grpc != NULL) grpc_server_close(srv.peer_grpc, NULL, NULL);
    srv.peer_grpc = NULL;
    grpc_server_close(srv.grpc, NULL, NULL);
    uv_run(srv.loop, UV_RUN_DEFAULT);
    if (srv.api.fwd != NULL) api_forward_fini(&srv.api);
out_peers:
    if (srv.peer != NULL) {
        peer_net_free(srv.peer); /* closed by libraft already, or now */
        uv_run(srv.loop, UV_RUN_DEFAULT);
    }
    member_free(srv.stopped_member);
    tls_ctx_free(srv.peer_server_tls);
    tls_ctx_free(srv.peer_client_tls);
    if (srv.peer_addrs != NULL) config_strv_free(srv.peer_addrs);
    free(srv.peers);
out_identity:
    maint_api_fini(&srv.api);
    identity_free(&srv.id);
    tls_ctx_free(srv.client_tls);
out_config:
    uv_loop_close(srv.loop);
    config_free(&srv.cfg);
    if (srv.exit_code == 0) log_info("stopped");
    return srv.exit_code;
}
