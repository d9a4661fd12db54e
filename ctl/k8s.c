/* ketchctl k8s: a Kubernetes view of the keyspace kube-apiserver keeps in
 * etcd (k8s.io/apiserver/pkg/storage/etcd3; key layout from the registry
 * strategies: /registry/<resource>/[<namespace>/]<name>, with a few
 * historical exceptions: minions = nodes, services/specs and
 * services/endpoints, ranges/serviceips, apiregistration.k8s.io/apiservices,
 * custom resources under /registry/<group>/<plural>/).
 *
 * Values: "k8s\0" + runtime.Unknown protobuf (field 1 typeMeta {1
 * apiVersion, 2 kind}, 2 raw, 3 contentEncoding, 4 contentType) for built-in
 * kinds; JSON for custom resources and apiservices; "k8s:enc:<provider>:v1:
 * <key>:" + ciphertext when encryption at rest is configured. */
#include <ctype.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "k8s.h"
#include "util/endian.h"



struct obj {
    char *key;
    const uint8_t *val;
    size_t len;
    int64_t mod_revision;
    char resource[128], group[128], ns[256], name[512];
    char enc[160]; /* protobuf / json / encrypted:<provider>[:<key>] / raw */
};

static const struct {
    const char *res, *group;
    bool namespaced;
} known[] = {
    {"clusterroles", "rbac.authorization.k8s.io", false},
    {"clusterrolebindings", "rbac.authorization.k8s.io", false},
    {"roles", "rbac.authorization.k8s.io", true},
    {"rolebindings", "rbac.authorization.k8s.io", true},
    {"serviceaccounts", "", true},
    {"configmaps", "", true},
    {"secrets", "", true},
    {"pods", "", true},
    {"events", "", true},
    {"limitranges", "", true},
    {"resourcequotas", "", true},
    {"persistentvolumeclaims", "", true},
    {"persistentvolumes", "", false},
    {"namespaces", "", false},
    {"controllerrevisions", "apps", true},
    {"daemonsets", "apps", true},
    {"deployments", "apps", true},
    {"replicasets", "apps", true},
    {"statefulsets", "apps", true},
    {"jobs", "batch", true},
    {"cronjobs", "batch", true},
    {"leases", "coordination.k8s.io", true},
    {"priorityclasses", "scheduling.k8s.io", false},
    {"storageclasses", "storage.k8s.io", false},
    {"csinodes", "storage.k8s.io", false},
    {"validatingwebhookconfigurations", "admissionregistration.k8s.io", false},
    {"mutatingwebhookconfigurations", "admissionregistration.k8s.io", false},
    {"apiextensions.k8s.io/customresourcedefinitions", "apiextensions.k8s.io", false},
    {"flowschemas", "flowcontrol.apiserver.k8s.io", false},
    {"prioritylevelconfigurations", "flowcontrol.apiserver.k8s.io", false},
    {"poddisruptionbudgets", "policy", true},
    {"ingress", "networking.k8s.io", true},
    {"networkpolicies", "networking.k8s.io", true},
    {"endpointslices", "discovery.k8s.io", true},
};

static void cpy(char *d, size_t cap, const char *s, size_t n)
{
    if (n >= cap)
        n = cap - 1;
    if (n) memcpy(d, s, n);
    d[n] = 0;
}

/* Splits key (after "/registry/") into segments; returns their number. */
static int split(const char *k, size_t n, const char **seg, size_t *len, int max)
{
    int c = 0;
    size_t s = 0;
    for (size_t i = 0; i <= n && c < max; i++) {
        if (i == n || k[i] == '/') {
            seg[c] = k + s;
            len[c++] = i - s;
            s = i + 1;
        }
    }
    return c;
}

