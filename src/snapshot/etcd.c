/* etcd's backend buckets and encodings on top of bbolt (snapshot.h).
 *
 *   bucket           key                       value
 *   key              main u64 BE | '_' | sub   mvccpb.KeyValue (a tombstone:
 *                    u64 BE, + 't' for a       the key only), etcd's
 *                    tombstone (17/18 bytes)   mvcc/revision.go, kvstore.go
 *   meta             "consistent_index"        u64 BE (applied Raft index)
 *                    "scheduledCompactRev",    revision bytes (17) of the
 *                    "finishedCompactRev"      compaction, when there was one
 *   lease            lease ID i64 BE           leasepb.Lease {ID 1, TTL 2,
 *                                              RemainingTTL 3}
 *   auth             "authEnabled"             1 byte, 0/1
 *                    "authRevision"            u64 BE
 *   authUsers        user name                 authpb.User
 *   authRoles        role name                 authpb.Role
 *   members          member ID, hex            JSON {"id","peerURLs","name",
 *                                              "clientURLs"[,"isLearner"]}
 *   members_removed  member ID, hex            "removed"
 *   cluster          "clusterVersion"          "3.5.0"
 *   alarm            marshalled AlarmMember -> empty, as etcd's alarm store
 *
 * The file is followed by sha256(file) in a snapshot (etcd's
 * maintenanceServer.Snapshot; clientv3/snapshot's hasChecksum: size % 512
 * == 32). */
#include "snapshot/snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "ketch.pb-c.h"
#include "kv.pb-c.h"
#include "mvcc/export.h"
#include "snapshot/bbolt.h"
#include "util/crc32c.h"
#include "util/endian.h"
#include "util/errors.h"

const char *snapshot_strerror(int e)
{
    static _Thread_local char buf[128];
    snprintf(buf, sizeof buf, "%s", strerror(e));
    if (buf[0] >= 'A' && buf[0] <= 'Z' && !(buf[1] >= 'A' && buf[1] <= 'Z')) buf[0] += 'a' - 'A';
    return buf;
}

static void errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ================= write ================= */

struct wctx {
    bbolt_writer *w;
    int64_t last_main;
    uint8_t *buf;
    size_t cap;
};

static int put_rev(void *ctx, int64_t main, int64_t sub, int tombstone, const uint8_t *kv,
                   size_t len)
{
    struct wctx *c = ctx;
    uint8_t k[18];
    put_be64(k, (uint64_t)main);
    k[8] = '_';
    put_be64(k + 9, (uint64_t)sub);
    c->last_main = main;
    if (!tombstone) return bbolt_writer_put(c->w, k, 17, kv, len);
    /* etcd's tombstone value: a KeyValue holding only the key */
    k[17] = 't';
    Mvccpb__KeyValue *in = mvccpb__key_value__unpack(NULL, len, kv);
    if (in == NULL) return KERR_CORRUPT;
    Mvccpb__KeyValue out = MVCCPB__KEY_VALUE__INIT;
    out.key = in->key;
    size_t n = mvccpb__key_value__get_packed_size(&out);
    int rc = 0;
    if (n > c->cap) {
        uint8_t *b = realloc(c->buf, n);
        if (b == NULL) rc = KERR_NOMEM;
        else c->buf = b, c->cap = n;
    }
    if (rc == 0) {
        mvccpb__key_value__pack(&out, c->buf);
        rc = bbolt_writer_put(c->w, k, 18, c->buf, n);
    }
    mvccpb__key_value__free_unpacked(in, NULL);
    return rc;
}

static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) p[n++] = (uint8_t)(v | 0x80), v >>= 7;
    p[n++] = (uint8_t)v;
    return n;
}

static int put_lease(void *ctx, int64_t id, int64_t ttl, int64_t remaining)
{
    struct wctx *c = ctx;
    uint8_t k[8], v[33];
    size_t n = 0;
    put_be64(k, (uint64_t)id);
    /* leasepb.Lease as gogoproto marshals it: zero fields left out */
    if (id) v[n++] = 0x08, n += put_varint(v + n, (uint64_t)id);
    if (ttl) v[n++] = 0x10, n += put_varint(v + n, (uint64_t)ttl);
    if (remaining) v[n++] = 0x18, n += put_varint(v + n, (uint64_t)remaining);
    return bbolt_writer_put(c->w, k, 8, v, n);
}

struct auth_list {
    int want_role;
    bbolt_writer *w;
};

