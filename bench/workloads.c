/* put, range, txn-put, txn-mixed: etcd's benchmark tool's workloads
 * (etcd/tools/benchmark/cmd/{put,range,txn_put,txn_mixed}.go), with the same
 * key generation: Go's binary.PutVarint of the request number (sequential)
 * or of a random number below --key-space-size, in a --key-size buffer. */
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define PATH_PUT "/etcdserverpb.KV/Put"
#define PATH_RANGE "/etcdserverpb.KV/Range"
#define PATH_TXN "/etcdserverpb.KV/Txn"

/* One value for every request, random bytes as etcd's mustRandBytes. */
static uint8_t *value;

static int make_value(struct bench *b)
{
    size_t n = (size_t)b->o->val_size;
    value = malloc(n ? n : 1);
    if (!value)
        return -1;
    uint64_t x = b->o->seed ? b->o->seed : uv_hrtime();
    for (size_t i = 0; i < n; i++)
        value[i] = (uint8_t)(bench_rand(&x) >> 56);
    return 0;
}

static void free_value(struct bench *b)
{
    free(value);
    value = NULL;
}

static int64_t key_number(struct slot *s, uint64_t seq)
{
    struct bench_opts *o = s->b->o;
    if (o->sequential_keys)
        return (int64_t)(seq % o->key_space_size);
    return (int64_t)(bench_rand(&s->rng) % o->key_space_size);
}

/* ---- put ---- */

static void put_done(struct slot *s, const struct client_reply *r)
{
    bench_next(s);
}

static void put_start(struct slot *s)
{
    struct bench_opts *o = s->b->o;
    /* A global sequence for --sequential-keys: the logical op number. */
    size_t pl = o->key_prefix ? strlen(o->key_prefix) : 0;
    memcpy(s->key, o->key_prefix ? o->key_prefix : "", pl);
    bench_put_varint(s->key + pl, (size_t)o->key_size, key_number(s, s->b->started - 1));
    Etcdserverpb__PutRequest req = ETCDSERVERPB__PUT_REQUEST__INIT;
    req.key.data = s->key;
    req.key.len = pl + (size_t)o->key_size;
    req.value.data = value;
    req.value.len = (size_t)o->val_size;
    bench_call(s, 0, PATH_PUT, &req.base, put_done);
}

const struct workload_ops bench_put_ops = {
    .ops = {"put"}, .nops = 1, .setup = make_value, .start = put_start, .cleanup = free_value};

/* ---- range ---- */

static void range_start(struct slot *s)
{
    struct bench_opts *o = s->b->o;
    Etcdserverpb__RangeRequest req = ETCDSERVERPB__RANGE_REQUEST__INIT;
    req.key.data = (uint8_t *)o->range_key;
    req.key.len = strlen(o->range_key);
    if (o->range_end) {
        req.range_end.data = (uint8_t *)o->range_end;
        req.range_end.len = strlen(o->range_end);
    }
    req.limit = o->limit;
    req.serializable = o->consistency == 's';
    bench_call(s, 0, PATH_RANGE, &req.base, put_done);
}

const struct workload_ops bench_range_ops = {.ops = {"range"}, .nops = 1, .start = range_start};

/* ---- txn-put ---- */

#define MAX_TXN_OPS 128

static void txn_put_start(struct slot *s)
{
    struct bench_opts *o = s->b->o;
    int n = o->txn_ops < MAX_TXN_OPS ? o->txn_ops : MAX_TXN_OPS;
    size_t ks = (size_t)o->key_size;
    uint8_t keys[MAX_TXN_OPS][64];
    Etcdserverpb__PutRequest puts[MAX_TXN_OPS];
    Etcdserverpb__RequestOp ops[MAX_TXN_OPS];
    Etcdserverpb__RequestOp *opp[MAX_TXN_OPS];
    uint64_t seq = s->b->started - 1;
    if (ks > sizeof keys[0])
        ks = sizeof keys[0];
    for (int j = 0; j < n; j++) {
        /* etcd: binary.PutVarint(k, int64(((req_i*txnPutOpsPerTxn)+j)%keySpaceSize)) */
        int64_t num = (int64_t)((seq * (uint64_t)n + (uint64_t)j) % o->key_space_size);
        bench_put_varint(keys[j], ks, num);
        etcdserverpb__put_request__init(&puts[j]);
        puts[j].key.data = keys[j];
        puts[j].key.len = ks;
        puts[j].value.data = value;
        puts[j].value.len = (size_t)o->val_size;
        etcdserverpb__request_op__init(&ops[j]);
        ops[j].request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
        ops[j].request_put = &puts[j];
        opp[j] = &ops[j];
    }
    Etcdserverpb__TxnRequest req = ETCDSERVERPB__TXN_REQUEST__INIT;
    req.n_success = (size_t)n;
    req.success = opp;
    bench_call(s, 0, PATH_TXN, &req.base, put_done);
}

const struct workload_ops bench_txn_put_ops = {.ops = {"txn-put"},
                                               .nops = 1,
                                               .setup = make_value,
                                               .start = txn_put_start,
                                               .cleanup = free_value};

/* ---- txn-mixed: --rw-ratio reads per write, both as txns ---- */

static void txn_mixed_start(struct slot *s)
{
    struct bench_opts *o = s->b->o;
    double ratio = o->rw_ratio;
    int read = (double)(bench_rand(&s->rng) >> 11) / 9007199254740992.0 < ratio / (ratio + 1);
    size_t ks = (size_t)o->key_size;
    bench_put_varint(s->key, ks, key_number(s, s->b->started - 1));
    Etcdserverpb__RangeRequest rr = ETCDSERVERPB__RANGE_REQUEST__INIT;
    Etcdserverpb__PutRequest pr = ETCDSERVERPB__PUT_REQUEST__INIT;
    Etcdserverpb__RequestOp op = ETCDSERVERPB__REQUEST_OP__INIT, *opp = &op;
    if (read) {
        rr.key.data = s->key;
        rr.key.len = ks;
        if (o->range_end) {
            rr.range_end.data = (uint8_t *)o->range_end;
            rr.range_end.len = strlen(o->range_end);
        }
        rr.limit = o->limit;
        rr.serializable = o->consistency == 's';
        op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
        op.request_range = &rr;
    } else {
        pr.key.data = s->key;
        pr.key.len = ks;
        pr.value.data = value;
        pr.value.len = (size_t)o->val_size;
        op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
        op.request_put = &pr;
    }
    Etcdserverpb__TxnRequest req = ETCDSERVERPB__TXN_REQUEST__INIT;
    req.n_success = 1;
    req.success = &opp;
    bench_call(s, read ? 0 : 1, PATH_TXN, &req.base, put_done);
}

const struct workload_ops bench_txn_mixed_ops = {.ops = {"read", "write"},
                                                 .nops = 2,
                                                 .setup = make_value,
                                                 .start = txn_mixed_start,
                                                 .cleanup = free_value};