static void classify_value(struct obj *o)
{
    const uint8_t *v = o->val;
    size_t n = o->len;
    if (n >= 4 && !memcmp(v, "k8s\0", 4)) {
        strcpy(o->enc, "protobuf");
    } else if (n >= 8 && !memcmp(v, "k8s:enc:", 8)) {
        /* k8s:enc:<provider>:v1:<keyname>:  (kms: k8s:enc:kms:v1|v2:<name>:) */
        const char *p = (const char *)v + 8;
        size_t rest = n - 8;
        const char *parts[3];
        size_t pl[3];
        int np = 0;
        size_t s = 0;
        for (size_t i = 0; i < rest && np < 3 && i < 200; i++)
            if (p[i] == ':') {
                parts[np] = p + s;
                pl[np++] = i - s;
                s = i + 1;
            }
        if (np >= 3)
            snprintf(o->enc, sizeof o->enc, "encrypted:%.*s-%.*s:%.*s", (int)pl[0], parts[0],
                     (int)pl[1], parts[1], (int)pl[2], parts[2]);
        else if (np >= 1)
            snprintf(o->enc, sizeof o->enc, "encrypted:%.*s", (int)pl[0], parts[0]);
        else
            strcpy(o->enc, "encrypted");
    } else if (n && (v[0] == '{' || v[0] == '[')) {
        strcpy(o->enc, "json");
    } else {
        strcpy(o->enc, "raw");
    }
}

/* Fills resource / group / namespace / name from the key. */
static void classify(struct obj *o)
{
    const char *k = o->key;
    size_t n = strlen(k);
    o->resource[0] = o->group[0] = o->ns[0] = o->name[0] = 0;
    classify_value(o);
    if (strncmp(k, "/registry/", 10)) {
        strcpy(o->resource, "(not kubernetes)");
        cpy(o->name, sizeof o->name, k, n);
        return;
    }
    const char *seg[6];
    size_t len[6];
    int c = split(k + 10, n - 10, seg, len, 6);
#define IS(i, s) (c > (i) && len[i] == strlen(s) && !memcmp(seg[i], s, len[i]))
    if (IS(0, "services") && (IS(1, "endpoints") || IS(1, "specs")) && c >= 4) {
        strcpy(o->resource, IS(1, "endpoints") ? "endpoints" : "services");
        cpy(o->ns, sizeof o->ns, seg[2], len[2]);
        cpy(o->name, sizeof o->name, seg[3], n - (size_t)(seg[3] - k));
        return;
    }
    if (IS(0, "minions") && c >= 2) {
        strcpy(o->resource, "nodes");
        cpy(o->name, sizeof o->name, seg[1], n - (size_t)(seg[1] - k));
        return;
    }
    if (IS(0, "ranges") && c >= 2) {
        strcpy(o->resource, "ranges");
        cpy(o->name, sizeof o->name, seg[1], n - (size_t)(seg[1] - k));
        return;
    }
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        const char *r = known[i].res, *slash = strchr(r, '/');
        int base = 0;
        if (slash) { /* "<group>/<plural>" */
            if (!(c > 1 && len[0] == (size_t)(slash - r) && !memcmp(seg[0], r, len[0]) &&
                  IS(1, slash + 1)))
                continue;
            base = 1;
        } else if (!IS(0, r)) {
            continue;
        }
        strcpy(o->resource, slash ? slash + 1 : r);
        strcpy(o->group, known[i].group);
        if (known[i].namespaced && c >= base + 3) {
            cpy(o->ns, sizeof o->ns, seg[base + 1], len[base + 1]);
            cpy(o->name, sizeof o->name, seg[base + 2], n - (size_t)(seg[base + 2] - k));
        } else if (c >= base + 2) {
            cpy(o->name, sizeof o->name, seg[base + 1], n - (size_t)(seg[base + 1] - k));
        }
        return;
    }
    if (c >= 3 && memchr(seg[0], '.', len[0])) {
        /* apiservices and custom resources: /registry/<group>/<plural>/[<ns>/]<name> */
        cpy(o->group, sizeof o->group, seg[0], len[0]);
        cpy(o->resource, sizeof o->resource, seg[1], len[1]);
        if (c >= 4) {
            cpy(o->ns, sizeof o->ns, seg[2], len[2]);
            cpy(o->name, sizeof o->name, seg[3], n - (size_t)(seg[3] - k));
        } else {
            cpy(o->name, sizeof o->name, seg[2], n - (size_t)(seg[2] - k));
        }
        return;
    }
    /* unknown core resource: guess from the depth */
    cpy(o->resource, sizeof o->resource, seg[0], len[0]);
    if (c >= 3) {
        cpy(o->ns, sizeof o->ns, seg[1], len[1]);
        cpy(o->name, sizeof o->name, seg[2], n - (size_t)(seg[2] - k));
    } else if (c == 2) {
        cpy(o->name, sizeof o->name, seg[1], len[1]);
    }
