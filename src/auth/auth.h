/* Users, roles, permissions and tokens: the parts of etcd's auth package
 * that are functions of their inputs (no LMDB, no sockets, no loop).
 *
 *   perm.c      key-range permission checks (etcd's range_perm_cache.go)
 *   password.c  bcrypt hashes through libxcrypt's crypt_r
 *   token.c     simple tokens with a TTL (simple_token.go) and JWT tokens
 *               signed with OpenSSL (jwt.go)
 *
 * The auth tables themselves live in the MVCC store (mvcc/auth.c), written
 * in the same LMDB transaction as the Raft entry that changes them; the
 * gRPC side is api/auth.c. */
#ifndef KETCH_AUTH_AUTH_H
#define KETCH_AUTH_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth.pb-c.h"

#define AUTH_ROOT_USER "root"
#define AUTH_ROOT_ROLE "root"

/* ---- permissions (perm.c) ---- */

enum auth_perm_kind { AUTH_PERM_READ, AUTH_PERM_WRITE };

/* Whether the permissions `perms` (n of them: every permission of every
 * role of one user) allow `kind` access to the key `key` (end empty), or to
 * the whole range [key, end) (end "\0": every key >= key), as etcd's
 * isRangeOpPermitted: READWRITE counts for both kinds; a permission with an
 * empty range_end is the single key, with "\0" every key from its key on;
 * a range request is allowed only when the union of the allowed intervals
 * covers all of it. Borrowed arguments; no allocation. */
bool auth_perm_allows(Authpb__Permission *const *perms, size_t n, const uint8_t *key,
                      size_t klen, const uint8_t *end, size_t elen, enum auth_perm_kind kind);

/* ---- passwords (password.c) ---- */

/* bcrypt as etcd (golang.org/x/crypto/bcrypt): cost 4..31, default 10. */
#define AUTH_BCRYPT_DEFAULT_COST 10
#define AUTH_BCRYPT_MIN_COST 4
#define AUTH_BCRYPT_MAX_COST 31

/* Hashes `password` with a fresh salt ("$2b$<cost>$..."). Returns a
 * malloc'd string, or NULL (out of memory, no randomness). Slow by design
 * (~50 ms at cost 10): call it off the loop. */
char *auth_password_hash(const char *password, int cost);
/* True if `password` matches the bcrypt `hash` (compared in constant
 * time). Slow: off the loop. */
bool auth_password_check(const char *password, const char *hash);

/* ---- tokens (token.c) ---- */

typedef struct auth_tokens auth_tokens;

/* Creates the token provider from etcd's --auth-token value: "simple"
 * (simple tokens living ttl_s seconds after their last use, etcd's
 * --auth-token-ttl) or "jwt,pub-key=F,priv-key=F,sign-method=M[,ttl=D]"
 * (M one of RS256/384/512, PS256/384/512, ES256/384/512, HS256/384/512;
 * for HS* the priv-key file's bytes are the secret; ttl a Go duration,
 * default 5m). Returns 0, or -1 with a reason in err. */
int auth_tokens_new(auth_tokens **out, const char *spec, uint64_t ttl_s, char *err,
                    size_t errlen);
void auth_tokens_free(auth_tokens *t);
bool auth_tokens_is_jwt(const auth_tokens *t);

/* 16 random letters: the prefix of a simple token, chosen by the proposer
 * of an Authenticate (etcd's GenTokenPrefix). out must hold 17 bytes. */
void auth_token_prefix(char out[17]);

/* Issues a token for `user` at auth revision `rev`: simple tokens are
 * "<prefix>.<index>" (index: the Raft index of the Authenticate entry) and
 * are remembered until now_ms + TTL; JWT tokens are signed claims
 * {exp, revision, username}. Returns a malloc'd token or NULL. */
char *auth_token_assign(auth_tokens *t, const char *user, uint64_t rev, const char *prefix,
                        uint64_t index, uint64_t now_ms);

/* Looks a token up. Returns true if it is valid, with *user (malloc'd,
 * the caller frees it) and *rev: for a simple token the current revision
 * `cur_rev` (its TTL restarts), for a JWT the revision it was signed
 * with. */
bool auth_token_info(auth_tokens *t, const char *token, uint64_t now_ms, uint64_t cur_rev,
                     char **user, uint64_t *rev);

/* Forgets every simple token of `user` (deleted, or new password). */
void auth_tokens_invalidate_user(auth_tokens *t, const char *user);
/* Forgets every simple token (auth disabled). */
void auth_tokens_clear(auth_tokens *t);

#endif
