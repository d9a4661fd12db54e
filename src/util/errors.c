#include "util/errors.h"

#include <stddef.h>

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
