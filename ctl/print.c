/* etcdctl's printers (command/printer_simple.go, printer_fields.go,
 * printer_json.go, printer_table.go). JSON is Go's encoding/json of the
 * gogo-generated structs: proto field order, the proto names as keys,
 * omitempty, int64/uint64 as numbers, bytes as base64. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

static void flush_buf(struct buf *b)
{
    if (b->len) fwrite(b->p, 1, b->len, stdout);
    buf_free(b);
}

void print_need_rpc_printer(void)
{
    if (g.out == OUT_TABLE)
        ctl_die(EXIT_BAD_FEATURE, "table not supported as output format");
    if (g.out == OUT_PROTOBUF)
        ctl_die(EXIT_BAD_FEATURE, "protobuf not supported as output format");
}

/* ---- JSON ---- */

static void jhdr_fields(struct buf *b, const Etcdserverpb__ResponseHeader *h, bool *first)
{
    struct {
        const char *k;
        uint64_t v;
        bool sign;
    } f[] = {{"cluster_id", h->cluster_id, false},
             {"member_id", h->member_id, false},
             {"revision", (uint64_t)h->revision, true},
             {"raft_term", h->raft_term, false}};
    for (int i = 0; i < 4; i++) {
        if (!f[i].v)
            continue;
        buf_printf(b, "%s\"%s\":", *first ? "" : ",", f[i].k);
        if (f[i].sign)
            buf_printf(b, "%" PRId64, (int64_t)f[i].v);
        else
            buf_printf(b, "%" PRIu64, f[i].v);
        *first = false;
    }
}

/* "header":{...} (first member of an object). */
static void jhdr(struct buf *b, const Etcdserverpb__ResponseHeader *h, bool *first)
{
    if (!h)
        return;
    buf_puts(b, "\"header\":{");
    bool f = true;
    jhdr_fields(b, h, &f);
    buf_puts(b, "}");
    *first = false;
}

static void jsep(struct buf *b, bool *first)
{
    if (!*first)
        buf_puts(b, ",");
    *first = false;
}

static void jint(struct buf *b, bool *first, const char *k, int64_t v)
{
    if (!v)
        return;
    jsep(b, first);
    buf_printf(b, "\"%s\":%" PRId64, k, v);
}

static void juint(struct buf *b, bool *first, const char *k, uint64_t v)
{
    if (!v)
        return;
    jsep(b, first);
    buf_printf(b, "\"%s\":%" PRIu64, k, v);
}

static void jbool(struct buf *b, bool *first, const char *k, bool v)
{
    if (!v)
        return;
    jsep(b, first);
    buf_printf(b, "\"%s\":true", k);
}

static void jbytes(struct buf *b, bool *first, const char *k, ProtobufCBinaryData d)
{
    if (!d.len)
        return;
    jsep(b, first);
    buf_printf(b, "\"%s\":\"", k);
    out_base64(b, d.data, d.len);
    buf_puts(b, "\"");
}

static void jstr(struct buf *b, bool *first, const char *k, const char *s)
{
    if (!s || !*s)
        return;
    jsep(b, first);
    buf_printf(b, "\"%s\":", k);
    out_json_str(b, s, strlen(s));
}

static void jkv(struct buf *b, const Mvccpb__KeyValue *kv)
{
    bool f = true;
    buf_puts(b, "{");
    jbytes(b, &f, "key", kv->key);
    jint(b, &f, "create_revision", kv->create_revision);
    jint(b, &f, "mod_revision", kv->mod_revision);
    jint(b, &f, "version", kv->version);
    jbytes(b, &f, "value", kv->value);
    jint(b, &f, "lease", kv->lease);
    buf_puts(b, "}");
}

static void jkvs(struct buf *b, bool *first, const char *k, Mvccpb__KeyValue **kvs, size_t n)
{
    if (!n)
        return;
    jsep(b, first);
    buf_printf(b, "\"%s\":[", k);
    for (size_t i = 0; i < n; i++) {
        if (i)
            buf_puts(b, ",");
        jkv(b, kvs[i]);
    }
    buf_puts(b, "]");
}

static void jrange(struct buf *b, const Etcdserverpb__RangeResponse *r)
{
    bool f = true;
    buf_puts(b, "{");
    jhdr(b, r->header, &f);
    jkvs(b, &f, "kvs", r->kvs, r->n_kvs);
    jbool(b, &f, "more", r->more);
    jint(b, &f, "count", r->count);
    buf_puts(b, "}");
}

static void jput(struct buf *b, const Etcdserverpb__PutResponse *r)
{
    bool f = true;
    buf_puts(b, "{");
    jhdr(b, r->header, &f);
    if (r->prev_kv) {
        jsep(b, &f);
        buf_puts(b, "\"prev_kv\":");
        jkv(b, r->prev_kv);
    }
    buf_puts(b, "}");
}

