/* The auth tables (etcd's auth/store.go) in the MVCC store's LMDB
 * environment, changed by mvcc_apply in the same transaction as the keys,
 * and the permission checks that etcd's authApplierV3 makes at apply.
 *
 *   auth   LMDB key          value
 *          "e"               enabled flag, 1 byte (0/1)
 *          "v"               auth revision, u64 big-endian (1 once the
 *                            store exists, as etcd's NewAuthStore)
 *          "u" name          packed authpb.User (password: bcrypt hash,
 *                            roles sorted)
 *          "r" name          packed authpb.Role (permissions sorted by key)
 *
 * Names are at most AUTH_NAME_MAX bytes (LMDB's key limit). */
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"
#include "mvcc/mvcc_int.h"
#include "util/errors.h"
#include "util/log.h"

enum { AUTH_NAME_MAX = 500 };

static void *pb_alloc(void *data, size_t size) { return arena_alloc(data, size); }
static void pb_free(void *data, void *p) { (void)data, (void)p; }

/* ---- table access ---- */

static int get_u64(MDB_txn *txn, mvcc_store *s, const char *k, uint64_t *v, int *found)
{
    MDB_val key = {strlen(k), (void *)k}, d;
    int rc = mdb_get(txn, s->auth, &key, &d);
    *found = 0;
    if (rc == MDB_NOTFOUND) return 0;
    if (rc != 0) return mdb_to_kerr(rc);
    *found = 1;
    if (d.mv_size == 1) *v = *(uint8_t *)d.mv_data;
    else if (d.mv_size == 8) *v = get_be64(d.mv_data);
    else return KERR_CORRUPT;
    return 0;
}

int auth_load(MDB_txn *txn, mvcc_store *s)
{
    uint64_t v = 0, en = 0;
    int found, rc;
    if ((rc = get_u64(txn, s, "v", &v, &found)) != 0) return rc;
    if (!found) {
        uint8_t b[8];
        put_be64(b, 1);
        MDB_val key = {1, "v"}, d = {8, b};
        if ((rc = mdb_put(txn, s->auth, &key, &d, 0)) != 0) return mdb_to_kerr(rc);
        v = 1;
    }
    if ((rc = get_u64(txn, s, "e", &en, &found)) != 0) return rc;
    s->auth_rev = v;
    s->auth_enabled = en != 0;
    return 0;
}

static int name_key(uint8_t *buf, char kind, const char *name, MDB_val *k)
{
    size_t n = strlen(name);
    if (n > AUTH_NAME_MAX) return KERR_BAD_REQUEST;
    buf[0] = (uint8_t)kind;
    memcpy(buf + 1, name, n);
    *k = (MDB_val){n + 1, buf};
    return 0;
}

/* Loads user `name` into arena memory: 1 found, 0 not, or KERR_*. */
static int user_get(MDB_txn *txn, mvcc_store *s, const char *name, arena *a, Authpb__User **out)
{
    uint8_t b[AUTH_NAME_MAX + 1];
    MDB_val k, d;
    if (name_key(b, 'u', name, &k) != 0) return 0;
    int rc = mdb_get(txn, s->auth, &k, &d);
    if (rc == MDB_NOTFOUND) return 0;
    if (rc != 0) return mdb_to_kerr(rc);
    ProtobufCAllocator al = {pb_alloc, pb_free, a};
    *out = authpb__user__unpack(&al, d.mv_size, d.mv_data);
    return *out ? 1 : KERR_CORRUPT;
}

static int role_get(MDB_txn *txn, mvcc_store *s, const char *name, arena *a, Authpb__Role **out)
{
    uint8_t b[AUTH_NAME_MAX + 1];
    MDB_val k, d;
    if (name_key(b, 'r', name, &k) != 0) return 0;
    int rc = mdb_get(txn, s->auth, &k, &d);
    if (rc == MDB_NOTFOUND) return 0;
    if (rc != 0) return mdb_to_kerr(rc);
    ProtobufCAllocator al = {pb_alloc, pb_free, a};
    *out = authpb__role__unpack(&al, d.mv_size, d.mv_data);
    return *out ? 1 : KERR_CORRUPT;
}

