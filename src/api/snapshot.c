/* Maintenance.Snapshot as etcd's maintenanceServer.Snapshot: the backend in
 * etcd's format (a bbolt file, src/snapshot) in 32 KiB chunks with
 * remaining_bytes counting down to 0, then one more message holding the
 * sha256 of all the chunks (remaining_bytes 0).
 *
 * The file is written by a worker thread from an LMDB read transaction of
 * its own (the loop keeps serving and applying; the snapshot is the state
 * of the last committed batch when the worker began) into a temporary file
 * next to the store, which is unlinked as soon as it is opened for
 * sending. Chunks are read with asynchronous file reads, one at a time,
 * and only while the call has less than MAX_PENDING bytes queued: memory
 * stays flat whatever the database size, and a slow client only slows its
 * own stream. As etcd (authMaintenanceServer), with auth enabled only an
 * admin (root) may take a snapshot. */
#include "api/snapshot.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "api/auth.h"
#include "mvcc/export.h"
#include "snapshot/snapshot.h"
#include "util/errors.h"
#include "util/log.h"

#define CHUNK (32 * 1024) /* etcd's snapshotSendBufferSize */
#define READ_SIZE (8 * CHUNK) /* one file read: eight messages */
#define MAX_PENDING (2 * READ_SIZE)
#define RETRY_MAX_MS 64 /* polling a stalled client: 1, 2, 4 ... 64 ms */

struct snap {
    api_server *s;
    grpc_call *call; /* referenced until freed */
    uv_work_t work;
    uv_fs_t fs;
    uv_timer_t timer;
    char path[4096];
    uint8_t *members;
    size_t members_len;
    int rc; /* the worker's result */
    struct snapshot_written out;
    int fd;
    uint64_t off;
    unsigned retry_ms; /* next poll interval while the client does not read */
    bool working, reading, gone, finished;
    EVP_MD_CTX *sha; /* sha256 of what was sent, as etcd computes it */
    uint8_t buf[READ_SIZE];
};

static void timer_closed(uv_handle_t *h)
{
    struct snap *sn = h->data;
    grpc_call_unref(sn->call);
    EVP_MD_CTX_free(sn->sha);
    free(sn->members);
    free(sn);
}

/* Frees sn once nothing is in flight and the call is gone. */
static void maybe_free(struct snap *sn)
{
    if (!sn->gone || sn->working || sn->reading) return;
    if (sn->fd >= 0) close(sn->fd);
    sn->fd = -1;
    uv_close((uv_handle_t *)&sn->timer, timer_closed);
}

static void send_chunk(struct snap *sn, const uint8_t *p, size_t n, uint64_t remaining)
{
    Etcdserverpb__SnapshotResponse r = ETCDSERVERPB__SNAPSHOT_RESPONSE__INIT;
    r.remaining_bytes = remaining;
    r.blob.data = (uint8_t *)p;
    r.blob.len = n;
    grpc_call_send_pb(sn->call, &r.base);
}

static void fail(struct snap *sn, int kerr)
{
    sn->finished = true;
    grpc_call_fail(sn->call, kerr);
}

static void pump(struct snap *sn);

static void on_read(uv_fs_t *req)
{
    struct snap *sn = req->data;
    ssize_t n = req->result;
    uv_fs_req_cleanup(req);
    sn->reading = false;
    if (sn->gone) {
        maybe_free(sn);
        return;
    }
    if (n <= 0) {
        log_error("snapshot: reading the snapshot file: %s", n < 0 ? uv_strerror((int)n) : "EOF");
        fail(sn, KERR_IO);
        return;
    }
    /* etcd's chunks: 32 KiB, remaining_bytes after each */
    for (size_t at = 0; at < (size_t)n; at += CHUNK) {
        size_t len = (size_t)n - at < CHUNK ? (size_t)n - at : CHUNK;
        sn->off += len;
        EVP_DigestUpdate(sn->sha, sn->buf + at, len);
        send_chunk(sn, sn->buf + at, len, sn->out.db_size - sn->off);
    }
    pump(sn);
}

static void on_timer(uv_timer_t *t) { pump(t->data); }

static void pump(struct snap *sn)
{
    if (sn->gone || sn->reading || sn->finished) return;
    if (!grpc_call_alive(sn->call)) return; /* on_close follows */
    if (grpc_call_pending_bytes(sn->call) > MAX_PENDING) {
        sn->retry_ms = sn->retry_ms ? sn->retry_ms : 1;
        uv_timer_start(&sn->timer, on_timer, sn->retry_ms, 0);
        if (sn->retry_ms < RETRY_MAX_MS) sn->retry_ms *= 2;
        return;
    }
    sn->retry_ms = 0;
    if (sn->off < sn->out.db_size) {
        uint64_t left = sn->out.db_size - sn->off;
        uv_buf_t b = uv_buf_init((char *)sn->buf, left < READ_SIZE ? (unsigned)left : READ_SIZE);
        sn->fs.data = sn;
        int rv = uv_fs_read(sn->s->loop, &sn->fs, sn->fd, &b, 1, (int64_t)sn->off, on_read);
        if (rv < 0) {
            fail(sn, KERR_IO);
            return;
        }
        sn->reading = true;
        return;
    }
    unsigned int len = 0;
    EVP_DigestFinal_ex(sn->sha, sn->out.sha, &len);
    send_chunk(sn, sn->out.sha, sizeof sn->out.sha, 0);
    sn->finished = true;
    log_info("snapshot: sent %" PRIu64 " bytes and the sha256 (revision %" PRId64 ")",
             sn->out.db_size, sn->out.revision);
    grpc_call_finish(sn->call, GRPC_OK, NULL);
}

