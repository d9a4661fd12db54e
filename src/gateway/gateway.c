/* /health, /version, /metrics and the JSON gateway (see gateway.h).
 * Response bodies and status codes are etcd's (checked against etcd 3.4's
 * grpc-gateway and etcdhttp handlers; /health and /version in the 3.5
 * shape). */
#include "gateway/gateway.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gateway/pbjson.h"
#include "rpc.pb-c.h"
#include "v3election.pb-c.h"
#include "v3lock.pb-c.h"
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
    /* The rest of etcd's routes (but auth's). Methods ketch does not serve
     * yet answer grpc-go's UNIMPLEMENTED through the gateway. */
    R("/v3/cluster/member/add", "/etcdserverpb.Cluster/MemberAdd", member_add_request,
      member_add_response),
    R("/v3/cluster/member/remove", "/etcdserverpb.Cluster/MemberRemove", member_remove_request,
      member_remove_response),
    R("/v3/cluster/member/update", "/etcdserverpb.Cluster/MemberUpdate", member_update_request,
      member_update_response),
    R("/v3/cluster/member/promote", "/etcdserverpb.Cluster/MemberPromote",
      member_promote_request, member_promote_response),
    R("/v3/maintenance/defragment", "/etcdserverpb.Maintenance/Defragment", defragment_request,
      defragment_response),
    /* etcd's rpc.proto maps Hash and HashKV both here; grpc-gateway serves Hash. */
    R("/v3/maintenance/hash", "/etcdserverpb.Maintenance/Hash", hash_request, hash_response),
    R("/v3/maintenance/transfer-leadership", "/etcdserverpb.Maintenance/MoveLeader",
      move_leader_request, move_leader_response),
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
#define RP(h, g, pkg, req, resp) {h, g, &pkg##__##req##__descriptor, &pkg##__##resp##__descriptor}
    RP("/v3/lock/lock", "/v3lockpb.Lock/Lock", v3lockpb, lock_request, lock_response),
    RP("/v3/lock/unlock", "/v3lockpb.Lock/Unlock", v3lockpb, unlock_request, unlock_response),
    RP("/v3/election/campaign", "/v3electionpb.Election/Campaign", v3electionpb,
       campaign_request, campaign_response),
    RP("/v3/election/proclaim", "/v3electionpb.Election/Proclaim", v3electionpb,
       proclaim_request, proclaim_response),
    RP("/v3/election/leader", "/v3electionpb.Election/Leader", v3electionpb, leader_request,
       leader_response),
    RP("/v3/election/resign", "/v3electionpb.Election/Resign", v3electionpb, resign_request,
       resign_response),
#undef RP
};

/* Streaming routes (gateway_stream). */
static const struct route stream_routes[] = {
    {"/v3/watch", "/etcdserverpb.Watch/Watch", &etcdserverpb__watch_request__descriptor,
     &etcdserverpb__watch_response__descriptor},
    {"/v3/maintenance/snapshot", "/etcdserverpb.Maintenance/Snapshot",
     &etcdserverpb__snapshot_request__descriptor, &etcdserverpb__snapshot_response__descriptor},
    {"/v3/lease/keepalive", "/etcdserverpb.Lease/LeaseKeepAlive",
     &etcdserverpb__lease_keep_alive_request__descriptor,
     &etcdserverpb__lease_keep_alive_response__descriptor},
    {"/v3/election/observe", "/v3electionpb.Election/Observe",
     &v3electionpb__leader_request__descriptor, &v3electionpb__leader_response__descriptor},
    {"/v3/maintenance/snapshot", "/etcdserverpb.Maintenance/Snapshot",
     &etcdserverpb__snapshot_request__descriptor, &etcdserverpb__snapshot_response__descriptor},
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

/* ---- POST /v3/watch and the other streams ----
 *
 * As grpc-gateway's request_Watch_0 and ForwardResponseStream (v1): the
 * body is a sequence of JSON WatchRequests, each sent on the stream, then
 * the stream is half-closed (it stays open: see api/watch.c). The response
 * is chunked, one {"result":WatchResponse} per line, for as long as the
 * HTTP client stays; a stream that ends with an error gets one
 * {"error":{"grpc_code","http_code","message","http_status"}} (and that
 * HTTP status if nothing was sent before). If the first request does not
 * decode: a plain error response (code 2, HTTP 500, as grpc-gateway's
 * non-status errors). */

struct gw_watch {
    uv_timer_t release; /* drops the call reference after the handler returned */
    const struct route *route;
    grpc_http_req *req;
    grpc_call *call;   /* our reference; NULL once finished or cancelled */
    uv_loop_t *loop;
    bool in_setup;     /* inside gateway_stream: done only records */
    bool started;      /* the response head was sent */
    bool done;
    int status;
    char *message;
};

static const char *http_status_text(int code)
{
    switch (code) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 429: return "Too Many Requests";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Internal Server Error";
    }
}

