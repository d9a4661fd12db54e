/* make-mirror (etcdctl's make_mirror_command.go with clientv3's mirror
 * syncer): copy every key under --prefix at one revision to the
 * destination, then follow the source's watch from the next revision,
 * applying each revision's events as one Txn, in order. Prints the number
 * of keys copied every 30 seconds, as etcdctl. Both connections run on
 * rpc.c's loop, driven by callbacks. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "client/client.h"
#include "ctl.h"

#define FEND {NULL, 0, 0, NULL, false}
#define PAGE 1000 /* clientv3 mirror's batchLimit */

static struct {
    uv_loop_t *loop;
    struct client_conn *src, *dst;
    ProtobufCBinaryData key, end;
    const char *sp, *dp; /* source and destination prefixes */
    size_t spl, dpl;
    int64_t rev;
    int64_t total;
    size_t inflight;
    bool ranges_done, watching;
    struct buf *q; /* packed Txn requests waiting, in order */
    size_t qh, qt, qcap;
    bool txn_busy;
    struct client_stream *watch;
} m;

static void fail(int status, const char *msg)
{
    ctl_die(EXIT_ERR, "%s", ctl_err_text(status, msg ? msg : ""));
}

/* strings.Replace(key, prefix, destPrefix, 1): the key starts with prefix. */
static ProtobufCBinaryData dest_key(const ProtobufCBinaryData k)
{
    size_t skip = k.len >= m.spl && !memcmp(k.data, m.sp, m.spl) ? m.spl : 0;
    ProtobufCBinaryData d;
    d.len = m.dpl + k.len - skip;
    d.data = malloc(d.len ? d.len : 1);
    memcpy(d.data, m.dp, m.dpl);
    if (k.len > skip)
        memcpy(d.data + m.dpl, k.data + skip, k.len - skip);
    return d;
}

static void start_watch(void);
static void next_page(const ProtobufCBinaryData from);

static void maybe_watch(void)
{
    if (m.ranges_done && m.inflight == 0 && !m.watching)
        start_watch();
}

static void on_put(void *arg, const struct client_reply *r)
{
    if (r->status)
        fail(r->status, r->message);
    m.inflight--;
    maybe_watch();
}

static void on_range(void *arg, const struct client_reply *r)
{
    if (r->status)
        fail(r->status, r->message);
    Etcdserverpb__RangeResponse *resp = etcdserverpb__range_response__unpack(NULL, r->len, r->data);
    if (!resp)
        fail(13, "cannot decode the reply");
    if (!m.rev && resp->header)
        m.rev = resp->header->revision;
    for (size_t i = 0; i < resp->n_kvs; i++) {
        Etcdserverpb__PutRequest put = ETCDSERVERPB__PUT_REQUEST__INIT;
        put.key = dest_key(resp->kvs[i]->key);
        put.value = resp->kvs[i]->value;
        if (client_unary(m.dst, "/etcdserverpb.KV/Put", &put.base, on_put, NULL))
            fail(14, "connection to the destination closed");
        free(put.key.data);
        m.inflight++;
        m.total++;
    }
    if (resp->more && resp->n_kvs) {
        const ProtobufCBinaryData last = resp->kvs[resp->n_kvs - 1]->key;
        ProtobufCBinaryData from = {last.len + 1, malloc(last.len + 1)};
        memcpy(from.data, last.data, last.len);
        from.data[last.len] = 0;
        next_page(from);
    } else {
        m.ranges_done = true;
        maybe_watch();
    }
    etcdserverpb__range_response__free_unpacked(resp, NULL);
}

static void next_page(const ProtobufCBinaryData from)
{
    Etcdserverpb__RangeRequest req = ETCDSERVERPB__RANGE_REQUEST__INIT;
    req.key = from;
    req.range_end = m.end;
    req.limit = PAGE;
    req.revision = m.rev;
    if (client_unary(m.src, "/etcdserverpb.KV/Range", &req.base, on_range, NULL))
        fail(14, "connection closed");
}

/* ---- updates: one Txn per revision, strictly in order ---- */

