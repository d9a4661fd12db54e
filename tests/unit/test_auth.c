/* Unit tests for src/auth (permission logic, bcrypt, tokens) and the auth
 * tables of src/mvcc (apply rules, revisions, permission checks at apply,
 * reopening the store). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "auth/auth.h"
#include "mvcc/mvcc.h"
#include "util/errors.h"

#include "store_fixture.h"

/* ---- permissions ---- */

static Authpb__Permission *perm(Authpb__Permission__Type t, const char *key, const char *end,
                                size_t endlen)
{
    Authpb__Permission *p = calloc(1, sizeof *p);
    authpb__permission__init(p);
    p->permtype = t;
    p->key = (ProtobufCBinaryData){strlen(key), (uint8_t *)key};
    p->range_end = (ProtobufCBinaryData){endlen, (uint8_t *)end};
    return p;
}

static bool allows(Authpb__Permission **ps, size_t n, const char *key, const char *end,
                   size_t endlen, enum auth_perm_kind k)
{
    return auth_perm_allows(ps, n, (const uint8_t *)key, strlen(key), (const uint8_t *)end,
                            endlen, k);
}

#define R AUTH_PERM_READ
#define W AUTH_PERM_WRITE

static void test_perm_point_and_ranges(void **state)
{
    (void)state;
    Authpb__Permission *ps[] = {
        perm(AUTHPB__PERMISSION__TYPE__READWRITE, "/a/", "/a0", 3), /* prefix /a/ */
        perm(AUTHPB__PERMISSION__TYPE__READ, "k", "", 0),           /* one key */
        perm(AUTHPB__PERMISSION__TYPE__WRITE, "w", "", 0),
        perm(AUTHPB__PERMISSION__TYPE__READ, "zz", "\0", 1),        /* from zz on */
    };
    size_t n = sizeof ps / sizeof ps[0];
    assert_true(allows(ps, n, "/a/x", "", 0, R));
    assert_true(allows(ps, n, "/a/x", "", 0, W));
    assert_true(allows(ps, n, "/a/", "", 0, R));
    assert_false(allows(ps, n, "/a", "", 0, R));
    assert_false(allows(ps, n, "/a0", "", 0, R));
    assert_true(allows(ps, n, "k", "", 0, R));
    assert_false(allows(ps, n, "k", "", 0, W));
    assert_false(allows(ps, n, "k1", "", 0, R));
    assert_true(allows(ps, n, "w", "", 0, W));
    assert_false(allows(ps, n, "w", "", 0, R));
    assert_true(allows(ps, n, "zz", "", 0, R));
    assert_true(allows(ps, n, "zzzzz", "", 0, R));
    assert_false(allows(ps, n, "zy", "", 0, R));
    /* ranges must be covered completely */
    assert_true(allows(ps, n, "/a/", "/a0", 3, R));
    assert_true(allows(ps, n, "/a/b", "/a/c", 4, W));
    assert_false(allows(ps, n, "/a", "/a0", 3, R));
    assert_false(allows(ps, n, "/a/", "/b", 2, R));
    assert_true(allows(ps, n, "zz", "\0", 1, R));   /* from-key inside from-key */
    assert_true(allows(ps, n, "zzz", "\0", 1, R));
    assert_false(allows(ps, n, "zy", "\0", 1, R));
    assert_false(allows(ps, n, "/a/", "\0", 1, R)); /* /a0.. zz is a gap */
    assert_true(allows(ps, n, "k", "k\0", 2, R));   /* the one-key range [k, k\0) */
    assert_false(allows(ps, n, "k", "k\0\0", 3, R));
    assert_false(allows(NULL, 0, "x", "", 0, R));
    for (size_t i = 0; i < n; i++) free(ps[i]);
}

static void test_perm_union_of_intervals(void **state)
{
    (void)state;
    /* [a, c) + [b, e) + [e, g): a contiguous union covers [a, g) */
    Authpb__Permission *ps[] = {
        perm(AUTHPB__PERMISSION__TYPE__READ, "a", "c", 1),
        perm(AUTHPB__PERMISSION__TYPE__READ, "e", "g", 1),
        perm(AUTHPB__PERMISSION__TYPE__READWRITE, "b", "e", 1),
        perm(AUTHPB__PERMISSION__TYPE__WRITE, "g", "\0", 1),
    };
    size_t n = sizeof ps / sizeof ps[0];
    assert_true(allows(ps, n, "a", "g", 1, R));
    assert_true(allows(ps, n, "a", "f", 1, R));
    assert_false(allows(ps, n, "a", "h", 1, R));
    assert_false(allows(ps, n, "a", "c", 1, W));
    assert_true(allows(ps, n, "b", "e", 1, W));
    assert_false(allows(ps, n, "b", "\0", 1, W)); /* gap [e, g) for writes */
    assert_true(allows(ps, n, "g", "\0", 1, W));
    assert_true(allows(ps, n, "x", "", 0, W));
    for (size_t i = 0; i < n; i++) free(ps[i]);
}

