/* etcdserverpb.Auth, and who a call speaks for (etcd's AuthInfoFromCtx).
 *
 * A call's user comes from its "token" metadata (or "authorization", what
 * the JSON gateway passes on from the HTTP Authorization header): a simple
 * or JWT token (auth/token.c); without a token, with --client-cert-auth,
 * from the CN of its verified TLS client certificate, as etcd. Writes carry
 * the user and token revision in their Raft entry and are checked at apply
 * (mvcc/auth.c); reads and watches are checked here before they run. */
#ifndef KETCH_API_AUTH_H
#define KETCH_API_AUTH_H

#include "api/api.h"

/* Configures auth (--auth-token, --auth-token-ttl, --bcrypt-cost,
 * --client-cert-auth). Without it the server uses simple tokens with
 * etcd's defaults. Returns 0, or -1 with a message on stderr. */
int auth_api_configure(api_server *s, const char *token_spec, uint64_t ttl_s, int bcrypt_cost,
                       bool client_cert_auth);
void auth_api_fini(api_server *s);

/* Who `call` speaks for: *user (malloc'd, or NULL: nobody) and the auth
 * revision of its credentials. Returns 0 or KERR_INVALID_AUTH_TOKEN. */
int auth_api_info(api_server *s, grpc_call *call, char **user, uint64_t *rev);

/* Fills the proposer fields of `req` (auth_user, auth_revision) for
 * `call`; *owned receives what must be freed once req is packed. Returns 0
 * or KERR_INVALID_AUTH_TOKEN. */
int auth_api_stamp(api_server *s, grpc_call *call, Ketchpb__InternalRequest *req, char **owned);

/* etcd's doSerialize checks: read access to [key, end) (IsRangePermitted),
 * or to everything a read-only txn touches (checkTxnAuth). 0 or a KERR_*
 * code to fail the call with. */
int auth_api_check_range(api_server *s, grpc_call *call, ProtobufCBinaryData key,
                         ProtobufCBinaryData end);
int auth_api_check_txn(api_server *s, grpc_call *call, const Etcdserverpb__TxnRequest *t);

/* Lock and election requests (whose writes the server proposes itself):
 * with auth enabled, the caller needs read access (and write access if
 * `write`) to every key under the name, [name "/", name "0"), as the
 * client-side recipes etcd's v3lock/v3election run as the caller would.
 * 0 or a KERR_* code. */
int auth_api_check_conc(api_server *s, grpc_call *call, ProtobufCBinaryData name, bool write);

/* Called by api_apply after each entry: issues Authenticate tokens and
 * forgets those of deleted users, changed passwords, disabled auth. */
void auth_api_applied(api_server *s, uint64_t index, const Ketchpb__InternalRequest *req,
                      struct mvcc_result *res, arena *a);

/* gRPC handlers (etcdserverpb.Auth). */
void auth_enable(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void auth_disable(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void auth_status(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void auth_authenticate(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void auth_user_add(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void auth_user_get(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void auth_user_list(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void auth_user_delete(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void auth_user_change_password(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void auth_user_grant_role(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void auth_user_revoke_role(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void auth_role_add(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void auth_role_get(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void auth_role_list(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void auth_role_delete(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void auth_role_grant_permission(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void auth_role_revoke_permission(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);

#endif
