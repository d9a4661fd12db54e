/* etcdserverpb.Auth (etcd's v3_server.go and v3rpc/auth.go): every request
 * but AuthStatus goes through Raft, as etcd; bcrypt runs on libuv's thread
 * pool (hashing at the proposer, as etcd 3.5, so the log never holds a
 * plain password; checking for Authenticate before it proposes). */
#include "api/auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "api/propose.h"
#include "auth/auth.h"
#include "util/errors.h"
#include "util/log.h"

struct auth_api {
    auth_tokens *tokens;
    int bcrypt_cost;
    bool client_cert_auth;
};

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The auth state, created with etcd's defaults on first use. */
static struct auth_api *auth_of(api_server *s)
{
    if (s->auth != NULL) return s->auth;
    struct auth_api *a = calloc(1, sizeof *a);
    char err[256];
    if (a == NULL || auth_tokens_new(&a->tokens, "simple", 300, err, sizeof err) != 0) {
        free(a);
        return NULL;
    }
    a->bcrypt_cost = AUTH_BCRYPT_DEFAULT_COST;
    s->auth = a;
    return a;
}

int auth_api_configure(api_server *s, const char *token_spec, uint64_t ttl_s, int bcrypt_cost,
                       bool client_cert_auth)
{
    struct auth_api *a = auth_of(s);
    if (a == NULL) {
        fprintf(stderr, "ketch: out of memory\n");
        return -1;
    }
    char err[256];
    auth_tokens *t;
    if (auth_tokens_new(&t, token_spec, ttl_s, err, sizeof err) != 0) {
        fprintf(stderr, "ketch: --auth-token %s: %s\n", token_spec, err);
        return -1;
    }
    auth_tokens_free(a->tokens);
    a->tokens = t;
    if (bcrypt_cost < AUTH_BCRYPT_MIN_COST || bcrypt_cost > AUTH_BCRYPT_MAX_COST) {
        log_warn("use default bcrypt cost instead of the invalid given cost %d", bcrypt_cost);
        bcrypt_cost = AUTH_BCRYPT_DEFAULT_COST;
    }
    a->bcrypt_cost = bcrypt_cost;
    a->client_cert_auth = client_cert_auth;
    if (s->store) mvcc_auth_set_bcrypt_cost(s->store, bcrypt_cost);
    return 0;
}

void auth_api_fini(api_server *s)
{
    if (s->auth == NULL) return;
    auth_tokens_free(s->auth->tokens);
    free(s->auth);
    s->auth = NULL;
}

int auth_api_info(api_server *s, grpc_call *call, char **user, uint64_t *rev)
{
    *user = NULL;
    *rev = 0;
    if (call == NULL) return 0;
    const char *tok = grpc_call_header(call, "token");
    if (tok == NULL) tok = grpc_call_header(call, "authorization");
    struct auth_api *a = auth_of(s);
    if (tok != NULL) {
        if (a == NULL ||
            !auth_token_info(a->tokens, tok, wall_ms(), mvcc_auth_revision(s->store), user, rev))
            return KERR_INVALID_AUTH_TOKEN;
        return 0;
    }
    if (a != NULL && a->client_cert_auth) {
        const char *cn = grpc_call_peer_cn(call);
        if (cn != NULL && cn[0] != 0) {
            *user = strdup(cn);
            if (*user == NULL) return KERR_NOMEM;
            *rev = mvcc_auth_revision(s->store);
        }
    }
    return 0;
}

int auth_api_stamp(api_server *s, grpc_call *call, Ketchpb__InternalRequest *req, char **owned)
{
    uint64_t rev;
    *owned = NULL;
    int rv = auth_api_info(s, call, owned, &rev);
    if (rv != 0) return rv;
    if (*owned != NULL) req->auth_user = *owned;
    req->auth_revision = rev;
    return 0;
}

int auth_api_check_range(api_server *s, grpc_call *call, ProtobufCBinaryData key,
                         ProtobufCBinaryData end)
{
    char *user;
    uint64_t rev;
    int rv = auth_api_info(s, call, &user, &rev);
    if (rv == 0)
        rv = mvcc_auth_check(s->store, user, rev, key.data, key.len, end.data, end.len, 0);
    free(user);
    return rv;
}