/* ---- passwords and tokens ---- */

static void test_bcrypt(void **state)
{
    (void)state;
    char *h = auth_password_hash("s3cret", 4);
    assert_non_null(h);
    assert_memory_equal(h, "$2b$04$", 7);
    assert_true(auth_password_check("s3cret", h));
    assert_false(auth_password_check("s3cret ", h));
    assert_false(auth_password_check("", h));
    char *h2 = auth_password_hash("s3cret", 4);
    assert_string_not_equal(h, h2); /* fresh salt */
    assert_false(auth_password_check("x", ""));
    assert_false(auth_password_check("x", "plain"));
    free(h);
    free(h2);
}

static void test_simple_tokens(void **state)
{
    (void)state;
    auth_tokens *t;
    char err[128];
    assert_int_equal(auth_tokens_new(&t, "simple", 10, err, sizeof err), 0);
    char prefix[17];
    auth_token_prefix(prefix);
    assert_int_equal(strlen(prefix), 16);
    char *a = auth_token_assign(t, "alice", 5, prefix, 42, 1000);
    char *b = auth_token_assign(t, "bob", 5, "BBBBBBBBBBBBBBBB", 43, 1000);
    char expect[64];
    snprintf(expect, sizeof expect, "%s.42", prefix);
    assert_string_equal(a, expect);
    char *user;
    uint64_t rev;
    assert_true(auth_token_info(t, a, 5000, 9, &user, &rev));
    assert_string_equal(user, "alice");
    assert_int_equal(rev, 9); /* simple tokens take the current revision */
    free(user);
    /* used at 5 s: lives until 15 s */
    assert_true(auth_token_info(t, a, 14000, 9, &user, &rev));
    free(user);
    assert_false(auth_token_info(t, b, 11001, 9, &user, &rev)); /* expired */
    assert_false(auth_token_info(t, "nope.1", 0, 9, &user, &rev));
    auth_tokens_invalidate_user(t, "alice");
    assert_false(auth_token_info(t, a, 14000, 9, &user, &rev));
    char *c = auth_token_assign(t, "carol", 5, prefix, 44, 1000);
    auth_tokens_clear(t);
    assert_false(auth_token_info(t, c, 1000, 9, &user, &rev));
    free(a);
    free(b);
    free(c);
    auth_tokens_free(t);
    assert_int_not_equal(auth_tokens_new(&t, "bogus", 10, err, sizeof err), 0);
    assert_int_not_equal(auth_tokens_new(&t, "jwt,sign-method=XX256", 10, err, sizeof err), 0);
}

static void test_jwt_hs256(void **state)
{
    (void)state;
    char path[] = "/tmp/ketch-jwt-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "topsecret", 9), 9);
    close(fd);
    char spec[256], err[128];
    snprintf(spec, sizeof spec, "jwt,priv-key=%s,sign-method=HS256,ttl=1m", path);
    auth_tokens *t;
    assert_int_equal(auth_tokens_new(&t, spec, 0, err, sizeof err), 0);
    assert_true(auth_tokens_is_jwt(t));
    uint64_t now = 1700000000000ULL;
    char *tok = auth_token_assign(t, "alice", 7, "unused", 1, now);
    assert_non_null(tok);
    assert_memory_equal(tok, "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.", 37);
    char *user;
    uint64_t rev;
    assert_true(auth_token_info(t, tok, now + 1000, 99, &user, &rev));
    assert_string_equal(user, "alice");
    assert_int_equal(rev, 7); /* the revision it was issued at */
    free(user);
    assert_false(auth_token_info(t, tok, now + 61000, 99, &user, &rev)); /* expired */
    tok[strlen(tok) - 2] ^= 1;
    assert_false(auth_token_info(t, tok, now + 1000, 99, &user, &rev)); /* tampered */
    assert_false(auth_token_info(t, "a.b", now, 99, &user, &rev));
    free(tok);
    auth_tokens_free(t);
    unlink(path);
}

/* ---- the auth tables in the store ---- */

static int setup(void **state) { return fx_setup(state, "/tmp/ketch-auth-XXXXXX"); }

