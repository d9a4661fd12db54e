/* Writes: client request → InternalRequest → Raft → api_apply → response.
 * Reads: batched behind the member's read barrier unless serializable. */
#include "api/propose.h"

#include <stdlib.h>
#include <string.h>

#include "api/auth.h"
#include "api/concurrency.h"
#include "api/forward.h"
#include "api/lease.h"
#include "api/maintenance.h"
#include "api/cluster.h"
#include "util/arena.h"
#include "util/endian.h"
#include "util/errors.h"
#include "util/log.h"

struct proposal {
    api_server *s;
    grpc_call *call;       /* NULL for api_propose_internal */
    api_propose_fn cb;     /* api_propose_internal only */
    void *cb_data;
    uint64_t id;
    int err;        /* KERR_* set by apply */
    uint8_t *resp;  /* packed response, set by apply (local_only: after the
                     * 8-byte index prefix, see resp_alloc) */
    size_t resp_len;
    uint8_t *buf;   /* the packed InternalRequest */
    size_t len;
    bool local_only; /* from ketchpb.Internal/Propose: never forward again */
    uint64_t index;  /* the Raft index it was applied at (set by apply) */
    /* Forwarded: answer once applied here too. Set by the caller that
     * knows the request (api_propose_auth, api_propose_as): auth requests
     * (Authenticate, user/role changes, enable/disable), so the token a
     * follower hands out, or the change, holds on this member at once
     * (etcd's members answer after their own apply), and the server's own
     * proposals (lock and election read the local store right after).
     * Other writes are answered as soon as the leader has applied them:
     * libraft tells followers of a commit only with its next message, so
     * waiting for every write would stall a busy follower's clients for up
     * to a heartbeat each. */
    bool wait_apply;
    uint64_t deadline;   /* uv_now() ms: etcd's request timeout, or the call's */
    uint64_t raft_index; /* where this member appended it (as leader), or 0 */
    bool orphan;         /* its leader was lost: waiting for a later commit */
};

/* ketchpb.Internal/Propose's reply (a proposal with local_only) is the
 * entry's Raft index (8 bytes, little endian), then the response, so the
 * follower answers its client only once it has applied the entry too (as
 * etcd's member answers after its own apply). The response is packed
 * right after the prefix, so the reply is sent from p->resp as it is.
 * Returns where the len-byte message goes, or NULL (out of memory). */
static uint8_t *resp_alloc(struct proposal *p, size_t len)
{
    size_t pre = p->local_only ? 8 : 0;
    p->resp = malloc(pre + len ? pre + len : 1);
    if (p->resp == NULL) return NULL;
    if (pre) put_le64(p->resp, p->index);
    p->resp_len = pre + len;
    return p->resp + pre;
}

static void proposal_free(struct proposal *p)
{
    if (u64map_get(&p->s->proposals, p->id) == p) u64map_del(&p->s->proposals, p->id);
    if (p->call != NULL) grpc_call_unref(p->call);
    free(p->resp);
    free(p->buf);
    free(p);
}

static void orphan_done(void *data, int status);

static bool delivered(void *data)
{
    const struct proposal *p = data;
    return p->resp != NULL || p->err != 0;
}

/* The leader that took `p` was lost before the entry committed (this
 * member stepped down, or the connection to the leader broke with the
 * request sent). A later leader may still commit it, so as etcd (whose
 * proposer waits for the apply of its entry until the request timeout,
 * then answers "etcdserver: request timed out, possibly due to previous
 * leader failure") wait for the entry to be applied here. Returns true if
 * p waits (orphan_done completes it). */
static bool adopt_orphan(struct proposal *p)
{
    api_server *s = p->s;
    if (p->orphan || s->fwd == NULL) return false;
    if (u64map_get(&s->proposals, p->id) == NULL && u64map_put(&s->proposals, p->id, p) != 0)
        return false;
    /* appended here at raft_index: once the store has applied that far
     * without delivering p, another entry took its place */
    uint64_t index = p->raft_index ? p->raft_index : UINT64_MAX;
    if (api_forward_wait_until(s, index, p->deadline, delivered, orphan_done, p) != 0) {
        u64map_del(&s->proposals, p->id);
        return false;
    }
    p->orphan = true;
    return true;
}

static int forward(struct proposal *p);

