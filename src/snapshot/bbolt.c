/* bbolt files: writer and reader (see bbolt.h).
 *
 * Layout (go.etcd.io/bbolt page.go, db.go, bucket.go; all integers
 * little-endian, as bbolt writes them on amd64/arm64):
 *
 *   page i      at offset i * page_size; a node that does not fit spans
 *               `overflow` more pages after it
 *   page header offset size field
 *               0      8    id        the page's own number
 *               8      2    flags     0x01 branch, 0x02 leaf, 0x04 meta,
 *                                     0x10 freelist
 *               10     2    count     elements (freelist: ids; 0xFFFF = the
 *                                     real count is the first u64)
 *               12     4    overflow  extra pages
 *   meta (pages 0 and 1, after the header; the valid one with the higher
 *         txid wins; page id = txid % 2)
 *               0 magic u32 0xED0CDAED | 4 version u32 2 | 8 page_size u32 |
 *               12 flags u32 | 16 root bucket {root pgid u64, sequence u64} |
 *               32 freelist pgid u64 | 40 pgid u64 (high-water mark: pages
 *               in use) | 48 txid u64 | 56 checksum u64 = FNV-1a 64 of
 *               bytes 0..55
 *   leaf element (16 bytes each, after the header, then keys and values)
 *               flags u32 (0x01: the value is a bucket) | pos u32 (from the
 *               element's own address to its key) | ksize u32 | vsize u32;
 *               the value follows the key
 *   branch element (16 bytes)
 *               pos u32 | ksize u32 | pgid u64: the child page, whose
 *               first key is the key
 *   bucket value  root pgid u64 | sequence u64, then, when root is 0, the
 *               bucket's only page inline (a leaf page, header included)
 *   freelist    the ids of the free pages, u64 each
 *
 * The writer puts the freelist at page 2 (empty) and the data from page 3
 * on, leaves filled up to a page, branch nodes built level by level as
 * their children are written; a bucket whose one leaf fits in a quarter
 * page goes inline, as bbolt does. */
#include "snapshot/bbolt.h"

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/endian.h"
#include "util/errors.h"

enum {
    PAGE_HDR = 16,
    ELEM = 16,
    F_BRANCH = 0x01,
    F_LEAF = 0x02,
    F_META = 0x04,
    F_FREELIST = 0x10,
    BUCKET_LEAF = 0x01,
    BUCKET_HDR = 16,
    META_CHECKSUMMED = 56,
    MAX_DEPTH = 64,
};
#define BBOLT_MAGIC 0xED0CDAEDu
#define BBOLT_VERSION 2u
#define NO_FREELIST UINT64_MAX

static uint64_t fnv64a(const uint8_t *p, size_t n)
{
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* ================= writer ================= */

struct ref {
    uint8_t *key; /* first key of the child (malloc'd) */
    size_t klen;
    uint64_t pgid;
};

struct reflist {
    struct ref *v;
    size_t n, cap;
};

struct lent {
    uint32_t flags;
    size_t klen, vlen;
};

struct bucket_rec {
    char *name;
    uint64_t root;
    uint8_t *inl; /* inline bucket: header + leaf page (root 0), else NULL */
    size_t inl_len;
};

enum { MAX_LEVELS = 24 };

struct bbolt_writer {
    int fd;
    uint64_t next; /* next free page */
    int in_bucket;
    char *cur;
    /* the leaf being filled: entries, and their keys+values back to back */
    struct lent *ents;
    size_t nent, entcap;
    uint8_t *data;
    size_t dlen, dcap;
    uint8_t *last; /* last key put in the bucket (order check) */
    size_t last_len, last_cap;
    /* the branch nodes being filled above the leaves of the open bucket:
     * lv[0] holds refs to leaves, lv[1] to branches over them, ... A full
     * node is written at once, so memory is a page per level */
    struct reflist lv[MAX_LEVELS];
    size_t lv_size[MAX_LEVELS];
    bool lv_used[MAX_LEVELS + 1];
    struct bucket_rec *buckets;
    size_t nb, bcap;
    bool no_sync;
    uint8_t *page; /* scratch for one node */
    size_t page_cap;
};

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *n = realloc(*p, c * elem);
    if (n == NULL) return KERR_NOMEM;
    *p = n;
    *cap = c;
    return 0;
}

