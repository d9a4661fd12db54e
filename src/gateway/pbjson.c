/* Protobuf ↔ JSON from protobuf-c descriptors (see pbjson.h). */
#include "gateway/pbjson.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- base64 (standard alphabet, padded) ---- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *b64_encode(const uint8_t *p, size_t n)
{
    char *out = malloc(4 * ((n + 2) / 3) + 1), *o = out;
    if (!out) return NULL;
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *o++ = b64[v >> 18];
        *o++ = b64[(v >> 12) & 63];
        *o++ = b64[(v >> 6) & 63];
        *o++ = b64[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
        *o++ = b64[v >> 18];
        *o++ = b64[(v >> 12) & 63];
        *o++ = i + 1 < n ? b64[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    *o = '\0';
    return out;
}

static int b64_val(char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62; /* jsonpb also takes the URL alphabet */
    if (c == '/' || c == '_') return 63;
    return -1;
}

/* Decodes into a (padding optional, as Go falls back to raw encodings). */
static int b64_decode(const char *s, size_t n, arena *a, ProtobufCBinaryData *out)
{
    while (n && s[n - 1] == '=') n--;
    if (n % 4 == 1) return -1;
    uint8_t *buf = arena_alloc(a, n * 3 / 4 + 1), *o = buf;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64_val(s[i]);
        if (v < 0) return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            *o++ = (uint8_t)(acc >> bits);
        }
    }
    out->data = buf;
    out->len = (size_t)(o - buf);
    return 0;
}

/* ---- to JSON ---- */

static json_t *scalar_to_json(const ProtobufCFieldDescriptor *f, const void *p)
{
    char num[32];
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32: return json_integer(*(const int32_t *)p);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: return json_integer(*(const uint32_t *)p);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        snprintf(num, sizeof num, "%" PRId64, *(const int64_t *)p);
        return json_string(num);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        snprintf(num, sizeof num, "%" PRIu64, *(const uint64_t *)p);
        return json_string(num);
    case PROTOBUF_C_TYPE_FLOAT: return json_real(*(const float *)p);
    case PROTOBUF_C_TYPE_DOUBLE: return json_real(*(const double *)p);
    case PROTOBUF_C_TYPE_BOOL: return json_boolean(*(const protobuf_c_boolean *)p);
    case PROTOBUF_C_TYPE_ENUM: {
        int v = *(const int *)p;
        const ProtobufCEnumValue *ev =
            protobuf_c_enum_descriptor_get_value((const ProtobufCEnumDescriptor *)f->descriptor, v);
        return ev ? json_string(ev->name) : json_integer(v);
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        return json_string(s ? s : "");
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = p;
        char *e = b64_encode(b->data, b->len);
        if (!e) return NULL;
        json_t *j = json_string(e);
        free(e);
        return j;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *m = *(ProtobufCMessage *const *)p;
        return m ? pbjson_to_json(m) : json_null();
    }
    }
    return NULL;
}

static bool is_zero(const ProtobufCFieldDescriptor *f, const void *p)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_ENUM: return *(const uint32_t *)p == 0;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: return *(const uint64_t *)p == 0;
    case PROTOBUF_C_TYPE_FLOAT: return *(const float *)p == 0;
    case PROTOBUF_C_TYPE_DOUBLE: return *(const double *)p == 0;
    case PROTOBUF_C_TYPE_BOOL: return !*(const protobuf_c_boolean *)p;
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        return !s || !*s;
    }
    case PROTOBUF_C_TYPE_BYTES: return ((const ProtobufCBinaryData *)p)->len == 0;
    case PROTOBUF_C_TYPE_MESSAGE: return *(void *const *)p == NULL;
    }
    return true;
}

static size_t elem_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: return 8;
    case PROTOBUF_C_TYPE_DOUBLE: return sizeof(double);
    case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING: return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE: return sizeof(void *);
    default: return 4;
    }
}