static int put_msg(MDB_txn *txn, mvcc_store *s, char kind, const char *name,
                   const ProtobufCMessage *m)
{
    uint8_t b[AUTH_NAME_MAX + 1];
    MDB_val k;
    int rc = name_key(b, kind, name, &k);
    if (rc != 0) return rc;
    size_t n = protobuf_c_message_get_packed_size(m);
    MDB_val d = {n, NULL};
    if ((rc = mdb_put(txn, s->auth, &k, &d, MDB_RESERVE)) != 0) return mdb_to_kerr(rc);
    protobuf_c_message_pack(m, d.mv_data);
    return 0;
}

static int del_name(MDB_txn *txn, mvcc_store *s, char kind, const char *name)
{
    uint8_t b[AUTH_NAME_MAX + 1];
    MDB_val k;
    int rc = name_key(b, kind, name, &k);
    if (rc != 0) return rc;
    rc = mdb_del(txn, s->auth, &k, NULL);
    return rc == MDB_NOTFOUND ? 0 : mdb_to_kerr(rc);
}

/* Every name of `kind` ('u'/'r') in byte order, into arena memory. */
static int list_names(MDB_txn *txn, mvcc_store *s, char kind, arena *a, char ***names, size_t *n)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, s->auth, &cur);
    if (rc != 0) return mdb_to_kerr(rc);
    size_t cap = 0;
    *names = NULL;
    *n = 0;
    uint8_t kb = (uint8_t)kind;
    MDB_val k = {1, &kb}, d;
    for (rc = mdb_cursor_get(cur, &k, &d, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
        if (k.mv_size < 1 || ((uint8_t *)k.mv_data)[0] != kb) break;
        if (k.mv_size == 1) continue;
        if (*n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            char **nn = arena_alloc(a, nc * sizeof *nn);
            if (*n) memcpy(nn, *names, *n * sizeof *nn);
            *names = nn, cap = nc;
        }
        char *name = arena_alloc(a, k.mv_size);
        memcpy(name, (uint8_t *)k.mv_data + 1, k.mv_size - 1);
        name[k.mv_size - 1] = 0;
        (*names)[(*n)++] = name;
    }
    mdb_cursor_close(cur);
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : mdb_to_kerr(rc);
}

static bool has_role(const Authpb__User *u, const char *role)
{
    for (size_t i = 0; i < u->n_roles; i++)
        if (!strcmp(u->roles[i], role)) return true;
    return false;
}

static int set_revision(MDB_txn *txn, mvcc_store *s, uint64_t rev)
{
    uint8_t b[8];
    put_be64(b, rev);
    MDB_val k = {1, "v"}, d = {8, b};
    return mdb_to_kerr(mdb_put(txn, s->auth, &k, &d, 0));
}

/* etcd's commitRevision: every change of users or roles bumps it. */
static int bump(struct op_ctx *c)
{
    uint64_t v = 0;
    int found, rc = get_u64(c->txn, c->s, "v", &v, &found);
    if (rc != 0) return rc;
    return set_revision(c->txn, c->s, v + 1);
}

static int set_enabled(MDB_txn *txn, mvcc_store *s, int en)
{
    uint8_t b = (uint8_t)en;
    MDB_val k = {1, "e"}, d = {1, &b};
    return mdb_to_kerr(mdb_put(txn, s->auth, &k, &d, 0));
}

/* ---- permission checks ---- */