static int ref_add(struct reflist *l, const uint8_t *key, size_t klen, uint64_t pgid)
{
    if (grow((void **)&l->v, &l->cap, l->n + 1, sizeof *l->v) != 0) return KERR_NOMEM;
    uint8_t *k = malloc(klen ? klen : 1);
    if (k == NULL) return KERR_NOMEM;
    if (klen) memcpy(k, key, klen);
    l->v[l->n++] = (struct ref){k, klen, pgid};
    return 0;
}

static void reflist_free(struct reflist *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->v[i].key);
    free(l->v);
    *l = (struct reflist){0};
}

static int write_all(int fd, const uint8_t *p, size_t n, uint64_t off)
{
    while (n > 0) {
        ssize_t r = pwrite(fd, p, n, (off_t)off);
        if (r < 0) {
            if (errno == EINTR) continue;
            return KERR_IO;
        }
        p += r, n -= (size_t)r, off += (uint64_t)r;
    }
    return 0;
}

/* A zeroed node buffer of `size` bytes rounded up to whole pages; returns
 * the page count. */
static int node_buf(bbolt_writer *w, size_t size, size_t *npages)
{
    *npages = (size + BBOLT_PAGE_SIZE - 1) / BBOLT_PAGE_SIZE;
    if (*npages == 0) *npages = 1;
    size_t bytes = *npages * BBOLT_PAGE_SIZE;
    if (grow((void **)&w->page, &w->page_cap, bytes, 1) != 0) return KERR_NOMEM;
    memset(w->page, 0, bytes);
    return 0;
}

static int node_write(bbolt_writer *w, uint16_t flags, uint16_t count, size_t npages,
                      uint64_t *pgid)
{
    *pgid = w->next;
    put_le64(w->page, *pgid);
    put_le16(w->page + 8, flags);
    put_le16(w->page + 10, count);
    put_le32(w->page + 12, (uint32_t)(npages - 1));
    w->next += npages;
    return write_all(w->fd, w->page, npages * BBOLT_PAGE_SIZE, *pgid * BBOLT_PAGE_SIZE);
}

static size_t leaf_size(const bbolt_writer *w) { return PAGE_HDR + w->nent * ELEM + w->dlen; }

/* Lays the open leaf out in w->page; *npages its page count. */
static int leaf_build(bbolt_writer *w, size_t *npages)
{
    int rc = node_buf(w, leaf_size(w), npages);
    if (rc != 0) return rc;
    size_t dpos = PAGE_HDR + w->nent * ELEM, doff = 0;
    for (size_t i = 0; i < w->nent; i++) {
        uint8_t *e = w->page + PAGE_HDR + i * ELEM;
        size_t at = dpos + doff;
        put_le32(e, w->ents[i].flags);
        put_le32(e + 4, (uint32_t)(at - (PAGE_HDR + i * ELEM)));
        put_le32(e + 8, (uint32_t)w->ents[i].klen);
        put_le32(e + 12, (uint32_t)w->ents[i].vlen);
        doff += w->ents[i].klen + w->ents[i].vlen;
    }
    if (w->dlen) memcpy(w->page + dpos, w->data, w->dlen);
    return 0;
}

static int add_ref(bbolt_writer *w, int level, const uint8_t *key, size_t klen, uint64_t pgid);

/* Writes the pending branch node of `level` and hands it to the level
 * above. */