static int put_auth(void *ctx, int role, const uint8_t *name, size_t nlen, const uint8_t *pb,
                    size_t len)
{
    struct auth_list *a = ctx;
    if (role != a->want_role) return 0;
    return bbolt_writer_put(a->w, name, nlen, pb, len);
}

/* JSON string with the escapes Go's encoding/json makes for URLs/names. */
static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch < 0x20 || ch == '<' || ch == '>' || ch == '&') fprintf(f, "\\u%04x", ch);
        else fputc(ch, f);
    }
    fputc('"', f);
}

static void json_strv(FILE *f, char **v, size_t n)
{
    if (n == 0) {
        fputs("null", f);
        return;
    }
    fputc('[', f);
    for (size_t i = 0; i < n; i++) {
        if (i) fputc(',', f);
        json_str(f, v[i]);
    }
    fputc(']', f);
}

static int cmp_hexid(const void *a, const void *b)
{
    char x[17], y[17];
    snprintf(x, sizeof x, "%" PRIx64, *(const uint64_t *)a);
    snprintf(y, sizeof y, "%" PRIx64, *(const uint64_t *)b);
    return strcmp(x, y);
}

static int cmp_member(const void *a, const void *b)
{
    const Ketchpb__ClusterMember *x = *(Ketchpb__ClusterMember *const *)a;
    const Ketchpb__ClusterMember *y = *(Ketchpb__ClusterMember *const *)b;
    return cmp_hexid(&x->id, &y->id);
}

static int write_members(bbolt_writer *w, const uint8_t *members, size_t len)
{
    Ketchpb__ClusterMembers *cm = NULL;
    if (members != NULL) cm = ketchpb__cluster_members__unpack(NULL, len, members);
    int rc = bbolt_writer_bucket(w, "members");
    if (rc != 0 || cm == NULL) goto removed;
    if (cm->n_members) qsort(cm->members, cm->n_members, sizeof *cm->members, cmp_member);
    for (size_t i = 0; i < cm->n_members && rc == 0; i++) {
        const Ketchpb__ClusterMember *m = cm->members[i];
        char key[17], *json = NULL;
        size_t jlen = 0;
        snprintf(key, sizeof key, "%" PRIx64, m->id);
        FILE *f = open_memstream(&json, &jlen);
        if (f == NULL) {
            rc = KERR_NOMEM;
            break;
        }
        fprintf(f, "{\"id\":%" PRIu64 ",\"peerURLs\":", m->id);
        json_strv(f, m->peer_urls, m->n_peer_urls);
        if (m->is_learner) fputs(",\"isLearner\":true", f);
        fputs(",\"name\":", f);
        json_str(f, m->name ? m->name : "");
        fputs(",\"clientURLs\":", f);
        json_strv(f, m->client_urls, m->n_client_urls);
        fputc('}', f);
        fclose(f);
        rc = bbolt_writer_put(w, (uint8_t *)key, strlen(key), (uint8_t *)json, jlen);
        free(json);
    }
removed:
    if (rc == 0) rc = bbolt_writer_bucket(w, "members_removed");
    if (rc == 0 && cm != NULL) {
        if (cm->n_removed) qsort(cm->removed, cm->n_removed, sizeof *cm->removed, cmp_hexid);
        for (size_t i = 0; i < cm->n_removed && rc == 0; i++) {
            char key[17];
            snprintf(key, sizeof key, "%" PRIx64, cm->removed[i]);
            rc = bbolt_writer_put(w, (uint8_t *)key, strlen(key), (const uint8_t *)"removed", 7);
        }
    }
    if (cm != NULL) ketchpb__cluster_members__free_unpacked(cm, NULL);
    return rc;
}

int snapshot_sha256_fd(int fd, uint64_t n, uint8_t sha[SNAPSHOT_SHA_SIZE])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    size_t bsz = 1 << 20;
    uint8_t *buf = malloc(bsz);
    int rc = 0;
    if (md == NULL || buf == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        rc = KERR_NOMEM;
        goto out;
    }
    uint64_t off = 0;
    while (off < n) {
        size_t want = n - off < bsz ? (size_t)(n - off) : bsz;
        ssize_t r = pread(fd, buf, want, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            rc = KERR_IO;
            goto out;
        }
        EVP_DigestUpdate(md, buf, (size_t)r);
        off += (uint64_t)r;
    }
    unsigned int len = 0;
    EVP_DigestFinal_ex(md, sha, &len);
out:
    free(buf);
    EVP_MD_CTX_free(md);
    return rc;
}