static void jdel(struct buf *b, const Etcdserverpb__DeleteRangeResponse *r)
{
    bool f = true;
    buf_puts(b, "{");
    jhdr(b, r->header, &f);
    jint(b, &f, "deleted", r->deleted);
    jkvs(b, &f, "prev_kvs", r->prev_kvs, r->n_prev_kvs);
    buf_puts(b, "}");
}

static void jtxn(struct buf *b, const Etcdserverpb__TxnResponse *r)
{
    bool f = true;
    buf_puts(b, "{");
    jhdr(b, r->header, &f);
    jbool(b, &f, "succeeded", r->succeeded);
    if (r->n_responses) {
        jsep(b, &f);
        buf_puts(b, "\"responses\":[");
        for (size_t i = 0; i < r->n_responses; i++) {
            Etcdserverpb__ResponseOp *op = r->responses[i];
            if (i)
                buf_puts(b, ",");
            buf_puts(b, "{\"Response\":{");
            switch (op->response_case) {
            case ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE:
                buf_puts(b, "\"ResponseRange\":");
                jrange(b, op->response_range);
                break;
            case ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_PUT:
                buf_puts(b, "\"ResponsePut\":");
                jput(b, op->response_put);
                break;
            case ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE:
                buf_puts(b, "\"ResponseDeleteRange\":");
                jdel(b, op->response_delete_range);
                break;
            case ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_TXN:
                buf_puts(b, "\"ResponseTxn\":");
                jtxn(b, op->response_txn);
                break;
            default:
                break;
            }
            buf_puts(b, "}}");
        }
        buf_puts(b, "]");
    }
    buf_puts(b, "}");
}

/* ---- simple / fields helpers ---- */

static void skv(struct buf *b, const Mvccpb__KeyValue *kv)
{
    if (!g.value_only) {
        if (g.hex)
            out_hex(b, kv->key.data, kv->key.len);
        else
            buf_put(b, kv->key.data, kv->key.len);
        buf_puts(b, "\n");
    }
    if (g.hex)
        out_hex(b, kv->value.data, kv->value.len);
    else
        buf_put(b, kv->value.data, kv->value.len);
    buf_puts(b, "\n");
}

static void fhdr(struct buf *b, const Etcdserverpb__ResponseHeader *h)
{
    static const Etcdserverpb__ResponseHeader zero = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    if (!h)
        h = &zero; /* etcdctl would panic on a nil header */
    buf_printf(b, "\"ClusterID\" : %" PRIu64 "\n\"MemberID\" : %" PRIu64 "\n\"Revision\" : %" PRId64
                  "\n\"RaftTerm\" : %" PRIu64 "\n",
               h->cluster_id, h->member_id, h->revision, h->raft_term);
}

static void fkv(struct buf *b, const char *pfx, const Mvccpb__KeyValue *kv)
{
    buf_printf(b, "\"%sKey\" : ", pfx);
    out_goquote(b, (const char *)kv->key.data, kv->key.len);
    buf_printf(b, "\n\"%sCreateRevision\" : %" PRId64 "\n\"%sModRevision\" : %" PRId64
                  "\n\"%sVersion\" : %" PRId64 "\n\"%sValue\" : ",
               pfx, kv->create_revision, pfx, kv->mod_revision, pfx, kv->version, pfx);
    out_goquote(b, (const char *)kv->value.data, kv->value.len);
    buf_printf(b, "\n\"%sLease\" : %" PRId64 "\n", pfx, kv->lease);
}

static const char *tf(bool v)
{
    return v ? "true" : "false";
}

static void get_into(struct buf *b, const Etcdserverpb__RangeResponse *r)
{
    switch (g.out) {
    case OUT_SIMPLE:
        for (size_t i = 0; i < r->n_kvs; i++)
            skv(b, r->kvs[i]);
        break;
    case OUT_JSON:
        jrange(b, r);
        buf_puts(b, "\n");
        break;
    case OUT_FIELDS:
        fhdr(b, r->header);
        for (size_t i = 0; i < r->n_kvs; i++)
            fkv(b, "", r->kvs[i]);
        buf_printf(b, "\"More\" : %s\n\"Count\" : %" PRId64 "\n", tf(r->more), r->count);
        break;
    default:
        print_need_rpc_printer();
    }
}