static int branch_flush(bbolt_writer *w, int level)
{
    struct reflist *l = &w->lv[level];
    size_t npages;
    int rc = node_buf(w, w->lv_size[level], &npages);
    if (rc != 0) return rc;
    size_t dpos = PAGE_HDR + l->n * ELEM;
    for (size_t k = 0; k < l->n; k++) {
        uint8_t *e = w->page + PAGE_HDR + k * ELEM;
        put_le32(e, (uint32_t)(dpos - (size_t)(e - w->page)));
        put_le32(e + 4, (uint32_t)l->v[k].klen);
        put_le64(e + 8, l->v[k].pgid);
        memcpy(w->page + dpos, l->v[k].key, l->v[k].klen);
        dpos += l->v[k].klen;
    }
    uint64_t pgid;
    if ((rc = node_write(w, F_BRANCH, (uint16_t)l->n, npages, &pgid)) != 0) return rc;
    rc = add_ref(w, level + 1, l->v[0].key, l->v[0].klen, pgid);
    reflist_free(l);
    w->lv_size[level] = PAGE_HDR;
    return rc;
}

/* Adds child `pgid` (first key `key`) to the branch node being filled at
 * `level`, writing that node first if the child does not fit (a branch
 * keeps at least two children). */
static int add_ref(bbolt_writer *w, int level, const uint8_t *key, size_t klen, uint64_t pgid)
{
    if (level >= MAX_LEVELS) return KERR_INTERNAL;
    struct reflist *l = &w->lv[level];
    if (!w->lv_used[level]) w->lv_size[level] = PAGE_HDR;
    w->lv_used[level] = true;
    if (l->n >= 2 && (w->lv_size[level] + ELEM + klen > BBOLT_PAGE_SIZE || l->n == 0xFFFF)) {
        int rc = branch_flush(w, level);
        if (rc != 0) return rc;
    }
    w->lv_size[level] += ELEM + klen;
    return ref_add(l, key, klen, pgid);
}

static int leaf_flush(bbolt_writer *w)
{
    size_t npages;
    int rc = leaf_build(w, &npages);
    if (rc != 0) return rc;
    uint64_t pgid;
    if ((rc = node_write(w, F_LEAF, (uint16_t)w->nent, npages, &pgid)) != 0) return rc;
    /* the first key of the leaf, for the branch above */
    rc = add_ref(w, 0, w->data, w->nent ? w->ents[0].klen : 0, pgid);
    w->nent = 0;
    w->dlen = 0;
    return rc;
}

static void levels_reset(bbolt_writer *w)
{
    for (int i = 0; i < MAX_LEVELS; i++) reflist_free(&w->lv[i]);
    memset(w->lv_used, 0, sizeof w->lv_used);
}

/* Ends the open bucket. A small one (a leaf of at most a quarter page, as
 * bbolt's inlineable) goes inline into its parent's value when allowed. */
static int bucket_close(bbolt_writer *w, bool allow_inline)
{
    if (!w->in_bucket) return 0;
    int rc = 0;
    struct bucket_rec rec = {0};
    if (allow_inline && !w->lv_used[0] && leaf_size(w) <= BBOLT_PAGE_SIZE / 4) {
        size_t npages, n = leaf_size(w);
        if ((rc = leaf_build(w, &npages)) != 0) goto out;
        put_le16(w->page + 8, F_LEAF);
        put_le16(w->page + 10, (uint16_t)w->nent);
        rec.inl_len = BUCKET_HDR + n;
        if ((rec.inl = calloc(1, rec.inl_len)) == NULL) {
            rc = KERR_NOMEM;
            goto out;
        }
        memcpy(rec.inl + BUCKET_HDR, w->page, n);
        w->nent = 0;
        w->dlen = 0;
    } else {
        if (w->nent > 0 || !w->lv_used[0]) rc = leaf_flush(w);
        /* flush the pending branch nodes bottom-up; the first level that
         * holds a single child and never passed one up names the root */
        for (int i = 0; rc == 0; i++) {
            if (i >= MAX_LEVELS) {
                rc = KERR_INTERNAL;
                break;
            }
            if (!w->lv_used[i + 1] && w->lv[i].n == 1) {
                rec.root = w->lv[i].v[0].pgid;
                break;
            }
            rc = branch_flush(w, i);
        }
        if (rc != 0) goto out;
    }
    if (grow((void **)&w->buckets, &w->bcap, w->nb + 1, sizeof *w->buckets) != 0) {
        free(rec.inl);
        rc = KERR_NOMEM;
        goto out;
    }
    rec.name = w->cur;
    w->cur = NULL;
    w->buckets[w->nb++] = rec;
out:
    levels_reset(w);
    w->in_bucket = 0;
    w->last_len = 0;
    return rc;
}