#undef IS
}

static Etcdserverpb__RangeResponse *range_all(const char *prefix, bool keys_only)
{
    Etcdserverpb__RangeRequest rr = ETCDSERVERPB__RANGE_REQUEST__INIT;
    rr.key = (ProtobufCBinaryData){strlen(prefix), (uint8_t *)prefix};
    size_t l;
    char *e = prefix_end((const uint8_t *)prefix, strlen(prefix), &l);
    rr.range_end = (ProtobufCBinaryData){l, (uint8_t *)e};
    rr.keys_only = keys_only;
    Etcdserverpb__RangeResponse *resp = (Etcdserverpb__RangeResponse *)ctl_rpc(
        "/etcdserverpb.KV/Range", &rr.base, &etcdserverpb__range_response__descriptor);
    free(e);
    return resp;
}

static struct obj *load(const char *resource, const char *ns, size_t *n)
{
    Etcdserverpb__RangeResponse *r = range_all("/registry/", false);
    struct obj *v = calloc(r->n_kvs + 1, sizeof *v);
    *n = 0;
    for (size_t i = 0; i < r->n_kvs; i++) {
        struct obj *o = &v[*n];
        o->key = strndup((const char *)r->kvs[i]->key.data, r->kvs[i]->key.len);
        o->val = r->kvs[i]->value.data;
        o->len = r->kvs[i]->value.len;
        o->mod_revision = r->kvs[i]->mod_revision;
        classify(o);
        if (resource && *resource && strcmp(o->resource, resource))
            continue;
        if (ns && *ns && strcmp(o->ns, ns))
            continue;
        (*n)++;
    }
    return v; /* the response stays alive: values are borrowed from it */
}

/* kubectl's plain table: columns left aligned, three spaces apart. */
static void plain_table(const char *const *hdr, size_t ncol, char ***rows, size_t nrows)
{
    size_t w[16] = {0};
    for (size_t c = 0; c < ncol; c++)
        w[c] = strlen(hdr[c]);
    for (size_t r = 0; r < nrows; r++)
        for (size_t c = 0; c < ncol; c++)
            if (strlen(rows[r][c]) > w[c])
                w[c] = strlen(rows[r][c]);
    for (size_t r = 0; r <= nrows; r++) {
        for (size_t c = 0; c < ncol; c++) {
            const char *s = r == 0 ? hdr[c] : rows[r - 1][c];
            if (c + 1 == ncol)
                printf("%s\n", s);
            else
                printf("%-*s   ", (int)w[c], s);
        }
    }
}

