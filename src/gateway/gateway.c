/* /health, /version, /metrics and the JSON gateway (see gateway.h).
 * Response bodies and status codes are etcd's (checked against etcd 3.4's
 * grpc-gateway and etcdhttp handlers; /health and /version in the 3.5
 * shape). */
#include "gateway/gateway.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/pbjson.h"
#include "rpc.pb-c.h"
#include "util/errors.h"
#include "util/log.h"

#define CT_JSON "application/json"
#define CT_TEXT "text/plain; charset=utf-8"

/* The gateway's routes (etcd's rpc.proto google.api.http options, with the
 * /v3/kv/lease/... aliases etcd 3.4 kept). */
static const struct route {
    const char *http_path, *grpc_path;
    const ProtobufCMessageDescriptor *req, *resp;
} routes[] = {
#define R(h, g, req, resp)                                                                        \
    {h, g, &etcdserverpb__##req##__descriptor, &etcdserverpb__##resp##__descriptor}
    R("/v3/kv/range", "/etcdserverpb.KV/Range", range_request, range_response),
    R("/v3/kv/put", "/etcdserverpb.KV/Put", put_request, put_response),
    R("/v3/kv/deleterange", "/etcdserverpb.KV/DeleteRange", delete_range_request,
      delete_range_response),
    R("/v3/kv/txn", "/etcdserverpb.KV/Txn", txn_request, txn_response),
    R("/v3/kv/compaction", "/etcdserverpb.KV/Compact", compaction_request, compaction_response),
    R("/v3/maintenance/status", "/etcdserverpb.Maintenance/Status", status_request,
      status_response),
    R("/v3/maintenance/alarm", "/etcdserverpb.Maintenance/Alarm", alarm_request, alarm_response),
    R("/v3/cluster/member/list", "/etcdserverpb.Cluster/MemberList", member_list_request,
      member_list_response),
    R("/v3/lease/grant", "/etcdserverpb.Lease/LeaseGrant", lease_grant_request,
      lease_grant_response),
    R("/v3/lease/revoke", "/etcdserverpb.Lease/LeaseRevoke", lease_revoke_request,
      lease_revoke_response),
    R("/v3/kv/lease/revoke", "/etcdserverpb.Lease/LeaseRevoke", lease_revoke_request,
      lease_revoke_response),
    R("/v3/lease/timetolive", "/etcdserverpb.Lease/LeaseTimeToLive", lease_time_to_live_request,
      lease_time_to_live_response),
    R("/v3/kv/lease/timetolive", "/etcdserverpb.Lease/LeaseTimeToLive",
      lease_time_to_live_request, lease_time_to_live_response),
    R("/v3/lease/leases", "/etcdserverpb.Lease/LeaseLeases", lease_leases_request,
      lease_leases_response),
    R("/v3/kv/lease/leases", "/etcdserverpb.Lease/LeaseLeases", lease_leases_request,
      lease_leases_response),
    /* auth (src/api/auth.c); the token comes in the Authorization header */
    R("/v3/auth/enable", "/etcdserverpb.Auth/AuthEnable", auth_enable_request, auth_enable_response),
    R("/v3/auth/disable", "/etcdserverpb.Auth/AuthDisable", auth_disable_request, auth_disable_response),
    R("/v3/auth/status", "/etcdserverpb.Auth/AuthStatus", auth_status_request, auth_status_response),
    R("/v3/auth/authenticate", "/etcdserverpb.Auth/Authenticate", authenticate_request, authenticate_response),
    R("/v3/auth/user/add", "/etcdserverpb.Auth/UserAdd", auth_user_add_request, auth_user_add_response),
    R("/v3/auth/user/get", "/etcdserverpb.Auth/UserGet", auth_user_get_request, auth_user_get_response),
    R("/v3/auth/user/list", "/etcdserverpb.Auth/UserList", auth_user_list_request, auth_user_list_response),
    R("/v3/auth/user/delete", "/etcdserverpb.Auth/UserDelete", auth_user_delete_request, auth_user_delete_response),
    R("/v3/auth/user/changepw", "/etcdserverpb.Auth/UserChangePassword", auth_user_change_password_request, auth_user_change_password_response),
    R("/v3/auth/user/grant", "/etcdserverpb.Auth/UserGrantRole", auth_user_grant_role_request, auth_user_grant_role_response),
    R("/v3/auth/user/revoke", "/etcdserverpb.Auth/UserRevokeRole", auth_user_revoke_role_request, auth_user_revoke_role_response),
    R("/v3/auth/role/add", "/etcdserverpb.Auth/RoleAdd", auth_role_add_request, auth_role_add_response),
    R("/v3/auth/role/get", "/etcdserverpb.Auth/RoleGet", auth_role_get_request, auth_role_get_response),
    R("/v3/auth/role/list", "/etcdserverpb.Auth/RoleList", auth_role_list_request, auth_role_list_response),
    R("/v3/auth/role/delete", "/etcdserverpb.Auth/RoleDelete", auth_role_delete_request, auth_role_delete_response),
    R("/v3/auth/role/grant", "/etcdserverpb.Auth/RoleGrantPermission", auth_role_grant_permission_request, auth_role_grant_permission_response),
    R("/v3/auth/role/revoke", "/etcdserverpb.Auth/RoleRevokePermission", auth_role_revoke_permission_request, auth_role_revoke_permission_response),
#undef R
};

static uint64_t health_ok, health_failed;

/* grpc-gateway's runtime.HTTPStatusFromCode (v1, what etcd uses). */
static int http_status_from_code(int code)
{
    static const int map[17] = {200, 408, 500, 400, 504, 404, 409, 403, 429,
                                400, 409, 400, 501, 500, 503, 500, 401};
    return code >= 0 && code <= 16 ? map[code] : 500;
}

static void respond_json(grpc_http_req *req, int status, json_t *j)
{
    char *s = j ? pbjson_dump(j) : NULL;
    if (!s) {
        grpc_http_respond(req, 500, CT_TEXT, "out of memory\n", 14);
    } else {
        grpc_http_respond(req, status, CT_JSON, s, strlen(s));
        free(s);
    }
    json_decref(j);
}

/* {"error":msg,"message":msg,"code":N}, as grpc-gateway's DefaultHTTPError. */
static void respond_error(grpc_http_req *req, int code, const char *msg)
{
    if (!msg) msg = "";
    json_t *j = json_object();
    json_object_set_new(j, "error", json_string(msg));
    json_object_set_new(j, "message", json_string(msg));
    json_object_set_new(j, "code", json_integer(code));
    respond_json(req, http_status_from_code(code), j);
}

/* ---- the JSON gateway ---- */

struct gw_call {
    grpc_http_req *req;
    const struct route *route;
};

static void call_done(int status, const char *message, const uint8_t *resp, size_t len,
                      void *data)
{
    struct gw_call *gc = data;
    grpc_http_req *req = gc->req;
    const struct route *r = gc->route;
    free(gc);
    if (status != GRPC_OK) {
        respond_error(req, status, message);
        return;
    }
    ProtobufCMessage *m = protobuf_c_message_unpack(r->resp, NULL, len, resp ? resp : (const uint8_t *)"");
    if (!m) {
        respond_error(req, GRPC_INTERNAL, "ketch: cannot decode the response");
        return;
    }
    json_t *j = pbjson_to_json(m);
    protobuf_c_message_free_unpacked(m, NULL);
    respond_json(req, 200, j);
}

static void gateway_call(struct gateway *gw, grpc_http_req *req, const struct route *r)
{
    size_t blen;
    const uint8_t *body = grpc_http_body(req, &blen);
    json_t *j;
    json_error_t jerr;
    size_t i = 0;
    while (i < blen && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' || body[i] == '\n'))
        i++;
    if (i == blen) j = json_object(); /* an empty body is an empty request, as in etcd */
    else j = json_loadb((const char *)body, blen, 0, &jerr);
    if (!j) {
        respond_error(req, GRPC_INVALID_ARGUMENT, jerr.text);
        return;
    }
    arena a = ARENA_INIT;
    char err[256];
    ProtobufCMessage *m = pbjson_from_json(r->req, j, &a, err, sizeof err);
    json_decref(j);
    if (!m) {
        arena_free(&a);
        respond_error(req, GRPC_INVALID_ARGUMENT, err);
        return;
    }
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len ? len : 1);
    struct gw_call *gc = malloc(sizeof *gc);
    if (!buf || !gc) {
        free(buf);
        free(gc);
        arena_free(&a);
        respond_error(req, GRPC_RESOURCE_EXHAUSTED, "ketch: out of memory");
        return;
    }
    protobuf_c_message_pack(m, buf);
    arena_free(&a);
    gc->req = req;
    gc->route = r;
    /* as etcd's grpc-gateway: the Authorization header becomes the
     * "authorization" metadata, read as the auth token */
    grpc_server_call_local_auth(gw->grpc, r->grpc_path, buf, len,
                                grpc_http_header(req, "authorization"), call_done, gc);
    free(buf);
}

/* ---- /health, /version, /metrics ---- */

static void health(struct gateway *gw, grpc_http_req *req)
{
    member *m = gw->api->member;
    const char *reason = NULL;
    if (!m || member_leader_id(m) == 0) reason = "RAFT NO LEADER";
    else if (gw->api->fatal) reason = "STORAGE FAILED";
    if (reason) {
        /* Go's http.Error: the text, a newline, text/plain, 503. */
        char body[128];
        int n = snprintf(body, sizeof body, "{\"health\":\"false\",\"reason\":\"%s\"}\n", reason);
        health_failed++;
        log_warn("/health error: %s", reason);
        grpc_http_respond(req, 503, CT_TEXT, body, (size_t)n);
        return;
    }
    health_ok++;
    static const char ok[] = "{\"health\":\"true\",\"reason\":\"\"}";
    grpc_http_respond(req, 200, CT_TEXT, ok, sizeof ok - 1);
}

static void version(struct gateway *gw, grpc_http_req *req)
{
    char body[128];
    int n = snprintf(body, sizeof body, "{\"etcdserver\":\"%s\",\"etcdcluster\":\"%s\"}",
                     gw->version, gw->cluster_version);
    grpc_http_respond(req, 200, CT_JSON, body, (size_t)n);
}

static void metric(FILE *f, const char *name, const char *type, const char *help,
                   const char *labels, double v)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n%s%s %.17g\n", name, help, name, type, name,
            labels ? labels : "", v);
}

