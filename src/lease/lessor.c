/* The lessor: lease deadlines in memory (see lessor.h). */
#include "lease/lessor.h"

#include <stdlib.h>

#include "util/errors.h"
#include "util/u64map.h"

struct lessor {
    u64map leases; /* (uint64_t)id -> struct lessor_lease * */
    bool primary;
};

int64_t lessor_min_ttl(unsigned heartbeat_ms, unsigned election_ms)
{
    if (heartbeat_ms == 0) return 1;
    uint64_t ticks = election_ms / heartbeat_ms;
    uint64_t ms = (3 * ticks) / 2 * heartbeat_ms;
    int64_t s = (int64_t)((ms + 999) / 1000);
    return s > 0 ? s : 1;
}

lessor *lessor_new(void) { return calloc(1, sizeof(lessor)); }

void lessor_free(lessor *l)
{
    if (l == NULL) return;
    for (size_t i = 0; i < l->leases.cap; i++)
        if (l->leases.keys[i] != 0) free(l->leases.vals[i]);
    u64map_free(&l->leases);
    free(l);
}

size_t lessor_count(const lessor *l) { return l->leases.len; }

/* The TTL a (re)started deadline counts from: etcd's RemainingTTL(). */
static int64_t base_ttl(const struct lessor_lease *e)
{
    return e->remaining > 0 ? e->remaining : e->ttl;
}

static uint64_t deadline_after(uint64_t now, uint64_t extend_ms, int64_t ttl_s)
{
    if (ttl_s < 0) ttl_s = 0;
    uint64_t ms = (uint64_t)ttl_s * 1000;
    if (ms / 1000 != (uint64_t)ttl_s || now + extend_ms + ms < now) return LESSOR_FOREVER - 1;
    return now + extend_ms + ms;
}

int lessor_add(lessor *l, int64_t id, int64_t ttl, int64_t remaining, uint64_t now)
{
    struct lessor_lease *e = u64map_get(&l->leases, (uint64_t)id);
    if (e == NULL) {
        e = malloc(sizeof *e);
        if (e == NULL) return KERR_NOMEM;
        if (u64map_put(&l->leases, (uint64_t)id, e) != 0) {
            free(e);
            return KERR_NOMEM;
        }
    }
    *e = (struct lessor_lease){id, ttl, remaining, LESSOR_FOREVER, 0};
    if (l->primary) e->deadline = deadline_after(now, 0, base_ttl(e));
    return 0;
}

void lessor_remove(lessor *l, int64_t id) { free(u64map_del(&l->leases, (uint64_t)id)); }

void lessor_checkpoint(lessor *l, int64_t id, int64_t remaining)
{
    struct lessor_lease *e = u64map_get(&l->leases, (uint64_t)id);
    if (e != NULL) e->remaining = remaining;
}

const struct lessor_lease *lessor_get(const lessor *l, int64_t id)
{
    return id == 0 ? NULL : u64map_get(&l->leases, (uint64_t)id);
}

bool lessor_is_primary(const lessor *l) { return l->primary; }

void lessor_promote(lessor *l, uint64_t now, uint64_t extend_ms)
{
    l->primary = true;
    for (size_t i = 0; i < l->leases.cap; i++) {
        if (l->leases.keys[i] == 0) continue;
        struct lessor_lease *e = l->leases.vals[i];
        e->deadline = deadline_after(now, extend_ms, base_ttl(e));
        e->retry_at = 0;
    }
}

void lessor_demote(lessor *l)
{
    l->primary = false;
    for (size_t i = 0; i < l->leases.cap; i++) {
        if (l->leases.keys[i] == 0) continue;
        struct lessor_lease *e = l->leases.vals[i];
        e->deadline = LESSOR_FOREVER;
        e->retry_at = 0;
    }
}

int lessor_renew(lessor *l, int64_t id, uint64_t now, int64_t *ttl, bool *clear_checkpoint)
{
    *clear_checkpoint = false;
    if (!l->primary) return KERR_NOT_LEADER;
    struct lessor_lease *e = id == 0 ? NULL : u64map_get(&l->leases, (uint64_t)id);
    if (e == NULL || e->deadline <= now) return KERR_LEASE_NOT_FOUND;
    if (e->remaining > 0) {
        e->remaining = 0;
        *clear_checkpoint = true;
    }
    e->deadline = deadline_after(now, 0, e->ttl);
    *ttl = e->ttl;
    return 0;
}

