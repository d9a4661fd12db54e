/* ketch's error codes, with the gRPC status and the exact text that etcd
 * sends for each (clients match on the text, so it is part of the API:
 * etcd's etcdserver/api/v3rpc/rpctypes/error.go).
 *
 * Functions return 0 on success, or a negative KERR_* code. */
#ifndef KETCH_UTIL_ERRORS_H
#define KETCH_UTIL_ERRORS_H

#include <stddef.h>

/* gRPC status codes. */
enum grpc_status {
    GRPC_OK = 0,
    GRPC_CANCELLED = 1,
    GRPC_UNKNOWN = 2,
    GRPC_INVALID_ARGUMENT = 3,
    GRPC_DEADLINE_EXCEEDED = 4,
    GRPC_NOT_FOUND = 5,
    GRPC_ALREADY_EXISTS = 6,
    GRPC_PERMISSION_DENIED = 7,
    GRPC_RESOURCE_EXHAUSTED = 8,
    GRPC_FAILED_PRECONDITION = 9,
    GRPC_ABORTED = 10,
    GRPC_OUT_OF_RANGE = 11,
    GRPC_UNIMPLEMENTED = 12,
    GRPC_INTERNAL = 13,
    GRPC_UNAVAILABLE = 14,
    GRPC_DATA_LOSS = 15,
    GRPC_UNAUTHENTICATED = 16,
};