static void put_into(struct buf *b, const Etcdserverpb__PutResponse *r)
{
    switch (g.out) {
    case OUT_SIMPLE:
        buf_puts(b, "OK\n");
        if (r->prev_kv)
            skv(b, r->prev_kv);
        break;
    case OUT_JSON:
        jput(b, r);
        buf_puts(b, "\n");
        break;
    case OUT_FIELDS:
        fhdr(b, r->header);
        if (r->prev_kv)
            fkv(b, "Prev", r->prev_kv);
        break;
    default:
        print_need_rpc_printer();
    }
}

static void del_into(struct buf *b, const Etcdserverpb__DeleteRangeResponse *r)
{
    switch (g.out) {
    case OUT_SIMPLE:
        buf_printf(b, "%" PRId64 "\n", r->deleted);
        for (size_t i = 0; i < r->n_prev_kvs; i++)
            skv(b, r->prev_kvs[i]);
        break;
    case OUT_JSON:
        jdel(b, r);
        buf_puts(b, "\n");
        break;
    case OUT_FIELDS:
        fhdr(b, r->header);
        buf_printf(b, "\"Deleted\" : %" PRId64 "\n", r->deleted);
        for (size_t i = 0; i < r->n_prev_kvs; i++)
            fkv(b, "Prev", r->prev_kvs[i]);
        break;
    default:
        print_need_rpc_printer();
    }
}

void print_get(const Etcdserverpb__RangeResponse *r)
{
    if (g.out == OUT_PROTOBUF) { /* printer_protobuf.go */
        out_pb_raw(&r->base);
        return;
    }
    struct buf b = {0};
    get_into(&b, r);
    flush_buf(&b);
}

void print_put(const Etcdserverpb__PutResponse *r)
{
    if (g.out == OUT_PROTOBUF) { /* printer_protobuf.go */
        out_pb_raw(&r->base);
        return;
    }
    struct buf b = {0};
    put_into(&b, r);
    flush_buf(&b);
}

void print_del(const Etcdserverpb__DeleteRangeResponse *r)
{
    if (g.out == OUT_PROTOBUF) { /* printer_protobuf.go */
        out_pb_raw(&r->base);
        return;
    }
    struct buf b = {0};
    del_into(&b, r);
    flush_buf(&b);
}

void print_txn(const Etcdserverpb__TxnResponse *r)
{
    if (g.out == OUT_PROTOBUF) { /* printer_protobuf.go */
        out_pb_raw(&r->base);
        return;
    }
    struct buf b = {0};
    if (g.out == OUT_JSON) {
        jtxn(&b, r);
        buf_puts(&b, "\n");
    } else if (g.out == OUT_SIMPLE || g.out == OUT_FIELDS) {
        if (g.out == OUT_SIMPLE) {
            buf_puts(&b, r->succeeded ? "SUCCESS\n" : "FAILURE\n");
        } else {
            fhdr(&b, r->header);
            buf_printf(&b, "\"Succeeded\" : %s\n", tf(r->succeeded));
        }
        for (size_t i = 0; i < r->n_responses; i++) {
            Etcdserverpb__ResponseOp *op = r->responses[i];
            if (g.out == OUT_SIMPLE)
                buf_puts(&b, "\n");
            switch (op->response_case) {
            case ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE:
                get_into(&b, op->response_range);
                break;
            case ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_PUT:
                put_into(&b, op->response_put);
                break;
            case ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE:
                del_into(&b, op->response_delete_range);
                break;
            default:
                buf_puts(&b, g.out == OUT_SIMPLE ? "unexpected response\n"
                                                 : "\"Unknown\" : \"\"\n");
            }
        }
    } else {
        print_need_rpc_printer();
    }
    flush_buf(&b);
}

