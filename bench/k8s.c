/* k8s: the requests kube-apiserver's etcd3 storage makes
 * (k8s.io/apiserver/pkg/storage/etcd3/store.go):
 *   create   Txn(If(ModRevision(key) == 0), Then(Put(key, obj[, lease])))
 *   update   GuaranteedUpdate: Get(key), then
 *            Txn(If(ModRevision(key) == rev), Then(Put), Else(Get(key))),
 *            retried with the returned object on conflict
 *   get      Get(key) (linearizable)
 *   list     Get(prefix, WithRange(end), WithLimit(500)), then the next pages
 *            at the first page's revision (WithRev), from lastKey + "\x00"
 *   event    created like any object, with a lease (TTL 1h) shared by many
 *            events (the apiserver's lease manager reuses leases)
 * over /registry/<resource>/<namespace>/<name>, values from a few hundred
 * bytes (leases, events) to tens of KB (configmaps).
 *
 * Before the measured run, --objects objects are created (not measured). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define PATH_RANGE "/etcdserverpb.KV/Range"
#define PATH_TXN "/etcdserverpb.KV/Txn"
#define PATH_LEASE_GRANT "/etcdserverpb.Lease/LeaseGrant"
#define PAGE_LIMIT 500
#define POOL_SIZE (128 * 1024)
#define MAX_UPDATE_TRIES 5
#define EVENT_TTL 3600

enum op { OP_CREATE, OP_GET, OP_UPDATE_GET, OP_UPDATE_TXN, OP_LIST_PAGE, OP_LIST, OP_EVENT,
          OP_LEASE_GRANT };
enum kind { K_CREATE, K_UPDATE, K_GET, K_LIST, K_EVENT };

static const struct resource {
    const char *name;
    const char *prefix; /* object names */
    unsigned min, max;  /* value size */
    unsigned weight;    /* share of the objects */
} resources[] = {
    {"pods", "pod", 2000, 8000, 40},          {"configmaps", "cm", 300, 40000, 14},
    {"secrets", "secret", 1000, 4000, 14},    {"services", "svc", 600, 1500, 8},
    {"deployments", "deploy", 3000, 10000, 8}, {"replicasets", "rs", 2000, 6000, 10},
    {"leases", "lease", 300, 500, 6},
};
#define NRES (sizeof resources / sizeof resources[0])

/* The mix of logical operations, in percent. */
static const unsigned mix[] = {[K_CREATE] = 10, [K_UPDATE] = 50, [K_GET] = 12, [K_LIST] = 3,
                               [K_EVENT] = 25};

struct obj {
    uint8_t res;
    uint32_t ns;
    uint32_t id;
};

static struct {
    struct obj *objs;
    size_t n, cap;
    uint32_t next_id[NRES];
    uint64_t events;
    uint8_t *pool;
    int populating;
    int leases; /* the server grants leases */
    int64_t lease_id;
    uint64_t lease_uses;
    int granting;
} st;

static unsigned pick_res(struct slot *s)
{
    unsigned total = 0, r;
    for (unsigned i = 0; i < NRES; i++)
        total += resources[i].weight;
    r = (unsigned)(bench_rand(&s->rng) % total);
    for (unsigned i = 0; i < NRES; i++) {
        if (r < resources[i].weight)
            return i;
        r -= resources[i].weight;
    }
    return 0;
}

static size_t obj_key(const struct obj *ob, uint8_t *buf, size_t cap)
{
    const struct resource *res = &resources[ob->res];
    int n;
    if (ob->res == NRES - 1) /* node heartbeats */
        n = snprintf((char *)buf, cap, "/registry/leases/kube-node-lease/node-%u", ob->id);
    else
        n = snprintf((char *)buf, cap, "/registry/%s/ns-%u/%s-%u", res->name, ob->ns,
                     res->prefix, ob->id);
    return (size_t)n;
}

static ProtobufCBinaryData value_for(struct slot *s, unsigned res)
{
    unsigned lo = resources[res].min, hi = resources[res].max;
    size_t len = lo + (size_t)(bench_rand(&s->rng) % (hi - lo + 1));
    size_t off = (size_t)(bench_rand(&s->rng) % (POOL_SIZE - len));
    return (ProtobufCBinaryData){.len = len, .data = st.pool + off};
}

static int obj_add(const struct obj *ob)
{
    if (st.n == st.cap) {
        size_t cap = st.cap ? st.cap * 2 : 1024;
        struct obj *p = realloc(st.objs, cap * sizeof *p);
        if (!p)
            return -1;
        st.objs = p;
        st.cap = cap;
    }
    st.objs[st.n++] = *ob;
    return 0;
}