/* X(name, grpc status, etcd text) */
#define KERR_TABLE(X)                                                                     \
    X(KERR_NOMEM, GRPC_RESOURCE_EXHAUSTED, "ketch: out of memory")                       \
    X(KERR_INTERNAL, GRPC_INTERNAL, "ketch: internal error")                              \
    X(KERR_IO, GRPC_INTERNAL, "ketch: storage error")                                     \
    X(KERR_BAD_REQUEST, GRPC_INVALID_ARGUMENT, "ketch: malformed request")                \
    X(KERR_EMPTY_KEY, GRPC_INVALID_ARGUMENT, "etcdserver: key is not provided")           \
    X(KERR_KEY_NOT_FOUND, GRPC_INVALID_ARGUMENT, "etcdserver: key not found")             \
    X(KERR_VALUE_PROVIDED, GRPC_INVALID_ARGUMENT, "etcdserver: value is provided")        \
    X(KERR_LEASE_PROVIDED, GRPC_INVALID_ARGUMENT, "etcdserver: lease is provided")        \
    X(KERR_TOO_MANY_OPS, GRPC_INVALID_ARGUMENT, "etcdserver: too many operations in txn request") \
    X(KERR_DUPLICATE_KEY, GRPC_INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request") \
    X(KERR_COMPACTED, GRPC_OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted") \
    X(KERR_FUTURE_REV, GRPC_OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision") \
    X(KERR_NO_SPACE, GRPC_RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded") \
    X(KERR_LEASE_NOT_FOUND, GRPC_NOT_FOUND, "etcdserver: requested lease not found")      \
    X(KERR_LEASE_EXIST, GRPC_FAILED_PRECONDITION, "etcdserver: lease already exists")     \
    X(KERR_LEASE_TTL_TOO_LARGE, GRPC_OUT_OF_RANGE, "etcdserver: too large lease TTL")     \
    X(KERR_REQUEST_TOO_LARGE, GRPC_INVALID_ARGUMENT, "etcdserver: request is too large")  \
    X(KERR_MEMBER_NOT_FOUND, GRPC_NOT_FOUND, "etcdserver: member not found")              \
    X(KERR_NO_LEADER, GRPC_UNAVAILABLE, "etcdserver: no leader")                          \
    X(KERR_NOT_LEADER, GRPC_FAILED_PRECONDITION, "etcdserver: not leader")                \
    X(KERR_LEADER_CHANGED, GRPC_UNAVAILABLE, "etcdserver: leader changed")                \
    X(KERR_STOPPED, GRPC_UNAVAILABLE, "etcdserver: server stopped")                       \
    X(KERR_TIMEOUT, GRPC_UNAVAILABLE, "etcdserver: request timed out")                    \
    X(KERR_TIMEOUT_LEADER_FAIL, GRPC_UNAVAILABLE,                                          \
      "etcdserver: request timed out, possibly due to previous leader failure")            \
    /* a proposal that found no leader for etcd's whole request timeout: etcd's   */     \
    /* raft Propose blocks while there is none and etcd returns the context error */     \
    /* untranslated (grpc-go >= 1.45, as in etcd 3.5: DeadlineExceeded; the      */     \
    /* Debian etcd 3.4's grpc-go 1.33 sends it as Unknown)                          */     \
    X(KERR_PROPOSE_DEADLINE, GRPC_DEADLINE_EXCEEDED, "context deadline exceeded")         \
    X(KERR_CORRUPT, GRPC_DATA_LOSS, "etcdserver: corrupt cluster")                         \
    /* auth (src/mvcc/auth.c, src/api/auth.c): rpctypes/error.go */                       \
    X(KERR_ROOT_USER_NOT_EXIST, GRPC_FAILED_PRECONDITION, "etcdserver: root user does not exist") \
    X(KERR_ROOT_ROLE_NOT_EXIST, GRPC_FAILED_PRECONDITION,                                  \
      "etcdserver: root user does not have root role")                                     \
    X(KERR_USER_ALREADY_EXIST, GRPC_FAILED_PRECONDITION, "etcdserver: user name already exists") \
    X(KERR_USER_EMPTY, GRPC_INVALID_ARGUMENT, "etcdserver: user name is empty")            \
    X(KERR_USER_NOT_FOUND, GRPC_FAILED_PRECONDITION, "etcdserver: user name not found")    \
    X(KERR_ROLE_ALREADY_EXIST, GRPC_FAILED_PRECONDITION, "etcdserver: role name already exists") \
    X(KERR_ROLE_NOT_FOUND, GRPC_FAILED_PRECONDITION, "etcdserver: role name not found")    \
    X(KERR_ROLE_EMPTY, GRPC_INVALID_ARGUMENT, "etcdserver: role name is empty")            \
    X(KERR_AUTH_FAILED, GRPC_INVALID_ARGUMENT,                                             \
      "etcdserver: authentication failed, invalid user ID or password")                    \
    X(KERR_PERMISSION_NOT_GIVEN, GRPC_INVALID_ARGUMENT, "etcdserver: permission not given") \
    X(KERR_PERMISSION_DENIED, GRPC_PERMISSION_DENIED, "etcdserver: permission denied")     \
    X(KERR_ROLE_NOT_GRANTED, GRPC_FAILED_PRECONDITION,                                     \
      "etcdserver: role is not granted to the user")                                       \
    X(KERR_PERMISSION_NOT_GRANTED, GRPC_FAILED_PRECONDITION,                               \
      "etcdserver: permission is not granted to the role")                                 \
    X(KERR_AUTH_NOT_ENABLED, GRPC_FAILED_PRECONDITION, "etcdserver: authentication is not enabled") \
    X(KERR_INVALID_AUTH_TOKEN, GRPC_UNAUTHENTICATED, "etcdserver: invalid auth token")     \
    X(KERR_INVALID_AUTH_MGMT, GRPC_INVALID_ARGUMENT, "etcdserver: invalid auth management") \
    X(KERR_AUTH_OLD_REVISION, GRPC_INVALID_ARGUMENT, "etcdserver: revision of auth store is old") \
    /* clustering (src/api/cluster.c, src/member) */                                     \
    X(KERR_BUSY, GRPC_UNAVAILABLE, "ketch: a membership change is in progress")          \
    X(KERR_MEMBER_EXIST, GRPC_FAILED_PRECONDITION, "etcdserver: member ID already exist") \
    X(KERR_PEER_URL_EXIST, GRPC_FAILED_PRECONDITION, "etcdserver: Peer URLs already exists") \
    X(KERR_MEMBER_BAD_URLS, GRPC_INVALID_ARGUMENT, "etcdserver: given member URLs are invalid") \
    X(KERR_MEMBER_NOT_LEARNER, GRPC_FAILED_PRECONDITION, "etcdserver: can only promote a learner member") \
    X(KERR_LEARNER_NOT_READY, GRPC_FAILED_PRECONDITION, "etcdserver: can only promote a learner member which is in sync with leader") \
    X(KERR_TOO_MANY_LEARNERS, GRPC_FAILED_PRECONDITION, "etcdserver: too many learner members in cluster") \
    X(KERR_BAD_LEADER_TRANSFEREE, GRPC_FAILED_PRECONDITION, "etcdserver: bad leader transferee") \
    /* (not in etcd's toGRPCErrorMap: its togRPCError sends it as Unknown) */            \
    X(KERR_TIMEOUT_LEADER_TRANSFER, GRPC_UNKNOWN, "etcdserver: request timed out, leader transfer took too long") \
    /* maintenance (src/mvcc/alarm.c, src/api/maintenance.c) */                         \
    X(KERR_ALARM_CORRUPT, GRPC_DATA_LOSS, "etcdserver: corrupt cluster")                   \
    X(KERR_DEFRAG_FAILED, GRPC_UNKNOWN, "ketch: defragment failed")                       \
    /* etcd's auth package errors as authMaintenanceServer returns them, untranslated */   \
    X(KERR_MAINT_USER_EMPTY, GRPC_UNKNOWN, "auth: user name is empty")                     \
    X(KERR_MAINT_USER_NOT_FOUND, GRPC_UNKNOWN, "auth: user name not found")                \
    X(KERR_MAINT_PERMISSION_DENIED, GRPC_UNKNOWN, "auth: permission denied")               \
    X(KERR_MAINT_INVALID_AUTH_TOKEN, GRPC_UNKNOWN, "auth: invalid auth token")

enum kerr {
    KERR_OK = 0,
    KERR_FIRST_ = -1000,
#define X(name, status, text) name,
    KERR_TABLE(X)
#undef X
    KERR_LAST_
};

/* The etcd text of a KERR_* code ("ketch: unknown error" if not one). */
const char *kerr_text(int code);
/* The gRPC status a KERR_* code is sent with. */
enum grpc_status kerr_grpc_status(int code);

/* An errno as Go's syscall package prints it, as etcd's messages about
 * files carry it ("open f: no such file or directory"): into dst. */
const char *errno_text_go(char *dst, size_t n, int e);

#endif
