#include "server/config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum flag_type { F_STRING, F_UINT, F_INT, F_BOOL };

struct flag {
    const char *name;
    enum flag_type type;
    size_t offset;
    const char *def; /* default, as text */
    const char *help;
};

#define OFF(field) offsetof(struct config, field)

/* The table of flags, as etcd names and documents them. */
static const struct flag flags[] = {
    {"name", F_STRING, OFF(name), "default", "Human-readable name for this member."},
    {"data-dir", F_STRING, OFF(data_dir), "", "Path to the data directory (default ${name}.ketch)."},
    {"listen-client-urls", F_STRING, OFF(listen_client_urls), "http://127.0.0.1:2379",
     "List of URLs to listen on for client traffic."},
    {"advertise-client-urls", F_STRING, OFF(advertise_client_urls), "http://localhost:2379",
     "List of this member's client URLs to advertise to the public."},
    {"listen-peer-urls", F_STRING, OFF(listen_peer_urls), "http://localhost:2380",
     "List of URLs to listen on for peer traffic."},
    {"initial-advertise-peer-urls", F_STRING, OFF(initial_advertise_peer_urls),
     "http://localhost:2380", "List of this member's peer URLs to advertise to the rest of the cluster."},
    {"initial-cluster", F_STRING, OFF(initial_cluster), "",
     "Initial cluster configuration for bootstrapping (default ${name}=${initial-advertise-peer-urls})."},
    {"initial-cluster-state", F_STRING, OFF(initial_cluster_state), "new",
     "Initial cluster state ('new' or 'existing')."},
    {"initial-cluster-token", F_STRING, OFF(initial_cluster_token), "etcd-cluster",
     "Initial cluster token for the etcd cluster during bootstrap."},
    {"max-request-bytes", F_UINT, OFF(max_request_bytes), "1572864",
     "Maximum client request size in bytes the server will accept."},
    {"max-txn-ops", F_UINT, OFF(max_txn_ops), "128",
     "Maximum number of operations permitted in a transaction."},
    {"quota-backend-bytes", F_INT, OFF(quota_backend_bytes), "0",
     "Raise alarms when backend size exceeds the given quota (0 defaults to 2 GiB, negative disables)."},
    /* maintenance (src/api/maintenance.c) */
    {"auto-compaction-mode", F_STRING, OFF(auto_compaction_mode), "periodic",
     "Interpret 'auto-compaction-retention' one of: periodic|revision. 'periodic' for duration based "
     "retention, defaulting to hours if no time unit is provided (e.g. '5m'). 'revision' for revision "
     "number based retention."},
    {"auto-compaction-retention", F_STRING, OFF(auto_compaction_retention), "0",
     "Auto compaction retention for mvcc key value store. 0 means disable auto compaction."},
    {"experimental-compaction-batch-limit", F_UINT, OFF(compaction_batch_limit), "1000",
     "Sets the maximum revisions deleted in each compaction batch."},
    {"experimental-compaction-sleep-interval", F_STRING, OFF(compaction_sleep_interval), "10ms",
     "Sets the sleep interval between each compaction batch."},
    /* hidden (no help text, not in --help; README "Flags"): ketch only,
     * for tests; etcd's revision compactor runs every 5 minutes */
    {"experimental-auto-compaction-revision-interval", F_STRING,
     OFF(compaction_revision_interval), "5m0s", NULL},
    {"experimental-corrupt-check-time", F_STRING, OFF(corrupt_check_time), "0s",
     "Duration of time between cluster corruption check passes."},
    {"experimental-initial-corrupt-check", F_BOOL, OFF(initial_corrupt_check), "false",
     "Enable to check data corruption before serving any client/peer traffic."},
    {"log-level", F_STRING, OFF(log_level), "info", "Configures log level. Only supports debug, info, warn, error."},
    {"heartbeat-interval", F_UINT, OFF(heartbeat_interval), "100", "Time (in milliseconds) of a heartbeat interval."},
    {"election-timeout", F_UINT, OFF(election_timeout), "1000", "Time (in milliseconds) for an election to timeout."},
    /* perf (issue 6): 10000, not etcd's 100000. libraft keeps every entry
     * since the last snapshot in memory (49 of the 108 MB peak of a 1M-key
     * load), and a ketch snapshot is only a store fsync, not a copy. */
    {"snapshot-count", F_UINT, OFF(snapshot_count), "10000",
     "Number of committed transactions to trigger a snapshot to disk."},
    /* snapshots (ketch's own): etcdctl snapshot restore's job at start-up */
    {"restore-snapshot", F_STRING, OFF(restore_snapshot), "",
     "Build the data dir from this etcd-format snapshot file (etcdctl/ketchctl snapshot save) if it holds no data yet; ignored once it does."},
    {"restore-skip-hash-check", F_BOOL, OFF(restore_skip_hash_check), "false",
     "Restore a snapshot file that has no sha256 trailer (e.g. a copied member/snap/db)."},
    {"experimental-snapshot-catchup-entries", F_UINT, OFF(snapshot_catchup_entries), "5000",
     "Number of entries for a slow follower to catch up after compacting the raft storage "
     "entries."},
    {"experimental-watch-progress-notify-interval", F_STRING, OFF(watch_progress_notify_interval),
     "10m0s", "Duration of periodic watch progress notifications."},
    {"cert-file", F_STRING, OFF(cert_file), "", "Path to the client server TLS cert file."},
    {"key-file", F_STRING, OFF(key_file), "", "Path to the client server TLS key file."},
    {"trusted-ca-file", F_STRING, OFF(trusted_ca_file), "", "Path to the client server TLS trusted CA cert file."},
    {"client-cert-auth", F_BOOL, OFF(client_cert_auth), "false", "Enable client cert authentication."},
    {"auto-tls", F_BOOL, OFF(auto_tls), "false",
     "Client TLS using generated certificates (in <data-dir>/fixtures/client)."},
    {"cipher-suites", F_STRING, OFF(cipher_suites), "",
     "Comma-separated list of supported TLS cipher suites between client/server and peers (empty will be auto-populated by Go)."},
    {"tls-min-version", F_STRING, OFF(tls_min_version), "TLS1.2",
     "Minimum TLS version supported by etcd. Possible values: TLS1.2, TLS1.3."},
    {"tls-max-version", F_STRING, OFF(tls_max_version), "",
     "Maximum TLS version supported by etcd. Possible values: TLS1.2, TLS1.3 (empty defers to Go)."},
    {"peer-cert-file", F_STRING, OFF(peer_cert_file), "",
     "Path to the peer server TLS cert file."},
    {"peer-key-file", F_STRING, OFF(peer_key_file), "",
     "Path to the peer server TLS key file."},
    {"peer-trusted-ca-file", F_STRING, OFF(peer_trusted_ca_file), "",
     "Path to the peer server TLS trusted CA file."},
    {"peer-client-cert-auth", F_BOOL, OFF(peer_client_cert_auth), "false",
     "Enable peer client cert authentication."},
    {"peer-auto-tls", F_BOOL, OFF(peer_auto_tls), "false",
     "Peer TLS using generated certificates."},
    {"peer-cert-allowed-cn", F_STRING, OFF(peer_cert_allowed_cn), "",
     "Allowed CN for inter peer authentication."},
    /* Bad input and the HTTP face (issue 4). */
    {"listen-metrics-urls", F_STRING, OFF(listen_metrics_urls), "",
     "List of URLs to listen on for the metrics and health endpoints."},
    {"experimental-connection-timeout", F_STRING, OFF(connection_timeout), "2m0s",
     "Close client connections that have not completed their handshake (HTTP/2 preface and SETTINGS, "
     "TLS) or an HTTP/1.1 request within this duration, as grpc-go's ConnectionTimeout (0s: never)."},
    /* auth (src/api/auth.c) */
    {"auth-token", F_STRING, OFF(auth_token), "simple",
     "Specify auth token specific options. Possible types: 'simple', 'jwt' "
     "(jwt,pub-key=F,priv-key=F,sign-method=RS256[,ttl=5m])."},
    {"auth-token-ttl", F_UINT, OFF(auth_token_ttl), "300",
     "The lifetime in seconds of the auth token."},
    {"bcrypt-cost", F_UINT, OFF(bcrypt_cost), "10",
     "Specify bcrypt algorithm cost factor for auth password hashing."},
    {"version", F_BOOL, OFF(show_version), "false", "Print the version and exit."},
    {"help", F_BOOL, OFF(show_help), "false", "Show this help and exit."},
};
enum { N_FLAGS = sizeof flags / sizeof flags[0] };