json_t *pbjson_to_json(const ProtobufCMessage *msg)
{
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    json_t *obj = json_object();
    if (!obj) return NULL;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *base = (const char *)msg + f->offset;
        json_t *v = NULL;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)((const char *)msg + f->quantifier_offset);
            if (n == 0) continue;
            const char *arr = *(char *const *)base;
            v = json_array();
            for (size_t k = 0; v && k < n; k++) {
                json_t *e = scalar_to_json(f, arr + k * elem_size(f->type));
                if (!e || json_array_append_new(v, e)) {
                    json_decref(v);
                    v = NULL;
                }
            }
        } else if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t which = *(const uint32_t *)((const char *)msg + f->quantifier_offset);
            if (which != f->id) continue;
            v = scalar_to_json(f, base);
        } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset &&
                   f->type != PROTOBUF_C_TYPE_MESSAGE && f->type != PROTOBUF_C_TYPE_STRING) {
            if (!*(const protobuf_c_boolean *)((const char *)msg + f->quantifier_offset)) continue;
            v = scalar_to_json(f, base);
        } else {
            if (is_zero(f, base)) continue;
            v = scalar_to_json(f, base);
        }
        if (!v || json_object_set_new(obj, f->name, v)) {
            json_decref(obj);
            return NULL;
        }
    }
    return obj;
}

char *pbjson_dump(const json_t *j)
{
    return json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
}

/* ---- from JSON ---- */

/* "range_end" matches "range_end" and "rangeEnd" (protoc's json_name). */
static bool name_matches(const char *field, const char *key)
{
    if (!strcmp(field, key)) return true;
    const char *f = field, *k = key;
    while (*f && *k) {
        if (*f == '_' && f[1]) {
            f++;
            char up = (*f >= 'a' && *f <= 'z') ? (char)(*f - 32) : *f;
            if (*k != up) return false;
        } else if (*f != *k) {
            return false;
        }
        f++;
        k++;
    }
    return !*f && !*k;
}

static const char *type_name(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32: return "int32";
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: return "uint32";
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64: return "int64";
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: return "uint64";
    case PROTOBUF_C_TYPE_BOOL: return "bool";
    case PROTOBUF_C_TYPE_STRING: return "string";
    case PROTOBUF_C_TYPE_BYTES: return "[]uint8";
    case PROTOBUF_C_TYPE_ENUM: return "enum";
    case PROTOBUF_C_TYPE_MESSAGE: return "object";
    default: return "number";
    }
}

/* An integer from a JSON number or a numeric string. */
static int get_int(json_t *v, bool is_signed, int64_t *out)
{
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return 0;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        /* Out of int64's range (or NaN) cannot be converted at all. */
        if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0)) return -1;
        if (d != (double)(int64_t)d) return -1;
        *out = (int64_t)d;
        return 0;
    }
    if (!json_is_string(v)) return -1;
    const char *s = json_string_value(v);
    char *end;
    errno = 0;
    if (is_signed) *out = strtoll(s, &end, 10);
    else {
        if (*s == '-') return -1;
        *out = (int64_t)strtoull(s, &end, 10);
    }
    return errno || end == s || *end ? -1 : 0;
}