int bbolt_writer_open(bbolt_writer **out, const char *path)
{
    bbolt_writer *w = calloc(1, sizeof *w);
    if (w == NULL) return KERR_NOMEM;
    w->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (w->fd < 0) {
        free(w);
        return KERR_IO;
    }
    w->next = 3; /* 0, 1: meta; 2: freelist */
    *out = w;
    return 0;
}

int bbolt_writer_bucket(bbolt_writer *w, const char *name)
{
    int rc = bucket_close(w, true);
    if (rc != 0) return rc;
    if ((w->cur = strdup(name)) == NULL) return KERR_NOMEM;
    w->in_bucket = 1;
    return 0;
}

int bbolt_writer_put(bbolt_writer *w, const uint8_t *key, size_t klen, const uint8_t *val,
                     size_t vlen)
{
    if (!w->in_bucket || klen == 0 || klen > UINT32_MAX || vlen > UINT32_MAX)
        return KERR_INTERNAL;
    if (w->last_len > 0) {
        size_t n = klen < w->last_len ? klen : w->last_len;
        int c = memcmp(w->last, key, n);
        if (c > 0 || (c == 0 && w->last_len >= klen)) return KERR_INTERNAL;
    }
    if (grow((void **)&w->last, &w->last_cap, klen, 1) != 0) return KERR_NOMEM;
    memcpy(w->last, key, klen);
    w->last_len = klen;
    /* a full leaf goes out first; an entry larger than a page gets a leaf
     * (with overflow pages) of its own */
    if (w->nent > 0 && (leaf_size(w) + ELEM + klen + vlen > BBOLT_PAGE_SIZE || w->nent == 0xFFFF)) {
        int rc = leaf_flush(w);
        if (rc != 0) return rc;
    }
    if (grow((void **)&w->ents, &w->entcap, w->nent + 1, sizeof *w->ents) != 0 ||
        grow((void **)&w->data, &w->dcap, w->dlen + klen + vlen, 1) != 0)
        return KERR_NOMEM;
    w->ents[w->nent++] = (struct lent){0, klen, vlen};
    memcpy(w->data + w->dlen, key, klen);
    if (vlen) memcpy(w->data + w->dlen + klen, val, vlen);
    w->dlen += klen + vlen;
    return 0;
}

static int cmp_bucket(const void *a, const void *b)
{
    const struct bucket_rec *x = a, *y = b;
    size_t xl = strlen(x->name), yl = strlen(y->name), n = xl < yl ? xl : yl;
    int c = memcmp(x->name, y->name, n);
    return c != 0 ? c : (xl > yl) - (xl < yl);
}

static void writer_free(bbolt_writer *w)
{
    if (w->fd >= 0) close(w->fd);
    free(w->cur);
    free(w->ents);
    free(w->data);
    free(w->last);
    levels_reset(w);
    for (size_t i = 0; i < w->nb; i++) free(w->buckets[i].name), free(w->buckets[i].inl);
    free(w->buckets);
    free(w->page);
    free(w);
}

void bbolt_writer_no_sync(bbolt_writer *w) { w->no_sync = true; }

void bbolt_writer_abort(bbolt_writer *w)
{
    if (w != NULL) writer_free(w);
}

