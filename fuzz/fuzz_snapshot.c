/* Fuzz target fuzz_bbolt: snapshot files as `ketchctl snapshot status`
 * and `restore` read them (src/snapshot): the bbolt reader (meta pages,
 * page bounds, branch/leaf/inline walks), bbolt's page check and etcd's
 * status (every bucket, every entry). A bad file must be refused, never
 * read out of bounds, crash or loop. The input is the file. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "snapshot/bbolt.h"
#include "snapshot/snapshot.h"

static int each(void *ctx, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl, int isb)
{
    const bbolt_db *db = ctx;
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < kl; i++) sink ^= k[i];
    for (size_t i = 0; i < vl; i++) sink ^= v[i];
    (void)sink;
    if (isb) {
        bbolt_bucket b;
        if (bbolt_bucket_from_value(v, vl, &b) == 0) bbolt_foreach(db, &b, each, ctx);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = memfd_create("fuzz-snapshot", 0);
    if (fd < 0) return 0;
    if (size > 0 && write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return 0;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    bbolt_db db;
    if (bbolt_open(&db, path, 0) == 0) {
        char why[256];
        if (bbolt_check(&db, why, sizeof why) == 0) {
            bbolt_bucket root;
            bbolt_root(&db, &root);
            bbolt_foreach(&db, &root, each, &db);
        }
        bbolt_close(&db);
    }
    struct snapshot_status st;
    char err[512];
    snapshot_status(path, &st, err, sizeof err);
    close(fd);
    return 0;
}