void config_usage(FILE *out)
{
    fprintf(out, "Usage:\n\n  ketch [flags]\n    Start a ketch server (an etcd v3 compatible member).\n\nFlags:\n\n");
    for (size_t i = 0; i < N_FLAGS; i++)
        if (flags[i].help != NULL) /* NULL: a hidden flag */
            fprintf(out, "  --%s '%s'\n      %s\n", flags[i].name, flags[i].def, flags[i].help);
    fprintf(out, "\nEvery flag can also be set by an environment variable ETCD_<FLAG>, "
                 "e.g. ETCD_DATA_DIR for --data-dir.\n");
}

/* Go's flag package wording, so scripts written for etcd see the same. */
static int set_flag(struct config *c, const struct flag *f, const char *value, const char *origin)
{
    char *field = (char *)c + f->offset;
    char *end;
    switch (f->type) {
    case F_STRING:
        free(*(char **)field);
        *(char **)field = strdup(value);
        return 0;
    case F_UINT: {
        errno = 0;
        unsigned long long v = strtoull(value, &end, 0);
        if (errno || end == value || *end || value[0] == '-') break;
        *(uint64_t *)field = v;
        return 0;
    }
    case F_INT: {
        errno = 0;
        long long v = strtoll(value, &end, 0);
        if (errno || end == value || *end) break;
        *(int64_t *)field = v;
        return 0;
    }
    case F_BOOL:
        if (!strcmp(value, "true") || !strcmp(value, "1") || !strcmp(value, "t") ||
            !strcmp(value, "TRUE") || !strcmp(value, "True")) {
            *(bool *)field = true;
            return 0;
        }
        if (!strcmp(value, "false") || !strcmp(value, "0") || !strcmp(value, "f") ||
            !strcmp(value, "FALSE") || !strcmp(value, "False")) {
            *(bool *)field = false;
            return 0;
        }
        break;
    }
    fprintf(stderr, "invalid value \"%s\" for %s -%s: parse error\n", value, origin, f->name);
    return 2;
}