/* etcd's isOpPermitted. */
static int op_permitted(MDB_txn *txn, mvcc_store *s, const char *user, uint64_t rev,
                        const uint8_t *key, size_t klen, const uint8_t *end, size_t elen,
                        enum auth_perm_kind kind)
{
    if (!s->auth_enabled) return 0;
    if (rev == 0 || user == NULL || user[0] == 0) return KERR_USER_EMPTY;
    if (rev < s->auth_rev) return KERR_AUTH_OLD_REVISION;
    arena a = ARENA_INIT;
    Authpb__User *u;
    int rc = user_get(txn, s, user, &a, &u);
    if (rc <= 0) {
        arena_free(&a);
        return rc < 0 ? rc : KERR_PERMISSION_DENIED;
    }
    if (has_role(u, AUTH_ROOT_ROLE)) {
        arena_free(&a);
        return 0;
    }
    Authpb__Permission **perms = NULL;
    size_t n = 0, cap = 0;
    for (size_t i = 0; i < u->n_roles; i++) {
        Authpb__Role *r;
        rc = role_get(txn, s, u->roles[i], &a, &r);
        if (rc < 0) {
            arena_free(&a);
            return rc;
        }
        if (rc == 0) continue;
        for (size_t j = 0; j < r->n_keypermission; j++) {
            if (n == cap) {
                size_t nc = cap ? cap * 2 : 16;
                Authpb__Permission **np = arena_alloc(&a, nc * sizeof *np);
                if (n) memcpy(np, perms, n * sizeof *np);
                perms = np, cap = nc;
            }
            perms[n++] = r->keypermission[j];
        }
    }
    bool ok = auth_perm_allows(perms, n, key, klen, end, elen, kind);
    arena_free(&a);
    return ok ? 0 : KERR_PERMISSION_DENIED;
}

/* etcd's IsAdminPermitted. */
static int admin_permitted(MDB_txn *txn, mvcc_store *s, const char *user)
{
    if (!s->auth_enabled) return 0;
    if (user == NULL || user[0] == 0) return KERR_USER_EMPTY;
    arena a = ARENA_INIT;
    Authpb__User *u;
    int rc = user_get(txn, s, user, &a, &u);
    if (rc == 1) rc = has_role(u, AUTH_ROOT_ROLE) ? 0 : KERR_PERMISSION_DENIED;
    else if (rc == 0) rc = KERR_USER_NOT_FOUND;
    arena_free(&a);
    return rc;
}

typedef ProtobufCBinaryData bytes;

static int range_ok(MDB_txn *txn, mvcc_store *s, const char *u, uint64_t rev, bytes k, bytes e)
{
    return op_permitted(txn, s, u, rev, k.data, k.len, e.data, e.len, AUTH_PERM_READ);
}

static int write_ok(MDB_txn *txn, mvcc_store *s, const char *u, uint64_t rev, bytes k, bytes e)
{
    return op_permitted(txn, s, u, rev, k.data, k.len, e.data, e.len, AUTH_PERM_WRITE);
}

/* etcd's checkTxnAuth (3.5: nested txns are checked too). */
static int txn_ok(MDB_txn *txn, mvcc_store *s, const char *u, uint64_t rev,
                  const Etcdserverpb__TxnRequest *t)
{
    int rc;
    for (size_t i = 0; i < t->n_compare; i++)
        if ((rc = range_ok(txn, s, u, rev, t->compare[i]->key, t->compare[i]->range_end)) != 0)
            return rc;
    Etcdserverpb__RequestOp **br[2] = {t->success, t->failure};
    size_t nb[2] = {t->n_success, t->n_failure};
    for (int b = 0; b < 2; b++) {
        for (size_t i = 0; i < nb[b]; i++) {
            const Etcdserverpb__RequestOp *op = br[b][i];
            rc = 0;
            switch (op->request_case) {
            case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE:
                rc = range_ok(txn, s, u, rev, op->request_range->key, op->request_range->range_end);
                break;
            case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT:
                rc = write_ok(txn, s, u, rev, op->request_put->key, (bytes){0, NULL});
                break;
            case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE: {
                const Etcdserverpb__DeleteRangeRequest *d = op->request_delete_range;
                if (d->prev_kv) rc = range_ok(txn, s, u, rev, d->key, d->range_end);
                if (rc == 0) rc = write_ok(txn, s, u, rev, d->key, d->range_end);
                break;
            }
            case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN:
                rc = txn_ok(txn, s, u, rev, op->request_txn);
                break;
            default:
                break;
            }
            if (rc != 0) return rc;
        }
    }
    return 0;
}

