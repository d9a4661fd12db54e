/* ketchctl snapshot save | status | restore, as etcdctl 3.4's
 * snapshot_command.go and clientv3/snapshot (v3_snapshot.go). The file
 * format is etcd's (src/snapshot): snapshots taken from etcd and from ketch
 * go both ways. restore builds a ketch data dir (member/kv, the store;
 * member/identity; an empty Raft log) with the IDs --name,
 * --initial-cluster and --initial-cluster-token give, as etcd's restore
 * makes a new member and cluster. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ctl.h"
#include "server/identity.h"
#include "snapshot/snapshot.h"
#include "util/errors.h"

#define FEND_ {NULL, 0, 0, NULL, false}

/* ---- save ---- */

struct save {
    FILE *f;
    uint64_t size;
    bool err;
};

static bool on_chunk(void *arg, const uint8_t *data, size_t len)
{
    struct save *sv = arg;
    Etcdserverpb__SnapshotResponse *r = etcdserverpb__snapshot_response__unpack(NULL, len, data);
    if (r == NULL) {
        sv->err = true;
        return false;
    }
    if (r->blob.len > 0 && fwrite(r->blob.data, 1, r->blob.len, sv->f) != r->blob.len)
        sv->err = true;
    sv->size += r->blob.len;
    etcdserverpb__snapshot_response__free_unpacked(r, NULL);
    return !sv->err;
}

static int snap_save(int argc, char **argv)
{
    int n = ctl_parse(argc, argv, (struct flag[]){FEND_});
    if (n != 1) ctl_die(EXIT_BAD_ARGS, "snapshot save expects one argument");
    if (g.n_endpoints != 1) {
        fflush(stdout);
        fputs("Error: snapshot must be requested to one selected node, not multiple [", stderr);
        for (size_t i = 0; i < g.n_endpoints; i++)
            fprintf(stderr, "%s%s", i ? " " : "", g.endpoints[i]);
        fputs("]\n", stderr);
        exit(EXIT_INTERRUPTED);
    }
    const char *path = argv[0];
    char part[4096];
    snprintf(part, sizeof part, "%s.part", path);
    unlink(part);
    struct save sv = {.f = fopen(part, "wbx")};
    if (sv.f == NULL) ctl_die(EXIT_INTERRUPTED, "could not open %s (%s)", part, snapshot_strerror(errno));
    Etcdserverpb__SnapshotRequest req = ETCDSERVERPB__SNAPSHOT_REQUEST__INIT;
    char *msg = NULL;
    int st = ctl_stream("/etcdserverpb.Maintenance/Snapshot", &req.base, on_chunk, &sv, 0, &msg);
    if (fflush(sv.f) != 0 || fsync(fileno(sv.f)) != 0) sv.err = true;
    fclose(sv.f);
    if (st != 0 || sv.err) {
        unlink(part);
        if (sv.err) ctl_die(EXIT_INTERRUPTED, "write %s: %s", part, snapshot_strerror(errno));
        ctl_die(EXIT_INTERRUPTED, "%s", ctl_err_text(st, msg ? msg : ""));
    }
    free(msg);
    /* clientv3/snapshot: the stream must have ended with the sha256 */
    if (sv.size % 512 != SNAPSHOT_SHA_SIZE) {
        unlink(part);
        ctl_die(EXIT_INTERRUPTED, "sha256 checksum not found [bytes: %" PRIu64 "]", sv.size);
    }
    if (rename(part, path) != 0)
        ctl_die(EXIT_INTERRUPTED, "could not rename %s to %s (%s)", part, path, snapshot_strerror(errno));
    printf("Snapshot saved at %s\n", path);
    return 0;
}

/* ---- status ---- */

static int snap_status(int argc, char **argv)
{
    int n = ctl_parse(argc, argv, (struct flag[]){FEND_});
    if (n != 1) ctl_die(EXIT_BAD_ARGS, "snapshot status requires exactly one argument");
    ctl_init_display();
    struct stat sb;
    if (stat(argv[0], &sb) != 0) ctl_die(EXIT_ERR, "stat %s: %s", argv[0], snapshot_strerror(errno));
    struct snapshot_status st;
    char err[512] = "";
    if (snapshot_status(argv[0], &st, err, sizeof err) != 0) ctl_die(EXIT_ERR, "%s", err);
    struct buf size = {0};
    out_humanize(&size, (uint64_t)st.total_size);
    buf_put(&size, "", 1);
    switch (g.out) {
    case OUT_JSON:
        printf("{\"hash\":%" PRIu32 ",\"revision\":%" PRId64 ",\"totalKey\":%" PRId64
               ",\"totalSize\":%" PRId64 "}\n",
               st.hash, st.revision, st.total_keys, st.total_size);
        break;
    case OUT_FIELDS:
        printf("\"Hash\" : %" PRIu32 "\n\"Revision\" : %" PRId64 "\n\"Keys\" : %" PRId64
               "\n\"Size\" : %" PRId64 "\n",
               st.hash, st.revision, st.total_keys, st.total_size);
        break;
    case OUT_TABLE: {
        static const char *const hdr[] = {"hash", "revision", "total keys", "total size"};
        char c0[32], c1[32], c2[32];
        snprintf(c0, sizeof c0, "%" PRIx32, st.hash);
        snprintf(c1, sizeof c1, "%" PRId64, st.revision);
        snprintf(c2, sizeof c2, "%" PRId64, st.total_keys);
        char *row[] = {c0, c1, c2, size.p};
        char **rows[] = {row};
        out_table(stdout, hdr, 4, rows, 1, true);
        break;
    }
    case OUT_PROTOBUF:
        ctl_die(EXIT_BAD_FEATURE, "printer protobuf doesn't support DBStatus");
    default:
        printf("%" PRIx32 ", %" PRId64 ", %" PRId64 ", %s\n", st.hash, st.revision,
               st.total_keys, size.p);
    }
    buf_free(&size);
    return 0;
}