void print_watch(const Etcdserverpb__WatchResponse *r)
{
    if (g.out == OUT_PROTOBUF) { /* a pb.WatchResponse made from clientv3's: no watch ID */
        Etcdserverpb__WatchResponse c = *r;
        c.watch_id = 0;
        c.fragment = 0;
        c.cancel_reason = (char *)"";
        out_pb_raw(&c.base);
        return;
    }
    struct buf b = {0};
    static const char *const types[] = {"PUT", "DELETE"};
    if (g.out == OUT_SIMPLE) {
        for (size_t i = 0; i < r->n_events; i++) {
            Mvccpb__Event *e = r->events[i];
            buf_printf(&b, "%s\n", types[e->type & 1]);
            if (e->prev_kv)
                skv(&b, e->prev_kv);
            if (e->kv)
                skv(&b, e->kv);
        }
    } else if (g.out == OUT_FIELDS) {
        fhdr(&b, r->header);
        for (size_t i = 0; i < r->n_events; i++) {
            Mvccpb__Event *e = r->events[i];
            buf_printf(&b, "\"Type\" : %s\n", types[e->type & 1]);
            if (e->prev_kv)
                fkv(&b, "Prev", e->prev_kv);
            if (e->kv)
                fkv(&b, "", e->kv);
        }
    } else if (g.out == OUT_JSON) {
        /* clientv3.WatchResponse: exported fields without json tags */
        buf_puts(&b, "{\"Header\":{");
        bool f = true;
        if (r->header)
            jhdr_fields(&b, r->header, &f);
        buf_puts(&b, "},\"Events\":");
        if (!r->n_events) {
            buf_puts(&b, "null");
        } else {
            buf_puts(&b, "[");
            for (size_t i = 0; i < r->n_events; i++) {
                Mvccpb__Event *e = r->events[i];
                bool ef = true;
                if (i)
                    buf_puts(&b, ",");
                buf_puts(&b, "{");
                jint(&b, &ef, "type", e->type);
                if (e->kv) {
                    jsep(&b, &ef);
                    buf_puts(&b, "\"kv\":");
                    jkv(&b, e->kv);
                }
                if (e->prev_kv) {
                    jsep(&b, &ef);
                    buf_puts(&b, "\"prev_kv\":");
                    jkv(&b, e->prev_kv);
                }
                buf_puts(&b, "}");
            }
            buf_puts(&b, "]");
        }
        buf_printf(&b, ",\"CompactRevision\":%" PRId64 ",\"Canceled\":%s,\"Created\":%s}\n",
                   r->compact_revision, tf(r->canceled), tf(r->created));
    } else {
        print_need_rpc_printer();
    }
    flush_buf(&b);
}

/* Lease responses of clientv3 embed *pb.ResponseHeader: its fields are
 * promoted into the object. */
static void jemb(struct buf *b, const Etcdserverpb__ResponseHeader *h, bool *f)
{
    if (h)
        jhdr_fields(b, h, f);
}

void print_grant(const Etcdserverpb__LeaseGrantResponse *r)
{
    if (g.out == OUT_PROTOBUF) { /* clientv3's type embeds *ResponseHeader: its Marshal */
        if (r->header)
            out_pb_raw(&r->header->base);
        return;
    }
    struct buf b = {0};
    if (g.out == OUT_SIMPLE) {
        buf_printf(&b, "lease %016" PRIx64 " granted with TTL(%" PRId64 "s)\n", (uint64_t)r->id,
                   r->ttl);
    } else if (g.out == OUT_JSON) {
        bool f = true;
        buf_puts(&b, "{");
        jemb(&b, r->header, &f);
        jsep(&b, &f);
        buf_printf(&b, "\"ID\":%" PRId64 ",\"TTL\":%" PRId64 ",\"Error\":", r->id, r->ttl);
        out_json_str(&b, r->error ? r->error : "", r->error ? strlen(r->error) : 0);
        buf_puts(&b, "}\n");
    } else if (g.out == OUT_FIELDS) {
        fhdr(&b, r->header);
        buf_printf(&b, "\"ID\" : %" PRId64 "\n\"TTL\" : %" PRId64 "\n", r->id, r->ttl);
    } else {
        print_need_rpc_printer();
    }
    flush_buf(&b);
}

void print_revoke(int64_t id, const Etcdserverpb__LeaseRevokeResponse *r)
{
    if (g.out == OUT_PROTOBUF) { /* clientv3.LeaseRevokeResponse has no Marshal */
        const Etcdserverpb__ResponseHeader *h = r->header;
        struct buf t = {0};
        if (!h) {
            buf_puts(&t, "<nil>");
        } else {
            if (h->cluster_id) buf_printf(&t, "cluster_id:%" PRIu64 " ", h->cluster_id);
            if (h->member_id) buf_printf(&t, "member_id:%" PRIu64 " ", h->member_id);
            if (h->revision) buf_printf(&t, "revision:%" PRId64 " ", h->revision);
            if (h->raft_term) buf_printf(&t, "raft_term:%" PRIu64 " ", h->raft_term);
        }
        ctl_die(EXIT_BAD_FEATURE, "marshal unsupported for type clientv3.LeaseRevokeResponse ({%s})",
                t.p ? t.p : "");
    }
    struct buf b = {0};
    if (g.out == OUT_SIMPLE) {
        buf_printf(&b, "lease %016" PRIx64 " revoked\n", (uint64_t)id);
    } else if (g.out == OUT_JSON) {
        bool f = true;
        buf_puts(&b, "{");
        jhdr(&b, r->header, &f);
        buf_puts(&b, "}\n");
    } else if (g.out == OUT_FIELDS) {
        fhdr(&b, r->header);
    } else {
        print_need_rpc_printer();
    }
    flush_buf(&b);
}