static const struct flag *find_flag(const char *name, size_t len)
{
    for (size_t i = 0; i < N_FLAGS; i++)
        if (strlen(flags[i].name) == len && !strncmp(flags[i].name, name, len)) return &flags[i];
    return NULL;
}

int config_parse(struct config *c, int argc, char **argv)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < N_FLAGS; i++)
        if (set_flag(c, &flags[i], flags[i].def, "default")) return 2;

    /* Environment first, so flags override it. */
    for (size_t i = 0; i < N_FLAGS; i++) {
        char env[64] = "ETCD_";
        size_t n = 5;
        for (const char *p = flags[i].name; *p && n < sizeof env - 1; p++)
            env[n++] = *p == '-' ? '_' : (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
        env[n] = 0;
        const char *v = getenv(env);
        if (v != NULL && set_flag(c, &flags[i], v, "environment variable")) return 2;
    }

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (arg[0] != '-' || arg[1] == 0) {
            fprintf(stderr, "'%s' is not a valid flag\n", arg);
            return 2;
        }
        const char *name = arg + (arg[1] == '-' ? 2 : 1);
        const char *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const struct flag *f = find_flag(name, len);
        if (f == NULL) {
            fprintf(stderr, "flag provided but not defined: -%.*s\n", (int)len, name);
            config_usage(stderr);
            return 2;
        }
        const char *value;
        if (eq) {
            value = eq + 1;
        } else if (f->type == F_BOOL) {
            value = "true";
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            fprintf(stderr, "flag needs an argument: -%s\n", f->name);
            return 2;
        }
        if (set_flag(c, f, value, "flag")) return 2;
    }

    if (c->data_dir[0] == 0) {
        free(c->data_dir);
        size_t n = strlen(c->name) + sizeof ".ketch";
        c->data_dir = malloc(n);
        snprintf(c->data_dir, n, "%s.ketch", c->name);
    }
    if (c->initial_cluster[0] == 0) {
        /* as etcd's InitialClusterFromName: name=url for each advertised
         * peer URL */
        size_t n_urls;
        char **urls = config_split(c->initial_advertise_peer_urls, &n_urls);
        size_t n = 1;
        for (size_t i = 0; i < n_urls; i++) n += strlen(c->name) + strlen(urls[i]) + 2;
        free(c->initial_cluster);
        c->initial_cluster = calloc(1, n);
        for (size_t i = 0, at = 0; i < n_urls; i++)
            at += (size_t)snprintf(c->initial_cluster + at, n - at, "%s%s=%s", i ? "," : "",
                                   c->name, urls[i]);
        config_strv_free(urls);
    }
    if (strcmp(c->initial_cluster_state, "new") && strcmp(c->initial_cluster_state, "existing")) {
        fprintf(stderr, "invalid value \"%s\" for flag -initial-cluster-state: "
                        "valid values are \"new\" or \"existing\"\n", c->initial_cluster_state);
        return 2;
    }
    if (c->max_txn_ops == 0 || c->max_request_bytes == 0) {
        fprintf(stderr, "--max-txn-ops and --max-request-bytes must be greater than 0\n");
        return 2;
    }
    if (c->heartbeat_interval == 0 || c->election_timeout < 5 * c->heartbeat_interval) {
        fprintf(stderr, "--election-timeout[%llums] should be at least as 5 times as "
                        "--heartbeat-interval[%llums]\n",
                (unsigned long long)c->election_timeout, (unsigned long long)c->heartbeat_interval);
        return 2;
    }
    uint64_t ms;
    if (config_parse_duration_ms(c->watch_progress_notify_interval, &ms) != 0) {
        fprintf(stderr, "invalid value \"%s\" for flag -experimental-watch-progress-notify-interval: "
                        "parse error\n", c->watch_progress_notify_interval);
        return 2;
    }
    if (config_parse_duration_ms(c->compaction_sleep_interval, &ms) != 0) {
        fprintf(stderr, "invalid value \"%s\" for flag -experimental-compaction-sleep-interval: "
                        "parse error\n", c->compaction_sleep_interval);
        return 2;
    }
    if (config_parse_duration_ms(c->corrupt_check_time, &ms) != 0) {
        fprintf(stderr, "invalid value \"%s\" for flag -experimental-corrupt-check-time: "
                        "parse error\n", c->corrupt_check_time);
        return 2;
    }
    if (config_parse_duration_ms(c->compaction_revision_interval, &ms) != 0) {
        fprintf(stderr, "invalid value \"%s\" for flag -experimental-auto-compaction-revision-"
                        "interval: parse error\n", c->compaction_revision_interval);
        return 2;
    }
    if (strcmp(c->auto_compaction_mode, "periodic") != 0 &&
        strcmp(c->auto_compaction_mode, "revision") != 0) {
        fprintf(stderr, "unknown auto-compaction-mode %s\n", c->auto_compaction_mode);
        return 2;
    }
    if (config_compaction_retention(c, &ms) != 0) {
        fprintf(stderr, "error parsing CompactionRetention: time: invalid duration \"%s\"\n",
                c->auto_compaction_retention);
        return 2;
    }
    if (config_parse_duration_ms(c->connection_timeout, &ms) != 0) {
        fprintf(stderr, "invalid value \"%s\" for flag -experimental-connection-timeout: "
                        "parse error\n", c->connection_timeout);
        return 2;
    }
    return 0;
}