int64_t lessor_remaining_ms(const struct lessor_lease *e, uint64_t now)
{
    if (e->deadline >= LESSOR_FOREVER - 1) return INT64_MAX;
    if (e->deadline >= now) {
        uint64_t d = e->deadline - now;
        return d > INT64_MAX ? INT64_MAX : (int64_t)d;
    }
    uint64_t d = now - e->deadline;
    return d > INT64_MAX ? INT64_MIN : -(int64_t)d;
}

int64_t lessor_remaining_s(const struct lessor_lease *e, uint64_t now)
{
    int64_t ms = lessor_remaining_ms(e, now);
    if (ms == INT64_MAX) return INT64_MAX / 1000000000; /* Go's MaxInt64 ns in s */
    return ms / 1000; /* C truncates toward zero, as Go's int64(float) */
}

struct dl {
    uint64_t deadline;
    int64_t id;
};

static int dl_cmp(const void *x, const void *y)
{
    const struct dl *a = x, *b = y;
    if (a->deadline != b->deadline) return a->deadline < b->deadline ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

/* Leases matching (primary && due at now) or all (now == 0 && all), sorted. */
static int collect(const lessor *l, bool due_only, uint64_t now, struct dl **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (l->leases.len == 0) return 0;
    struct dl *v = malloc(l->leases.len * sizeof *v);
    if (v == NULL) return KERR_NOMEM;
    for (size_t i = 0; i < l->leases.cap; i++) {
        if (l->leases.keys[i] == 0) continue;
        const struct lessor_lease *e = l->leases.vals[i];
        if (due_only && (e->deadline > now || e->retry_at > now)) continue;
        v[(*n)++] = (struct dl){e->deadline, e->id};
    }
    qsort(v, *n, sizeof *v, dl_cmp);
    *out = v;
    return 0;
}

size_t lessor_expired(const lessor *l, uint64_t now, int64_t *ids, size_t max)
{
    if (!l->primary) return 0;
    struct dl *v;
    size_t n;
    if (collect(l, true, now, &v, &n) != 0) return 0;
    if (n > max) n = max;
    for (size_t i = 0; i < n; i++) ids[i] = v[i].id;
    free(v);
    return n;
}

size_t lessor_checkpoints(const lessor *l, uint64_t now, int64_t min_ttl, int64_t *ids,
                          int64_t *remaining, size_t max)
{
    size_t n = 0;
    if (!l->primary) return 0;
    for (size_t i = 0; i < l->leases.cap && n < max; i++) {
        if (l->leases.keys[i] == 0) continue;
        const struct lessor_lease *e = l->leases.vals[i];
        if (e->ttl <= min_ttl || e->deadline >= LESSOR_FOREVER - 1 || e->deadline <= now)
            continue;
        ids[n] = e->id;
        uint64_t r = (e->deadline - now + 999) / 1000;
        /* a promotion's grace period is not a longer TTL */
        remaining[n] = r > (uint64_t)e->ttl ? e->ttl : (int64_t)r;
        n++;
    }
    return n;
}

void lessor_revoking(lessor *l, int64_t id, uint64_t now)
{
    struct lessor_lease *e = u64map_get(&l->leases, (uint64_t)id);
    if (e != NULL) e->retry_at = now + LESSOR_RETRY_MS;
}

int lessor_list(const lessor *l, int64_t **ids, size_t *n)
{
    struct dl *v;
    *ids = NULL;
    int rc = collect(l, false, 0, &v, n);
    if (rc != 0 || *n == 0) {
        free(v);
        return rc;
    }
    int64_t *out = malloc(*n * sizeof *out);
    if (out == NULL) {
        free(v);
        *n = 0;
        return KERR_NOMEM;
    }
    for (size_t i = 0; i < *n; i++) out[i] = v[i].id;
    free(v);
    *ids = out;
    return 0;
}