static void meta_page(uint8_t *p, uint64_t txid, uint64_t root, uint64_t hwm)
{
    memset(p, 0, BBOLT_PAGE_SIZE);
    put_le64(p, txid % 2);
    put_le16(p + 8, F_META);
    uint8_t *m = p + PAGE_HDR;
    put_le32(m, BBOLT_MAGIC);
    put_le32(m + 4, BBOLT_VERSION);
    put_le32(m + 8, BBOLT_PAGE_SIZE);
    put_le32(m + 12, 0);
    put_le64(m + 16, root);
    put_le64(m + 24, 0);
    put_le64(m + 32, 2); /* freelist */
    put_le64(m + 40, hwm);
    put_le64(m + 48, txid);
    put_le64(m + 56, fnv64a(m, META_CHECKSUMMED));
}

int bbolt_writer_finish(bbolt_writer *w, uint64_t *size)
{
    int rc = bucket_close(w, true);
    if (rc != 0) goto out;
    /* the root bucket: one entry per bucket, sorted by name; the value is
     * the bucket header, with the page after it for an inline bucket */
    if (w->nb) qsort(w->buckets, w->nb, sizeof *w->buckets, cmp_bucket);
    for (size_t i = 0; i < w->nb; i++) {
        uint8_t hdr[BUCKET_HDR];
        put_le64(hdr, w->buckets[i].root);
        put_le64(hdr + 8, 0);
        w->in_bucket = 1;
        w->last_len = 0;
        const char *nm = w->buckets[i].name;
        const uint8_t *val = w->buckets[i].inl ? w->buckets[i].inl : hdr;
        size_t vlen = w->buckets[i].inl ? w->buckets[i].inl_len : sizeof hdr;
        if ((rc = bbolt_writer_put(w, (const uint8_t *)nm, strlen(nm), val, vlen)) != 0)
            goto out;
        w->ents[w->nent - 1].flags = BUCKET_LEAF;
        if (i > 0 && strcmp(w->buckets[i - 1].name, nm) == 0) {
            rc = KERR_INTERNAL;
            goto out;
        }
    }
    w->in_bucket = 1;
    /* close the root bucket's tree like any other, then take it back */
    w->cur = strdup("");
    if (w->cur == NULL) {
        rc = KERR_NOMEM;
        goto out;
    }
    if ((rc = bucket_close(w, false)) != 0) goto out;
    uint64_t root = w->buckets[w->nb - 1].root;
    /* empty freelist at page 2 */
    size_t np;
    if ((rc = node_buf(w, PAGE_HDR, &np)) != 0) goto out;
    put_le64(w->page, 2);
    put_le16(w->page + 8, F_FREELIST);
    if ((rc = write_all(w->fd, w->page, BBOLT_PAGE_SIZE, 2 * BBOLT_PAGE_SIZE)) != 0) goto out;
    if ((rc = node_buf(w, 2 * BBOLT_PAGE_SIZE, &np)) != 0) goto out;
    /* meta 0 with txid 2, meta 1 with txid 3: both valid, 1 current */
    meta_page(w->page, 2, root, w->next);
    meta_page(w->page + BBOLT_PAGE_SIZE, 3, root, w->next);
    if ((rc = write_all(w->fd, w->page, 2 * BBOLT_PAGE_SIZE, 0)) != 0) goto out;
    if (!w->no_sync && fsync(w->fd) != 0) {
        rc = KERR_IO;
        goto out;
    }
    if (size != NULL) *size = w->next * BBOLT_PAGE_SIZE;
out:
    writer_free(w);
    return rc;
}

/* ================= reader ================= */

static int meta_ok(const uint8_t *m)
{
    if (get_le32(m) != BBOLT_MAGIC || get_le32(m + 4) != BBOLT_VERSION) return 0;
    uint64_t sum = get_le64(m + 56);
    return sum == 0 || sum == fnv64a(m, META_CHECKSUMMED);
}