/* etcd's checkLeasePuts: writing every key attached to the lease. */
static int lease_keys_ok(struct op_ctx *c, const char *u, uint64_t rev, int64_t lease)
{
    if (lease == 0) return 0;
    arena a = ARENA_INIT;
    bytes *keys;
    size_t n;
    int rc = leasetab_keys(c->txn, c->s, lease, &a, &keys, &n);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = write_ok(c->txn, c->s, u, rev, keys[i], (bytes){0, NULL});
    arena_free(&a);
    return rc;
}

int auth_check_request(struct op_ctx *c, const Ketchpb__InternalRequest *req)
{
    mvcc_store *s = c->s;
    if (!s->auth_enabled || req->auth_system) return 0;
    const char *u = req->auth_user;
    uint64_t rev = req->auth_revision;
    MDB_txn *txn = c->txn;
    int rc;
    if (req->auth_enable || req->auth_disable || req->auth_user_add || req->auth_user_delete ||
        req->auth_user_change_password || req->auth_user_grant_role ||
        req->auth_user_revoke_role || req->auth_role_add || req->auth_role_grant_permission ||
        req->auth_role_revoke_permission || req->auth_role_delete || req->auth_user_list ||
        req->auth_role_list)
        return admin_permitted(txn, s, u);
    if (req->auth_user_get) {
        rc = admin_permitted(txn, s, u);
        if (rc != 0 && u != NULL && !strcmp(req->auth_user_get->name, u)) rc = 0;
        return rc;
    }
    if (req->auth_role_get) {
        rc = admin_permitted(txn, s, u);
        if (rc != 0 && rc != KERR_NOMEM && rc != KERR_IO && rc != KERR_CORRUPT && u && u[0]) {
            arena a = ARENA_INIT;
            Authpb__User *usr;
            if (user_get(txn, s, u, &a, &usr) == 1 && has_role(usr, req->auth_role_get->role))
                rc = 0;
            arena_free(&a);
        }
        return rc;
    }
    if (req->put) {
        const Etcdserverpb__PutRequest *p = req->put;
        if ((rc = write_ok(txn, s, u, rev, p->key, (bytes){0, NULL})) != 0) return rc;
        if ((rc = lease_keys_ok(c, u, rev, p->lease)) != 0) return rc;
        if (p->prev_kv) return range_ok(txn, s, u, rev, p->key, (bytes){0, NULL});
        return 0;
    }
    if (req->delete_range) {
        const Etcdserverpb__DeleteRangeRequest *d = req->delete_range;
        if ((rc = write_ok(txn, s, u, rev, d->key, d->range_end)) != 0) return rc;
        if (d->prev_kv) return range_ok(txn, s, u, rev, d->key, d->range_end);
        return 0;
    }
    if (req->txn) return txn_ok(txn, s, u, rev, req->txn);
    if (req->lease_revoke) return lease_keys_ok(c, u, rev, req->lease_revoke->id);
    return 0;
}

/* ---- applying auth requests (etcd's authStore methods) ---- */

static ProtobufCMessage *new_resp(arena *a, const ProtobufCMessageDescriptor *d)
{
    ProtobufCMessage *m = arena_alloc(a, d->sizeof_message);
    d->message_init(m);
    return m;
}

static int cmp_str(const void *x, const void *y)
{
    return strcmp(*(char *const *)x, *(char *const *)y);
}

static int cmp_perm(const void *x, const void *y)
{
    const Authpb__Permission *a = *(Authpb__Permission *const *)x,
                             *b = *(Authpb__Permission *const *)y;
    return bytes_cmp(a->key.data, a->key.len, b->key.data, b->key.len);
}

static bool bytes_eq(bytes a, bytes b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0);
}