static int set_scalar(const ProtobufCFieldDescriptor *f, json_t *v, void *p, arena *a, char *err,
                      size_t errlen)
{
    int64_t x;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        if (get_int(v, true, &x) || x < INT32_MIN || x > INT32_MAX) goto bad;
        *(int32_t *)p = (int32_t)x;
        return 0;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        if (get_int(v, false, &x) || x < 0 || x > (int64_t)UINT32_MAX) goto bad;
        *(uint32_t *)p = (uint32_t)x;
        return 0;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        if (get_int(v, true, &x)) goto bad;
        *(int64_t *)p = x;
        return 0;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        if (json_is_integer(v) && json_integer_value(v) < 0) goto bad;
        if (get_int(v, false, &x)) goto bad;
        *(uint64_t *)p = (uint64_t)x;
        return 0;
    case PROTOBUF_C_TYPE_FLOAT:
        if (!json_is_number(v)) goto bad;
        *(float *)p = (float)json_number_value(v);
        return 0;
    case PROTOBUF_C_TYPE_DOUBLE:
        if (!json_is_number(v)) goto bad;
        *(double *)p = json_number_value(v);
        return 0;
    case PROTOBUF_C_TYPE_BOOL:
        if (!json_is_boolean(v)) goto bad;
        *(protobuf_c_boolean *)p = json_is_true(v);
        return 0;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumDescriptor *ed = f->descriptor;
        if (json_is_string(v)) {
            const ProtobufCEnumValue *ev =
                protobuf_c_enum_descriptor_get_value_by_name(ed, json_string_value(v));
            if (!ev) {
                snprintf(err, errlen, "unknown value \"%s\" for enum %s", json_string_value(v),
                         ed->name);
                return -1;
            }
            *(int *)p = ev->value;
            return 0;
        }
        if (get_int(v, true, &x) || x < INT32_MIN || x > INT32_MAX) goto bad;
        *(int *)p = (int)x;
        return 0;
    }
    case PROTOBUF_C_TYPE_STRING:
        if (!json_is_string(v)) goto bad;
        *(char **)p = arena_dup(a, json_string_value(v), json_string_length(v) + 1);
        return 0;
    case PROTOBUF_C_TYPE_BYTES:
        if (!json_is_string(v)) goto bad;
        if (b64_decode(json_string_value(v), json_string_length(v), a, p)) {
            snprintf(err, errlen, "illegal base64 data in field \"%s\"", f->name);
            return -1;
        }
        return 0;
    case PROTOBUF_C_TYPE_MESSAGE: {
        if (!json_is_object(v)) goto bad;
        ProtobufCMessage *m = pbjson_from_json(f->descriptor, v, a, err, errlen);
        if (!m) return -1;
        *(ProtobufCMessage **)p = m;
        return 0;
    }
    }
bad:
    snprintf(err, errlen, "json: cannot unmarshal %s into Go value of type %s",
             json_is_string(v) ? "string" : json_is_boolean(v) ? "bool" : json_is_array(v) ? "array"
                                : json_is_object(v) ? "object" : "number",
             type_name(f->type));
    return -1;
}

ProtobufCMessage *pbjson_from_json(const ProtobufCMessageDescriptor *desc, json_t *obj, arena *a,
                                   char *err, size_t errlen)
{
    if (!json_is_object(obj)) {
        snprintf(err, errlen, "json: cannot unmarshal non-object into Go value of type %s",
                 desc->short_name);
        return NULL;
    }
    ProtobufCMessage *m = arena_calloc(a, 1, desc->sizeof_message);
    desc->message_init(m);
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        const ProtobufCFieldDescriptor *f = NULL;
        for (unsigned i = 0; i < desc->n_fields && !f; i++)
            if (name_matches(desc->fields[i].name, key)) f = &desc->fields[i];
        if (!f || json_is_null(v)) continue; /* unknown fields are ignored, as etcd does */
        char *base = (char *)m + f->offset;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            if (!json_is_array(v)) {
                snprintf(err, errlen, "json: cannot unmarshal %s into Go value of type []%s",
                         json_is_object(v) ? "object" : "value", type_name(f->type));
                return NULL;
            }
            size_t n = json_array_size(v), es = elem_size(f->type);
            char *arr = arena_calloc(a, n ? n : 1, es);
            for (size_t k = 0; k < n; k++)
                if (set_scalar(f, json_array_get(v, k), arr + k * es, a, err, errlen)) return NULL;
            *(char **)base = arr;
            *(size_t *)((char *)m + f->quantifier_offset) = n;
            continue;
        }
        if (set_scalar(f, v, base, a, err, errlen)) return NULL;
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
            *(uint32_t *)((char *)m + f->quantifier_offset) = f->id;
        else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset &&
                 f->type != PROTOBUF_C_TYPE_MESSAGE && f->type != PROTOBUF_C_TYPE_STRING)
            *(protobuf_c_boolean *)((char *)m + f->quantifier_offset) = 1;
    }
    return m;
}