/* etcd's alarm bucket: key = a marshalled AlarmMember, value empty
 * (alarm/alarms.go). Keys sorted bytewise, as bbolt holds them. */
struct alarm_keys {
    uint8_t (*k)[24];
    size_t *len, n, cap;
};

static int collect_alarm(void *ctx, uint64_t member, int type)
{
    struct alarm_keys *a = ctx;
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 4;
        void *k = realloc(a->k, cap * sizeof *a->k), *l = realloc(a->len, cap * sizeof *a->len);
        if (k) a->k = k;
        if (l) a->len = l;
        if (!k || !l) return KERR_NOMEM;
        a->cap = cap;
    }
    Etcdserverpb__AlarmMember m = ETCDSERVERPB__ALARM_MEMBER__INIT;
    m.memberid = member;
    m.alarm = type;
    a->len[a->n] = etcdserverpb__alarm_member__pack(&m, a->k[a->n]);
    a->n++;
    return 0;
}

static int put_alarms(bbolt_writer *w, mvcc_export *e)
{
    struct alarm_keys a = {0};
    int rc = mvcc_export_alarms(e, collect_alarm, &a);
    /* a handful of alarms at most: insertion sort */
    for (size_t i = 1; rc == 0 && i < a.n; i++)
        for (size_t j = i; j > 0; j--) {
            size_t l0 = a.len[j - 1], l1 = a.len[j];
            int c = memcmp(a.k[j - 1], a.k[j], l0 < l1 ? l0 : l1);
            if (c < 0 || (c == 0 && l0 <= l1)) break;
            uint8_t t[24];
            memcpy(t, a.k[j], sizeof t);
            memcpy(a.k[j], a.k[j - 1], sizeof t);
            memcpy(a.k[j - 1], t, sizeof t);
            a.len[j] = l0;
            a.len[j - 1] = l1;
        }
    for (size_t i = 0; rc == 0 && i < a.n; i++)
        if (i == 0 || a.len[i] != a.len[i - 1] || memcmp(a.k[i], a.k[i - 1], a.len[i]) != 0)
            rc = bbolt_writer_put(w, a.k[i], a.len[i], (const uint8_t *)"", 0);
    free(a.k);
    free(a.len);
    return rc;
}

static int write_file(mvcc_store *s, const char *path, const uint8_t *members, size_t members_len,
                      const char *cluster_version, bool trailer, struct snapshot_written *out)
{
    mvcc_export *e;
    struct mvcc_export_info info;
    int rc = mvcc_export_begin(s, &e, &info);
    if (rc != 0) return rc;
    bbolt_writer *w;
    if ((rc = bbolt_writer_open(&w, path)) != 0) {
        mvcc_export_end(e);
        return rc;
    }
    if (!trailer) bbolt_writer_no_sync(w);
    struct wctx c = {.w = w};
    uint8_t b[17];
    /* buckets in any order: the writer sorts the root bucket */
    if ((rc = bbolt_writer_bucket(w, "alarm")) != 0 || (rc = put_alarms(w, e)) != 0) goto fail;
    if ((rc = bbolt_writer_bucket(w, "auth")) != 0) goto fail;
    uint8_t en = info.auth_enabled ? 1 : 0;
    put_be64(b, info.auth_rev);
    if ((rc = bbolt_writer_put(w, (const uint8_t *)"authEnabled", 11, &en, 1)) != 0 ||
        (rc = bbolt_writer_put(w, (const uint8_t *)"authRevision", 12, b, 8)) != 0)
        goto fail;
    struct auth_list al = {1, w};
    if ((rc = bbolt_writer_bucket(w, "authRoles")) != 0 ||
        (rc = mvcc_export_auth(e, put_auth, &al)) != 0)
        goto fail;
    al.want_role = 0;
    if ((rc = bbolt_writer_bucket(w, "authUsers")) != 0 ||
        (rc = mvcc_export_auth(e, put_auth, &al)) != 0)
        goto fail;
    if ((rc = bbolt_writer_bucket(w, "cluster")) != 0) goto fail;
    if (cluster_version != NULL &&
        (rc = bbolt_writer_put(w, (const uint8_t *)"clusterVersion", 14,
                               (const uint8_t *)cluster_version, strlen(cluster_version))) != 0)
        goto fail;
    if ((rc = bbolt_writer_bucket(w, "key")) != 0 ||
        (rc = mvcc_export_history(e, put_rev, &c)) != 0)
        goto fail;
    if ((rc = bbolt_writer_bucket(w, "lease")) != 0 ||
        (rc = mvcc_export_leases(e, put_lease, &c)) != 0)
        goto fail;
    if ((rc = write_members(w, members, members_len)) != 0) goto fail;
    if ((rc = bbolt_writer_bucket(w, "meta")) != 0) goto fail;
    put_be64(b, info.applied);
    if ((rc = bbolt_writer_put(w, (const uint8_t *)"consistent_index", 16, b, 8)) != 0) goto fail;
    if (info.compact_rev > 0) {
        put_be64(b, (uint64_t)info.compact_rev);
        b[8] = '_';
        put_be64(b + 9, 0);
        if ((rc = bbolt_writer_put(w, (const uint8_t *)"finishedCompactRev", 18, b, 17)) != 0 ||
            (rc = bbolt_writer_put(w, (const uint8_t *)"scheduledCompactRev", 19, b, 17)) != 0)
            goto fail;
    }
    mvcc_export_end(e);
    e = NULL;
    free(c.buf);
    c.buf = NULL;
    uint64_t size;
    if ((rc = bbolt_writer_finish(w, &size)) != 0) goto fail_file;
    out->db_size = size;
    out->revision = info.revision;
    if (!trailer) return 0;
    /* the trailer: sha256 of the file so far */
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        rc = KERR_IO;
        goto fail_file;
    }
    rc = snapshot_sha256_fd(fd, size, out->sha);
    if (rc == 0 && pwrite(fd, out->sha, SNAPSHOT_SHA_SIZE, (off_t)size) != SNAPSHOT_SHA_SIZE)
        rc = KERR_IO;
    if (rc == 0 && fsync(fd) != 0) rc = KERR_IO;
    close(fd);
    if (rc != 0) goto fail_file;
    return 0;