static void watch_write_json(struct gw_watch *w, const char *key, json_t *inner, bool newline)
{
    json_t *j = json_object();
    json_object_set_new(j, key, inner);
    char *s = pbjson_dump(j);
    json_decref(j);
    if (!s) return;
    grpc_http_stream_write(w->req, s, strlen(s));
    if (newline) grpc_http_stream_write(w->req, "\n", 1);
    free(s);
}

static void watch_on_msg(const uint8_t *msg, size_t len, void *data)
{
    struct gw_watch *w = data;
    if (!w->started) {
        w->started = true;
        grpc_http_stream_start(w->req, 200, CT_JSON);
    }
    ProtobufCMessage *r = protobuf_c_message_unpack(w->route->resp, NULL, len, msg);
    if (!r) return;
    json_t *j = pbjson_to_json(r);
    protobuf_c_message_free_unpacked(r, NULL);
    if (j) watch_write_json(w, "result", j, true);
}

static void watch_freed(uv_handle_t *h)
{
    struct gw_watch *w = h->data;
    free(w->message);
    free(w);
}

static void watch_release(uv_timer_t *t)
{
    struct gw_watch *w = t->data;
    if (w->call) grpc_call_unref(w->call);
    w->call = NULL;
    uv_close((uv_handle_t *)&w->release, watch_freed);
}

/* The call is over (w->status): end the response, free everything. */
static void watch_finish(struct gw_watch *w)
{
    if (w->status != GRPC_OK) {
        int http = http_status_from_code(w->status);
        if (!w->started) {
            w->started = true;
            grpc_http_stream_start(w->req, http, CT_JSON);
        }
        json_t *e = json_object();
        json_object_set_new(e, "grpc_code", json_integer(w->status));
        json_object_set_new(e, "http_code", json_integer(http));
        json_object_set_new(e, "message", json_string(w->message ? w->message : ""));
        json_object_set_new(e, "http_status", json_string(http_status_text(http)));
        watch_write_json(w, "error", e, false);
    } else if (!w->started) {
        w->started = true;
        grpc_http_stream_start(w->req, 200, CT_JSON);
    }
    grpc_http_stream_end(w->req);
    w->req = NULL;
    /* We may be inside the handler's grpc_call_finish: let it return before
     * the call can be freed. */
    uv_timer_init(w->loop, &w->release);
    w->release.data = w;
    uv_timer_start(&w->release, watch_release, 0, 0);
}

static void watch_done(int status, const char *message, const uint8_t *resp, size_t len,
                       void *data)
{
    struct gw_watch *w = data;
    w->done = true;
    w->status = status;
    w->message = message ? strdup(message) : NULL;
    if (!w->in_setup) watch_finish(w);
}

/* The HTTP client went away: cancel the stream (done never runs then). */
static void watch_gone(grpc_http_req *req, void *data)
{
    struct gw_watch *w = data;
    grpc_call *call = w->call;
    w->call = NULL;
    if (call && !w->done) grpc_local_stream_cancel(call);
    else if (call) grpc_call_unref(call);
    grpc_http_stream_end(req);
    free(w->message);
    free(w);
}

static size_t stream_pending(void *data)
{
    struct gw_watch *w = data;
    return w->done ? 0 : grpc_http_pending(w->req);
}