void print_keepalive(const Etcdserverpb__LeaseKeepAliveResponse *r)
{
    if (g.out == OUT_PROTOBUF) { /* clientv3's type embeds *ResponseHeader: its Marshal */
        if (r->header)
            out_pb_raw(&r->header->base);
        return;
    }
    struct buf b = {0};
    if (g.out == OUT_SIMPLE) {
        buf_printf(&b, "lease %016" PRIx64 " keepalived with TTL(%" PRId64 ")\n", (uint64_t)r->id,
                   r->ttl);
    } else if (g.out == OUT_JSON) {
        bool f = true;
        buf_puts(&b, "{");
        jemb(&b, r->header, &f);
        jsep(&b, &f);
        buf_printf(&b, "\"ID\":%" PRId64 ",\"TTL\":%" PRId64 "}\n", r->id, r->ttl);
    } else if (g.out == OUT_FIELDS) {
        fhdr(&b, r->header);
        buf_printf(&b, "\"ID\" : %" PRId64 "\n\"TTL\" : %" PRId64 "\n", r->id, r->ttl);
    } else {
        print_need_rpc_printer();
    }
    flush_buf(&b);
}

void print_ttl(const Etcdserverpb__LeaseTimeToLiveResponse *r, bool keys)
{
    if (g.out == OUT_PROTOBUF) { /* clientv3's type embeds *ResponseHeader: its Marshal */
        if (r->header)
            out_pb_raw(&r->header->base);
        return;
    }
    struct buf b = {0};
    if (g.out == OUT_SIMPLE) {
        if (r->grantedttl == 0 && r->ttl == -1) {
            buf_printf(&b, "lease %016" PRIx64 " already expired\n", (uint64_t)r->id);
        } else {
            buf_printf(&b, "lease %016" PRIx64 " granted with TTL(%" PRId64 "s), remaining(%" PRId64
                           "s)",
                       (uint64_t)r->id, r->grantedttl, r->ttl);
            if (keys) {
                buf_puts(&b, ", attached keys([");
                for (size_t i = 0; i < r->n_keys; i++) {
                    if (i)
                        buf_puts(&b, " ");
                    buf_put(&b, r->keys[i].data, r->keys[i].len);
                }
                buf_puts(&b, "])");
            }
            buf_puts(&b, "\n");
        }
    } else if (g.out == OUT_JSON) {
        bool f = true;
        buf_puts(&b, "{");
        jemb(&b, r->header, &f);
        jsep(&b, &f);
        buf_printf(&b, "\"id\":%" PRId64 ",\"ttl\":%" PRId64 ",\"granted-ttl\":%" PRId64 ",\"keys\":",
                   r->id, r->ttl, r->grantedttl);
        if (!r->n_keys) {
            buf_puts(&b, "null");
        } else {
            buf_puts(&b, "[");
            for (size_t i = 0; i < r->n_keys; i++) {
                buf_puts(&b, i ? ",\"" : "\"");
                out_base64(&b, r->keys[i].data, r->keys[i].len);
                buf_puts(&b, "\"");
            }
            buf_puts(&b, "]");
        }
        buf_puts(&b, "}\n");
    } else if (g.out == OUT_FIELDS) {
        fhdr(&b, r->header);
        buf_printf(&b, "\"ID\" : %" PRId64 "\n\"TTL\" : %" PRId64 "\n\"GrantedTTL\" : %" PRId64 "\n",
                   r->id, r->ttl, r->grantedttl);
        for (size_t i = 0; i < r->n_keys; i++) {
            buf_puts(&b, "\"Key\" : ");
            out_goquote(&b, (const char *)r->keys[i].data, r->keys[i].len);
            buf_puts(&b, "\n");
        }
    } else {
        print_need_rpc_printer();
    }
    flush_buf(&b);
}

void print_leases(const Etcdserverpb__LeaseLeasesResponse *r)
{
    if (g.out == OUT_PROTOBUF) { /* clientv3's type embeds *ResponseHeader: its Marshal */
        if (r->header)
            out_pb_raw(&r->header->base);
        return;
    }
    struct buf b = {0};
    if (g.out == OUT_SIMPLE) {
        buf_printf(&b, "found %zu leases\n", r->n_leases);
        for (size_t i = 0; i < r->n_leases; i++)
            buf_printf(&b, "%016" PRIx64 "\n", (uint64_t)r->leases[i]->id);
    } else if (g.out == OUT_JSON) {
        bool f = true;
        buf_puts(&b, "{");
        jemb(&b, r->header, &f);
        jsep(&b, &f);
        buf_puts(&b, "\"leases\":[");
        for (size_t i = 0; i < r->n_leases; i++)
            buf_printf(&b, "%s{\"id\":%" PRId64 "}", i ? "," : "", r->leases[i]->id);
        buf_puts(&b, "]}\n");
    } else if (g.out == OUT_FIELDS) {
        fhdr(&b, r->header);
        for (size_t i = 0; i < r->n_leases; i++)
            buf_printf(&b, "\"ID\" : %" PRId64 "\n", r->leases[i]->id);
    } else {
        print_need_rpc_printer();
    }
    flush_buf(&b);
}