void config_free(struct config *c)
{
    for (size_t i = 0; i < N_FLAGS; i++)
        if (flags[i].type == F_STRING) free(*(char **)((char *)c + flags[i].offset));
}

char **config_split(const char *list, size_t *n)
{
    size_t cap = 1;
    for (const char *p = list; *p; p++) cap += *p == ',';
    char **v = calloc(cap + 1, sizeof *v);
    size_t k = 0;
    const char *start = list;
    for (;;) {
        const char *comma = strchr(start, ',');
        size_t len = comma ? (size_t)(comma - start) : strlen(start);
        while (len && (*start == ' ')) start++, len--;
        while (len && start[len - 1] == ' ') len--;
        if (len) v[k++] = strndup(start, len);
        if (!comma) break;
        start = comma + 1;
    }
    *n = k;
    return v;
}

void config_strv_free(char **v)
{
    if (v == NULL) return;
    for (char **p = v; *p; p++) free(*p);
    free(v);
}

int config_parse_url(const char *url, char **host, int *port)
{
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    const char *colon;
    const char *hstart = p;
    size_t hlen;
    if (*p == '[') {
        const char *close = strchr(p, ']');
        if (!close || close[1] != ':') return -1;
        hstart = p + 1;
        hlen = (size_t)(close - hstart);
        colon = close + 1;
    } else {
        colon = strrchr(p, ':');
        if (!colon) return -1;
        hlen = (size_t)(colon - p);
    }
    char *end;
    long v = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || (*end && *end != '/') || v <= 0 || v > 65535) return -1;
    *host = strndup(hstart, hlen);
    *port = (int)v;
    return 0;
}