static void proposal_done(void *data, int status)
{
    struct proposal *p = data;
    /* leadership went before the entry was appended (member_propose_at
     * batches a loop turn's proposals): no leader has it, so forward it as
     * if this member had refused it at once */
    if ((status == KERR_NOT_LEADER || status == KERR_NO_LEADER) && !p->local_only &&
        !delivered(p) && p->raft_index == 0) {
        u64map_del(&p->s->proposals, p->id);
        if (forward(p) == 0) return;
    }
    if (status == KERR_LEADER_CHANGED && !delivered(p) && adopt_orphan(p)) return;
    if (status == KERR_LEADER_CHANGED && delivered(p)) status = 0;
    /* a follower's write, answered now: the follower will wait for this
     * entry's commit before its next local read (api_read), so tell it
     * (and the others) at once rather than with the next heartbeat */
    if (p->local_only && status == 0 && p->s->member != NULL) member_notify_commit(p->s->member);
    u64map_del(&p->s->proposals, p->id);
    if (p->cb != NULL) {
        int err = status != 0 ? status : p->err != 0 ? p->err : p->resp ? 0 : KERR_INTERNAL;
        p->cb(p->s, p->cb_data, err, err ? NULL : p->resp, err ? 0 : p->resp_len);
    } else if (status != 0) {
        grpc_call_fail(p->call, status);
    } else if (p->err != 0) {
        grpc_call_fail(p->call, p->err);
    } else if (p->resp != NULL) {
        /* with local_only, the index prefix is in p->resp already */
        grpc_call_send(p->call, p->resp, p->resp_len);
        grpc_call_finish(p->call, GRPC_OK, NULL);
    } else {
        /* Applied, but not by this process's apply path (cannot happen on
         * the member that proposed it): report rather than hang. */
        grpc_call_fail(p->call, KERR_INTERNAL);
    }
    proposal_free(p);
}