static char *join(char **v, size_t n)
{
    struct buf b = {0};
    buf_puts(&b, "");
    for (size_t i = 0; i < n; i++) {
        if (i)
            buf_puts(&b, ",");
        buf_puts(&b, v[i]);
    }
    return b.p;
}

static void jstrs(struct buf *b, bool *f, const char *k, char **v, size_t n)
{
    if (!n)
        return;
    jsep(b, f);
    buf_printf(b, "\"%s\":[", k);
    for (size_t i = 0; i < n; i++) {
        if (i)
            buf_puts(b, ",");
        out_json_str(b, v[i], strlen(v[i]));
    }
    buf_puts(b, "]");
}

void print_members(const Etcdserverpb__MemberListResponse *r)
{
    if (g.out == OUT_PROTOBUF) { /* printer_protobuf.go */
        out_pb_raw(&r->base);
        return;
    }
    static const char *const hdr[] = {"ID", "Status", "Name", "Peer Addrs", "Client Addrs",
                                      "Is Learner"};
    struct buf b = {0};
    if (g.out == OUT_SIMPLE || g.out == OUT_TABLE) {
        char ***rows = calloc(r->n_members + 1, sizeof *rows);
        for (size_t i = 0; i < r->n_members; i++) {
            Etcdserverpb__Member *m = r->members[i];
            rows[i] = calloc(6, sizeof(char *));
            char id[32];
            snprintf(id, sizeof id, "%" PRIx64, m->id);
            rows[i][0] = strdup(id);
            rows[i][1] = strdup(m->name && *m->name ? "started" : "unstarted");
            rows[i][2] = strdup(m->name ? m->name : "");
            rows[i][3] = join(m->peerurls, m->n_peerurls);
            rows[i][4] = join(m->clienturls, m->n_clienturls);
            rows[i][5] = strdup(tf(m->islearner));
        }
        if (g.out == OUT_TABLE) {
            out_table(stdout, hdr, 6, rows, r->n_members, true);
        } else {
            for (size_t i = 0; i < r->n_members; i++)
                buf_printf(&b, "%s, %s, %s, %s, %s, %s\n", rows[i][0], rows[i][1], rows[i][2],
                           rows[i][3], rows[i][4], rows[i][5]);
        }
        for (size_t i = 0; i < r->n_members; i++) {
            for (int c = 0; c < 6; c++)
                free(rows[i][c]);
            free(rows[i]);
        }
        free(rows);
    } else if (g.out == OUT_JSON) {
        bool f = true;
        buf_puts(&b, "{");
        jhdr(&b, r->header, &f);
        if (r->n_members) {
            jsep(&b, &f);
            buf_puts(&b, "\"members\":[");
            for (size_t i = 0; i < r->n_members; i++) {
                Etcdserverpb__Member *m = r->members[i];
                bool mf = true;
                buf_puts(&b, i ? ",{" : "{");
                juint(&b, &mf, "ID", m->id);
                jstr(&b, &mf, "name", m->name);
                jstrs(&b, &mf, "peerURLs", m->peerurls, m->n_peerurls);
                jstrs(&b, &mf, "clientURLs", m->clienturls, m->n_clienturls);
                jbool(&b, &mf, "isLearner", m->islearner);
                buf_puts(&b, "}");
            }
            buf_puts(&b, "]");
        }
        buf_puts(&b, "}\n");
    } else if (g.out == OUT_FIELDS) {
        fhdr(&b, r->header);
        for (size_t i = 0; i < r->n_members; i++) {
            Etcdserverpb__Member *m = r->members[i];
            buf_printf(&b, "\"ID\" : %" PRIu64 "\n\"Name\" : ", m->id);
            out_goquote(&b, m->name ? m->name : "", m->name ? strlen(m->name) : 0);
            buf_puts(&b, "\n");
            for (size_t j = 0; j < m->n_peerurls; j++) {
                buf_puts(&b, "\"PeerURL\" : ");
                out_goquote(&b, m->peerurls[j], strlen(m->peerurls[j]));
                buf_puts(&b, "\n");
            }
            for (size_t j = 0; j < m->n_clienturls; j++) {
                buf_puts(&b, "\"ClientURL\" : ");
                out_goquote(&b, m->clienturls[j], strlen(m->clienturls[j]));
                buf_puts(&b, "\n");
            }
            buf_printf(&b, "\"IsLearner\" : %s\n\n", tf(m->islearner));
        }
    } else {
        print_need_rpc_printer();
    }
    flush_buf(&b);
}