static int user_add(struct op_ctx *c, const Etcdserverpb__AuthUserAddRequest *r, arena *a)
{
    if (r->name[0] == 0) return KERR_USER_EMPTY;
    if (strlen(r->name) > AUTH_NAME_MAX) return KERR_BAD_REQUEST;
    Authpb__User *u;
    int rc = user_get(c->txn, c->s, r->name, a, &u);
    if (rc < 0) return rc;
    if (rc == 1) return KERR_USER_ALREADY_EXIST;
    Authpb__User nu = AUTHPB__USER__INIT;
    Authpb__UserAddOptions opts = AUTHPB__USER_ADD_OPTIONS__INIT;
    nu.name = (bytes){strlen(r->name), (uint8_t *)r->name};
    nu.options = r->options ? r->options : &opts;
    char *hash = NULL;
    if (!nu.options->no_password) {
        if (r->hashed_password[0] != 0) {
            nu.password = (bytes){strlen(r->hashed_password), (uint8_t *)r->hashed_password};
        } else {
            /* an entry from a proposer that did not hash (etcd < 3.5) */
            if ((hash = auth_password_hash(r->password, c->s->bcrypt_cost)) == NULL)
                return KERR_NOMEM;
            nu.password = (bytes){strlen(hash), (uint8_t *)hash};
        }
    }
    rc = put_msg(c->txn, c->s, 'u', r->name, &nu.base);
    free(hash);
    return rc != 0 ? rc : bump(c);
}

static int user_change_password(struct op_ctx *c, const Etcdserverpb__AuthUserChangePasswordRequest *r,
                                arena *a)
{
    Authpb__User *u;
    int rc = user_get(c->txn, c->s, r->name, a, &u);
    if (rc <= 0) return rc < 0 ? rc : KERR_USER_NOT_FOUND;
    char *hash = NULL;
    if (r->hashed_password[0] != 0) {
        u->password = (bytes){strlen(r->hashed_password), (uint8_t *)r->hashed_password};
    } else {
        if ((hash = auth_password_hash(r->password, c->s->bcrypt_cost)) == NULL) return KERR_NOMEM;
        u->password = (bytes){strlen(hash), (uint8_t *)hash};
    }
    rc = put_msg(c->txn, c->s, 'u', r->name, &u->base);
    free(hash);
    return rc != 0 ? rc : bump(c);
}

static int user_grant_role(struct op_ctx *c, const Etcdserverpb__AuthUserGrantRoleRequest *r,
                           arena *a)
{
    Authpb__User *u;
    Authpb__Role *role;
    int rc = user_get(c->txn, c->s, r->user, a, &u);
    if (rc <= 0) return rc < 0 ? rc : KERR_USER_NOT_FOUND;
    if (strcmp(r->role, AUTH_ROOT_ROLE) != 0) {
        rc = role_get(c->txn, c->s, r->role, a, &role);
        if (rc <= 0) return rc < 0 ? rc : KERR_ROLE_NOT_FOUND;
    }
    if (has_role(u, r->role)) return 0; /* as etcd: no change, no new revision */
    char **roles = arena_alloc(a, (u->n_roles + 1) * sizeof *roles);
    if (u->n_roles) memcpy(roles, u->roles, u->n_roles * sizeof *roles);
    roles[u->n_roles] = r->role;
    u->roles = roles;
    u->n_roles++;
    qsort(u->roles, u->n_roles, sizeof *u->roles, cmp_str);
    if ((rc = put_msg(c->txn, c->s, 'u', r->user, &u->base)) != 0) return rc;
    return bump(c);
}

static int user_revoke_role(struct op_ctx *c, const Etcdserverpb__AuthUserRevokeRoleRequest *r,
                            arena *a)
{
    if (c->s->auth_enabled && !strcmp(r->name, AUTH_ROOT_USER) && !strcmp(r->role, AUTH_ROOT_ROLE))
        return KERR_INVALID_AUTH_MGMT;
    Authpb__User *u;
    int rc = user_get(c->txn, c->s, r->name, a, &u);
    if (rc <= 0) return rc < 0 ? rc : KERR_USER_NOT_FOUND;
    size_t j = 0;
    for (size_t i = 0; i < u->n_roles; i++)
        if (strcmp(u->roles[i], r->role) != 0) u->roles[j++] = u->roles[i];
    if (j == u->n_roles) return KERR_ROLE_NOT_GRANTED;
    u->n_roles = j;
    if ((rc = put_msg(c->txn, c->s, 'u', r->name, &u->base)) != 0) return rc;
    return bump(c);
}