static void do_work(uv_work_t *w)
{
    struct snap *sn = w->data;
    sn->rc = snapshot_write_temp(sn->s->store, sn->path, sn->members, sn->members_len,
                                 sn->s->version, &sn->out);
}

static void after_work(uv_work_t *w, int status)
{
    struct snap *sn = w->data;
    sn->working = false;
    free(sn->members);
    sn->members = NULL;
    if (status == 0 && sn->rc == 0) {
        sn->fd = open(sn->path, O_RDONLY | O_CLOEXEC);
        if (sn->fd < 0) sn->rc = KERR_IO;
    }
    unlink(sn->path); /* an open file stays readable; nothing is left behind */
    if (sn->gone) {
        maybe_free(sn);
        return;
    }
    if (status != 0 || sn->rc != 0) {
        log_error("snapshot: cannot write %s: %s", sn->path, kerr_text(sn->rc ? sn->rc : KERR_INTERNAL));
        fail(sn, sn->rc ? sn->rc : KERR_INTERNAL);
        return;
    }
    log_info("snapshot: sending database snapshot to client (%" PRIu64 " bytes, revision %" PRId64
             ")",
             sn->out.db_size, sn->out.revision);
    pump(sn);
}

static void on_half_close(grpc_call *call, void *ctx)
{
    /* a server stream: the client's half-close after its one request is
     * expected; the responses go on */
    (void)call, (void)ctx;
}

static int admin_check(api_server *s, grpc_call *call)
{
    if (!mvcc_auth_enabled(s->store)) return 0;
    char *user = NULL;
    uint64_t rev = 0;
    int rc = auth_api_info(s, call, &user, &rev);
    if (rc == 0) rc = mvcc_auth_is_admin(s->store, user);
    free(user);
    return rc;
}

void maintenance_snapshot(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    api_server *s = ctx;
    if (grpc_call_get_data(call) != NULL) return; /* one request per stream */
    grpc_call_set_half_close(call, on_half_close);
    Etcdserverpb__SnapshotRequest *req = etcdserverpb__snapshot_request__unpack(NULL, len, msg);
    if (req == NULL) {
        api_fail_unmarshal(call);
        return;
    }
    etcdserverpb__snapshot_request__free_unpacked(req, NULL);
    int rc = admin_check(s, call);
    if (rc == 0) rc = mvcc_flush(s->store); /* include every apply so far */
    if (rc != 0) {
        grpc_call_fail(call, rc);
        return;
    }
    struct snap *sn = calloc(1, sizeof *sn);
    if (sn != NULL && ((sn->sha = EVP_MD_CTX_new()) == NULL ||
                       EVP_DigestInit_ex(sn->sha, EVP_sha256(), NULL) != 1)) {
        EVP_MD_CTX_free(sn->sha);
        free(sn);
        sn = NULL;
    }
    if (sn == NULL) {
        grpc_call_fail(call, KERR_NOMEM);
        return;
    }
    static unsigned seq;
    sn->s = s;
    sn->call = call;
    sn->fd = -1;
    snprintf(sn->path, sizeof sn->path, "%s/" SNAPSHOT_TEMP_PREFIX "%d.%u" SNAPSHOT_TEMP_SUFFIX,
             mvcc_export_dir(s->store), (int)getpid(), ++seq);
    if (s->cluster != NULL) {
        sn->members_len = ketchpb__cluster_members__get_packed_size(s->cluster);
        sn->members = malloc(sn->members_len ? sn->members_len : 1);
        if (sn->members == NULL) {
            EVP_MD_CTX_free(sn->sha);
            free(sn);
            grpc_call_fail(call, KERR_NOMEM);
            return;
        }
        ketchpb__cluster_members__pack(s->cluster, sn->members);
    }
    sn->work.data = sn;
    if (uv_queue_work(s->loop, &sn->work, do_work, after_work) != 0) {
        free(sn->members);
        EVP_MD_CTX_free(sn->sha);
        free(sn);
        grpc_call_fail(call, KERR_INTERNAL);
        return;
    }
    sn->working = true;
    grpc_call_ref(call);
    uv_timer_init(s->loop, &sn->timer);
    sn->timer.data = sn;
    grpc_call_set_data(call, sn);
}

void maintenance_snapshot_close(grpc_call *call, void *ctx)
{
    (void)ctx;
    struct snap *sn = grpc_call_get_data(call);
    if (sn == NULL) {
        /* half-closed before its one request: nothing to send (a no-op if
         * the stream is gone already) */
        grpc_call_finish(call, GRPC_INTERNAL, "grpc: error while receiving the request: EOF");
        return;
    }
    grpc_call_set_data(call, NULL);
    sn->gone = true;
    uv_timer_stop(&sn->timer);
    maybe_free(sn);
}