static void gateway_stream(struct gateway *gw, grpc_http_req *req, const struct route *route)
{
    size_t blen;
    const uint8_t *body = grpc_http_body(req, &blen);
    struct gw_watch *w = calloc(1, sizeof *w);
    if (!w) {
        respond_error(req, GRPC_RESOURCE_EXHAUSTED, "ketch: out of memory");
        return;
    }
    w->req = req;
    w->route = route;
    w->loop = gw->api->loop;
    w->in_setup = true;
    size_t off = 0;
    int n = 0;
    for (;;) {
        while (off < blen && strchr(" \t\r\n", body[off])) off++;
        if (off == blen) break;
        json_error_t jerr;
        json_t *j = json_loadb((const char *)body + off, blen - off, JSON_DISABLE_EOF_CHECK, &jerr);
        char err[256];
        ProtobufCMessage *m = NULL;
        arena a = ARENA_INIT;
        if (j) {
            off += jerr.position;
            m = pbjson_from_json(route->req, j, &a, err, sizeof err);
            json_decref(j);
        } else {
            snprintf(err, sizeof err, "%s", jerr.text);
        }
        if (!m) {
            arena_free(&a);
            if (n == 0) { /* as grpc-gateway: the error alone, nothing opened */
                free(w);
                respond_error(req, GRPC_UNKNOWN, err);
                return;
            }
            break; /* later ones: stop sending, as its send loop does */
        }
        size_t len = protobuf_c_message_get_packed_size(m);
        uint8_t *buf = malloc(len ? len : 1);
        if (buf) protobuf_c_message_pack(m, buf);
        arena_free(&a);
        if (!buf) break;
        if (n++ == 0) {
            w->call = grpc_server_open_local_stream(
                gw->grpc, route->grpc_path, grpc_http_header(req, "authorization"), watch_on_msg,
                watch_done, w);
            if (!w->call) {
                free(buf);
                break;
            }
            grpc_http_set_on_gone(req, watch_gone, w);
            /* Snapshot streams a whole database: it waits for the client */
            if (strcmp(route->grpc_path, "/etcdserverpb.Maintenance/Snapshot") == 0)
                grpc_local_stream_set_pending(w->call, stream_pending);
        }
        if (!w->done) grpc_local_stream_send(w->call, buf, len);
        free(buf);
        if (w->done) break;
    }
    if (n == 0) { /* an empty body: a stream with no watchers, as etcd */
        w->call = grpc_server_open_local_stream(gw->grpc, route->grpc_path,
                                                grpc_http_header(req, "authorization"),
                                                watch_on_msg, watch_done, w);
        if (w->call) grpc_http_set_on_gone(req, watch_gone, w);
        /* a server stream takes its request from an empty body as
         * grpc-gateway does (an empty message) */
        if (w->call && !w->done &&
            strcmp(route->grpc_path, "/etcdserverpb.Maintenance/Snapshot") == 0) {
            grpc_local_stream_set_pending(w->call, stream_pending);
            grpc_local_stream_send(w->call, (const uint8_t *)"", 0);
        }
    }
    if (w->call && !w->done) grpc_local_stream_half_close(w->call);
    w->in_setup = false;
    if (w->done) {
        watch_finish(w);
        return;
    }
    /* Nothing sent yet (no watcher created): the head goes out now, as
     * grpc-gateway flushes its headers with the first message only; we
     * send it at once so that clients see the stream is open. */
    if (!w->started) {
        w->started = true;
        grpc_http_stream_start(req, 200, CT_JSON);
    }
}

/* ---- /health, /version, /metrics ---- */

/* Whether the query has `name=value` (etcd's health handler reads
 * `exclude` (repeatable) and `serializable`). */
static bool query_has(const char *q, const char *name, const char *value)
{
    size_t nl = strlen(name), vl = strlen(value);
    while (*q) {
        const char *amp = strchr(q, '&');
        size_t len = amp ? (size_t)(amp - q) : strlen(q);
        if (len == nl + 1 + vl && !strncmp(q, name, nl) && q[nl] == '=' &&
            !strncmp(q + nl + 1, value, vl))
            return true;
        q += len + (amp ? 1 : 0);
    }
    return false;
}