/* ---- restore ---- */

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    remove(p);
    return 0;
}

static int snap_restore(int argc, char **argv)
{
    const char *data_dir = "", *wal_dir = "", *name = "default";
    const char *cluster = NULL, *token = "etcd-cluster", *peer_urls = "http://localhost:2380";
    bool skip_hash = false;
    struct flag fl[] = {
        {"data-dir", 0, F_STR, &data_dir, false},
        {"wal-dir", 0, F_STR, &wal_dir, false},
        {"initial-cluster", 0, F_STR, &cluster, false},
        {"initial-cluster-token", 0, F_STR, &token, false},
        {"initial-advertise-peer-urls", 0, F_STR, &peer_urls, false},
        {"name", 0, F_STR, &name, false},
        {"skip-hash-check", 0, F_BOOL, &skip_hash, false},
        FEND_,
    };
    int n = ctl_parse(argc, argv, fl);
    if (n != 1) ctl_die(EXIT_BAD_ARGS, "snapshot restore requires exactly one argument");
    char defcluster[512], dd[4096];
    if (cluster == NULL) {
        /* etcdctl's default: the member itself at the default peer URL */
        snprintf(defcluster, sizeof defcluster, "%s=http://localhost:2380", name);
        cluster = defcluster;
    }
    if (data_dir[0] == 0) {
        snprintf(dd, sizeof dd, "%s.ketch", name);
        data_dir = dd;
    }
    if (wal_dir[0] != 0)
        ctl_die(EXIT_ERR, "--wal-dir is not supported by ketch (the Raft log lives in "
                          "<data-dir>/member/raft)");
    struct stat sb;
    if (stat(data_dir, &sb) == 0) ctl_die(EXIT_ERR, "data-dir \"%s\" exists", data_dir);
    struct identity id;
    if (identity_from_cluster(&id, cluster, token, name) != 0) exit(EXIT_ERR);
    /* etcd's VerifyBootstrap: this member's advertised peer URLs must be
     * the ones --initial-cluster lists for it */
    struct identity_member *self = &id.members[id.self];
    char *list = strdup(peer_urls), *save = NULL;
    for (char *u = list ? strtok_r(list, ",", &save) : NULL; u; u = strtok_r(NULL, ",", &save)) {
        bool found = false;
        for (size_t i = 0; i < self->n_peer_urls; i++)
            if (strcmp(self->peer_urls[i], u) == 0) found = true;
        if (!found) {
            fflush(stdout);
            fprintf(stderr,
                    "Error: --initial-cluster has %s=%s but missing from "
                    "--initial-advertise-peer-urls=%s\n",
                    name, self->peer_urls[0], peer_urls);
            exit(EXIT_ERR);
        }
    }
    free(list);
    if (identity_prepare_data_dir(&id, data_dir) != 0) {
        identity_free(&id);
        exit(EXIT_ERR);
    }
    char kv[4200], err[600] = "";
    snprintf(kv, sizeof kv, "%s/member/kv", data_dir);
    int64_t rev = 0;
    int rc = snapshot_restore(argv[0], kv, skip_hash, &rev, err, sizeof err);
    if (rc != 0) {
        nftw(data_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        identity_free(&id);
        ctl_die(EXIT_ERR, "%s", err);
    }
    fprintf(stderr,
            "{\"level\":\"info\",\"msg\":\"restored snapshot\",\"path\":\"%s\",\"data-dir\":\"%s\","
            "\"revision\":%" PRId64 ",\"member-id\":\"%016" PRIx64 "\",\"cluster-id\":\"%016" PRIx64
            "\"}\n",
            argv[0], data_dir, rev, self->id, id.cluster_id);
    identity_free(&id);
    return 0;
}

int cmd_snapshot(int argc, char **argv)
{
    if (argc < 1) ctl_die(EXIT_ERR, "snapshot <subcommand>: save, status, restore");
    const char *sub = argv[0];
    if (!strcmp(sub, "save")) return snap_save(argc - 1, argv + 1);
    if (!strcmp(sub, "status")) return snap_status(argc - 1, argv + 1);
    if (!strcmp(sub, "restore")) return snap_restore(argc - 1, argv + 1);
    ctl_die(EXIT_ERR, "unknown command \"%s\" for \"ketchctl snapshot\"", sub);
}
