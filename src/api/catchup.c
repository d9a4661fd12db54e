/* Whole-store Raft snapshots (member_config.copy / .install): the store
 * copied for a member that is too far behind, and installed there with
 * everything derived from it reloaded (leases, member table, watchers). */
#include "api/catchup.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <unistd.h>

#include "api/cluster.h"
#include "api/lease.h"
#include "api/watch.h"
#include "util/errors.h"
#include "util/log.h"

int api_catchup_copy(void *ctx, const char *path, uint64_t *applied)
{
    api_server *s = ctx;
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0) return KERR_IO;
    int rv = mvcc_copy_fd(s->store, fd);
    close(fd);
    if (rv == 0) rv = mvcc_file_applied(path, applied);
    return rv;
}

/* Pins held for copies (loop only). */
static int copy_pins;

void api_catchup_pin(void *ctx, int delta)
{
    api_server *s = ctx;
    copy_pins += delta;
    if (delta > 0)
        mvcc_pin(s->store); /* no defrag swap under a copy */
    else
        mvcc_unpin(s->store);
}

int api_catchup_install(void *ctx, const char *path, uint64_t *applied)
{
    api_server *s = ctx;
    int64_t old_rev = mvcc_revision(s->store);
    /* the member holds no copy while it installs: our own pins are stale */
    /* Readers on other threads (a HashKV, a snapshot export, a defrag's
     * copy) are waited for by mvcc_replace: libraft cannot take a failed
     * install back (it has already reset its log to the snapshot), so the
     * install is not put off. */
    int rv = mvcc_replace(s->store, path, copy_pins);
    *applied = mvcc_applied_index(s->store);
    if (rv != 0) {
        log_error("snapshot: installing the store failed: %s", kerr_text(rv));
        return rv;
    }
    if ((rv = api_cluster_reload(s)) != 0)
        log_error("snapshot: cannot reload the member table: %s", kerr_text(rv));
    if ((rv = lease_api_reload(s)) != 0)
        log_error("snapshot: cannot reload the leases: %s", kerr_text(rv));
    watch_api_store_replaced(s, old_rev);
    log_info("snapshot installed: revision %" PRId64 " (was %" PRId64 "), applied index %" PRIu64,
             mvcc_revision(s->store), old_rev, *applied);
    return 0;
}