int auth_api_check_txn(api_server *s, grpc_call *call, const Etcdserverpb__TxnRequest *t)
{
    char *user;
    uint64_t rev;
    int rv = auth_api_info(s, call, &user, &rev);
    if (rv == 0) rv = mvcc_auth_check_txn(s->store, user, rev, t);
    free(user);
    return rv;
}

int auth_api_check_conc(api_server *s, grpc_call *call, ProtobufCBinaryData name, bool write)
{
    if (!mvcc_auth_enabled(s->store)) return 0;
    uint8_t *k = malloc(name.len + 1), *e = malloc(name.len + 1);
    int rv = KERR_NOMEM;
    if (k == NULL || e == NULL) goto out;
    if (name.len) memcpy(k, name.data, name.len);
    k[name.len] = '/';
    memcpy(e, k, name.len + 1);
    e[name.len] = '/' + 1; /* the prefix's end, as clientv3.GetPrefixRangeEnd */
    char *user;
    uint64_t rev;
    rv = auth_api_info(s, call, &user, &rev);
    if (rv == 0)
        rv = mvcc_auth_check(s->store, user, rev, k, name.len + 1, e, name.len + 1, 0);
    if (rv == 0 && write)
        rv = mvcc_auth_check(s->store, user, rev, k, name.len + 1, e, name.len + 1, 1);
    free(user);
out:
    free(k);
    free(e);
    return rv;
}

void auth_api_applied(api_server *s, uint64_t index, const Ketchpb__InternalRequest *req,
                      struct mvcc_result *res, arena *a)
{
    if (req == NULL || res->err != 0 || res->auth == NULL) return;
    struct auth_api *aa = auth_of(s);
    if (aa == NULL) return;
    if (req->authenticate) {
        Etcdserverpb__AuthenticateResponse *r = (Etcdserverpb__AuthenticateResponse *)res->auth;
        char *tok = auth_token_assign(aa->tokens, req->authenticate->name,
                                      mvcc_auth_revision(s->store),
                                      req->authenticate->simple_token, index, wall_ms());
        if (tok == NULL) {
            log_error("auth: cannot issue a token for user %s", req->authenticate->name);
            res->err = KERR_INTERNAL;
            return;
        }
        r->token = arena_dup(a, tok, strlen(tok) + 1);
        free(tok);
        log_debug("auth: authenticated user %s", req->authenticate->name);
    } else if (req->auth_user_delete) {
        auth_tokens_invalidate_user(aa->tokens, req->auth_user_delete->name);
    } else if (req->auth_user_change_password) {
        auth_tokens_invalidate_user(aa->tokens, req->auth_user_change_password->name);
    } else if (req->auth_disable) {
        auth_tokens_clear(aa->tokens);
    } else if (req->auth_enable) {
        log_info("auth: authentication is enabled");
    }
}

/* ---- handlers ---- */

/* The requests that go to Raft as they are. */
#define SIMPLE(fn, type, field)                                                                \
    void fn(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)                       \
    {                                                                                          \
        Etcdserverpb__##type *req = etcdserverpb__##field##__unpack(NULL, len, msg);          \
        if (req == NULL) return api_fail_unmarshal(call);                                          \
        Ketchpb__InternalRequest ir = KETCHPB__INTERNAL_REQUEST__INIT;                        \
        ir.auth_##field = req;                                                                 \
        api_propose_auth(ctx, call, &ir);                                                      \
        etcdserverpb__##field##__free_unpacked(req, NULL);                                     \
    }