/* Go's time.ParseDuration for the units a flag uses: "10m0s", "1h", "1.5s",
 * "250ms"; a bare "0" is zero. */
int config_compaction_retention(const struct config *c, uint64_t *out)
{
    /* etcd's parseCompactionRetention: a plain number is hours (periodic)
     * or revisions; anything else a duration (in revision mode etcd then
     * takes its nanoseconds as a count, and so do we) */
    const char *r = c->auto_compaction_retention;
    char *end;
    errno = 0;
    long long h = strtoll(r, &end, 10);
    bool periodic = strcmp(c->auto_compaction_mode, "periodic") == 0;
    if (*r != 0 && *end == 0 && errno == 0 && h >= 0) {
        *out = periodic ? (uint64_t)h * 3600000ULL : (uint64_t)h;
        return 0;
    }
    uint64_t ms;
    if (config_parse_duration_ms(r, &ms) != 0) return -1;
    *out = periodic ? ms : ms * 1000000ULL;
    return 0;
}

int config_parse_duration_ms(const char *s, uint64_t *ms)
{
    static const struct {
        const char *unit;
        double ms;
    } units[] = {{"ns", 1e-6}, {"us", 1e-3}, {"\xc2\xb5s", 1e-3}, {"ms", 1},
                 {"s", 1000},  {"m", 60000}, {"h", 3600000}};
    double total = 0;
    if (strcmp(s, "0") == 0) {
        *ms = 0;
        return 0;
    }
    if (*s == 0) return -1;
    while (*s) {
        char *end;
        if (!((*s >= '0' && *s <= '9') || *s == '.')) return -1;
        double v = strtod(s, &end);
        if (end == s) return -1;
        s = end;
        size_t best = 0, bi = 0;
        for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
            size_t n = strlen(units[i].unit);
            if (n > best && strncmp(s, units[i].unit, n) == 0) best = n, bi = i;
        }
        if (best == 0) return -1;
        total += v * units[bi].ms;
        s += best;
    }
    *ms = (uint64_t)(total + 0.5);
    return 0;
}
