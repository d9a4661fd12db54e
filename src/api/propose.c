/* Writes: client request → InternalRequest → Raft → api_apply → response.
 * Reads: batched behind the member's read barrier unless serializable. */
#include "api/propose.h"

#include <stdlib.h>
#include <string.h>

#include "api/auth.h"
#include "api/concurrency.h"
#include "api/lease.h"
#include "util/arena.h"
#include "util/errors.h"
#include "util/log.h"

struct proposal {
    api_server *s;
    grpc_call *call;       /* NULL for api_propose_internal */
    api_propose_fn cb;     /* api_propose_internal only */
    void *cb_data;
    uint64_t id;
    int err;        /* KERR_* set by apply */
    uint8_t *resp;  /* packed response, set by apply */
    size_t resp_len;
};

static void proposal_free(struct proposal *p)
{
    if (p->call != NULL) grpc_call_unref(p->call);
    free(p->resp);
    free(p);
}

static void proposal_done(void *data, int status)
{
    struct proposal *p = data;
    u64map_del(&p->s->proposals, p->id);
    if (p->cb != NULL) {
        int err = status != 0 ? status : p->err != 0 ? p->err : p->resp ? 0 : KERR_INTERNAL;
        p->cb(p->s, p->cb_data, err, err ? NULL : p->resp, err ? 0 : p->resp_len);
    } else if (status != 0) {
        grpc_call_fail(p->call, status);
    } else if (p->err != 0) {
        grpc_call_fail(p->call, p->err);
    } else if (p->resp != NULL) {
        grpc_call_send(p->call, p->resp, p->resp_len);
        grpc_call_finish(p->call, GRPC_OK, NULL);
    } else {
        /* Applied, but not by this process's apply path (cannot happen on
         * the member that proposed it): report rather than hang. */
        grpc_call_fail(p->call, KERR_INTERNAL);
    }
    proposal_free(p);
}

void api_strip_unknown(ProtobufCMessage *m)
{
    if (m == NULL) return;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE) continue;
        char *base = (char *)m;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(size_t *)(base + f->quantifier_offset);
            ProtobufCMessage **v = *(ProtobufCMessage ***)(base + f->offset);
            for (size_t k = 0; k < n; k++) api_strip_unknown(v[k]);
            continue;
        }
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(uint32_t *)(base + f->quantifier_offset) != f->id)
            continue;
        api_strip_unknown(*(ProtobufCMessage **)(base + f->offset));
    }
    for (unsigned i = 0; i < m->n_unknown_fields; i++) free(m->unknown_fields[i].data);
    free(m->unknown_fields);
    m->unknown_fields = NULL;
    m->n_unknown_fields = 0;
}

void api_propose(api_server *s, grpc_call *call, Ketchpb__InternalRequest *req)
{
    if (s->member == NULL) {
        grpc_call_fail(call, KERR_STOPPED);
        return;
    }
    struct proposal *p = calloc(1, sizeof *p);
    if (p == NULL) {
        grpc_call_fail(call, KERR_NOMEM);
        return;
    }
    p->s = s;
    p->call = call;
    /* as etcd's processInternalRaftRequestOnce: who asks goes in the entry */
    char *user;
    int rv = auth_api_stamp(s, call, req, &user);
    if (rv != 0) {
        grpc_call_fail(call, rv);
        free(p);
        return;
    }
    p->id = ++s->next_request_id;
    req->id = p->id;
    api_strip_unknown(&req->base);

    size_t len = ketchpb__internal_request__get_packed_size(req);
    /* As etcd: the encoded proposal may not exceed --max-request-bytes. */
    if (len > s->max_request_bytes) {
        grpc_call_fail(call, KERR_REQUEST_TOO_LARGE);
        free(p);
        free(user);
        return;
    }
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL || u64map_put(&s->proposals, p->id, p) != 0) {
        free(buf);
        free(p);
        free(user);
        grpc_call_fail(call, KERR_NOMEM);
        return;
    }
    ketchpb__internal_request__pack(req, buf);
    free(user);
    grpc_call_ref(call);
    rv = member_propose(s->member, buf, len, proposal_done, p);
    free(buf);
    if (rv != 0) {
        u64map_del(&s->proposals, p->id);
        grpc_call_fail(call, rv);
        proposal_free(p);
    }
}

int api_propose_internal(api_server *s, Ketchpb__InternalRequest *req, api_propose_fn cb,
                         void *data)
{
    if (s->member == NULL) return KERR_STOPPED;
    struct proposal *p = calloc(1, sizeof *p);
    if (p == NULL) return KERR_NOMEM;
    p->s = s;
    p->cb = cb;
    p->cb_data = data;
    p->id = ++s->next_request_id;
    req->id = p->id;
    api_strip_unknown(&req->base);
    req->auth_system = true; /* the server's own request: etcd runs these as root */
    size_t len = ketchpb__internal_request__get_packed_size(req);
    int rv = KERR_REQUEST_TOO_LARGE;
    if (len > s->max_request_bytes) goto err_after_alloc;
    uint8_t *buf = malloc(len ? len : 1);
    rv = KERR_NOMEM;
    if (buf == NULL || u64map_put(&s->proposals, p->id, p) != 0) {
        free(buf);
        goto err_after_alloc;
    }
    ketchpb__internal_request__pack(req, buf);
    rv = member_propose(s->member, buf, len, proposal_done, p);
    free(buf);
    if (rv == 0) return 0;
    u64map_del(&s->proposals, p->id);
err_after_alloc:
    free(p);
    return rv;
}