#define etcdserverpb__enable__unpack etcdserverpb__auth_enable_request__unpack
#define etcdserverpb__enable__free_unpacked etcdserverpb__auth_enable_request__free_unpacked
#define etcdserverpb__disable__unpack etcdserverpb__auth_disable_request__unpack
#define etcdserverpb__disable__free_unpacked etcdserverpb__auth_disable_request__free_unpacked
#define etcdserverpb__user_get__unpack etcdserverpb__auth_user_get_request__unpack
#define etcdserverpb__user_get__free_unpacked etcdserverpb__auth_user_get_request__free_unpacked
#define etcdserverpb__user_list__unpack etcdserverpb__auth_user_list_request__unpack
#define etcdserverpb__user_list__free_unpacked etcdserverpb__auth_user_list_request__free_unpacked
#define etcdserverpb__user_delete__unpack etcdserverpb__auth_user_delete_request__unpack
#define etcdserverpb__user_delete__free_unpacked etcdserverpb__auth_user_delete_request__free_unpacked
#define etcdserverpb__user_grant_role__unpack etcdserverpb__auth_user_grant_role_request__unpack
#define etcdserverpb__user_grant_role__free_unpacked                                          \
    etcdserverpb__auth_user_grant_role_request__free_unpacked
#define etcdserverpb__user_revoke_role__unpack etcdserverpb__auth_user_revoke_role_request__unpack
#define etcdserverpb__user_revoke_role__free_unpacked                                         \
    etcdserverpb__auth_user_revoke_role_request__free_unpacked
#define etcdserverpb__role_add__unpack etcdserverpb__auth_role_add_request__unpack
#define etcdserverpb__role_add__free_unpacked etcdserverpb__auth_role_add_request__free_unpacked
#define etcdserverpb__role_get__unpack etcdserverpb__auth_role_get_request__unpack
#define etcdserverpb__role_get__free_unpacked etcdserverpb__auth_role_get_request__free_unpacked
#define etcdserverpb__role_list__unpack etcdserverpb__auth_role_list_request__unpack
#define etcdserverpb__role_list__free_unpacked etcdserverpb__auth_role_list_request__free_unpacked
#define etcdserverpb__role_delete__unpack etcdserverpb__auth_role_delete_request__unpack
#define etcdserverpb__role_delete__free_unpacked etcdserverpb__auth_role_delete_request__free_unpacked
#define etcdserverpb__role_grant_permission__unpack                                            \
    etcdserverpb__auth_role_grant_permission_request__unpack
#define etcdserverpb__role_grant_permission__free_unpacked                                     \
    etcdserverpb__auth_role_grant_permission_request__free_unpacked
#define etcdserverpb__role_revoke_permission__unpack                                           \
    etcdserverpb__auth_role_revoke_permission_request__unpack
#define etcdserverpb__role_revoke_permission__free_unpacked                                    \
    etcdserverpb__auth_role_revoke_permission_request__free_unpacked

SIMPLE(auth_enable, AuthEnableRequest, enable)
SIMPLE(auth_disable, AuthDisableRequest, disable)
SIMPLE(auth_user_get, AuthUserGetRequest, user_get)
SIMPLE(auth_user_list, AuthUserListRequest, user_list)
SIMPLE(auth_user_delete, AuthUserDeleteRequest, user_delete)
SIMPLE(auth_user_grant_role, AuthUserGrantRoleRequest, user_grant_role)
SIMPLE(auth_user_revoke_role, AuthUserRevokeRoleRequest, user_revoke_role)
SIMPLE(auth_role_add, AuthRoleAddRequest, role_add)
SIMPLE(auth_role_get, AuthRoleGetRequest, role_get)
SIMPLE(auth_role_list, AuthRoleListRequest, role_list)
SIMPLE(auth_role_delete, AuthRoleDeleteRequest, role_delete)
SIMPLE(auth_role_grant_permission, AuthRoleGrantPermissionRequest, role_grant_permission)
SIMPLE(auth_role_revoke_permission, AuthRoleRevokePermissionRequest, role_revoke_permission)

void auth_status(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    api_server *s = ctx;
    Etcdserverpb__AuthStatusRequest *req = etcdserverpb__auth_status_request__unpack(NULL, len, msg);
    if (req == NULL) return api_fail_unmarshal(call);
    etcdserverpb__auth_status_request__free_unpacked(req, NULL);
    Etcdserverpb__AuthStatusResponse r = ETCDSERVERPB__AUTH_STATUS_RESPONSE__INIT;
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    api_fill_header(s, &h, mvcc_revision(s->store));
    r.header = &h;
    r.enabled = mvcc_auth_enabled(s->store);
    r.authrevision = mvcc_auth_revision(s->store);
    grpc_call_reply(call, &r.base);
}

