/* A gRPC server made of nothing but the grpc layer and a few toy methods on
 * the etcd protos, for tests/integration/test_grpc_layer.py:
 *
 *   /etcdserverpb.KV/Range   answers one kv with key = value = request key;
 *                            with limit > 0 the value is `limit` bytes
 *                            instead (big responses); key "hdr:NAME"
 *                            answers the value of request header NAME.
 *   /etcdserverpb.KV/Put     replies after the delay in ms given as the
 *                            request value (a uv timer holding a call
 *                            reference), with header.revision = delay.
 *   /etcdserverpb.Watch/Watch  stream: answers each create request with
 *                            created=true, watch_id = n-th message and one
 *                            event whose kv.key is the request key; finishes
 *                            OK when the client half-closes.
 *
 * usage: grpc_testserver PORT [MAX_RECV_BYTES]. SIGTERM/SIGINT close the
 * server and the loop so that LeakSanitizer can check. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/grpc.h"
#include "kv.pb-c.h"
#include "rpc.pb-c.h"
#include "util/errors.h"
#include "util/log.h"

struct delayed {
    uv_timer_t timer;
    grpc_call *call;
    int64_t delay;
    struct delayed *prev, *next;
};

static struct delayed *delayed_list;
static grpc_server *server;
static uv_signal_t sigterm, sigint;

static void kv_range(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    Etcdserverpb__RangeRequest *req = etcdserverpb__range_request__unpack(NULL, len, msg);
    if (!req) {
        grpc_call_fail(call, KERR_BAD_REQUEST);
        return;
    }
    Etcdserverpb__ResponseHeader hdr = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    hdr.revision = 1;
    Mvccpb__KeyValue kv = MVCCPB__KEY_VALUE__INIT;
    Mvccpb__KeyValue *kvs[1] = {&kv};
    kv.key = req->key;
    kv.value = req->key;
    kv.create_revision = kv.mod_revision = kv.version = 1;
    uint8_t *big = NULL;
    if (req->limit > 0) {
        big = malloc((size_t)req->limit);
        for (int64_t i = 0; i < req->limit; i++) big[i] = (uint8_t)('a' + i % 26);
        kv.value.data = big;
        kv.value.len = (size_t)req->limit;
    } else if (req->key.len > 4 && memcmp(req->key.data, "hdr:", 4) == 0) {
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)req->key.len - 4, (char *)req->key.data + 4);
        const char *v = grpc_call_header(call, name);
        kv.value.data = (uint8_t *)(v ? v : "");
        kv.value.len = strlen((char *)kv.value.data);
    }
    Etcdserverpb__RangeResponse resp = ETCDSERVERPB__RANGE_RESPONSE__INIT;
    resp.header = &hdr;
    resp.kvs = kvs;
    resp.n_kvs = 1;
    resp.count = 1;
    grpc_call_reply(call, &resp.base);
    free(big);
    etcdserverpb__range_request__free_unpacked(req, NULL);
}

static void delayed_closed(uv_handle_t *h)
{
    free(h);
}

static void delayed_unlink(struct delayed *d)
{
    if (d->prev) d->prev->next = d->next;
    else delayed_list = d->next;
    if (d->next) d->next->prev = d->prev;
}

static void put_later(uv_timer_t *t)
{
    struct delayed *d = (struct delayed *)t;
    Etcdserverpb__ResponseHeader hdr = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    hdr.revision = d->delay;
    Etcdserverpb__PutResponse resp = ETCDSERVERPB__PUT_RESPONSE__INIT;
    resp.header = &hdr;
    grpc_call_reply(d->call, &resp.base); /* a no-op once the deadline passed */
    grpc_call_unref(d->call);
    delayed_unlink(d);
    uv_close((uv_handle_t *)&d->timer, delayed_closed);
}

static void kv_put(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    Etcdserverpb__PutRequest *req = etcdserverpb__put_request__unpack(NULL, len, msg);
    if (!req) {
        grpc_call_fail(call, KERR_BAD_REQUEST);
        return;
    }
    char buf[32];
    snprintf(buf, sizeof buf, "%.*s", req->value.len < 31 ? (int)req->value.len : 31,
             (char *)req->value.data);
    etcdserverpb__put_request__free_unpacked(req, NULL);
    struct delayed *d = calloc(1, sizeof *d);
    d->delay = atoll(buf);
    d->call = call;
    grpc_call_ref(call);
    uv_timer_init(uv_default_loop(), &d->timer);
    uv_timer_start(&d->timer, put_later, (uint64_t)(d->delay > 0 ? d->delay : 0), 0);
    d->next = delayed_list;
    if (delayed_list) delayed_list->prev = d;
    delayed_list = d;
}