static void orphan_done(void *data, int status)
{
    struct proposal *p = data;
    if (delivered(p)) status = 0;
    else if (status != KERR_STOPPED) status = KERR_TIMEOUT_LEADER_FAIL;
    /* (a leader's answer to a forwarded proposal still carries the index
     * it was applied at: api_apply set p->index) */
    proposal_done(p, status);
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

static void forwarded_applied(void *data, int status)
{
    struct proposal *p = data;
    (void)status; /* committed either way: a late local apply is no error */
    if (p->cb != NULL) {
        p->cb(p->s, p->cb_data, 0, p->resp, p->resp_len);
    } else {
        grpc_call_send(p->call, p->resp, p->resp_len);
        grpc_call_finish(p->call, GRPC_OK, NULL);
    }
    proposal_free(p);
}

/* The leader's answer to a forwarded proposal: passed on as it is, once
 * this member has applied the entry too. */
static void forwarded(api_server *s, void *data, int kerr, const struct client_reply *r)
{
    struct proposal *p = data;
    size_t n = r->data != NULL ? r->len : 0;
    /* answered before this member applied it (maybe): the local reads
     * that come after wait for it (api_read) */
    if (kerr == 0 && r->status == 0 && n >= 8 && get_le64(r->data) > s->ryw_index)
        s->ryw_index = get_le64(r->data);
    if (kerr == 0 && r->status == 0 && n >= 8 && !p->wait_apply && p->cb == NULL) {
        /* answered at once: straight from the reply, no copy of it kept */
        grpc_call_send(p->call, r->data + 8, n - 8);
        grpc_call_finish(p->call, GRPC_OK, NULL);
        proposal_free(p);
        return;
    }
    if (kerr == 0 && r->status == 0) {
        /* the leader's answer, not what this member's apply made of it */
        free(p->resp);
        p->resp = NULL;
        p->err = 0;
        uint64_t index = n >= 8 ? get_le64(r->data) : 0;
        p->resp = n >= 8 ? malloc(n - 8 + 1) : NULL;
        if (p->resp != NULL) {
            p->resp_len = n - 8;
            memcpy(p->resp, r->data + 8, n - 8);
            if (!p->wait_apply) {
                forwarded_applied(p, 0);
                return;
            }
            if (api_forward_wait_applied(s, index, api_forward_deadline(s, NULL),
                                         forwarded_applied, p) == 0)
                return;
            free(p->resp);
            p->resp = NULL;
        }
        kerr = KERR_INTERNAL;
    }
    /* applied here already: that is the answer */
    if (kerr != 0 && kerr != KERR_STOPPED && delivered(p)) return proposal_done(p, 0);
    if (kerr == KERR_LEADER_CHANGED && adopt_orphan(p)) return;
    if (p->cb != NULL) {
        p->cb(p->s, p->cb_data, kerr != 0 ? kerr : r->status != 0 ? KERR_INTERNAL : 0,
              r->status == 0 ? r->data : NULL, r->status == 0 ? r->len : 0);
    } else if (r->status == 0) {
        grpc_call_send(p->call, r->data ? r->data : (const uint8_t *)"", r->len);
        grpc_call_finish(p->call, GRPC_OK, NULL);
    } else {
        grpc_call_finish(p->call, r->status, r->message);
    }
    proposal_free(p);
}

/* Proposes p->buf here if this member leads, else forwards it to the
 * leader (waiting for one). Returns 0 (p completes later) or a KERR_* code
 * (p untouched, still the caller's). */
static int submit(struct proposal *p)
{
    api_server *s = p->s;
    if (s->member == NULL) return KERR_STOPPED;
    if (p->deadline == 0) p->deadline = api_forward_deadline(s, p->call);
    if (member_is_leader(s->member) || p->local_only) {
        if (u64map_put(&s->proposals, p->id, p) != 0) return KERR_NOMEM;
        int rv = member_propose_at(s->member, p->buf, p->len, proposal_done, p, &p->raft_index);
        if (rv == 0) return 0;
        u64map_del(&s->proposals, p->id);
        if (p->local_only || (rv != KERR_NOT_LEADER && rv != KERR_NO_LEADER)) return rv;
    }
    return forward(p);
}

/* Sends p to the leader (waiting for one). Returns 0 or a KERR_* code (p
 * untouched). */
static int forward(struct proposal *p)
{
    api_server *s = p->s;
    /* Known here too, so that if the connection to the leader breaks
     * before its answer, this member's own apply of the entry still
     * answers it (api_apply delivers it; see adopt_orphan). */
    if (u64map_put(&s->proposals, p->id, p) != 0) return KERR_NOMEM;
    int rv = api_forward_unary(s, "/ketchpb.Internal/Propose", p->buf, p->len, p->deadline,
                               forwarded, p);
    if (rv != 0) u64map_del(&s->proposals, p->id);
    return rv;
}

/* Packs req into a new proposal. Returns it, or NULL with *err set. */
static struct proposal *prepare(api_server *s, Ketchpb__InternalRequest *req, int *err)
{
    if (s->member == NULL) {
        *err = KERR_STOPPED;
        return NULL;
    }
    struct proposal *p = calloc(1, sizeof *p);
    if (p == NULL) {
        *err = KERR_NOMEM;
        return NULL;
    }
    p->s = s;
    /* A request a follower forwarded keeps the follower's ID, so that the
     * follower's own apply of the entry answers it if the leader's answer
     * is lost (adopt_orphan). IDs carry their member's ID (api_init): a
     * follower's never collide with this member's. */
    p->id = req->id != 0 && u64map_get(&s->proposals, req->id) == NULL ? req->id
                                                                       : ++s->next_request_id;
    req->id = p->id;
    api_strip_unknown(&req->base);
    p->len = ketchpb__internal_request__get_packed_size(req);
    /* As etcd: the encoded proposal may not exceed --max-request-bytes. */
    if (p->len > s->max_request_bytes) {
        *err = KERR_REQUEST_TOO_LARGE;
        free(p);
        return NULL;
    }
    p->buf = malloc(p->len ? p->len : 1);
    if (p->buf == NULL) {
        *err = KERR_NOMEM;
        free(p);
        return NULL;
    }
    ketchpb__internal_request__pack(req, p->buf);
    return p;
}

static void propose_call(api_server *s, grpc_call *call, Ketchpb__InternalRequest *req,
                         bool local_only, bool wait_apply)
{
    /* as etcd's processInternalRaftRequestOnce: who asks goes in the entry
     * (a forwarded entry was stamped by the member that took the call) */
    char *user = NULL;
    int rv = local_only ? 0 : auth_api_stamp(s, call, req, &user);
    struct proposal *p = rv == 0 ? prepare(s, req, &rv) : NULL;
    if (user != NULL) {
        req->auth_user = (char *)protobuf_c_empty_string; /* packed: no longer needed */
        free(user);
    }
    if (p == NULL) {
        grpc_call_fail(call, rv);
        return;
    }
    p->local_only = local_only;
    p->wait_apply = wait_apply;
    p->call = call;
    grpc_call_ref(call);
    rv = submit(p);
    if (rv != 0) {
        grpc_call_fail(call, rv);
        proposal_free(p);
    }
}

void api_propose(api_server *s, grpc_call *call, Ketchpb__InternalRequest *req)
{
    propose_call(s, call, req, false, false);
}

void api_propose_auth(api_server *s, grpc_call *call, Ketchpb__InternalRequest *req)
{
    propose_call(s, call, req, false, true);
}

void api_propose_local(api_server *s, grpc_call *call, Ketchpb__InternalRequest *req)
{
    propose_call(s, call, req, true, false);
}

int api_propose_internal(api_server *s, Ketchpb__InternalRequest *req, api_propose_fn cb,
                         void *data)
{
    req->auth_system = true; /* the server's own request: etcd runs these as root */
    return api_propose_as(s, req, cb, data);
}

int api_propose_as(api_server *s, Ketchpb__InternalRequest *req, api_propose_fn cb, void *data)
{
    int rv;
    struct proposal *p = prepare(s, req, &rv);
    if (p == NULL) return rv;
    p->cb = cb;
    p->cb_data = data;
    /* the lock and election services read the local store next */
    p->wait_apply = true;
    rv = submit(p);
    if (rv != 0) {
        p->cb = NULL;
        proposal_free(p);
    }
    return rv;
}

/* Packs the response of `res` into the waiting proposal, header filled. */
static void deliver(api_server *s, struct proposal *p, struct mvcc_result *res, arena *a)
{
    if (p->resp != NULL || p->err != 0) return; /* a forwarded one the leader answered */
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
    } else if (res->alarm) {
        res->alarm->header = h;
        msg = &res->alarm->base;
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
    uint8_t *out = resp_alloc(p, len);
    if (out == NULL) {
        p->err = KERR_NOMEM;
        return;
    }
    protobuf_c_message_pack(msg, out);
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
    bool membership = req != NULL && (req->member_attr_set != NULL || req->member_change != NULL);
    /* membership entries only move the applied index in mvcc */
    int rv = mvcc_apply(s->store, index, membership ? NULL : req, &a, &res);
    if (rv == 0 && membership) rv = api_cluster_apply(s, req);
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
    if (req != NULL && req->compaction != NULL) maint_api_kick(s);
    if (req != NULL && req->id != 0) {
        struct proposal *p = u64map_get(&s->proposals, req->id);
        if (p != NULL) p->index = index;
        if (p != NULL && membership) {
            /* no response message: the caller builds it */
            free(p->resp);
            p->resp = NULL;
            if (resp_alloc(p, 0) == NULL) p->err = KERR_NOMEM;
        } else if (p != NULL) {
            deliver(s, p, &res, &a);
        }
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
    bool asked_leader; /* api_forward_read_index was used, or a local read
                        * waits for its member's own writes (no retry) */
};

static void read_ready(void *data, int status)
{
    struct read_wait *w = data;
    /* the barrier failed because this member stopped leading, or hands
     * the leadership over: ask the leader (waiting for one) instead */
    if ((status == KERR_NOT_LEADER || status == KERR_NO_LEADER) && !w->asked_leader &&
        api_forward_read_index(w->s, api_forward_deadline(w->s, w->call), read_ready, w) == 0) {
        w->asked_leader = true;
        return;
    }
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
    bool local = serializable || (s->member != NULL && member_read_local(s->member));
    /* Read-your-writes, as etcd's members give it (a member answers a
     * write after its own apply): a write this member forwarded was
     * answered at the leader's apply, and this member learns that the
     * entry committed only with the leader's next message. A local read
     * waits until the store has applied the newest such write, at most
     * until the request's deadline (then "etcdserver: request timed
     * out"); with nothing newer acknowledged it does not wait. */
    bool behind = local && s->ryw_index > mvcc_applied_index(s->store);
    if (local && !behind) {
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
    *w = (struct read_wait){s, call, exec, req, local};
    grpc_call_ref(call);
    if (local) {
        int rv = api_forward_wait_applied(s, s->ryw_index, api_forward_deadline(s, call),
                                          read_ready, w);
        if (rv != 0) {
            grpc_call_fail(call, rv);
            protobuf_c_message_free_unpacked(req, NULL);
            grpc_call_unref(call);
            free(w);
        }
        return;
    }
    int rv = member_is_leader(s->member) ? member_read_barrier(s->member, read_ready, w)
                                         : KERR_NOT_LEADER;
    /* not leading (or handing the leadership over: libraft takes no
     * barrier then): confirm with the leader, waiting for one, as a
     * follower does; etcd's leader serves ReadIndex during a transfer */
    if (rv == KERR_NOT_LEADER || rv == KERR_NO_LEADER) {
        w->asked_leader = true;
        rv = api_forward_read_index(s, api_forward_deadline(s, call), read_ready, w);
    }
    if (rv != 0) {
        grpc_call_fail(call, rv);
        protobuf_c_message_free_unpacked(req, NULL);
        grpc_call_unref(call);
        free(w);
    }
}
