/* Output of any response message by its protobuf-c descriptor: etcdctl's
 * JSON printer (Go's encoding/json of the gogo structs: proto field names,
 * omitempty, integers as numbers, enums as numbers, bytes as base64) and its
 * protobuf printer (the marshalled message, raw). Used by the commands whose JSON has nothing
 * special (auth, user, role, member add/remove/update/promote, ...). */
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

bool pb_field_empty(const ProtobufCFieldDescriptor *f, const void *p)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32: case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_ENUM:
        return *(const int32_t *)p == 0;
    case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32:
        return *(const uint32_t *)p == 0;
    case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64:
        return *(const uint64_t *)p == 0;
    case PROTOBUF_C_TYPE_FLOAT:
        return *(const float *)p == 0;
    case PROTOBUF_C_TYPE_DOUBLE:
        return *(const double *)p == 0;
    case PROTOBUF_C_TYPE_BOOL:
        return !*(const protobuf_c_boolean *)p;
    case PROTOBUF_C_TYPE_STRING:
        return !*(char *const *)p || !**(char *const *)p;
    case PROTOBUF_C_TYPE_BYTES:
        return ((const ProtobufCBinaryData *)p)->len == 0;
    case PROTOBUF_C_TYPE_MESSAGE:
        return *(void *const *)p == NULL;
    }
    return true;
}

static void json_value(struct buf *b, const ProtobufCFieldDescriptor *f, const void *p)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32: case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_ENUM:
        buf_printf(b, "%" PRId32, *(const int32_t *)p);
        break;
    case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32:
        buf_printf(b, "%" PRIu32, *(const uint32_t *)p);
        break;
    case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
        buf_printf(b, "%" PRId64, *(const int64_t *)p);
        break;
    case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64:
        buf_printf(b, "%" PRIu64, *(const uint64_t *)p);
        break;
    case PROTOBUF_C_TYPE_FLOAT:
        buf_printf(b, "%g", (double)*(const float *)p);
        break;
    case PROTOBUF_C_TYPE_DOUBLE:
        buf_printf(b, "%g", *(const double *)p);
        break;
    case PROTOBUF_C_TYPE_BOOL:
        buf_puts(b, *(const protobuf_c_boolean *)p ? "true" : "false");
        break;
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        out_json_str(b, s ? s : "", s ? strlen(s) : 0);
        break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *d = p;
        buf_puts(b, "\"");
        out_base64(b, d->data, d->len);
        buf_puts(b, "\"");
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *m = *(const ProtobufCMessage *const *)p;
        if (m)
            out_pb_json(b, m);
        else
            buf_puts(b, "null");
        break;
    }
    }
}

static size_t elem_size(const ProtobufCFieldDescriptor *f)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64: case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING: case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(void *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    default:
        return 4;
    }
}

void out_pb_json(struct buf *b, const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    bool first = true;
    buf_puts(b, "{");
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *base = (const char *)m;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            if (!n)
                continue;
            const char *arr = *(char *const *)(base + f->offset);
            buf_printf(b, "%s\"%s\":[", first ? "" : ",", f->name);
            for (size_t k = 0; k < n; k++) {
                if (k)
                    buf_puts(b, ",");
                json_value(b, f, arr + k * elem_size(f));
            }
            buf_puts(b, "]");
            first = false;
            continue;
        }
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t which = *(const uint32_t *)(base + f->quantifier_offset);
            if (which != f->id)
                continue;
        }
        const void *p = base + f->offset;
        if (pb_field_empty(f, p))
            continue;
        buf_printf(b, "%s\"%s\":", first ? "" : ",", f->name);
        json_value(b, f, p);
        first = false;
    }
    buf_puts(b, "}");
}

void out_pb_raw(const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *p = malloc(n ? n : 1);
    protobuf_c_message_pack(m, p);
    if (n)
        fwrite(p, 1, n, stdout);
    free(p);
}

bool print_generic(const ProtobufCMessage *m)
{
    if (g.out == OUT_JSON) {
        struct buf b = {0};
        out_pb_json(&b, m);
        buf_puts(&b, "\n");
        fwrite(b.p, 1, b.len, stdout);
        buf_free(&b);
        return true;
    }
    if (g.out == OUT_PROTOBUF) {
        out_pb_raw(m);
        return true;
    }
    if (g.out == OUT_TABLE)
        ctl_die(EXIT_BAD_FEATURE, "table not supported as output format");
    return false;
}

const Etcdserverpb__ResponseHeader *resp_header(const ProtobufCMessage *m)
{
    /* every etcd reply has its header as field 1 */
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(m->descriptor, 1);
    if (!f || f->type != PROTOBUF_C_TYPE_MESSAGE ||
        f->descriptor != &etcdserverpb__response_header__descriptor)
        return NULL;
    return *(Etcdserverpb__ResponseHeader *const *)((const char *)m + f->offset);
}

bool print_rpc(const ProtobufCMessage *m, bool fields)
{
    if (print_generic(m))
        return true;
    if (g.out != OUT_FIELDS)
        return false;
    if (!fields)
        ctl_die(EXIT_BAD_FEATURE, "fields not supported as output format");
    print_fields_header(resp_header(m));
    return true;
}

void print_line(const ProtobufCMessage *m, bool fields, const char *fmt, ...)
{
    if (print_rpc(m, fields))
        return;
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
}

void print_fields_header(const Etcdserverpb__ResponseHeader *h)
{
    static const Etcdserverpb__ResponseHeader zero = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    if (!h)
        h = &zero;
    printf("\"ClusterID\" : %" PRIu64 "\n\"MemberID\" : %" PRIu64 "\n\"Revision\" : %" PRId64
           "\n\"RaftTerm\" : %" PRIu64 "\n",
           h->cluster_id, h->member_id, h->revision, h->raft_term);
}
