/* Key-range permissions, as etcd's range_perm_cache.go with its interval
 * tree (pkg/adt): a point request needs one allowed interval holding the
 * key; a range request needs the allowed intervals to cover it without a
 * gap. Users have few permissions, so a scan beats a tree here. */
#include <string.h>

#include "auth/auth.h"

/* An interval [b, e) of keys; e_inf: no upper bound. */
struct ivl {
    const uint8_t *b, *e;
    size_t bl, el;
    bool e_inf;
};

static int bcmp_(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    size_t n = al < bl ? al : bl;
    int c = n ? memcmp(a, b, n) : 0;
    if (c != 0) return c < 0 ? -1 : 1;
    return al < bl ? -1 : al > bl ? 1 : 0;
}

static bool kind_matches(Authpb__Permission__Type t, enum auth_perm_kind kind)
{
    if (t == AUTHPB__PERMISSION__TYPE__READWRITE) return true;
    if (kind == AUTH_PERM_READ) return t == AUTHPB__PERMISSION__TYPE__READ;
    return t == AUTHPB__PERMISSION__TYPE__WRITE;
}

/* Does interval `v` hold key k? A point permission [key, key+"\0") holds
 * exactly its key. */
static bool ivl_holds(const Authpb__Permission *p, const uint8_t *k, size_t kl)
{
    if (p->range_end.len == 0) return bcmp_(p->key.data, p->key.len, k, kl) == 0;
    if (bcmp_(p->key.data, p->key.len, k, kl) > 0) return false;
    if (p->range_end.len == 1 && p->range_end.data[0] == 0) return true;
    return bcmp_(k, kl, p->range_end.data, p->range_end.len) < 0;
}

bool auth_perm_allows(Authpb__Permission *const *perms, size_t n, const uint8_t *key,
                      size_t klen, const uint8_t *end, size_t elen, enum auth_perm_kind kind)
{
    if (elen == 0) {
        for (size_t i = 0; i < n; i++)
            if (kind_matches(perms[i]->permtype, kind) && ivl_holds(perms[i], key, klen))
                return true;
        return false;
    }
    bool q_inf = elen == 1 && end[0] == 0;
    /* Walk from `cur` (the first key not yet known to be covered): some
     * allowed interval must start at or before it and reach past it. */
    const uint8_t *cur = key;
    size_t curl = klen;
    for (;;) {
        if (!q_inf && bcmp_(cur, curl, end, elen) >= 0) return true;
        struct ivl best = {0};
        bool found = false;
        for (size_t i = 0; i < n; i++) {
            const Authpb__Permission *p = perms[i];
            if (!kind_matches(p->permtype, kind)) continue;
            if (bcmp_(p->key.data, p->key.len, cur, curl) > 0) continue;
            struct ivl v = {p->key.data, NULL, p->key.len, 0, false};
            if (p->range_end.len == 0) {
                /* [key, key+"\0"): reaches past cur only if cur == key; it
                 * then covers the key alone, whose successor is key+"\0".
                 * Only useful when the query is that one-key range. */
                if (bcmp_(p->key.data, p->key.len, cur, curl) != 0) continue;
                if (!q_inf && elen == curl + 1 && end[curl] == 0 &&
                    memcmp(end, cur, curl) == 0)
                    return true;
                continue;
            }
            if (p->range_end.len == 1 && p->range_end.data[0] == 0) {
                v.e_inf = true;
            } else {
                v.e = p->range_end.data;
                v.el = p->range_end.len;
                if (bcmp_(v.e, v.el, cur, curl) <= 0) continue; /* ends at or before cur */
            }
            if (!found || v.e_inf ||
                (!best.e_inf && bcmp_(v.e, v.el, best.e, best.el) > 0)) {
                best = v;
                found = true;
            }
        }
        if (!found) return false;
        if (best.e_inf) return true;
        cur = best.e;
        curl = best.el;
    }
}