/* Txn(If(mod(key) == rev), Then(Put(key, val, lease)), Else(Get(key)) if with_else). */
static void txn_put_if_mod(struct slot *s, int op, int64_t rev, ProtobufCBinaryData val,
                           int64_t lease, int with_else, slot_cb cb)
{
    Etcdserverpb__Compare cmp = ETCDSERVERPB__COMPARE__INIT, *cmpp = &cmp;
    cmp.result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL;
    cmp.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD;
    cmp.key.data = s->key;
    cmp.key.len = s->keylen;
    cmp.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
    cmp.mod_revision = rev;
    Etcdserverpb__PutRequest put = ETCDSERVERPB__PUT_REQUEST__INIT;
    put.key = cmp.key;
    put.value = val;
    put.lease = lease;
    Etcdserverpb__RequestOp then = ETCDSERVERPB__REQUEST_OP__INIT, *thenp = &then;
    then.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
    then.request_put = &put;
    Etcdserverpb__RangeRequest get = ETCDSERVERPB__RANGE_REQUEST__INIT;
    get.key = cmp.key;
    Etcdserverpb__RequestOp els = ETCDSERVERPB__REQUEST_OP__INIT, *elsp = &els;
    els.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
    els.request_range = &get;
    Etcdserverpb__TxnRequest txn = ETCDSERVERPB__TXN_REQUEST__INIT;
    txn.n_compare = 1;
    txn.compare = &cmpp;
    txn.n_success = 1;
    txn.success = &thenp;
    if (with_else) {
        txn.n_failure = 1;
        txn.failure = &elsp;
    }
    bench_call(s, op, PATH_TXN, &txn.base, cb);
}

static void get_key(struct slot *s, int op, slot_cb cb)
{
    Etcdserverpb__RangeRequest get = ETCDSERVERPB__RANGE_REQUEST__INIT;
    get.key.data = s->key;
    get.key.len = s->keylen;
    bench_call(s, op, PATH_RANGE, &get.base, cb);
}

static void done_cb(struct slot *s, const struct client_reply *r)
{
    bench_next(s);
}

/* ---- create ---- */

static void create_cb(struct slot *s, const struct client_reply *r)
{
    if (r->status == 0) {
        struct obj ob = {.res = (uint8_t)s->kind, .ns = (uint32_t)s->rev, .id = s->obj};
        if (obj_add(&ob))
            bench_die("out of memory");
    }
    bench_next(s);
}

static void do_create(struct slot *s)
{
    unsigned res = pick_res(s);
    struct obj ob = {.res = (uint8_t)res,
                     .ns = (uint32_t)(bench_rand(&s->rng) % (uint64_t)s->b->o->namespaces),
                     .id = st.next_id[res]++};
    s->keylen = obj_key(&ob, s->key, sizeof s->key);
    s->kind = (int)res; /* remembered for create_cb */
    s->rev = ob.ns;
    s->obj = ob.id;
    txn_put_if_mod(s, OP_CREATE, 0, value_for(s, res), 0, 0, create_cb);
}

/* ---- guaranteed update ---- */

static void update_txn(struct slot *s);

static int64_t first_mod_rev(const Etcdserverpb__RangeResponse *rr)
{
    return rr && rr->n_kvs ? rr->kvs[0]->mod_revision : -1;
}

static void update_txn_cb(struct slot *s, const struct client_reply *r)
{
    if (r->status != 0) {
        bench_next(s);
        return;
    }
    Etcdserverpb__TxnResponse *tr = etcdserverpb__txn_response__unpack(NULL, r->len, r->data);
    if (!tr) {
        bench_count_error(s->b, -1, "cannot decode TxnResponse");
        bench_next(s);
        return;
    }
    int again = 0;
    if (!tr->succeeded) {
        s->b->conflicts++;
        int64_t rev = -1;
        if (tr->n_responses &&
            tr->responses[0]->response_case == ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE)
            rev = first_mod_rev(tr->responses[0]->response_range);
        if (rev > 0 && ++s->tries < MAX_UPDATE_TRIES) {
            s->rev = rev;
            again = 1;
        }
    }
    etcdserverpb__txn_response__free_unpacked(tr, NULL);
    if (again)
        update_txn(s);
    else
        bench_next(s);
}

static void update_txn(struct slot *s)
{
    txn_put_if_mod(s, OP_UPDATE_TXN, s->rev, value_for(s, st.objs[s->obj].res), 0, 1,
                   update_txn_cb);
}

