/* The server's configuration: etcd's flags and ETCD_* environment
 * variables (a flag given on the command line wins over the variable). */
#ifndef KETCH_SERVER_CONFIG_H
#define KETCH_SERVER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct config {
    char *name;
    char *data_dir;
    char *listen_client_urls;
    char *advertise_client_urls;
    char *listen_peer_urls;
    char *initial_advertise_peer_urls;
    char *initial_cluster;
    char *initial_cluster_state;
    char *initial_cluster_token;
    uint64_t max_request_bytes;
    uint64_t max_txn_ops;
    int64_t quota_backend_bytes;
    char *log_level;
    uint64_t heartbeat_interval;
    uint64_t election_timeout;
    uint64_t snapshot_count;
    uint64_t snapshot_catchup_entries; /* --experimental-snapshot-catchup-entries (cluster) */
    char *watch_progress_notify_interval; /* a Go duration; see config_parse_duration_ms */
    /* TLS for clients (etcd's security flags). */
    char *cert_file, *key_file, *trusted_ca_file;
    bool client_cert_auth, auto_tls;
    char *cipher_suites, *tls_min_version, *tls_max_version;
    /* TLS for peers (member/peer.c), when the peer URLs are https. */
    char *peer_cert_file, *peer_key_file, *peer_trusted_ca_file;
    bool peer_client_cert_auth, peer_auto_tls;
    char *peer_cert_allowed_cn;
    char *connection_timeout; /* a Go duration: handshake/request deadline */
    char *listen_metrics_urls; /* /metrics and /health only */
    /* auth */
    char *auth_token;
    uint64_t auth_token_ttl;
    uint64_t bcrypt_cost;
    /* maintenance: auto-compaction and the compaction sweep */
    char *auto_compaction_mode;      /* periodic | revision */
    char *auto_compaction_retention; /* see config_compaction_retention */
    uint64_t compaction_batch_limit;
    char *compaction_sleep_interval; /* a Go duration */
    char *corrupt_check_time;        /* a Go duration; 0s: no corruption check */
    /* hidden, ketch only (tests): how often revision-mode auto-compaction
     * compacts (etcd: every 5 minutes, not configurable) */
    char *compaction_revision_interval;
    bool initial_corrupt_check;      /* HashKV against the peers before serving */
    /* snapshots (src/snapshot): build the store from an etcd-format
     * snapshot file when the data dir holds none yet */
    char *restore_snapshot;
    bool restore_skip_hash_check;
    bool show_version;
    bool show_help;
};

/* Parses argv and the environment into `c`. On a bad flag or value prints
 * a message to stderr and returns 2 (the exit status etcd uses); returns 0
 * otherwise. Strings in `c` are heap copies: free with config_free. */
int config_parse(struct config *c, int argc, char **argv);
void config_free(struct config *c);
void config_usage(FILE *out);

/* Splits a comma-separated list into a NULL-terminated heap array of heap
 * strings (free with config_strv_free). */
char **config_split(const char *list, size_t *n);
void config_strv_free(char **v);

/* Parses "http://host:port" (or "https://", or bare "host:port") into
 * host (heap copy, brackets removed for IPv6) and port. Returns 0 or -1. */
int config_parse_url(const char *url, char **host, int *port);

/* Parses a Go duration ("10m0s", "500ms", "1h") into milliseconds.
 * Returns 0 or -1 if it is not one. */
int config_parse_duration_ms(const char *s, uint64_t *ms);

/* --auto-compaction-retention as etcd reads it: milliseconds in periodic
 * mode (a plain number is hours), a revision count in revision mode.
 * Returns 0 or -1 if it is not one. */
int config_compaction_retention(const struct config *c, uint64_t *out);

#endif