static int role_delete(struct op_ctx *c, const Etcdserverpb__AuthRoleDeleteRequest *r, arena *a)
{
    if (c->s->auth_enabled && !strcmp(r->role, AUTH_ROOT_ROLE)) return KERR_INVALID_AUTH_MGMT;
    Authpb__Role *role;
    int rc = role_get(c->txn, c->s, r->role, a, &role);
    if (rc <= 0) return rc < 0 ? rc : KERR_ROLE_NOT_FOUND;
    if ((rc = del_name(c->txn, c->s, 'r', r->role)) != 0) return rc;
    char **names;
    size_t n;
    if ((rc = list_names(c->txn, c->s, 'u', a, &names, &n)) != 0) return rc;
    for (size_t i = 0; i < n; i++) {
        Authpb__User *u;
        if ((rc = user_get(c->txn, c->s, names[i], a, &u)) < 0) return rc;
        if (rc == 0 || !has_role(u, r->role)) continue;
        size_t j = 0;
        for (size_t k = 0; k < u->n_roles; k++)
            if (strcmp(u->roles[k], r->role) != 0) u->roles[j++] = u->roles[k];
        u->n_roles = j;
        if ((rc = put_msg(c->txn, c->s, 'u', names[i], &u->base)) != 0) return rc;
    }
    return bump(c);
}

static int role_grant(struct op_ctx *c, const Etcdserverpb__AuthRoleGrantPermissionRequest *r,
                      arena *a)
{
    Authpb__Role *role;
    int rc = role_get(c->txn, c->s, r->name, a, &role);
    if (rc <= 0) return rc < 0 ? rc : KERR_ROLE_NOT_FOUND;
    if (r->perm == NULL) return KERR_PERMISSION_NOT_GIVEN;
    bool found = false;
    for (size_t i = 0; i < role->n_keypermission; i++) {
        Authpb__Permission *p = role->keypermission[i];
        if (bytes_eq(p->key, r->perm->key) && bytes_eq(p->range_end, r->perm->range_end)) {
            p->permtype = r->perm->permtype;
            found = true;
            break;
        }
    }
    if (!found) {
        Authpb__Permission **np =
            arena_alloc(a, (role->n_keypermission + 1) * sizeof *np);
        if (role->n_keypermission)
            memcpy(np, role->keypermission, role->n_keypermission * sizeof *np);
        Authpb__Permission *p = arena_alloc(a, sizeof *p);
        authpb__permission__init(p);
        p->key = r->perm->key;
        p->range_end = r->perm->range_end;
        p->permtype = r->perm->permtype;
        np[role->n_keypermission] = p;
        role->keypermission = np;
        role->n_keypermission++;
        /* stable: permissions with the same key keep their order, as Go's
         * sort.Sort on few elements (insertion sort) does */
        for (size_t i = role->n_keypermission - 1; i > 0 && cmp_perm(&np[i - 1], &np[i]) > 0; i--) {
            Authpb__Permission *t = np[i];
            np[i] = np[i - 1];
            np[i - 1] = t;
        }
    }
    if ((rc = put_msg(c->txn, c->s, 'r', r->name, &role->base)) != 0) return rc;
    return bump(c);
}

static int role_revoke(struct op_ctx *c, const Etcdserverpb__AuthRoleRevokePermissionRequest *r,
                       arena *a)
{
    Authpb__Role *role;
    int rc = role_get(c->txn, c->s, r->role, a, &role);
    if (rc <= 0) return rc < 0 ? rc : KERR_ROLE_NOT_FOUND;
    size_t j = 0;
    for (size_t i = 0; i < role->n_keypermission; i++) {
        Authpb__Permission *p = role->keypermission[i];
        if (!bytes_eq(p->key, r->key) || !bytes_eq(p->range_end, r->range_end))
            role->keypermission[j++] = p;
    }
    if (j == role->n_keypermission) return KERR_PERMISSION_NOT_GRANTED;
    role->n_keypermission = j;
    if ((rc = put_msg(c->txn, c->s, 'r', r->role, &role->base)) != 0) return rc;
    return bump(c);
}