static void update_get_cb(struct slot *s, const struct client_reply *r)
{
    if (r->status != 0) {
        bench_next(s);
        return;
    }
    Etcdserverpb__RangeResponse *rr = etcdserverpb__range_response__unpack(NULL, r->len, r->data);
    int64_t rev = first_mod_rev(rr);
    if (rr)
        etcdserverpb__range_response__free_unpacked(rr, NULL);
    if (rev <= 0) {
        bench_count_error(s->b, -1, "object to update not found");
        bench_next(s);
        return;
    }
    s->rev = rev;
    s->tries = 0;
    update_txn(s);
}

/* ---- list ---- */

static void list_page(struct slot *s);

static void list_cb(struct slot *s, const struct client_reply *r)
{
    if (r->status != 0) {
        bench_next(s);
        return;
    }
    Etcdserverpb__RangeResponse *rr = etcdserverpb__range_response__unpack(NULL, r->len, r->data);
    if (!rr) {
        bench_count_error(s->b, -1, "cannot decode RangeResponse");
        bench_next(s);
        return;
    }
    int more = rr->more && rr->n_kvs > 0;
    if (more) {
        const Mvccpb__KeyValue *last = rr->kvs[rr->n_kvs - 1];
        if (last->key.len + 1 > sizeof s->key) {
            more = 0;
        } else {
            memcpy(s->key, last->key.data, last->key.len);
            s->key[last->key.len] = 0;
            s->keylen = last->key.len + 1;
        }
        if (s->rev == 0 && rr->header)
            s->rev = rr->header->revision;
    }
    etcdserverpb__range_response__free_unpacked(rr, NULL);
    if (more) {
        list_page(s);
        return;
    }
    bench_record(s->b, OP_LIST, uv_hrtime() - s->op_t0);
    bench_next(s);
}

static void list_page(struct slot *s)
{
    Etcdserverpb__RangeRequest req = ETCDSERVERPB__RANGE_REQUEST__INIT;
    req.key.data = s->key;
    req.key.len = s->keylen;
    req.range_end.data = s->key2;
    req.range_end.len = s->key2len;
    req.limit = PAGE_LIMIT;
    req.revision = s->rev;
    bench_call(s, OP_LIST_PAGE, PATH_RANGE, &req.base, list_cb);
}

static void do_list(struct slot *s)
{
    unsigned res = pick_res(s);
    int n;
    if (res == NRES - 1 || bench_rand(&s->rng) % 10 < 3) /* cluster-wide */
        n = snprintf((char *)s->key, sizeof s->key, "/registry/%s/", resources[res].name);
    else
        n = snprintf((char *)s->key, sizeof s->key, "/registry/%s/ns-%u/", resources[res].name,
                     (unsigned)(bench_rand(&s->rng) % (uint64_t)s->b->o->namespaces));
    s->keylen = (size_t)n;
    memcpy(s->key2, s->key, s->keylen);
    s->key2len = s->keylen;
    s->key2[s->key2len - 1]++; /* '/' + 1: the prefix's range end */
    s->rev = 0;
    s->op_t0 = uv_hrtime();
    list_page(s);
}

/* ---- events with leases ---- */

static void event_put(struct slot *s)
{
    unsigned ns = (unsigned)(bench_rand(&s->rng) % (uint64_t)s->b->o->namespaces);
    s->keylen = (size_t)snprintf((char *)s->key, sizeof s->key,
                                 "/registry/events/ns-%u/pod-%u.%016llx", ns,
                                 (unsigned)(bench_rand(&s->rng) % 100000),
                                 (unsigned long long)st.events++);
    ProtobufCBinaryData v = {.len = 400 + (size_t)(bench_rand(&s->rng) % 800)};
    v.data = st.pool + (size_t)(bench_rand(&s->rng) % (POOL_SIZE - v.len));
    st.lease_uses++;
    txn_put_if_mod(s, OP_EVENT, 0, v, st.leases ? st.lease_id : 0, 0, done_cb);
}

static void grant_cb(struct slot *s, const struct client_reply *r)
{
    st.granting = 0;
    if (r->status == 0) {
        Etcdserverpb__LeaseGrantResponse *g =
            etcdserverpb__lease_grant_response__unpack(NULL, r->len, r->data);
        if (g) {
            st.lease_id = g->id;
            st.lease_uses = 0;
            etcdserverpb__lease_grant_response__free_unpacked(g, NULL);
        }
    }
    event_put(s);
}

static void lease_grant(struct slot *s, slot_cb cb)
{
    Etcdserverpb__LeaseGrantRequest req = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
    req.ttl = EVENT_TTL;
    bench_call(s, OP_LEASE_GRANT, PATH_LEASE_GRANT, &req.base, cb);
}