int bbolt_open(bbolt_db *db, const char *path, uint64_t limit)
{
    memset(db, 0, sizeof *db);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return KERR_IO;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return KERR_IO;
    }
    uint64_t size = (uint64_t)st.st_size;
    if (limit > 0 && limit < size) size = limit;
    if (size < 2 * 512) {
        close(fd);
        return KERR_CORRUPT;
    }
    void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return KERR_IO;
    db->map = map;
    db->size = db->map_size = (size_t)size;
    const uint8_t *best = NULL;
    uint32_t psize = 0;
    /* meta 0 tells the page size; if it is bad, try meta 1 at 4096 as bbolt
     * falls back to the OS page size */
    const uint8_t *m0 = db->map + PAGE_HDR;
    uint32_t ps0 = get_le32(m0 + 8);
    if (meta_ok(m0) && ps0 >= 512 && ps0 <= 65536 && (ps0 & (ps0 - 1)) == 0) {
        best = m0;
        psize = ps0;
    }
    uint32_t try_ps = psize ? psize : BBOLT_PAGE_SIZE;
    if ((uint64_t)try_ps + PAGE_HDR + 64 <= size) {
        const uint8_t *m1 = db->map + try_ps + PAGE_HDR;
        if (meta_ok(m1) && get_le32(m1 + 8) == try_ps && (best == NULL || get_le64(m1 + 48) > get_le64(best + 48))) {
            best = m1;
            psize = try_ps;
        }
    }
    if (best == NULL) goto corrupt;
    db->psize = psize;
    db->root = get_le64(best + 16);
    db->hwm = get_le64(best + 40);
    db->txid = get_le64(best + 48);
    /* every page below the high-water mark must be in the file */
    if (db->hwm < 2 || db->hwm > size / psize || db->root >= db->hwm) goto corrupt;
    uint64_t fl = get_le64(best + 32);
    if (fl != NO_FREELIST && fl >= db->hwm) goto corrupt;
    return 0;
corrupt:
    bbolt_close(db);
    return KERR_CORRUPT;
}

void bbolt_close(bbolt_db *db)
{
    if (db->map != NULL) munmap((void *)db->map, db->map_size);
    memset(db, 0, sizeof *db);
}

/* The node at page id: its bytes and length (header included). */
static int page_at(const bbolt_db *db, uint64_t id, const uint8_t **p, size_t *len)
{
    if (id < 2 || id >= db->hwm) return KERR_CORRUPT;
    const uint8_t *pg = db->map + id * db->psize;
    uint64_t ov = get_le32(pg + 12);
    if (id + ov + 1 > db->hwm) return KERR_CORRUPT;
    *p = pg;
    *len = (size_t)((ov + 1) * db->psize);
    return 0;
}

/* Walks the entries of node (p, len) and its children in order. */
static int walk_node(const bbolt_db *db, const uint8_t *p, size_t len, int depth,
                     uint64_t *budget, bbolt_each_fn fn, void *ctx)
{
    /* a tree visits each page once: more visits than pages means a cycle
     * (a corrupt file), which must not turn into an endless walk */
    if (depth > MAX_DEPTH || len < PAGE_HDR || (*budget)-- == 0) return KERR_CORRUPT;
    uint16_t flags = get_le16(p + 8), count = get_le16(p + 10);
    if ((uint64_t)PAGE_HDR + (uint64_t)count * ELEM > len) return KERR_CORRUPT;
    for (uint16_t i = 0; i < count; i++) {
        const uint8_t *e = p + PAGE_HDR + (size_t)i * ELEM;
        uint64_t at = (uint64_t)(e - p);
        if (flags & F_LEAF) {
            uint64_t pos = get_le32(e + 4), ks = get_le32(e + 8), vs = get_le32(e + 12);
            if (at + pos + ks + vs > len) return KERR_CORRUPT;
            const uint8_t *k = e + pos;
            int rc = fn(ctx, k, (size_t)ks, k + ks, (size_t)vs, (get_le32(e) & BUCKET_LEAF) != 0);
            if (rc != 0) return rc;
        } else if (flags & F_BRANCH) {
            uint64_t pos = get_le32(e), ks = get_le32(e + 4), child = get_le64(e + 8);
            if (at + pos + ks > len) return KERR_CORRUPT;
            const uint8_t *cp;
            size_t cl;
            int rc = page_at(db, child, &cp, &cl);
            if (rc != 0) return rc;
            if ((rc = walk_node(db, cp, cl, depth + 1, budget, fn, ctx)) != 0) return rc;
        } else {
            return KERR_CORRUPT;
        }
    }
    if (!(flags & (F_LEAF | F_BRANCH))) return KERR_CORRUPT;
    return 0;
}

