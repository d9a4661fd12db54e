#include "server/identity.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/config.h"
#include "util/endian.h"

uint64_t identity_member_id(char *const *urls, size_t n, const char *token)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha1(), NULL);
    for (size_t i = 0; i < n; i++) EVP_DigestUpdate(ctx, urls[i], strlen(urls[i]));
    EVP_DigestUpdate(ctx, token, strlen(token));
    EVP_DigestFinal_ex(ctx, md, NULL);
    EVP_MD_CTX_free(ctx);
    return get_be64(md);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

uint64_t identity_cluster_id(const uint64_t *ids, size_t n)
{
    uint64_t *sorted = malloc((n ? n : 1) * sizeof *sorted);
    unsigned char *buf = malloc((n ? n : 1) * 8);
    memcpy(sorted, ids, n * sizeof *ids);
    qsort(sorted, n, sizeof *sorted, cmp_u64);
    for (size_t i = 0; i < n; i++)
        for (int b = 0; b < 8; b++) buf[i * 8 + b] = (unsigned char)(sorted[i] >> (56 - 8 * b));
    unsigned char md[SHA_DIGEST_LENGTH];
    SHA1(buf, n * 8, md);
    free(sorted);
    free(buf);
    return get_be64(md);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int identity_from_cluster(struct identity *id, const char *initial_cluster,
                          const char *token, const char *name)
{
    memset(id, 0, sizeof *id);
    size_t n;
    char **entries = config_split(initial_cluster, &n);
    id->members = calloc(n ? n : 1, sizeof *id->members);
    int rv = -1;
    for (size_t i = 0; i < n; i++) {
        char *eq = strchr(entries[i], '=');
        if (eq == NULL || eq == entries[i] || eq[1] == 0) {
            fprintf(stderr, "ketch: --initial-cluster: bad entry %s (want name=url)\n", entries[i]);
            goto out;
        }
        *eq = 0;
        struct identity_member *m = NULL;
        for (size_t j = 0; j < id->n_members; j++)
            if (!strcmp(id->members[j].name, entries[i])) m = &id->members[j];
        if (m == NULL) {
            m = &id->members[id->n_members++];
            m->name = strdup(entries[i]);
            m->peer_urls = calloc(n + 1, sizeof *m->peer_urls);
        }
        m->peer_urls[m->n_peer_urls++] = strdup(eq + 1);
    }
    uint64_t *ids = calloc(id->n_members ? id->n_members : 1, sizeof *ids);
    bool found = false;
    for (size_t j = 0; j < id->n_members; j++) {
        struct identity_member *m = &id->members[j];
        qsort(m->peer_urls, m->n_peer_urls, sizeof *m->peer_urls, cmp_str);
        m->id = identity_member_id(m->peer_urls, m->n_peer_urls, token);
        ids[j] = m->id;
        if (!strcmp(m->name, name)) {
            id->self = j;
            found = true;
        }
    }
    id->cluster_id = identity_cluster_id(ids, id->n_members);
    free(ids);
    if (!found) {
        fprintf(stderr, "ketch: couldn't find local name \"%s\" in the initial cluster "
                        "configuration\n", name);
        goto out;
    }
    rv = 0;
out:
    config_strv_free(entries);
    if (rv != 0) identity_free(id);
    return rv;
}

void identity_free(struct identity *id)
{
    for (size_t i = 0; i < id->n_members; i++) {
        free(id->members[i].name);
        config_strv_free(id->members[i].peer_urls);
    }
    free(id->members);
    memset(id, 0, sizeof *id);
}

static int make_dir(const char *path)
{
    if (mkdir(path, 0700) == 0 || errno == EEXIST) {
        struct stat st;
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return 0;
        fprintf(stderr, "ketch: %s exists and is not a directory\n", path);
        return -1;
    }
    fprintf(stderr, "ketch: cannot create directory %s: %s\n", path, strerror(errno));
    return -1;
}

int identity_prepare_data_dir(struct identity *id, const char *data_dir)
{
    char path[4096];
    if (make_dir(data_dir)) return -1;
    if (access(data_dir, W_OK | X_OK) != 0) {
        fprintf(stderr, "ketch: data dir %s is not writable: %s\n", data_dir, strerror(errno));
        return -1;
    }
    const char *subs[] = {"member", "member/kv", "member/raft"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", data_dir, subs[i]);
        if (make_dir(path)) return -1;
        if (access(path, W_OK | X_OK) != 0) {
            fprintf(stderr, "ketch: %s is not writable: %s\n", path, strerror(errno));
            return -1;
        }
    }
    struct identity_member *self = &id->members[id->self];
    snprintf(path, sizeof path, "%s/member/identity", data_dir);
    FILE *f = fopen(path, "r");
    if (f != NULL) {
        char name[256] = "";
        uint64_t member_id = 0, cluster_id = 0;
        int got = fscanf(f, "name=%255s\nmember_id=%" SCNx64 "\ncluster_id=%" SCNx64, name,
                         &member_id, &cluster_id);
        fclose(f);
        if (got != 3) {
            fprintf(stderr, "ketch: %s is damaged; refusing to start on this data dir\n", path);
            return -1;
        }
        if (strcmp(name, self->name) != 0) {
            fprintf(stderr, "ketch: data dir %s belongs to member \"%s\" (%016" PRIx64
                            "), not to --name \"%s\"; nothing was changed\n",
                    data_dir, name, member_id, self->name);
            return -1;
        }
        self->id = member_id;
        id->cluster_id = cluster_id;
        return 0;
    }
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        fprintf(stderr, "ketch: cannot write %s: %s\n", tmp, strerror(errno));
        return -1;
    }
    dprintf(fd, "name=%s\nmember_id=%016" PRIx64 "\ncluster_id=%016" PRIx64 "\n", self->name,
            self->id, id->cluster_id);
    if (fsync(fd) != 0 || close(fd) != 0 || rename(tmp, path) != 0) {
        fprintf(stderr, "ketch: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}