static void metrics(struct gateway *gw, grpc_http_req *req)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) {
        grpc_http_respond(req, 500, CT_TEXT, "out of memory\n", 14);
        return;
    }
    api_server *a = gw->api;
    member *m = a->member;
    int64_t size = 0, in_use = 0;
    if (a->store) mvcc_db_size(a->store, &size, &in_use);
    char labels[128];
    /* etcd's names, help texts and types (etcdserver/metrics.go, mvcc/metrics.go). */
    snprintf(labels, sizeof labels, "{cluster_version=\"%.*s\"}",
             (int)(strrchr(gw->cluster_version, '.') - gw->cluster_version), gw->cluster_version);
    metric(f, "etcd_cluster_version", "gauge",
           "Which version is running. 1 for 'cluster_version' label with current cluster version",
           labels, 1);
    metric(f, "etcd_debugging_mvcc_compact_revision", "gauge",
           "The revision of the last compaction in store.", NULL,
           a->store ? (double)mvcc_compact_revision(a->store) : 0);
    metric(f, "etcd_debugging_mvcc_current_revision", "gauge", "The current revision of store.",
           NULL, a->store ? (double)mvcc_revision(a->store) : 0);
    metric(f, "etcd_mvcc_db_total_size_in_bytes", "gauge",
           "Total size of the underlying database physically allocated in bytes.", NULL,
           (double)size);
    metric(f, "etcd_mvcc_db_total_size_in_use_in_bytes", "gauge",
           "Total size of the underlying database logically in use in bytes.", NULL,
           (double)in_use);
    metric(f, "etcd_server_has_leader", "gauge",
           "Whether or not a leader exists. 1 is existence, 0 is not.", NULL,
           m && member_leader_id(m) != 0);
    metric(f, "etcd_server_health_failures", "counter", "The total number of failed health checks",
           NULL, (double)health_failed);
    metric(f, "etcd_server_health_success", "counter",
           "The total number of successful health checks", NULL, (double)health_ok);
    snprintf(labels, sizeof labels, "{server_id=\"%" PRIx64 "\"}", a->member_id);
    metric(f, "etcd_server_id", "gauge",
           "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
           labels, 1);
    metric(f, "etcd_server_is_leader", "gauge",
           "Whether or not this member is a leader. 1 if is, 0 otherwise.", NULL,
           m && member_is_leader(m));
    metric(f, "etcd_server_proposals_applied_total", "gauge",
           "The total number of consensus proposals applied.", NULL,
           m ? (double)member_applied_index(m) : 0);
    metric(f, "etcd_server_proposals_committed_total", "gauge",
           "The total number of consensus proposals committed.", NULL,
           m ? (double)member_commit_index(m) : 0);
    snprintf(labels, sizeof labels, "{server_version=\"%s\"}", gw->version);
    metric(f, "etcd_server_version", "gauge",
           "Which version is running. 1 for 'server_version' label with current version.",
           labels, 1);
    grpc_server_write_metrics(gw->grpc, f);
    fclose(f);
    grpc_http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    free(text);
}

static void handle(grpc_http_req *req, void *ctx)
{
    struct gateway *gw = ctx;
    const char *method = grpc_http_method(req), *path = grpc_http_path(req);
    bool get = !strcmp(method, "GET");
    void (*page)(struct gateway *, grpc_http_req *) = NULL;
    if (!strcmp(path, "/health")) page = health;
    else if (!strcmp(path, "/version")) page = version;
    else if (!strcmp(path, "/metrics")) page = metrics;
    if (page) {
        if (!get) grpc_http_respond(req, 405, CT_TEXT, "Method Not Allowed\n", 19);
        else page(gw, req);
        return;
    }
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (strcmp(path, routes[i].http_path)) continue;
        if (strcmp(method, "POST")) grpc_http_respond(req, 405, CT_TEXT, "Method Not Allowed\n", 19);
        else gateway_call(gw, req, &routes[i]);
        return;
    }
    grpc_http_respond(req, 404, CT_TEXT, "404 page not found\n", 19);
}

void gateway_start(struct gateway *gw)
{
    grpc_server_set_http_handler(gw->grpc, handle, gw);
}