static const char *alarm_name(int a)
{
    static const char *const n[] = {"NONE", "NOSPACE", "CORRUPT"};
    return a >= 0 && a < 3 ? n[a] : "UNKNOWN";
}

void print_alarm(const Etcdserverpb__AlarmResponse *r)
{
    if (g.out == OUT_PROTOBUF) { /* printer_protobuf.go */
        out_pb_raw(&r->base);
        return;
    }
    struct buf b = {0};
    if (g.out == OUT_SIMPLE) {
        /* "%+v" of *pb.AlarmMember: its proto compact text form */
        for (size_t i = 0; i < r->n_alarms; i++) {
            Etcdserverpb__AlarmMember *a = r->alarms[i];
            if (a->memberid)
                buf_printf(&b, "memberID:%" PRIu64 " ", a->memberid);
            if (a->alarm)
                buf_printf(&b, "alarm:%s ", alarm_name(a->alarm));
            buf_puts(&b, "\n");
        }
    } else if (g.out == OUT_JSON) {
        bool f = true;
        buf_puts(&b, "{");
        jhdr(&b, r->header, &f);
        if (r->n_alarms) {
            jsep(&b, &f);
            buf_puts(&b, "\"alarms\":[");
            for (size_t i = 0; i < r->n_alarms; i++) {
                bool af = true;
                buf_puts(&b, i ? ",{" : "{");
                juint(&b, &af, "memberID", r->alarms[i]->memberid);
                jint(&b, &af, "alarm", r->alarms[i]->alarm);
                buf_puts(&b, "}");
            }
            buf_puts(&b, "]");
        }
        buf_puts(&b, "}\n");
    } else if (g.out == OUT_FIELDS) {
        if (!r->header) {
            /* etcd 3.4 sends no header here and etcdctl's fields printer
             * dereferences it: same exit status, without the goroutine dump */
            fprintf(stderr, "panic: runtime error: invalid memory address or nil pointer dereference\n");
            exit(2);
        }
        fhdr(&b, r->header);
        for (size_t i = 0; i < r->n_alarms; i++)
            buf_printf(&b, "\"MemberID\" : %" PRIu64 "\n\"AlarmType\" : %s\n\n",
                       r->alarms[i]->memberid, alarm_name(r->alarms[i]->alarm));
    } else {
        print_need_rpc_printer();
    }
    flush_buf(&b);
}

