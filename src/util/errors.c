#include "util/errors.h"

#include <ctype.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

struct kerr_entry {
    enum grpc_status status;
    const char *text;
};

static const struct kerr_entry table[] = {
#define X(name, status, text) [name - KERR_FIRST_ - 1] = {status, text},
    KERR_TABLE(X)
#undef X
};

static const struct kerr_entry *lookup(int code)
{
    if (code <= KERR_FIRST_ || code >= KERR_LAST_) return NULL;
    return &table[code - KERR_FIRST_ - 1];
}

const char *kerr_text(int code)
{
    const struct kerr_entry *e = lookup(code);
    return e ? e->text : "ketch: unknown error";
}

enum grpc_status kerr_grpc_status(int code)
{
    const struct kerr_entry *e = lookup(code);
    return e ? e->status : GRPC_UNKNOWN;
}

const char *errno_text_go(char *dst, size_t n, int e)
{
    snprintf(dst, n, "%s", strerror(e));
    if (dst[0]) dst[0] = (char)tolower((unsigned char)dst[0]);
    return dst;
}