static void health(struct gateway *gw, grpc_http_req *req)
{
    member *m = gw->api->member;
    const char *reason = NULL;
    /* as etcd 3.5's checkHealth: raised alarms first (but those named by
     * ?exclude=NOSPACE / CORRUPT), then the leader (unless
     * ?serializable=true) */
    const char *q = grpc_http_query(req);
    mvcc_store *st = gw->api->store;
    if (st && !query_has(q, "exclude", "NOSPACE") &&
        mvcc_alarm_count(st, ETCDSERVERPB__ALARM_TYPE__NOSPACE) > 0)
        reason = "ALARM NOSPACE";
    else if (st && !query_has(q, "exclude", "CORRUPT") &&
             mvcc_alarm_count(st, ETCDSERVERPB__ALARM_TYPE__CORRUPT) > 0)
        reason = "ALARM CORRUPT";
    else if (!query_has(q, "serializable", "true") && (!m || member_leader_id(m) == 0))
        reason = "RAFT NO LEADER";
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

static void histogram(FILE *f, const char *name, const char *help, const struct maint_hist *h)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (size_t i = 0; i < h->n_bounds; i++) {
        cum += h->counts[i];
        fprintf(f, "%s_bucket{le=\"%.17g\"} %" PRIu64 "\n", name, h->bounds[i], cum);
    }
    fprintf(f, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n%s_sum %.17g\n%s_count %" PRIu64 "\n", name,
            h->count, name, h->sum, name, h->count);
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
    {
        struct maint_hist pause, total;
        maint_compaction_hists(a, &pause, &total);
        histogram(f, "etcd_debugging_mvcc_db_compaction_pause_duration_milliseconds",
                  "Bucketed histogram of db compaction pause duration.", &pause);
        histogram(f, "etcd_debugging_mvcc_db_compaction_total_duration_milliseconds",
                  "Bucketed histogram of db compaction total duration.", &total);
    }
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
    if (m != NULL) {
        /* ketch's own: how the leader batches proposals into raft_apply */
        struct member_stats st;
        member_get_stats(m, &st);
        metric(f, "ketch_server_proposals_appended_total", "counter",
               "Entries this member proposed as leader (handed to raft).", NULL,
               (double)st.proposals);
        metric(f, "ketch_server_proposal_appends_total", "counter",
               "Raft appends (raft_apply calls) that carried those entries.", NULL,
               (double)st.appends);
        metric(f, "ketch_server_proposal_append_to_apply_seconds_sum", "counter",
               "Sum over the entries applied as leader of the time from their append to "
               "their local apply.", NULL, st.append_to_apply_ns / 1e9);
        metric(f, "ketch_server_proposal_append_to_apply_seconds_count", "counter",
               "Entries counted in ketch_server_proposal_append_to_apply_seconds_sum.", NULL,
               (double)st.applied);
    }
    metric(f, "etcd_server_quota_backend_bytes", "gauge",
           "Current backend storage quota size in bytes.", NULL, (double)a->quota_bytes);
    snprintf(labels, sizeof labels, "{server_version=\"%s\"}", gw->version);
    metric(f, "etcd_server_version", "gauge",
           "Which version is running. 1 for 'server_version' label with current version.",
           labels, 1);
    grpc_server_write_metrics(gw->grpc, f);
    /* the Go client_golang process collector's, which etcdctl check
     * datascale reads */
    {
        long pages = 0, rss = 0;
        FILE *sf = fopen("/proc/self/statm", "r");
        if (sf != NULL) {
            if (fscanf(sf, "%ld %ld", &pages, &rss) != 2) pages = rss = 0;
            fclose(sf);
        }
        long psz = sysconf(_SC_PAGESIZE);
        metric(f, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
               NULL, (double)rss * (double)psz);
        metric(f, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.",
               NULL, (double)pages * (double)psz);
    }
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
    for (size_t i = 0; i < sizeof stream_routes / sizeof stream_routes[0]; i++) {
        if (strcmp(path, stream_routes[i].http_path)) continue;
        if (strcmp(method, "POST")) grpc_http_respond(req, 405, CT_TEXT, "Method Not Allowed\n", 19);
        else gateway_stream(gw, req, &stream_routes[i]);
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

/* The --listen-metrics-urls side: /metrics and /health only, as etcd's
 * etcdhttp.HandleMetricsHealth. */
static void handle_metrics_only(grpc_http_req *req, void *ctx)
{
    struct gateway *gw = ctx;
    const char *path = grpc_http_path(req);
    void (*page)(struct gateway *, grpc_http_req *) = NULL;
    if (!strcmp(path, "/health")) page = health;
    else if (!strcmp(path, "/metrics")) page = metrics;
    if (!page) grpc_http_respond(req, 404, CT_TEXT, "404 page not found\n", 19);
    else if (strcmp(grpc_http_method(req), "GET"))
        grpc_http_respond(req, 405, CT_TEXT, "Method Not Allowed\n", 19);
    else page(gw, req);
}

void gateway_start_metrics(struct gateway *gw, grpc_server *metrics_server)
{
    grpc_server_set_http_handler(metrics_server, handle_metrics_only, gw);
}

void gateway_start(struct gateway *gw)
{
    grpc_server_set_http_handler(gw->grpc, handle, gw);
}