#define RESP(field, type) \
    (out->auth = new_resp(a, &etcdserverpb__##type##__descriptor), (Etcdserverpb__##field *)out->auth)

int auth_exec(struct op_ctx *c, const Ketchpb__InternalRequest *req, arena *a,
              struct mvcc_result *out)
{
    mvcc_store *s = c->s;
    int rc;
    if (req->auth_enable) {
        RESP(AuthEnableResponse, auth_enable_response);
        if (s->auth_enabled) return 0;
        Authpb__User *u;
        rc = user_get(c->txn, s, AUTH_ROOT_USER, a, &u);
        if (rc <= 0) return rc < 0 ? rc : KERR_ROOT_USER_NOT_EXIST;
        if (!has_role(u, AUTH_ROOT_ROLE)) return KERR_ROOT_ROLE_NOT_EXIST;
        return set_enabled(c->txn, s, 1);
    }
    if (req->auth_disable) {
        RESP(AuthDisableResponse, auth_disable_response);
        if (!s->auth_enabled) return 0;
        if ((rc = set_enabled(c->txn, s, 0)) != 0) return rc;
        return bump(c);
    }
    if (req->authenticate) {
        RESP(AuthenticateResponse, authenticate_response);
        if (!s->auth_enabled) return KERR_AUTH_NOT_ENABLED;
        Authpb__User *u;
        rc = user_get(c->txn, s, req->authenticate->name, a, &u);
        if (rc < 0) return rc;
        if (rc == 0 || (u->options && u->options->no_password)) return KERR_AUTH_FAILED;
        return 0; /* the token is the api layer's (per member, in memory) */
    }
    if (req->auth_user_add) {
        RESP(AuthUserAddResponse, auth_user_add_response);
        return user_add(c, req->auth_user_add, a);
    }
    if (req->auth_user_delete) {
        RESP(AuthUserDeleteResponse, auth_user_delete_response);
        const char *name = req->auth_user_delete->name;
        if (s->auth_enabled && !strcmp(name, AUTH_ROOT_USER)) return KERR_INVALID_AUTH_MGMT;
        Authpb__User *u;
        rc = user_get(c->txn, s, name, a, &u);
        if (rc <= 0) return rc < 0 ? rc : KERR_USER_NOT_FOUND;
        if ((rc = del_name(c->txn, s, 'u', name)) != 0) return rc;
        return bump(c);
    }
    if (req->auth_user_change_password) {
        RESP(AuthUserChangePasswordResponse, auth_user_change_password_response);
        return user_change_password(c, req->auth_user_change_password, a);
    }
    if (req->auth_user_grant_role) {
        RESP(AuthUserGrantRoleResponse, auth_user_grant_role_response);
        return user_grant_role(c, req->auth_user_grant_role, a);
    }
    if (req->auth_user_revoke_role) {
        RESP(AuthUserRevokeRoleResponse, auth_user_revoke_role_response);
        return user_revoke_role(c, req->auth_user_revoke_role, a);
    }
    if (req->auth_user_get) {
        Etcdserverpb__AuthUserGetResponse *r = RESP(AuthUserGetResponse, auth_user_get_response);
        Authpb__User *u;
        rc = user_get(c->txn, s, req->auth_user_get->name, a, &u);
        if (rc <= 0) return rc < 0 ? rc : KERR_USER_NOT_FOUND;
        r->roles = u->roles;
        r->n_roles = u->n_roles;
        return 0;
    }
    if (req->auth_user_list) {
        Etcdserverpb__AuthUserListResponse *r = RESP(AuthUserListResponse, auth_user_list_response);
        return list_names(c->txn, s, 'u', a, &r->users, &r->n_users);
    }
    if (req->auth_role_add) {
        RESP(AuthRoleAddResponse, auth_role_add_response);
        const char *name = req->auth_role_add->name;
        if (name[0] == 0) return KERR_ROLE_EMPTY;
        if (strlen(name) > AUTH_NAME_MAX) return KERR_BAD_REQUEST;
        Authpb__Role *role;
        rc = role_get(c->txn, s, name, a, &role);
        if (rc < 0) return rc;
        if (rc == 1) return KERR_ROLE_ALREADY_EXIST;
        Authpb__Role nr = AUTHPB__ROLE__INIT;
        nr.name = (bytes){strlen(name), (uint8_t *)name};
        if ((rc = put_msg(c->txn, s, 'r', name, &nr.base)) != 0) return rc;
        return bump(c);
    }
    if (req->auth_role_get) {
        Etcdserverpb__AuthRoleGetResponse *r = RESP(AuthRoleGetResponse, auth_role_get_response);
        Authpb__Role *role;
        rc = role_get(c->txn, s, req->auth_role_get->role, a, &role);
        if (rc <= 0) return rc < 0 ? rc : KERR_ROLE_NOT_FOUND;
        r->perm = role->keypermission;
        r->n_perm = role->n_keypermission;
        return 0;
    }
    if (req->auth_role_list) {
        Etcdserverpb__AuthRoleListResponse *r = RESP(AuthRoleListResponse, auth_role_list_response);
        return list_names(c->txn, s, 'r', a, &r->roles, &r->n_roles);
    }
    if (req->auth_role_delete) {
        RESP(AuthRoleDeleteResponse, auth_role_delete_response);
        return role_delete(c, req->auth_role_delete, a);
    }
    if (req->auth_role_grant_permission) {
        RESP(AuthRoleGrantPermissionResponse, auth_role_grant_permission_response);
        return role_grant(c, req->auth_role_grant_permission, a);
    }
    if (req->auth_role_revoke_permission) {
        RESP(AuthRoleRevokePermissionResponse, auth_role_revoke_permission_response);
        return role_revoke(c, req->auth_role_revoke_permission, a);
    }
    return 1; /* not an auth request */
}

/* ---- reads outside apply ---- */

bool mvcc_auth_enabled(const mvcc_store *s) { return s->auth_enabled; }
uint64_t mvcc_auth_revision(const mvcc_store *s) { return s->auth_rev; }
void mvcc_auth_set_bcrypt_cost(mvcc_store *s, int cost) { s->bcrypt_cost = cost; }

int mvcc_auth_check(mvcc_store *s, const char *user, uint64_t rev, const uint8_t *key,
                    size_t klen, const uint8_t *end, size_t elen, int write)
{
    if (!s->auth_enabled) return 0;
    MDB_txn *txn;
    int rc = store_rtxn_begin(s, &txn);
    if (rc != 0) return rc;
    rc = op_permitted(txn, s, user, rev, key, klen, end, elen,
                      write ? AUTH_PERM_WRITE : AUTH_PERM_READ);
    store_rtxn_end(s);
    return rc;
}

int mvcc_auth_check_txn(mvcc_store *s, const char *user, uint64_t rev,
                        const Etcdserverpb__TxnRequest *t)
{
    if (!s->auth_enabled) return 0;
    MDB_txn *txn;
    int rc = store_rtxn_begin(s, &txn);
    if (rc != 0) return rc;
    rc = txn_ok(txn, s, user, rev, t);
    store_rtxn_end(s);
    return rc;
}

int mvcc_auth_is_admin(mvcc_store *s, const char *user)
{
    if (!s->auth_enabled) return 0;
    MDB_txn *txn;
    int rc = store_rtxn_begin(s, &txn);
    if (rc != 0) return rc;
    rc = admin_permitted(txn, s, user);
    store_rtxn_end(s);
    return rc;
}

int mvcc_auth_password(mvcc_store *s, const char *name, char **hash)
{
    if (!s->auth_enabled) return KERR_AUTH_NOT_ENABLED;
    MDB_txn *txn;
    int rc = store_rtxn_begin(s, &txn);
    if (rc != 0) return rc;
    arena a = ARENA_INIT;
    Authpb__User *u;
    rc = user_get(txn, s, name, &a, &u);
    if (rc == 1) {
        if (u->options && u->options->no_password) {
            rc = KERR_AUTH_FAILED;
        } else {
            *hash = malloc(u->password.len + 1);
            if (*hash == NULL) {
                rc = KERR_NOMEM;
            } else {
                if (u->password.len) memcpy(*hash, u->password.data, u->password.len);
                (*hash)[u->password.len] = 0;
                rc = 0;
            }
        }
    } else if (rc == 0) {
        rc = KERR_AUTH_FAILED;
    }
    arena_free(&a);
    store_rtxn_end(s);
    return rc;
}