/* Packs the response of `res` into the waiting proposal, header filled. */
static void deliver(api_server *s, struct proposal *p, struct mvcc_result *res, arena *a)
{
    if (res->err != 0) {
        p->err = res->err;
        return;
    }
    Etcdserverpb__ResponseHeader *h = arena_alloc(a, sizeof *h);
    etcdserverpb__response_header__init(h);
    api_fill_header(s, h, res->revision);
    const ProtobufCMessage *msg = NULL;
    if (res->put) {
        res->put->header = h;
        msg = &res->put->base;
    } else if (res->delete_range) {
        res->delete_range->header = h;
        msg = &res->delete_range->base;
    } else if (res->txn) {
        res->txn->header = h;
        msg = &res->txn->base;
    } else if (res->compaction) {
        res->compaction->header = h;
        msg = &res->compaction->base;
    } else if (res->lease_grant) {
        res->lease_grant->header = h;
        msg = &res->lease_grant->base;
    } else if (res->lease_revoke) {
        res->lease_revoke->header = h;
        msg = &res->lease_revoke->base;
    } else if (res->lease_checkpoint) {
        res->lease_checkpoint->header = h;
        msg = &res->lease_checkpoint->base;
    } else if (res->auth) {
        /* every Auth*Response has its header as field 1 */
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(res->auth->descriptor, "header");
        if (f != NULL) {
            *(Etcdserverpb__ResponseHeader **)((char *)res->auth + f->offset) = h;
            msg = res->auth;
        }
    }
    if (msg == NULL) {
        p->err = KERR_INTERNAL;
        return;
    }
    size_t len = protobuf_c_message_get_packed_size(msg);
    p->resp = malloc(len ? len : 1);
    if (p->resp == NULL) {
        p->err = KERR_NOMEM;
        return;
    }
    p->resp_len = protobuf_c_message_pack(msg, p->resp);
}

void api_apply(void *ctx, uint64_t index, const uint8_t *buf, size_t len)
{
    api_server *s = ctx;
    Ketchpb__InternalRequest *req = NULL;
    if (buf != NULL) {
        req = ketchpb__internal_request__unpack(NULL, len, buf);
        if (req == NULL) {
            /* Every member sees the same bytes, so every member skips it. */
            log_error("apply: entry %llu is not a valid request; skipped",
                      (unsigned long long)index);
        }
    }
    arena a = ARENA_INIT;
    struct mvcc_result res = {0};
    int rv = mvcc_apply(s->store, index, req, &a, &res);
    if (rv != 0) {
        /* The store could not record a committed entry: continuing would
         * diverge from the log. etcd panics here too. */
        log_error("apply: storage failed at index %llu: %s; stopping",
                  (unsigned long long)index, kerr_text(rv));
        abort();
    }
    lease_api_applied(s, req, &res);
    auth_api_applied(s, index, req, &res, &a);
    conc_applied(s);
    if (req != NULL && req->id != 0) {
        struct proposal *p = u64map_get(&s->proposals, req->id);
        if (p != NULL) deliver(s, p, &res, &a);
    }
    arena_free(&a);
    if (req != NULL) ketchpb__internal_request__free_unpacked(req, NULL);
}

/* ---- reads ---- */

struct read_wait {
    api_server *s;
    grpc_call *call;
    api_read_fn exec;
    ProtobufCMessage *req;
};

static void read_ready(void *data, int status)
{
    struct read_wait *w = data;
    if (status != 0) {
        grpc_call_fail(w->call, status);
    } else if (grpc_call_alive(w->call)) {
        w->exec(w->s, w->call, w->req);
    }
    protobuf_c_message_free_unpacked(w->req, NULL);
    grpc_call_unref(w->call);
    free(w);
}

void api_read(api_server *s, grpc_call *call, ProtobufCMessage *req, bool serializable,
              api_read_fn exec)
{
    if (serializable) {
        exec(s, call, req);
        protobuf_c_message_free_unpacked(req, NULL);
        return;
    }
    struct read_wait *w = malloc(sizeof *w);
    if (s->member == NULL || w == NULL) {
        grpc_call_fail(call, s->member == NULL ? KERR_STOPPED : KERR_NOMEM);
        protobuf_c_message_free_unpacked(req, NULL);
        free(w);
        return;
    }
    *w = (struct read_wait){s, call, exec, req};
    grpc_call_ref(call);
    int rv = member_read_barrier(s->member, read_ready, w);
    if (rv != 0) {
        grpc_call_fail(call, rv);
        protobuf_c_message_free_unpacked(req, NULL);
        grpc_call_unref(call);
        free(w);
    }
}