static void pump(void);

static void on_txn(void *arg, const struct client_reply *r)
{
    if (r->status)
        fail(r->status, r->message);
    m.txn_busy = false;
    pump();
}

static void pump(void)
{
    if (m.txn_busy || m.qh == m.qt)
        return;
    struct buf *b = &m.q[m.qh++ % m.qcap];
    if (client_unary_raw(m.dst, "/etcdserverpb.KV/Txn", (const uint8_t *)b->p, b->len, on_txn, NULL))
        fail(14, "connection to the destination closed");
    buf_free(b);
    m.txn_busy = true;
}

static void enqueue(Etcdserverpb__RequestOp **ops, size_t n)
{
    if (!n)
        return;
    Etcdserverpb__TxnRequest t = ETCDSERVERPB__TXN_REQUEST__INIT;
    t.success = ops;
    t.n_success = n;
    if (m.qt - m.qh == m.qcap) {
        size_t ncap = m.qcap ? m.qcap * 2 : 64;
        struct buf *nq = calloc(ncap, sizeof *nq);
        for (size_t i = m.qh; i < m.qt; i++)
            nq[i - m.qh] = m.q[i % m.qcap];
        m.qt -= m.qh;
        m.qh = 0;
        free(m.q);
        m.q = nq;
        m.qcap = ncap;
    }
    struct buf *b = &m.q[m.qt++ % m.qcap];
    memset(b, 0, sizeof *b);
    size_t len = protobuf_c_message_get_packed_size(&t.base);
    b->p = malloc(len ? len : 1);
    b->len = protobuf_c_message_pack(&t.base, (uint8_t *)b->p);
    pump();
}

/* enqueue, then free the ops built from one watch response's events */
static void enqueue_and_free(Etcdserverpb__RequestOp **ops, size_t n)
{
    enqueue(ops, n);
    for (size_t k = 0; k < n; k++) {
        Etcdserverpb__RequestOp *o = ops[k];
        if (o->request_case == ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT) {
            free(o->request_put->key.data);
            free(o->request_put);
        } else {
            free(o->request_delete_range->key.data);
            free(o->request_delete_range);
        }
        free(o);
    }
}

static void on_watch_msg(void *arg, const uint8_t *data, size_t len)
{
    Etcdserverpb__WatchResponse *w = etcdserverpb__watch_response__unpack(NULL, len, data);
    if (!w)
        return;
    if (w->compact_revision)
        ctl_die(EXIT_ERR, "etcdserver: mvcc: required revision has been compacted");
    if (w->canceled)
        ctl_die(EXIT_ERR, "%s", w->cancel_reason && *w->cancel_reason ? w->cancel_reason
                                                                       : "etcdserver: watch canceled");
    Etcdserverpb__RequestOp **ops = calloc(w->n_events + 1, sizeof *ops);
    size_t n = 0;
    int64_t last = 0;
    for (size_t i = 0; i < w->n_events; i++) {
        Mvccpb__Event *ev = w->events[i];
        if (!ev->kv)
            continue;
        if (last && ev->kv->mod_revision > last) {
            enqueue_and_free(ops, n);
            n = 0;
        }
        last = ev->kv->mod_revision;
        Etcdserverpb__RequestOp *o = calloc(1, sizeof *o);
        etcdserverpb__request_op__init(o);
        if (ev->type == MVCCPB__EVENT__EVENT_TYPE__PUT) {
            Etcdserverpb__PutRequest *p = calloc(1, sizeof *p);
            etcdserverpb__put_request__init(p);
            p->key = dest_key(ev->kv->key);
            p->value = ev->kv->value;
            o->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
            o->request_put = p;
        } else {
            Etcdserverpb__DeleteRangeRequest *d = calloc(1, sizeof *d);
            etcdserverpb__delete_range_request__init(d);
            d->key = dest_key(ev->kv->key);
            o->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
            o->request_delete_range = d;
        }
        ops[n++] = o;
        m.total++;
    }
    enqueue_and_free(ops, n); /* packs before the values are freed with w */
    free(ops);
    etcdserverpb__watch_response__free_unpacked(w, NULL);
}