fail:
    bbolt_writer_abort(w);
    mvcc_export_end(e);
    free(c.buf);
fail_file:
    unlink(path);
    return rc;
}

int snapshot_write(mvcc_store *s, const char *path, const uint8_t *members, size_t members_len,
                   const char *cluster_version, struct snapshot_written *out)
{
    return write_file(s, path, members, members_len, cluster_version, true, out);
}

int snapshot_write_temp(mvcc_store *s, const char *path, const uint8_t *members,
                        size_t members_len, const char *cluster_version,
                        struct snapshot_written *out)
{
    return write_file(s, path, members, members_len, cluster_version, false, out);
}

void snapshot_clean_temp(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL) return;
    struct dirent *de;
    size_t pl = strlen(SNAPSHOT_TEMP_PREFIX), sl = strlen(SNAPSHOT_TEMP_SUFFIX);
    while ((de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name);
        if (n <= pl + sl || strncmp(de->d_name, SNAPSHOT_TEMP_PREFIX, pl) != 0 ||
            strcmp(de->d_name + n - sl, SNAPSHOT_TEMP_SUFFIX) != 0)
            continue;
        char p[4400];
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        unlink(p);
    }
    closedir(d);
}

/* ================= status ================= */

struct st_ctx {
    const bbolt_db *db;
    struct snapshot_status *st;
    int is_key;
};

static int st_entry(void *ctx, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl, int isb)
{
    struct st_ctx *c = ctx;
    c->st->hash = crc32c_update(c->st->hash, k, kl);
    /* a nested bucket's value is nil in bbolt's ForEach */
    if (!isb) c->st->hash = crc32c_update(c->st->hash, v, vl);
    if (c->is_key && kl >= 8) c->st->revision = (int64_t)get_be64(k);
    c->st->total_keys++;
    return 0;
}

static int st_bucket(void *ctx, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl, int isb)
{
    struct st_ctx *c = ctx;
    if (!isb) return KERR_CORRUPT;
    bbolt_bucket b;
    int rc = bbolt_bucket_from_value(v, vl, &b);
    if (rc != 0) return rc;
    c->st->hash = crc32c_update(c->st->hash, k, kl);
    struct st_ctx sub = {c->db, c->st, kl == 3 && memcmp(k, "key", 3) == 0};
    return bbolt_foreach(c->db, &b, st_entry, &sub);
}