int bbolt_foreach(const bbolt_db *db, const bbolt_bucket *b, bbolt_each_fn fn, void *ctx)
{
    uint64_t budget = db->hwm + 1;
    if (b->root == 0) {
        if (b->inl == NULL) return 0;
        return walk_node(db, b->inl, b->inl_len, 0, &budget, fn, ctx);
    }
    const uint8_t *p;
    size_t len;
    int rc = page_at(db, b->root, &p, &len);
    if (rc != 0) return rc;
    return walk_node(db, p, len, 0, &budget, fn, ctx);
}

void bbolt_root(const bbolt_db *db, bbolt_bucket *b) { *b = (bbolt_bucket){db->root, NULL, 0}; }

int bbolt_bucket_from_value(const uint8_t *val, size_t vlen, bbolt_bucket *b)
{
    if (vlen < BUCKET_HDR) return KERR_CORRUPT;
    b->root = get_le64(val);
    b->inl = NULL;
    b->inl_len = 0;
    if (b->root == 0) {
        if (vlen < BUCKET_HDR + PAGE_HDR) return KERR_CORRUPT;
        b->inl = val + BUCKET_HDR;
        b->inl_len = vlen - BUCKET_HDR;
    }
    return 0;
}

struct find_ctx {
    const char *name;
    size_t nlen;
    bbolt_bucket *b;
    int found;
};

static int find_cb(void *ctx, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl, int isb)
{
    struct find_ctx *f = ctx;
    if (!isb || kl != f->nlen || memcmp(k, f->name, kl) != 0) return 0;
    int rc = bbolt_bucket_from_value(v, vl, f->b);
    if (rc != 0) return rc;
    f->found = 1;
    return 1;
}

int bbolt_find_bucket(const bbolt_db *db, const char *name, bbolt_bucket *b)
{
    bbolt_bucket root;
    bbolt_root(db, &root);
    struct find_ctx f = {name, strlen(name), b, 0};
    int rc = bbolt_foreach(db, &root, find_cb, &f);
    if (rc < 0) return rc;
    return f.found;
}

/* ---- check ---- */

struct check {
    const bbolt_db *db;
    uint8_t *seen; /* 1 reachable, 2 free */
    char *why;
    size_t whylen;
    int err;
};

static void problem(struct check *c, const char *fmt, unsigned long long a)
{
    if (c->err == 0 && c->why != NULL) snprintf(c->why, c->whylen, fmt, a);
    c->err = KERR_CORRUPT;
}

static void mark(struct check *c, uint64_t id, uint64_t ov)
{
    for (uint64_t i = 0; i <= ov; i++) {
        if (id + i >= c->db->hwm) {
            problem(c, "page %llu: out of bounds", (unsigned long long)(id + i));
            return;
        }
        if (c->seen[id + i] == 1) problem(c, "page %llu: multiple references", id + i);
        else if (c->seen[id + i] == 2) problem(c, "page %llu: reachable freed", id + i);
        c->seen[id + i] = 1;
    }
}

static int check_bucket(struct check *c, const bbolt_bucket *b, int depth);

static int check_entry(void *ctx, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl, int isb)
{
    (void)k, (void)kl;
    if (!isb) return 0;
    struct check *c = ctx;
    bbolt_bucket sub;
    int rc = bbolt_bucket_from_value(v, vl, &sub);
    if (rc != 0) return rc;
    return check_bucket(c, &sub, 1);
}