/* ---- password hashing before UserAdd / UserChangePassword ---- */

struct hash_job {
    uv_work_t w;
    api_server *s;
    grpc_call *call;
    ProtobufCMessage *req; /* AuthUserAddRequest or AuthUserChangePasswordRequest */
    char *password;        /* borrowed from req */
    int cost;
    char *hash;
};

static void hash_work(uv_work_t *w)
{
    struct hash_job *j = w->data;
    j->hash = auth_password_hash(j->password, j->cost);
}

static void hash_done(uv_work_t *w, int status)
{
    struct hash_job *j = w->data;
    if (!grpc_call_alive(j->call)) {
        /* the client went away */
    } else if (status != 0 || j->hash == NULL) {
        grpc_call_fail(j->call, KERR_INTERNAL);
    } else {
        Ketchpb__InternalRequest ir = KETCHPB__INTERNAL_REQUEST__INIT;
        char **pw, **hashed;
        if (j->req->descriptor == &etcdserverpb__auth_user_add_request__descriptor) {
            Etcdserverpb__AuthUserAddRequest *r = (Etcdserverpb__AuthUserAddRequest *)j->req;
            ir.auth_user_add = r;
            pw = &r->password;
            hashed = &r->hashed_password;
        } else {
            Etcdserverpb__AuthUserChangePasswordRequest *r =
                (Etcdserverpb__AuthUserChangePasswordRequest *)j->req;
            ir.auth_user_change_password = r;
            pw = &r->password;
            hashed = &r->hashed_password;
        }
        /* the log gets the hash, never the password */
        char *save_pw = *pw, *save_hashed = *hashed;
        *pw = (char *)"";
        *hashed = j->hash;
        api_propose_auth(j->s, j->call, &ir);
        *pw = save_pw;
        *hashed = save_hashed;
    }
    OPENSSL_cleanse(j->password, strlen(j->password));
    if (j->hash) OPENSSL_cleanse(j->hash, strlen(j->hash));
    free(j->hash);
    protobuf_c_message_free_unpacked(j->req, NULL);
    grpc_call_unref(j->call);
    free(j);
}

static void hash_then_propose(api_server *s, grpc_call *call, ProtobufCMessage *req, char *pw)
{
    struct auth_api *a = auth_of(s);
    struct hash_job *j = calloc(1, sizeof *j);
    if (j == NULL || a == NULL) {
        free(j);
        protobuf_c_message_free_unpacked(req, NULL);
        grpc_call_fail(call, KERR_NOMEM);
        return;
    }
    j->s = s;
    j->call = call;
    j->req = req;
    j->password = pw;
    j->cost = a->bcrypt_cost;
    j->w.data = j;
    grpc_call_ref(call);
    if (uv_queue_work(s->loop, &j->w, hash_work, hash_done) != 0) {
        grpc_call_unref(call);
        protobuf_c_message_free_unpacked(req, NULL);
        free(j);
        grpc_call_fail(call, KERR_INTERNAL);
    }
}

void auth_user_add(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    Etcdserverpb__AuthUserAddRequest *req =
        etcdserverpb__auth_user_add_request__unpack(NULL, len, msg);
    if (req == NULL) return api_fail_unmarshal(call);
    if ((req->options != NULL && req->options->no_password) || req->name[0] == 0) {
        /* nothing to hash (an empty name fails at apply, as etcd) */
        Ketchpb__InternalRequest ir = KETCHPB__INTERNAL_REQUEST__INIT;
        char *save_pw = req->password;
        req->password = (char *)"";
        ir.auth_user_add = req;
        api_propose_auth(ctx, call, &ir);
        req->password = save_pw;
        etcdserverpb__auth_user_add_request__free_unpacked(req, NULL);
        return;
    }
    hash_then_propose(ctx, call, &req->base, req->password);
}

void auth_user_change_password(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    Etcdserverpb__AuthUserChangePasswordRequest *req =
        etcdserverpb__auth_user_change_password_request__unpack(NULL, len, msg);
    if (req == NULL) return api_fail_unmarshal(call);
    hash_then_propose(ctx, call, &req->base, req->password);
}

