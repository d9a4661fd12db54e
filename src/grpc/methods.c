/* The method table: an open-addressing hash from path to method, and the
 * UNIMPLEMENTED texts grpc-go sends for paths it does not know
 * (google.golang.org/grpc server.go handleStream). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/grpc_int.h"
#include "util/errors.h"

static uint32_t hash(const char *p, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < len; i++) h = (h ^ (uint8_t)p[i]) * 16777619u;
    return h;
}

int grpc_methods_init(struct grpc_method_table *t, const grpc_method *methods, size_t n)
{
    size_t nslots = 16;
    while (nslots < n * 2) nslots *= 2;
    t->slots = calloc(nslots, sizeof *t->slots);
    if (!t->slots) return KERR_NOMEM;
    t->nslots = nslots;
    t->methods = methods;
    t->n = n;
    for (size_t i = 0; i < n; i++) {
        size_t j = hash(methods[i].path, strlen(methods[i].path)) & (nslots - 1);
        while (t->slots[j]) j = (j + 1) & (nslots - 1);
        t->slots[j] = (uint32_t)i + 1;
    }
    return 0;
}

void grpc_methods_free(struct grpc_method_table *t)
{
    free(t->slots);
    t->slots = NULL;
}

const grpc_method *grpc_methods_find(const struct grpc_method_table *t, const char *path, size_t len)
{
    size_t j = hash(path, len) & (t->nslots - 1);
    while (t->slots[j]) {
        const grpc_method *m = &t->methods[t->slots[j] - 1];
        if (strncmp(m->path, path, len) == 0 && m->path[len] == '\0') return m;
        j = (j + 1) & (t->nslots - 1);
    }
    return NULL;
}

/* As grpc-go: "/svc/method" → "unknown service svc" when no method of svc is
 * registered, else "unknown method method for service svc"; a path without
 * a second '/' is "malformed method name: \"path\"". */
void grpc_methods_unknown_text(const struct grpc_method_table *t, const char *path, char *buf,
                          size_t size)
{
    const char *sm = path[0] == '/' ? path + 1 : path;
    const char *slash = strrchr(sm, '/');
    if (!slash) {
        snprintf(buf, size, "malformed method name: \"%s\"", path);
        return;
    }
    size_t svc_len = (size_t)(slash - sm);
    for (size_t i = 0; i < t->n; i++) {
        const char *p = t->methods[i].path;
        if (p[0] == '/') p++;
        if (strncmp(p, sm, svc_len) == 0 && p[svc_len] == '/') {
            snprintf(buf, size, "unknown method %s for service %.*s", slash + 1, (int)svc_len,
                     sm);
            return;
        }
    }
    snprintf(buf, size, "unknown service %.*s", (int)svc_len, sm);
}

/* grpc-go's codes.Code names, as grpc-prometheus labels them. */
static const char *const code_names[17] = {
    "OK",          "Canceled",          "Unknown",      "InvalidArgument", "DeadlineExceeded",
    "NotFound",    "AlreadyExists",     "PermissionDenied", "ResourceExhausted",
    "FailedPrecondition", "Aborted",    "OutOfRange",   "Unimplemented",   "Internal",
    "Unavailable", "DataLoss",          "Unauthenticated"};

/* "/etcdserverpb.KV/Range" → service "etcdserverpb.KV", method "Range". */
static void split_path(const char *path, const char **svc, int *svc_len, const char **m)
{
    const char *p = path[0] == '/' ? path + 1 : path;
    const char *slash = strchr(p, '/');
    *svc = p;
    *svc_len = slash ? (int)(slash - p) : (int)strlen(p);
    *m = slash ? slash + 1 : "";
}

void grpc_server_write_metrics(grpc_server *s, FILE *out)
{
    const struct grpc_method_table *t = &s->table;
    /* As grpc-prometheus after InitializeMetrics: every method and code,
     * zeros included, so rates work from the first scrape. */
    fprintf(out, "# HELP grpc_server_handled_total Total number of RPCs completed on the server, "
                 "regardless of success or failure.\n# TYPE grpc_server_handled_total counter\n");
    for (size_t i = 0; i < t->n; i++) {
        const char *svc, *m;
        int sl;
        split_path(t->methods[i].path, &svc, &sl, &m);
        const char *type = t->methods[i].kind == GRPC_STREAM ? "bidi_stream" : "unary";
        for (int c = 0; c < 17; c++)
            fprintf(out,
                    "grpc_server_handled_total{grpc_code=\"%s\",grpc_method=\"%s\","
                    "grpc_service=\"%.*s\",grpc_type=\"%s\"} %llu\n",
                    code_names[c], m, sl, svc, type, (unsigned long long)s->handled[i][c]);
    }
    fprintf(out, "# HELP grpc_server_started_total Total number of RPCs started on the server.\n"
                 "# TYPE grpc_server_started_total counter\n");
    for (size_t i = 0; i < t->n; i++) {
        const char *svc, *m;
        int sl;
        split_path(t->methods[i].path, &svc, &sl, &m);
        fprintf(out,
                "grpc_server_started_total{grpc_method=\"%s\",grpc_service=\"%.*s\","
                "grpc_type=\"%s\"} %llu\n",
                m, sl, svc, t->methods[i].kind == GRPC_STREAM ? "bidi_stream" : "unary",
                (unsigned long long)s->started[i]);
    }
}
