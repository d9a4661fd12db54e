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