static int apply(struct fx *f, Ketchpb__InternalRequest *req, struct mvcc_result *res)
{
    int rc = mvcc_apply(f->s, ++f->index, req, &f->a, res);
    assert_int_equal(rc, 0);
    return res->err;
}

static int user_add(struct fx *f, const char *name, const char *pw_hash)
{
    Etcdserverpb__AuthUserAddRequest r = ETCDSERVERPB__AUTH_USER_ADD_REQUEST__INIT;
    r.name = (char *)name;
    r.hashed_password = (char *)pw_hash;
    Ketchpb__InternalRequest req = KETCHPB__INTERNAL_REQUEST__INIT;
    req.auth_user_add = &r;
    struct mvcc_result res;
    return apply(f, &req, &res);
}

static int grant_role(struct fx *f, const char *user, const char *role, const char *as)
{
    Etcdserverpb__AuthUserGrantRoleRequest r = ETCDSERVERPB__AUTH_USER_GRANT_ROLE_REQUEST__INIT;
    r.user = (char *)user;
    r.role = (char *)role;
    Ketchpb__InternalRequest req = KETCHPB__INTERNAL_REQUEST__INIT;
    req.auth_user_grant_role = &r;
    if (as) req.auth_user = (char *)as;
    struct mvcc_result res;
    return apply(f, &req, &res);
}

static int role_add(struct fx *f, const char *name)
{
    Etcdserverpb__AuthRoleAddRequest r = ETCDSERVERPB__AUTH_ROLE_ADD_REQUEST__INIT;
    r.name = (char *)name;
    Ketchpb__InternalRequest req = KETCHPB__INTERNAL_REQUEST__INIT;
    req.auth_role_add = &r;
    struct mvcc_result res;
    return apply(f, &req, &res);
}

static int enable(struct fx *f)
{
    Etcdserverpb__AuthEnableRequest r = ETCDSERVERPB__AUTH_ENABLE_REQUEST__INIT;
    Ketchpb__InternalRequest req = KETCHPB__INTERNAL_REQUEST__INIT;
    req.auth_enable = &r;
    struct mvcc_result res;
    return apply(f, &req, &res);
}

static int put_as(struct fx *f, const char *key, const char *user, uint64_t rev)
{
    Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
    p.key = (ProtobufCBinaryData){strlen(key), (uint8_t *)key};
    Ketchpb__InternalRequest req = KETCHPB__INTERNAL_REQUEST__INIT;
    req.put = &p;
    if (user) req.auth_user = (char *)user;
    req.auth_revision = rev;
    struct mvcc_result res;
    return apply(f, &req, &res);
}