int snapshot_status(const char *path, struct snapshot_status *st, char *err, size_t errlen)
{
    memset(st, 0, sizeof *st);
    bbolt_db db;
    int rc = bbolt_open(&db, path, 0);
    if (rc == KERR_IO) {
        errf(err, errlen, "open %s: %s", path, snapshot_strerror(errno));
        return rc;
    }
    if (rc != 0) {
        errf(err, errlen, "invalid database");
        return rc;
    }
    char why[256] = "";
    if ((rc = bbolt_check(&db, why, sizeof why)) != 0) {
        errf(err, errlen, "snapshot file integrity check failed. 1 errors found.\n%s", why);
        bbolt_close(&db);
        return rc;
    }
    st->total_size = (int64_t)(db.hwm * db.psize);
    bbolt_bucket root;
    bbolt_root(&db, &root);
    struct st_ctx c = {&db, st, 0};
    rc = bbolt_foreach(&db, &root, st_bucket, &c);
    bbolt_close(&db);
    if (rc != 0) errf(err, errlen, "snapshot file is corrupt");
    return rc;
}

/* ================= restore ================= */

struct rs_ctx {
    mvcc_import *im;
    int64_t finished, scheduled;
    bool auth_enabled;
    uint64_t auth_rev;
    int role;
};

static int rs_key(void *ctx, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl, int isb)
{
    struct rs_ctx *c = ctx;
    if (isb || (kl != 17 && kl != 18) || k[8] != '_') return KERR_CORRUPT;
    int tomb = kl == 18;
    if (tomb && k[17] != 't') return KERR_CORRUPT;
    return mvcc_import_rev(c->im, (int64_t)get_be64(k), (int64_t)get_be64(k + 9), tomb, v, vl);
}

static int rs_meta(void *ctx, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl, int isb)
{
    struct rs_ctx *c = ctx;
    if (isb) return 0;
    int64_t *dst = NULL;
    if (kl == 18 && memcmp(k, "finishedCompactRev", 18) == 0) dst = &c->finished;
    if (kl == 19 && memcmp(k, "scheduledCompactRev", 19) == 0) dst = &c->scheduled;
    if (dst == NULL) return 0;
    if (vl < 8) return KERR_CORRUPT;
    *dst = (int64_t)get_be64(v);
    return 0;
}

static int varint(const uint8_t **p, const uint8_t *e, uint64_t *v)
{
    *v = 0;
    for (int s = 0; s < 64; s += 7) {
        if (*p >= e) return -1;
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << s;
        if (!(b & 0x80)) return 0;
    }
    return -1;
}

static int rs_lease(void *ctx, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl, int isb)
{
    struct rs_ctx *c = ctx;
    if (isb) return 0;
    uint64_t f[4] = {0};
    const uint8_t *p = v, *e = v + vl;
    while (p < e) {
        uint64_t tag, val;
        if (varint(&p, e, &tag) != 0) return KERR_CORRUPT;
        if ((tag & 7) == 0) {
            if (varint(&p, e, &val) != 0) return KERR_CORRUPT;
            if ((tag >> 3) >= 1 && (tag >> 3) <= 3) f[tag >> 3] = val;
        } else if ((tag & 7) == 2) {
            if (varint(&p, e, &val) != 0 || val > (uint64_t)(e - p)) return KERR_CORRUPT;
            p += val;
        } else {
            return KERR_CORRUPT;
        }
    }
    int64_t id = (int64_t)f[1];
    if (id == 0 && kl == 8) id = (int64_t)get_be64(k);
    return mvcc_import_lease(c->im, id, (int64_t)f[2], (int64_t)f[3]);
}

static int rs_auth(void *ctx, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl, int isb)
{
    struct rs_ctx *c = ctx;
    if (isb) return 0;
    if (kl == 11 && memcmp(k, "authEnabled", 11) == 0 && vl >= 1) c->auth_enabled = v[0] == 1;
    if (kl == 12 && memcmp(k, "authRevision", 12) == 0 && vl == 8) c->auth_rev = get_be64(v);
    return 0;
}

static int rs_named(void *ctx, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl, int isb)
{
    struct rs_ctx *c = ctx;
    if (isb) return 0;
    return mvcc_import_auth(c->im, c->role, k, kl, v, vl);
}

static int each_bucket(const bbolt_db *db, const char *name, bbolt_each_fn fn, void *ctx)
{
    bbolt_bucket b;
    int rc = bbolt_find_bucket(db, name, &b);
    if (rc <= 0) return rc;
    return bbolt_foreach(db, &b, fn, ctx);
}

static void sha_go(char *out, size_t len, const uint8_t *sha)
{
    /* Go's %v of a []byte: [1 2 3] */
    size_t n = 0;
    n += (size_t)snprintf(out + n, len - n, "[");
    for (int i = 0; i < SNAPSHOT_SHA_SIZE && n < len; i++)
        n += (size_t)snprintf(out + n, len - n, i ? " %u" : "%u", sha[i]);
    if (n < len) snprintf(out + n, len - n, "]");
}