static void do_event(struct slot *s)
{
    if (st.leases && !st.granting &&
        (st.lease_id == 0 || st.lease_uses >= (uint64_t)s->b->o->events_per_lease)) {
        st.granting = 1;
        lease_grant(s, grant_cb);
        return;
    }
    event_put(s);
}

/* ---- dispatch ---- */

static void k8s_start(struct slot *s)
{
    if (st.populating) {
        do_create(s);
        return;
    }
    unsigned r = (unsigned)(bench_rand(&s->rng) % 100);
    enum kind k = K_CREATE;
    while (r >= mix[k]) {
        r -= mix[k];
        k++;
    }
    if (st.n == 0 && (k == K_UPDATE || k == K_GET))
        k = K_CREATE;
    switch (k) {
    case K_CREATE:
        do_create(s);
        break;
    case K_UPDATE:
        s->obj = (uint32_t)(bench_rand(&s->rng) % st.n);
        s->keylen = obj_key(&st.objs[s->obj], s->key, sizeof s->key);
        get_key(s, OP_UPDATE_GET, update_get_cb);
        break;
    case K_GET:
        s->keylen = obj_key(&st.objs[bench_rand(&s->rng) % st.n], s->key, sizeof s->key);
        get_key(s, OP_GET, done_cb);
        break;
    case K_LIST:
        do_list(s);
        break;
    case K_EVENT:
        do_event(s);
        break;
    }
}

/* Probe LeaseGrant once, then create --objects objects. */
static int probe_status = -100;
static char probe_msg[160];

static void probe_cb(struct slot *s, const struct client_reply *r)
{
    probe_status = r->status;
    snprintf(probe_msg, sizeof probe_msg, "%s", r->message);
    if (r->status == 0) {
        Etcdserverpb__LeaseGrantResponse *g =
            etcdserverpb__lease_grant_response__unpack(NULL, r->len, r->data);
        if (g) {
            st.lease_id = g->id;
            etcdserverpb__lease_grant_response__free_unpacked(g, NULL);
        }
    }
    uv_stop(s->b->loop);
}

static int k8s_setup(struct bench *b)
{
    st.pool = malloc(POOL_SIZE);
    if (!st.pool)
        return -1;
    uint64_t x = b->o->seed ? b->o->seed : uv_hrtime();
    for (size_t i = 0; i < POOL_SIZE; i += 8) {
        uint64_t v = bench_rand(&x);
        memcpy(st.pool + i, &v, 8);
    }
    /* Unique names per run, so a second run on the same server creates. */
    for (unsigned i = 0; i < NRES; i++)
        st.next_id[i] = (uint32_t)(bench_rand(&x) % 1000000) * 1000;

    lease_grant(&b->slots[0], probe_cb);
    uv_run(b->loop, UV_RUN_DEFAULT);
    if (probe_status == 0) {
        st.leases = 1;
    } else {
        st.leases = 0;
        snprintf(b->note, sizeof b->note,
                 "LeaseGrant failed (status %d%s%s): events written without a lease",
                 probe_status, probe_msg[0] ? ", " : "", probe_msg);
        fprintf(stderr, "ketch-bench: note: %s\n", b->note);
    }

    if (b->o->objects > 0) {
        struct bench_opts *o = b->o;
        uint64_t total = o->total;
        double duration = o->duration;
        o->total = (uint64_t)o->objects;
        o->duration = 0;
        st.populating = 1;
        fprintf(stderr, "ketch-bench: creating %d objects (not measured)\n", o->objects);
        bench_run_phase(b, "k8s populate");
        double secs = (double)(b->t_end - b->t_start) / 1e9;
        fprintf(stderr, "ketch-bench: created %zu objects in %.2f s (%.0f/s), %llu errors\n",
                st.n, secs, (double)st.n / secs, (unsigned long long)b->errors);
        st.populating = 0;
        o->total = total;
        o->duration = duration;
    }
    /* Measure the mixed phase only. */
    memset(b->hist, 0, sizeof b->hist);
    memset(b->done, 0, sizeof b->done);
    b->requests = b->errors = b->err_other = b->conflicts = 0;
    b->nerrs = 0;
    return 0;
}

static void k8s_cleanup(struct bench *b)
{
    free(st.pool);
    free(st.objs);
    memset(&st, 0, sizeof st);
}

const struct workload_ops bench_k8s_ops = {
    .ops = {"create", "get", "update-get", "update-txn", "list-page", "list", "event",
            "lease-grant"},
    .nops = 8,
    .setup = k8s_setup,
    .start = k8s_start,
    .cleanup = k8s_cleanup,
};