struct watch_state {
    int64_t n;
};

static void watch_msg(grpc_call *call, const uint8_t *msg, size_t len, void *ctx)
{
    struct watch_state *st = grpc_call_get_data(call);
    if (!st) {
        st = calloc(1, sizeof *st);
        grpc_call_set_data(call, st);
    }
    Etcdserverpb__WatchRequest *req = etcdserverpb__watch_request__unpack(NULL, len, msg);
    if (!req) {
        grpc_call_fail(call, KERR_BAD_REQUEST);
        return;
    }
    st->n++;
    Etcdserverpb__ResponseHeader hdr = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    Etcdserverpb__WatchResponse resp = ETCDSERVERPB__WATCH_RESPONSE__INIT;
    Mvccpb__Event ev = MVCCPB__EVENT__INIT;
    Mvccpb__Event *evs[1] = {&ev};
    Mvccpb__KeyValue kv = MVCCPB__KEY_VALUE__INIT;
    resp.header = &hdr;
    resp.watch_id = st->n;
    if (req->request_union_case == ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST) {
        resp.created = 1;
        kv.key = req->create_request->key;
        ev.kv = &kv;
        resp.events = evs;
        resp.n_events = 1;
    }
    grpc_call_send_pb(call, &resp.base);
    etcdserverpb__watch_request__free_unpacked(req, NULL);
}

static void watch_close(grpc_call *call, void *ctx)
{
    free(grpc_call_get_data(call));
    grpc_call_set_data(call, NULL);
    grpc_call_finish(call, GRPC_OK, NULL); /* no-op unless half-closed */
}

static const grpc_method methods[] = {
    {"/etcdserverpb.KV/Range", GRPC_UNARY, kv_range, NULL},
    {"/etcdserverpb.KV/Put", GRPC_UNARY, kv_put, NULL},
    {"/etcdserverpb.Watch/Watch", GRPC_STREAM, watch_msg, watch_close},
};

static void on_signal(uv_signal_t *sig, int signum)
{
    log_info("testserver: signal %d, closing", signum);
    while (delayed_list) {
        struct delayed *d = delayed_list;
        uv_timer_stop(&d->timer);
        grpc_call_unref(d->call);
        delayed_unlink(d);
        uv_close((uv_handle_t *)&d->timer, delayed_closed);
    }
    if (server) grpc_server_close(server, NULL, NULL);
    server = NULL;
    uv_close((uv_handle_t *)&sigterm, NULL);
    uv_close((uv_handle_t *)&sigint, NULL);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s PORT [MAX_RECV_BYTES]\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    int port = atoi(argv[1]);
    size_t max_recv = argc > 2 ? (size_t)atoll(argv[2]) : 2 * 1024 * 1024;
    uv_loop_t *loop = uv_default_loop();
    int rv = grpc_server_new(&server, loop, methods, sizeof methods / sizeof methods[0], NULL,
                             max_recv);
    if (rv) {
        fprintf(stderr, "grpc_server_new: %s\n", kerr_text(rv));
        return 1;
    }
    rv = grpc_server_listen(server, "127.0.0.1", port);
    if (rv) {
        fprintf(stderr, "listen 127.0.0.1:%d: %s\n", port, uv_strerror(rv));
        grpc_server_close(server, NULL, NULL);
        uv_run(loop, UV_RUN_DEFAULT);
        uv_loop_close(loop);
        return 1;
    }
    uv_signal_init(loop, &sigterm);
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    uv_signal_init(loop, &sigint);
    uv_signal_start(&sigint, on_signal, SIGINT);
    printf("listening on 127.0.0.1:%d\n", port);
    fflush(stdout);
    uv_run(loop, UV_RUN_DEFAULT);
    rv = uv_loop_close(loop);
    if (rv) fprintf(stderr, "uv_loop_close: %s\n", uv_strerror(rv));
    return rv ? 1 : 0;
}