/* Removes an LMDB store directory (its two files, then the directory). */
static void rm_store(const char *dir)
{
    char p[4300];
    snprintf(p, sizeof p, "%s/data.mdb", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/lock.mdb", dir);
    unlink(p);
    rmdir(dir);
}

int snapshot_restore(const char *path, const char *kv_dir, bool skip_hash_check,
                     int64_t *revision, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat stt;
    if (fd < 0 || fstat(fd, &stt) != 0) {
        errf(err, errlen, "open %s: %s", path, snapshot_strerror(errno));
        if (fd >= 0) close(fd);
        return KERR_IO;
    }
    uint64_t size = (uint64_t)stt.st_size;
    bool has_hash = size % 512 == SNAPSHOT_SHA_SIZE;
    if (!has_hash && !skip_hash_check) {
        close(fd);
        errf(err, errlen, "snapshot missing hash but --skip-hash-check=false");
        return KERR_CORRUPT;
    }
    uint64_t dbsize = has_hash ? size - SNAPSHOT_SHA_SIZE : size;
    if (has_hash && !skip_hash_check) {
        uint8_t want[SNAPSHOT_SHA_SIZE], got[SNAPSHOT_SHA_SIZE];
        if (pread(fd, want, sizeof want, (off_t)dbsize) != (ssize_t)sizeof want ||
            snapshot_sha256_fd(fd, dbsize, got) != 0) {
            close(fd);
            errf(err, errlen, "read %s: %s", path, snapshot_strerror(errno));
            return KERR_IO;
        }
        if (memcmp(want, got, sizeof want) != 0) {
            char a[160], b[160];
            sha_go(a, sizeof a, want);
            sha_go(b, sizeof b, got);
            close(fd);
            errf(err, errlen, "expected sha256 %s, got %s", a, b);
            return KERR_CORRUPT;
        }
    }
    close(fd);
    bbolt_db db;
    int rc = bbolt_open(&db, path, dbsize);
    if (rc != 0) {
        errf(err, errlen, rc == KERR_IO ? "open %s: %s" : "%s: invalid database", path,
             snapshot_strerror(errno));
        return rc;
    }
    char why[256] = "";
    if ((rc = bbolt_check(&db, why, sizeof why)) != 0) {
        errf(err, errlen, "snapshot file integrity check failed: %s", why);
        bbolt_close(&db);
        return rc;
    }
    /* built aside and renamed into place at the end: a restore that fails
     * or is killed half-way never leaves a half-built store at kv_dir */
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.restoring", kv_dir);
    rm_store(tmp);
    struct rs_ctx c = {0};
    if ((rc = mvcc_import_begin(&c.im, tmp)) != 0) {
        errf(err, errlen, "cannot create the store in %s: %s", kv_dir, kerr_text(rc));
        bbolt_close(&db);
        return rc;
    }
    if ((rc = each_bucket(&db, "key", rs_key, &c)) != 0 ||
        (rc = each_bucket(&db, "meta", rs_meta, &c)) != 0 ||
        (rc = each_bucket(&db, "lease", rs_lease, &c)) != 0 ||
        (rc = each_bucket(&db, "auth", rs_auth, &c)) != 0)
        goto fail;
    c.role = 0;
    if ((rc = each_bucket(&db, "authUsers", rs_named, &c)) != 0) goto fail;
    c.role = 1;
    if ((rc = each_bucket(&db, "authRoles", rs_named, &c)) != 0) goto fail;
    if ((rc = mvcc_import_auth_state(c.im, c.auth_enabled, c.auth_rev)) != 0) goto fail;
    rc = mvcc_import_finish(c.im, c.finished, c.scheduled, revision);
    c.im = NULL;
    if (rc != 0) goto fail;
    bbolt_close(&db);
    if (rename(tmp, kv_dir) != 0) {
        errf(err, errlen, "rename %s to %s: %s", tmp, kv_dir, snapshot_strerror(errno));
        rm_store(tmp);
        return KERR_IO;
    }
    return 0;
fail:
    if (c.im != NULL) mvcc_import_abort(c.im);
    rm_store(tmp);
    bbolt_close(&db);
    errf(err, errlen, "%s: %s", path,
         rc == KERR_CORRUPT ? "snapshot file is corrupt" : kerr_text(rc));
    return rc;
}