static void on_watch_close(void *arg, const struct client_reply *r)
{
    fail(r->status ? r->status : 14, r->message && *r->message ? r->message : "watch closed");
}

static void start_watch(void)
{
    m.watching = true;
    Etcdserverpb__WatchCreateRequest cr = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
    cr.key = m.key;
    cr.range_end = m.end;
    cr.start_revision = m.rev + 1;
    Etcdserverpb__WatchRequest wr = ETCDSERVERPB__WATCH_REQUEST__INIT;
    wr.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
    wr.create_request = &cr;
    if (client_stream_open(m.src, "/etcdserverpb.Watch/Watch", on_watch_msg, on_watch_close, NULL,
                           &m.watch) ||
        client_stream_send(m.watch, &wr.base))
        fail(14, "connection closed");
}

static void on_progress(uv_timer_t *t)
{
    printf("%" PRId64 "\n", m.total);
    fflush(stdout);
}

static void on_dst_event(struct client_conn *c, int err, void *arg)
{
    if (err)
        ctl_die(EXIT_ERR, "%s", client_conn_error(c)[0] ? client_conn_error(c) : "context deadline exceeded");
}

int cmd_make_mirror(int argc, char **argv)
{
    const char *prefix = "", *dprefix = "", *dcacert = "", *dcert = "", *dkey = "";
    bool no_dprefix = false, dinsecure = true;
    struct flag fl[] = {{"prefix", 0, F_STR, &prefix, false},
                        {"dest-prefix", 0, F_STR, &dprefix, false},
                        {"no-dest-prefix", 0, F_BOOL, &no_dprefix, false},
                        {"dest-cacert", 0, F_STR, &dcacert, false},
                        {"dest-cert", 0, F_STR, &dcert, false},
                        {"dest-key", 0, F_STR, &dkey, false},
                        {"dest-insecure-transport", 0, F_BOOL, &dinsecure, false},
                        FEND};
    int n = ctl_parse(argc, argv, fl);
    if (n != 1)
        ctl_die(EXIT_BAD_ARGS, "make-mirror takes one destination argument");
    ctl_init_display();
    const char *dest = argv[0];
    struct client_opts o = {0};
    if (*dcacert || *dcert || *dkey || !dinsecure || !strncmp(dest, "https://", 8))
        ctl_tls_ctx(dcacert, dcert, dkey, false, &o.tls);
    m.loop = (uv_loop_t *)ctl_loop();
    m.src = ctl_connect();
    if (client_conn_open_opts(m.loop, dest, &o, on_dst_event, NULL, &m.dst))
        ctl_die(EXIT_BAD_CONN, "cannot connect to %s", dest);
    if (no_dprefix && *dprefix)
        ctl_die(EXIT_BAD_ARGS, "`--dest-prefix` and `--no-dest-prefix` cannot be set at the same "
                               "time, choose one");
    if (!no_dprefix && !*dprefix)
        dprefix = prefix;
    m.sp = prefix;
    m.spl = strlen(prefix);
    m.dp = dprefix;
    m.dpl = strlen(dprefix);
    /* the range of --prefix (everything for "") */
    if (m.spl) {
        m.key = (ProtobufCBinaryData){m.spl, (uint8_t *)prefix};
        size_t el;
        char *e = prefix_end((const uint8_t *)prefix, m.spl, &el);
        m.end = (ProtobufCBinaryData){el, (uint8_t *)e};
    } else {
        m.key = (ProtobufCBinaryData){1, (uint8_t *)""};
        m.end = (ProtobufCBinaryData){1, (uint8_t *)""};
    }
    static uv_timer_t progress;
    uv_timer_init(m.loop, &progress);
    uv_timer_start(&progress, on_progress, 30000, 30000);
    next_page(m.key);
    uv_run(m.loop, UV_RUN_DEFAULT);
    ctl_die(EXIT_ERR, "make-mirror stopped");
}