static void test_store_rules_and_checks(void **state)
{
    struct fx *f = *state;
    assert_int_equal(mvcc_auth_revision(f->s), 1);
    assert_false(mvcc_auth_enabled(f->s));
    assert_int_equal(enable(f), KERR_ROOT_USER_NOT_EXIST);
    assert_int_equal(user_add(f, "root", "$2b$04$x"), 0);
    assert_int_equal(user_add(f, "root", "$2b$04$x"), KERR_USER_ALREADY_EXIST);
    assert_int_equal(user_add(f, "", "$2b$04$x"), KERR_USER_EMPTY);
    assert_int_equal(enable(f), KERR_ROOT_ROLE_NOT_EXIST);
    assert_int_equal(grant_role(f, "root", "root", NULL), 0); /* root needs no role entry */
    assert_int_equal(grant_role(f, "root", "nope", NULL), KERR_ROLE_NOT_FOUND);
    assert_int_equal(grant_role(f, "nobody", "root", NULL), KERR_USER_NOT_FOUND);
    assert_int_equal(user_add(f, "alice", "$2b$04$y"), 0);
    assert_int_equal(role_add(f, "r1"), 0);
    assert_int_equal(role_add(f, "r1"), KERR_ROLE_ALREADY_EXIST);
    assert_int_equal(grant_role(f, "alice", "r1", NULL), 0);
    uint64_t rev = mvcc_auth_revision(f->s);
    assert_int_equal(rev, 6); /* 1 + five changes; failures bump nothing */
    assert_int_equal(grant_role(f, "alice", "r1", NULL), 0);
    assert_int_equal(mvcc_auth_revision(f->s), rev); /* already granted */

    Etcdserverpb__AuthRoleGrantPermissionRequest g =
        ETCDSERVERPB__AUTH_ROLE_GRANT_PERMISSION_REQUEST__INIT;
    Authpb__Permission *pm = perm(AUTHPB__PERMISSION__TYPE__WRITE, "/a/", "/a0", 3);
    g.name = "r1";
    g.perm = pm;
    Ketchpb__InternalRequest req = KETCHPB__INTERNAL_REQUEST__INIT;
    req.auth_role_grant_permission = &g;
    struct mvcc_result res;
    assert_int_equal(apply(f, &req, &res), 0);
    free(pm);
    rev = mvcc_auth_revision(f->s);

    assert_int_equal(enable(f), 0);
    assert_true(mvcc_auth_enabled(f->s));
    assert_int_equal(mvcc_auth_revision(f->s), rev); /* enabling bumps nothing */
    /* as etcd's authApplierV3 */
    assert_int_equal(put_as(f, "/a/1", NULL, 0), KERR_USER_EMPTY);
    assert_int_equal(put_as(f, "/a/1", "alice", rev), 0);
    assert_int_equal(put_as(f, "/b", "alice", rev), KERR_PERMISSION_DENIED);
    assert_int_equal(put_as(f, "/a/1", "alice", rev - 1), KERR_AUTH_OLD_REVISION);
    assert_int_equal(put_as(f, "/b", "root", rev), 0);
    assert_int_equal(put_as(f, "/b", "ghost", rev), KERR_PERMISSION_DENIED);
    assert_int_equal(grant_role(f, "alice", "r1", "alice"), KERR_PERMISSION_DENIED);
    assert_int_equal(grant_role(f, "alice", "r1", "ghost"), KERR_USER_NOT_FOUND);
    assert_int_equal(grant_role(f, "alice", "r1", NULL), KERR_USER_EMPTY);
    assert_int_equal(grant_role(f, "alice", "r1", "root"), 0);
    assert_int_equal(mvcc_auth_check(f->s, "alice", rev, (const uint8_t *)"/a/1", 4, NULL, 0, 1), 0);
    assert_int_equal(mvcc_auth_check(f->s, "alice", rev, (const uint8_t *)"/a/1", 4, NULL, 0, 0),
                     KERR_PERMISSION_DENIED);
    /* the server's own entries are not checked */
    Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
    p.key = (ProtobufCBinaryData){2, (uint8_t *)"/x"};
    Ketchpb__InternalRequest sys = KETCHPB__INTERNAL_REQUEST__INIT;
    sys.put = &p;
    sys.auth_system = true;
    assert_int_equal(apply(f, &sys, &res), 0);

    /* root rules while enabled */
    Etcdserverpb__AuthUserDeleteRequest d = ETCDSERVERPB__AUTH_USER_DELETE_REQUEST__INIT;
    d.name = "root";
    Ketchpb__InternalRequest dr = KETCHPB__INTERNAL_REQUEST__INIT;
    dr.auth_user_delete = &d;
    dr.auth_user = "root";
    assert_int_equal(apply(f, &dr, &res), KERR_INVALID_AUTH_MGMT);
    Etcdserverpb__AuthUserRevokeRoleRequest rv = ETCDSERVERPB__AUTH_USER_REVOKE_ROLE_REQUEST__INIT;
    rv.name = "root";
    rv.role = "root";
    Ketchpb__InternalRequest rr = KETCHPB__INTERNAL_REQUEST__INIT;
    rr.auth_user_revoke_role = &rv;
    rr.auth_user = "root";
    assert_int_equal(apply(f, &rr, &res), KERR_INVALID_AUTH_MGMT);

    /* everything survives a reopen */
    uint64_t rev_now = mvcc_auth_revision(f->s);
    mvcc_close(f->s);
    assert_int_equal(mvcc_open(&f->s, f->dir, (size_t)1 << 30), 0);
    assert_true(mvcc_auth_enabled(f->s));
    assert_int_equal(mvcc_auth_revision(f->s), rev_now);
    char *hash = NULL;
    assert_int_equal(mvcc_auth_password(f->s, "alice", &hash), 0);
    assert_string_equal(hash, "$2b$04$y");
    free(hash);
    assert_int_equal(mvcc_auth_password(f->s, "ghost", &hash), KERR_AUTH_FAILED);
    assert_int_equal(mvcc_auth_is_admin(f->s, "alice"), KERR_PERMISSION_DENIED);
    assert_int_equal(mvcc_auth_is_admin(f->s, "root"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_perm_point_and_ranges),
        cmocka_unit_test(test_perm_union_of_intervals),
        cmocka_unit_test(test_bcrypt),
        cmocka_unit_test(test_simple_tokens),
        cmocka_unit_test(test_jwt_hs256),
        cmocka_unit_test_setup_teardown(test_store_rules_and_checks, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