/* ---- Authenticate ----
 * As etcd: after a linearizable barrier the password is checked against
 * the stored hash (off the loop), then an entry without the password is
 * proposed; its apply issues the token. If the auth revision moved while
 * the password was checked, it starts over. */

struct authn {
    uv_work_t w;
    api_server *s;
    grpc_call *call;
    char *name, *password, *hash;
    uint64_t checked_rev;
    bool ok;
    int tries;
};

static void authn_free(struct authn *n)
{
    if (n->password) OPENSSL_cleanse(n->password, strlen(n->password));
    free(n->password);
    free(n->name);
    free(n->hash);
    grpc_call_unref(n->call);
    free(n);
}

static void authn_start(struct authn *n);

static void authn_proposed(api_server *s, void *data, int err, const uint8_t *resp, size_t len)
{
    struct authn *n = data;
    if (err != 0) {
        grpc_call_fail(n->call, err);
    } else if (n->checked_rev != mvcc_auth_revision(s->store) && n->tries < 5) {
        log_info("auth: revision when password checked became stale; retrying");
        authn_start(n);
        return;
    } else {
        grpc_call_send(n->call, resp, len);
        grpc_call_finish(n->call, GRPC_OK, NULL);
    }
    authn_free(n);
}

static void authn_work(uv_work_t *w)
{
    struct authn *n = w->data;
    n->ok = auth_password_check(n->password, n->hash);
}

static void authn_checked(uv_work_t *w, int status)
{
    struct authn *n = w->data;
    api_server *s = n->s;
    if (!grpc_call_alive(n->call)) {
        authn_free(n);
        return;
    }
    if (status != 0 || !n->ok) {
        log_info("auth: authentication failed, invalid password for user %s", n->name);
        grpc_call_fail(n->call, KERR_AUTH_FAILED);
        authn_free(n);
        return;
    }
    char prefix[17];
    auth_token_prefix(prefix);
    Ketchpb__InternalAuthenticateRequest ar = KETCHPB__INTERNAL_AUTHENTICATE_REQUEST__INIT;
    ar.name = n->name;
    ar.simple_token = prefix;
    Ketchpb__InternalRequest ir = KETCHPB__INTERNAL_REQUEST__INIT;
    ir.authenticate = &ar;
    int rv = api_propose_internal(s, &ir, authn_proposed, n);
    if (rv != 0) {
        grpc_call_fail(n->call, rv);
        authn_free(n);
    }
}

static void authn_start(struct authn *n)
{
    api_server *s = n->s;
    n->tries++;
    free(n->hash);
    n->hash = NULL;
    int rv = mvcc_auth_password(s->store, n->name, &n->hash);
    if (rv != 0) {
        if (rv == KERR_AUTH_FAILED)
            log_info("auth: authentication failed, invalid user ID or password (user %s)", n->name);
        grpc_call_fail(n->call, rv);
        authn_free(n);
        return;
    }
    n->checked_rev = mvcc_auth_revision(s->store);
    n->w.data = n;
    if (uv_queue_work(s->loop, &n->w, authn_work, authn_checked) != 0) {
        grpc_call_fail(n->call, KERR_INTERNAL);
        authn_free(n);
    }
}

static void authn_exec(api_server *s, grpc_call *call, const ProtobufCMessage *m)
{
    const Etcdserverpb__AuthenticateRequest *req = (const Etcdserverpb__AuthenticateRequest *)m;
    struct authn *n = calloc(1, sizeof *n);
    if (n == NULL || (n->name = strdup(req->name)) == NULL ||
        (n->password = strdup(req->password)) == NULL) {
        if (n) free(n->name);
        free(n);
        grpc_call_fail(call, KERR_NOMEM);
        return;
    }
    n->s = s;
    n->call = call;
    grpc_call_ref(call);
    authn_start(n);
}

void auth_authenticate(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    Etcdserverpb__AuthenticateRequest *req =
        etcdserverpb__authenticate_request__unpack(NULL, len, msg);
    if (req == NULL) return api_fail_unmarshal(call);
    api_read(ctx, call, &req->base, false, authn_exec);
}