static char *fmt_str(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#include <stdarg.h>
static char *fmt_str(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

static const char *res_display(const struct obj *o, char *buf, size_t cap)
{
    if (*o->group)
        snprintf(buf, cap, "%s.%s", o->resource, o->group);
    else
        snprintf(buf, cap, "%s", o->resource);
    return buf;
}

static int k8s_ls(int argc, char **argv)
{
    const char *ns = "";
    bool all = false;
    struct flag fl[] = {{"namespace", 'n', F_STR, &ns, false},
                        {"all-namespaces", 'A', F_BOOL, &all, false}, FEND};
    int n = ctl_parse(argc, argv, fl);
    ctl_init_display();
    size_t cnt;
    struct obj *v = load(n > 0 ? argv[0] : NULL, ns, &cnt);
    static const char *const hdr[] = {"NAMESPACE", "RESOURCE", "NAME", "ENCODING", "SIZE"};
    char ***rows = calloc(cnt + 1, sizeof *rows);
    for (size_t i = 0; i < cnt; i++) {
        char rb[300];
        rows[i] = calloc(5, sizeof(char *));
        rows[i][0] = strdup(*v[i].ns ? v[i].ns : "-");
        rows[i][1] = strdup(res_display(&v[i], rb, sizeof rb));
        rows[i][2] = strdup(v[i].name);
        rows[i][3] = strdup(v[i].enc);
        rows[i][4] = fmt_str("%zu", v[i].len);
    }
    if (!cnt) {
        fprintf(stderr, "No resources found%s%s.\n", *ns ? " in namespace " : "", ns);
        return 0;
    }
    plain_table(hdr, 5, rows, cnt);
    return 0;
}

static int k8s_summary(int argc, char **argv)
{
    ctl_parse(argc, argv, (struct flag[]){FEND});
    ctl_init_display();
    size_t cnt;
    struct obj *v = load(NULL, NULL, &cnt);
    char **names = calloc(cnt + 1, sizeof *names);
    size_t *count = calloc(cnt + 1, sizeof *count), *bytes = calloc(cnt + 1, sizeof *bytes);
    size_t nr = 0, total = 0, totalb = 0;
    for (size_t i = 0; i < cnt; i++) {
        char rb[300];
        res_display(&v[i], rb, sizeof rb);
        size_t j = 0;
        while (j < nr && strcmp(names[j], rb))
            j++;
        if (j == nr)
            names[nr++] = strdup(rb);
        count[j]++;
        bytes[j] += v[i].len;
        total++;
        totalb += v[i].len;
    }
    /* sorted by resource name */
    for (size_t a = 0; a < nr; a++)
        for (size_t b = a + 1; b < nr; b++)
            if (strcmp(names[b], names[a]) < 0) {
                char *t = names[a];
                names[a] = names[b], names[b] = t;
                size_t x = count[a];
                count[a] = count[b], count[b] = x;
                x = bytes[a], bytes[a] = bytes[b], bytes[b] = x;
            }
    static const char *const hdr[] = {"RESOURCE", "COUNT", "BYTES"};
    char ***rows = calloc(nr + 2, sizeof *rows);
    for (size_t i = 0; i < nr; i++) {
        rows[i] = calloc(3, sizeof(char *));
        rows[i][0] = names[i];
        rows[i][1] = fmt_str("%zu", count[i]);
        rows[i][2] = fmt_str("%zu", bytes[i]);
    }
    rows[nr] = calloc(3, sizeof(char *));
    rows[nr][0] = "TOTAL";
    rows[nr][1] = fmt_str("%zu", total);
    rows[nr][2] = fmt_str("%zu", totalb);
    plain_table(hdr, 3, rows, nr + 1);
    return 0;
}

/* ---- protobuf ---- */

static bool rd_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (int s = 0; s < 64 && *p < end; s += 7) {
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << s;
        if (!(b & 0x80))
            return true;
    }
    return false;
}

/* True if [p, end) parses completely as protobuf fields. */
static bool pb_valid(const uint8_t *p, const uint8_t *end, int depth)
{
    if (p == end || depth > 20)
        return false;
    while (p < end) {
        uint64_t tag, v;
        if (!rd_varint(&p, end, &tag) || tag >> 3 == 0 || (tag >> 3) > 536870911)
            return false;
        switch (tag & 7) {
        case 0:
            if (!rd_varint(&p, end, &v))
                return false;
            break;
        case 1:
            if (end - p < 8)
                return false;
            p += 8;
            break;
        case 5:
            if (end - p < 4)
                return false;
            p += 4;
            break;
        case 2:
            if (!rd_varint(&p, end, &v) || v > (uint64_t)(end - p))
                return false;
            p += v;
            break;
        default:
            return false;
        }
    }
    return true;
}

static bool printable(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((p[i] < 0x20 && p[i] != '\n' && p[i] != '\t') || p[i] == 0x7f)
            return false;
    return true;
}

static void dump(const uint8_t *p, const uint8_t *end, int ind)
{
    while (p < end) {
        uint64_t tag, v;
        if (!rd_varint(&p, end, &tag)) {
            printf("%*s(truncated)\n", ind, "");
            return;
        }
        unsigned f = (unsigned)(tag >> 3);
        switch (tag & 7) {
        case 0:
            if (!rd_varint(&p, end, &v)) {
                printf("%*s%u: (truncated varint)\n", ind, "", f);
                return;
            }
            printf("%*s%u: %" PRIu64 "\n", ind, "", f, v);
            break;
        case 1:
        case 5: {
            size_t w = (tag & 7) == 1 ? 8 : 4;
            if ((size_t)(end - p) < w) {
                printf("%*s%u: (truncated fixed%zu)\n", ind, "", f, w * 8);
                return;
            }
            uint64_t x = w == 8 ? get_le64(p) : get_le32(p);
            printf("%*s%u: 0x%0*" PRIx64 "\n", ind, "", f, (int)w * 2, x);
            p += w;
            break;
        }
        case 2:
            if (!rd_varint(&p, end, &v) || v > (uint64_t)(end - p)) {
                printf("%*s%u: (truncated: %zu bytes left)\n", ind, "", f, (size_t)(end - p));
                return;
            }
            if (v && printable(p, v) && !(v > 1 && pb_valid(p, p + v, 0) && !isalnum(p[0]))) {
                printf("%*s%u: \"%.*s\"\n", ind, "", f, (int)v, (const char *)p);
            } else if (pb_valid(p, p + v, 0)) {
                printf("%*s%u {\n", ind, "", f);
                dump(p, p + v, ind + 2);
                printf("%*s}\n", ind, "");
            } else {
                struct buf b = {0};
                out_hex(&b, p, v > 64 ? 64 : v);
                printf("%*s%u: bytes(%" PRIu64 ") %s%s\n", ind, "", f, v, b.p ? b.p : "",
                       v > 64 ? "..." : "");
                buf_free(&b);
            }
            p += v;
            break;
        default:
            printf("%*s(bad wire type %u)\n", ind, "", (unsigned)(tag & 7));
            return;
        }
    }
}

/* Decodes the runtime.Unknown envelope. */
static void show_protobuf(const uint8_t *v, size_t n)
{
    const uint8_t *p = v + 4, *end = v + n;
    const uint8_t *raw = NULL;
    size_t rawlen = 0;
    char api[256] = "", kind[256] = "", cenc[64] = "", ctype[64] = "";
    bool trunc = false;
    while (p < end) {
        uint64_t tag, l;
        if (!rd_varint(&p, end, &tag) || (tag & 7) != 2 || !rd_varint(&p, end, &l) ||
            l > (uint64_t)(end - p)) {
            trunc = true;
            break;
        }
        switch (tag >> 3) {
        case 1: {
            const uint8_t *q = p, *qe = p + l;
            while (q < qe) {
                uint64_t t2, l2;
                if (!rd_varint(&q, qe, &t2) || !rd_varint(&q, qe, &l2) || l2 > (uint64_t)(qe - q)) {
                    trunc = true;
                    break;
                }
                if (t2 >> 3 == 1)
                    cpy(api, sizeof api, (const char *)q, l2);
                else if (t2 >> 3 == 2)
                    cpy(kind, sizeof kind, (const char *)q, l2);
                q += l2;
            }
            break;
        }
        case 2:
            raw = p, rawlen = l;
            break;
        case 3:
            cpy(cenc, sizeof cenc, (const char *)p, l);
            break;
        case 4:
            cpy(ctype, sizeof ctype, (const char *)p, l);
            break;
        }
        p += l;
    }
    printf("encoding: protobuf\napiVersion: %s\nkind: %s\n", *api ? api : "(none)",
           *kind ? kind : "(none)");
    if (*cenc)
        printf("contentEncoding: %s\n", cenc);
    if (*ctype)
        printf("contentType: %s\n", ctype);
    if (trunc)
        printf("warning: truncated or malformed envelope\n");
    if (raw) {
        printf("raw (%zu bytes):\n", rawlen);
        dump(raw, raw + rawlen, 2);
    }
}

static void show_value(const struct obj *o)
{
    printf("key: %s\nresource: %s\ngroup: %s\nnamespace: %s\nname: %s\nsize: %zu\n", o->key,
           o->resource, *o->group ? o->group : "(core)", *o->ns ? o->ns : "(cluster)", o->name,
           o->len);
    if (!strcmp(o->enc, "protobuf")) {
        show_protobuf(o->val, o->len);
    } else if (!strcmp(o->enc, "json")) {
        printf("encoding: json\n");
        if (o->len) fwrite(o->val, 1, o->len, stdout);
        if (o->len && o->val[o->len - 1] != '\n')
            printf("\n");
    } else if (!strncmp(o->enc, "encrypted", 9)) {
        printf("encoding: %s\n(encrypted at rest: the value cannot be shown without the key)\n", o->enc);
    } else {
        struct buf b = {0};
        out_goquote(&b, (const char *)o->val, o->len);
        printf("encoding: raw\n%s\n", b.p);
        buf_free(&b);
    }
}

/* The stored value, decrypted when it is encrypted and a key is loaded.
 * Returns the bytes to decode (o->val or a malloc'd plaintext in *plain);
 * NULL with the reason in why when it cannot be decrypted. */
static const uint8_t *plain_value(const struct obj *o, size_t *n, uint8_t **plain, char *why,
                                  size_t cap)
{
    *plain = NULL;
    if (strncmp(o->enc, "encrypted", 9)) {
        *n = o->len;
        return o->val ? o->val : (const uint8_t *)"";
    }
    if (k8s_decrypt(o->key, o->val, o->len, plain, n, why, cap))
        return NULL;
    return *plain;
}

/* kube-apiserver stores objects without metadata.resourceVersion and fills
 * it with the key's mod_revision when it reads them: so does this, at its
 * place in ObjectMeta's order. */
static void set_resource_version(json_t *j, int64_t rev)
{
    json_t *m = json_object_get(j, "metadata");
    if (!json_is_object(m))
        return;
    static const char *const after[] = {"generation", "creationTimestamp", "deletionTimestamp",
                                        "deletionGracePeriodSeconds", "labels", "annotations",
                                        "ownerReferences", "finalizers", "managedFields"};
    char rv[32];
    snprintf(rv, sizeof rv, "%lld", (long long)rev);
    json_t *n = json_object();
    bool done = false;
    const char *k;
    json_t *v;
    json_object_foreach(m, k, v)
    {
        if (!strcmp(k, "resourceVersion"))
            continue;
        for (size_t i = 0; i < sizeof after / sizeof after[0] && !done; i++)
            if (!strcmp(k, after[i])) {
                json_object_set_new(n, "resourceVersion", json_string(rv));
                done = true;
            }
        json_object_set(n, k, v);
    }
    if (!done)
        json_object_set_new(n, "resourceVersion", json_string(rv));
    json_object_set_new(j, "metadata", n);
}

/* -o json|yaml: the object as kubectl prints it. */
/* The object as kubectl shows it (decrypted, decoded, resourceVersion
 * set); NULL with the reason in why. */
static json_t *obj_json(const struct obj *o, char *why, size_t cap)
{
    char r[512];
    size_t n;
    uint8_t *plain;
    const uint8_t *v = plain_value(o, &n, &plain, r, sizeof r);
    if (!v) {
        snprintf(why, cap, "%s: %s", o->key, r);
        return NULL;
    }
    json_t *j = NULL;
    if (n >= 4 && !memcmp(v, "k8s\0", 4)) {
        j = k8s_pb_to_json(v, n, r, sizeof r);
        if (!j)
            snprintf(why, cap, "%s: %s", o->key, r);
    } else if (n && (v[0] == '{' || v[0] == '[')) {
        json_error_t e;
        j = json_loadb((const char *)v, n, 0, &e);
        if (!j)
            snprintf(why, cap, "%s: invalid JSON value: %s", o->key, e.text);
    } else {
        snprintf(why, cap, "%s: neither Kubernetes protobuf nor JSON (%zu bytes)", o->key, n);
    }
    free(plain);
    if (j)
        set_resource_version(j, o->mod_revision);
    return j;
}

json_t *k8s_value_json(const char *key, const uint8_t *v, size_t n, int64_t mod_revision, char *why,
                       size_t cap)
{
    struct obj o = {.key = (char *)key, .val = v, .len = n, .mod_revision = mod_revision};
    classify_value(&o);
    return obj_json(&o, why, cap);
}

static void print_fmt(const json_t *j, const char *fmt)
{
    if (!strcmp(fmt, "json"))
        k8s_print_json(j);
    else
        k8s_print_yaml(j);
}

/* k8s get <resource> -o json|yaml (no name): a List, as kubectl prints one;
 * objects that cannot be decoded are named on stderr (exit 1). */
static int show_list(struct obj *v, size_t cnt, const char *fmt)
{
    json_t *items = json_array();
    int rc = 0;
    for (size_t i = 0; i < cnt; i++) {
        char why[1024];
        json_t *j = obj_json(&v[i], why, sizeof why);
        if (!j) {
            fprintf(stderr, "error: %s\n", why);
            rc = EXIT_ERR;
            continue;
        }
        json_array_append_new(items, j);
    }
    json_t *list = json_object();
    json_object_set_new(list, "apiVersion", json_string("v1"));
    json_object_set_new(list, "items", items);
    json_object_set_new(list, "kind", json_string("List"));
    json_object_set_new(list, "metadata", json_pack("{s:s}", "resourceVersion", ""));
    print_fmt(list, fmt);
    json_decref(list);
    return rc;
}

static int k8s_get(int argc, char **argv)
{
    const char *ns = "", *outf = "", *encf = "";
    struct flag fl[] = {{"namespace", 'n', F_STR, &ns, false},
                        {"output", 'o', F_STR, &outf, false},
                        {"encryption-config", 0, F_STR, &encf, false}, FEND};
    int n = ctl_parse(argc, argv, fl);
    if (n != 2 && !(n == 1 && *outf))
        ctl_die(EXIT_BAD_ARGS, "k8s get needs <resource> <name> (or <resource> -o json|yaml for all of them)");
    if (*outf && strcmp(outf, "json") && strcmp(outf, "yaml"))
        ctl_die(EXIT_BAD_ARGS, "unable to match a printer suitable for the output format \"%s\", "
                               "allowed formats are: json,yaml", outf);
    ctl_init_display();
    if (*encf)
        k8s_crypt_load(encf);
    size_t cnt;
    const char *res = argv[0];
    /* accept "deployments.apps" as well as "deployments" */
    char base[128];
    snprintf(base, sizeof base, "%s", res);
    char *dot = strchr(base, '.');
    if (dot)
        *dot = 0;
    struct obj *v = load(base, ns, &cnt);
    if (n == 1)
        return show_list(v, cnt, outf);
    for (size_t i = 0; i < cnt; i++)
        if (!strcmp(v[i].name, argv[1])) {
            if (*outf) {
                char why[1024];
                json_t *j = obj_json(&v[i], why, sizeof why);
                if (!j)
                    ctl_die(EXIT_ERR, "%s", why);
                print_fmt(j, outf);
                json_decref(j);
                return 0;
            }
            if (!strncmp(v[i].enc, "encrypted", 9) && k8s_crypt_nkeys()) {
                char why[512];
                size_t pn;
                uint8_t *plain;
                const uint8_t *pv = plain_value(&v[i], &pn, &plain, why, sizeof why);
                if (!pv)
                    ctl_die(EXIT_ERR, "%s: %s", v[i].key, why);
                printf("encrypted: %s\n", v[i].enc + 10);
                struct obj d = v[i];
                d.val = pv;
                d.len = pn;
                classify_value(&d);
                show_value(&d);
                free(plain);
                return 0;
            }
            show_value(&v[i]);
            return 0;
        }
    ctl_die(EXIT_ERR, "%s \"%s\" not found%s%s", res, argv[1], *ns ? " in namespace " : "", ns);
}

static int k8s_secrets(int argc, char **argv)
{
    bool audit = false;
    const char *encf = "";
    struct flag fl[] = {{"audit", 0, F_BOOL, &audit, false},
                        {"encryption-config", 0, F_STR, &encf, false}, FEND};
    ctl_parse(argc, argv, fl);
    ctl_init_display();
    if (*encf)
        k8s_crypt_load(encf);
    size_t cnt;
    struct obj *v = load("secrets", NULL, &cnt);
    static const char *const hdr[] = {"NAMESPACE", "NAME", "STORED", "PROVIDER", "KEY", "DECRYPTS"};
    size_t ncol = *encf ? 6 : 5;
    char ***rows = calloc(cnt + 1, sizeof *rows);
    size_t plain = 0, bad = 0;
    for (size_t i = 0; i < cnt; i++) {
        rows[i] = calloc(6, sizeof(char *));
        rows[i][0] = v[i].ns;
        rows[i][1] = v[i].name;
        if (!strncmp(v[i].enc, "encrypted:", 10)) {
            char *prov = strdup(v[i].enc + 10), *key = strchr(prov, ':');
            if (key)
                *key++ = 0;
            rows[i][2] = "encrypted";
            rows[i][3] = prov;
            rows[i][4] = key ? key : "-";
            if (*encf) {
                char why[512];
                size_t pn;
                uint8_t *p;
                if (plain_value(&v[i], &pn, &p, why, sizeof why)) {
                    rows[i][5] = "yes";
                    free(p);
                } else {
                    rows[i][5] = fmt_str("no: %s", why);
                    bad++;
                }
            }
        } else {
            rows[i][2] = "plain";
            rows[i][3] = strdup(v[i].enc);
            rows[i][4] = "-";
            rows[i][5] = "-";
            plain++;
        }
    }
    plain_table(hdr, ncol, rows, cnt);
    if (audit) {
        printf("\n%zu secrets: %zu plain, %zu encrypted\n", cnt, plain, cnt - plain);
        if (*encf)
            printf("%zu encrypted secrets do not decrypt with the given keys\n", bad);
        if (plain)
            printf("WARNING: %zu secrets are stored in plain text: configure encryption at rest "
                   "(EncryptionConfiguration) and rewrite them\n", plain);
    }
    return 0;
}

int cmd_k8s(int argc, char **argv)
{
    if (argc < 1)
        ctl_die(EXIT_BAD_ARGS, "k8s <subcommand>: ls [resource] [-n ns], summary, get <resource> <name> [-n ns] [-o json|yaml] [--encryption-config FILE], secrets [--audit], watch [resource] [-n ns], seed");
    const char *sub = argv[0];
    if (!strcmp(sub, "ls"))
        return k8s_ls(argc - 1, argv + 1);
    if (!strcmp(sub, "summary"))
        return k8s_summary(argc - 1, argv + 1);
    if (!strcmp(sub, "get"))
        return k8s_get(argc - 1, argv + 1);
    if (!strcmp(sub, "secrets"))
        return k8s_secrets(argc - 1, argv + 1);
    if (!strcmp(sub, "watch"))
        return k8s_watch(argc - 1, argv + 1);
    if (!strcmp(sub, "seed"))
        return k8s_seed(argc - 1, argv + 1);
    ctl_die(EXIT_BAD_ARGS, "unknown k8s subcommand \"%s\"", sub);
}

/* For watch: the parts of one key. */
void k8s_key_parts(const char *key, char *res, size_t rcap, char *ns, size_t ncap, char *name,
                   size_t mcap)
{
    struct obj o = {.key = (char *)key, .val = (const uint8_t *)"", .len = 0};
    classify(&o);
    char rb[300];
    snprintf(res, rcap, "%s", res_display(&o, rb, sizeof rb));
    snprintf(ns, ncap, "%s", o.ns);
    snprintf(name, mcap, "%s", o.name);
}