void print_ep_status(const struct ep_status *s, size_t n)
{
    static const char *const hdr[] = {"endpoint",  "ID",        "version",    "db size",
                                      "is leader", "is learner", "raft term", "raft index",
                                      "raft applied index", "errors"};
    struct buf b = {0};
    if (g.out == OUT_SIMPLE || g.out == OUT_TABLE) {
        char ***rows = calloc(n + 1, sizeof *rows);
        for (size_t i = 0; i < n; i++) {
            Etcdserverpb__StatusResponse *r = s[i].resp;
            uint64_t mid = r->header ? r->header->member_id : 0;
            struct buf c[10] = {{0}};
            buf_puts(&c[0], s[i].ep);
            buf_printf(&c[1], "%" PRIx64, mid);
            buf_puts(&c[2], r->version ? r->version : "");
            out_humanize(&c[3], (uint64_t)r->dbsize);
            buf_puts(&c[4], tf(r->leader == mid));
            buf_puts(&c[5], tf(r->islearner));
            buf_printf(&c[6], "%" PRIu64, r->raftterm);
            buf_printf(&c[7], "%" PRIu64, r->raftindex);
            buf_printf(&c[8], "%" PRIu64, r->raftappliedindex);
            buf_puts(&c[9], "");
            for (size_t j = 0; j < r->n_errors; j++) {
                if (j)
                    buf_puts(&c[9], ", ");
                buf_puts(&c[9], r->errors[j]);
            }
            rows[i] = calloc(10, sizeof(char *));
            for (int k = 0; k < 10; k++)
                rows[i][k] = c[k].p;
        }
        if (g.out == OUT_TABLE) {
            out_table(stdout, hdr, 10, rows, n, true);
        } else {
            for (size_t i = 0; i < n; i++)
                for (int k = 0; k < 10; k++)
                    buf_printf(&b, "%s%s", rows[i][k], k == 9 ? "\n" : ", ");
        }
        for (size_t i = 0; i < n; i++) {
            for (int k = 0; k < 10; k++)
                free(rows[i][k]);
            free(rows[i]);
        }
        free(rows);
    } else if (g.out == OUT_JSON) {
        buf_puts(&b, "[");
        for (size_t i = 0; i < n; i++) {
            Etcdserverpb__StatusResponse *r = s[i].resp;
            bool f = true;
            buf_puts(&b, i ? ",{\"Endpoint\":" : "{\"Endpoint\":");
            out_json_str(&b, s[i].ep, strlen(s[i].ep));
            buf_puts(&b, ",\"Status\":{");
            jhdr(&b, r->header, &f);
            jstr(&b, &f, "version", r->version);
            jint(&b, &f, "dbSize", r->dbsize);
            juint(&b, &f, "leader", r->leader);
            juint(&b, &f, "raftIndex", r->raftindex);
            juint(&b, &f, "raftTerm", r->raftterm);
            juint(&b, &f, "raftAppliedIndex", r->raftappliedindex);
            jstrs(&b, &f, "errors", r->errors, r->n_errors);
            jint(&b, &f, "dbSizeInUse", r->dbsizeinuse);
            jbool(&b, &f, "isLearner", r->islearner);
            buf_puts(&b, "}}");
        }
        buf_puts(&b, "]\n");
    } else if (g.out == OUT_FIELDS) {
        for (size_t i = 0; i < n; i++) {
            Etcdserverpb__StatusResponse *r = s[i].resp;
            fhdr(&b, r->header);
            buf_puts(&b, "\"Version\" : ");
            out_goquote(&b, r->version ? r->version : "", r->version ? strlen(r->version) : 0);
            buf_printf(&b, "\n\"DBSize\" : %" PRId64 "\n\"Leader\" : %" PRIu64
                           "\n\"IsLearner\" : %s\n\"RaftIndex\" : %" PRIu64
                           "\n\"RaftTerm\" : %" PRIu64 "\n\"RaftAppliedIndex\" : %" PRIu64
                           "\n\"Errors\" : [",
                       r->dbsize, r->leader, tf(r->islearner), r->raftindex, r->raftterm,
                       r->raftappliedindex);
            for (size_t j = 0; j < r->n_errors; j++)
                buf_printf(&b, "%s%s", j ? " " : "", r->errors[j]);
            buf_puts(&b, "]\n\"Endpoint\" : ");
            out_goquote(&b, s[i].ep, strlen(s[i].ep));
            buf_puts(&b, "\n\n");
        }
    } else {
        print_need_rpc_printer();
    }
    flush_buf(&b);
}

void print_ep_health(const struct ep_health *h, size_t n)
{
    static const char *const hdr[] = {"endpoint", "health", "took", "error"};
    struct buf b = {0};
    if (g.out == OUT_SIMPLE) {
        for (size_t i = 0; i < n; i++) {
            if (!h[i].error)
                fprintf(stderr, "%s is healthy: successfully committed proposal: took = %s\n",
                        h[i].ep, h[i].took);
            else
                fprintf(stderr, "%s is unhealthy: failed to commit proposal: %s\n", h[i].ep,
                        h[i].error);
        }
    } else if (g.out == OUT_TABLE) {
        char ***rows = calloc(n + 1, sizeof *rows);
        for (size_t i = 0; i < n; i++) {
            rows[i] = calloc(4, sizeof(char *));
            rows[i][0] = (char *)h[i].ep;
            rows[i][1] = (char *)tf(h[i].health);
            rows[i][2] = (char *)h[i].took;
            rows[i][3] = h[i].error ? h[i].error : "";
        }
        out_table(stdout, hdr, 4, rows, n, true);
        for (size_t i = 0; i < n; i++)
            free(rows[i]);
        free(rows);
    } else if (g.out == OUT_JSON) {
        buf_puts(&b, "[");
        for (size_t i = 0; i < n; i++) {
            buf_puts(&b, i ? ",{\"endpoint\":" : "{\"endpoint\":");
            out_json_str(&b, h[i].ep, strlen(h[i].ep));
            buf_printf(&b, ",\"health\":%s,\"took\":", tf(h[i].health));
            out_json_str(&b, h[i].took, strlen(h[i].took));
            if (h[i].error) {
                buf_puts(&b, ",\"error\":");
                out_json_str(&b, h[i].error, strlen(h[i].error));
            }
            buf_puts(&b, "}");
        }
        buf_puts(&b, "]\n");
    } else if (g.out == OUT_FIELDS) {
        for (size_t i = 0; i < n; i++) {
            buf_puts(&b, "\"Endpoint\" : ");
            out_goquote(&b, h[i].ep, strlen(h[i].ep));
            buf_printf(&b, "\n\"Health\" : %s\n\"Took\" : %s\n\"Error\" : %s\n\n", tf(h[i].health),
                       h[i].took, h[i].error ? h[i].error : "");
        }
    } else {
        print_need_rpc_printer();
    }
    flush_buf(&b);
}