static int check_pages(struct check *c, uint64_t id, int depth)
{
    const uint8_t *p;
    size_t len;
    if (depth > MAX_DEPTH) return KERR_CORRUPT;
    int rc = page_at(c->db, id, &p, &len);
    if (rc != 0) {
        problem(c, "page %llu: out of bounds", (unsigned long long)id);
        return rc;
    }
    mark(c, id, get_le32(p + 12));
    if (c->err) return c->err;
    uint16_t flags = get_le16(p + 8), count = get_le16(p + 10);
    if (get_le64(p) != id) problem(c, "page %llu: wrong id in header", (unsigned long long)id);
    if (!(flags & (F_LEAF | F_BRANCH))) {
        problem(c, "page %llu: invalid type", (unsigned long long)id);
        return KERR_CORRUPT;
    }
    if (flags & F_BRANCH) {
        if ((uint64_t)PAGE_HDR + (uint64_t)count * ELEM > len) return KERR_CORRUPT;
        for (uint16_t i = 0; i < count; i++)
            if ((rc = check_pages(c, get_le64(p + PAGE_HDR + (size_t)i * ELEM + 8), depth + 1)) != 0)
                return rc;
    }
    return c->err;
}

static int check_bucket(struct check *c, const bbolt_bucket *b, int depth)
{
    if (depth > MAX_DEPTH) return KERR_CORRUPT;
    if (b->root != 0) {
        int rc = check_pages(c, b->root, 0);
        if (rc != 0) return rc;
    }
    return bbolt_foreach(c->db, b, check_entry, c);
}

int bbolt_check(const bbolt_db *db, char *why, size_t whylen)
{
    struct check c = {db, calloc((size_t)db->hwm, 1), why, whylen, 0};
    if (c.seen == NULL) return KERR_NOMEM;
    c.seen[0] = c.seen[1] = 1;
    /* the freelist of the winning meta page */
    const uint8_t *m = NULL;
    for (int i = 0; i < 2; i++) {
        const uint8_t *mi = db->map + (size_t)i * db->psize + PAGE_HDR;
        if (meta_ok(mi) && get_le64(mi + 48) == db->txid) m = mi;
    }
    uint64_t fl = m ? get_le64(m + 32) : NO_FREELIST;
    if (fl != NO_FREELIST) {
        const uint8_t *p;
        size_t len;
        if (page_at(db, fl, &p, &len) != 0 || !(get_le16(p + 8) & F_FREELIST)) {
            problem(&c, "page %llu: invalid freelist page", (unsigned long long)fl);
        } else {
            mark(&c, fl, get_le32(p + 12));
            uint64_t n = get_le16(p + 10), idx = 0;
            if (n == 0xFFFF) {
                n = len >= PAGE_HDR + 8 ? get_le64(p + PAGE_HDR) : 0;
                idx = 1;
            }
            if (PAGE_HDR + (idx + n) * 8 > len) {
                problem(&c, "page %llu: freelist too long", (unsigned long long)fl);
            } else {
                for (uint64_t i = 0; i < n && !c.err; i++) {
                    uint64_t id = get_le64(p + PAGE_HDR + (idx + i) * 8);
                    if (id >= db->hwm) problem(&c, "page %llu: freed page out of bounds", id);
                    else if (c.seen[id] == 2) problem(&c, "page %llu: already freed", id);
                    else if (c.seen[id] == 1) problem(&c, "page %llu: reachable freed", id);
                    else c.seen[id] = 2;
                }
            }
        }
    }
    if (!c.err) {
        bbolt_bucket root;
        bbolt_root(db, &root);
        int rc = check_bucket(&c, &root, 0);
        if (rc != 0 && !c.err) problem(&c, "bucket tree corrupt (%llu)", (unsigned long long)-rc);
    }
    /* without a stored freelist (NoFreelistSync, as etcd runs bbolt) bbolt
     * rebuilds it from the unreachable pages: those are free */
    for (uint64_t i = 0; i < db->hwm && !c.err && fl != NO_FREELIST; i++)
        if (c.seen[i] == 0) problem(&c, "page %llu: unreachable unfreed", (unsigned long long)i);
    free(c.seen);
    return c.err;
}
