/* get, put, del, txn, compaction (etcdctl's get_command.go, put_command.go,
 * del_command.go, txn_command.go, compaction_command.go). */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

#define FEND {NULL, 0, 0, NULL, false}

static ProtobufCBinaryData bin(const char *s)
{
    return (ProtobufCBinaryData){strlen(s), (uint8_t *)s};
}

/* clientv3.GetPrefixRangeEnd: the key after the last byte below 0xff is
 * incremented; all 0xff gives "\0" (the whole keyspace from key). */
char *prefix_end(const uint8_t *k, size_t n, size_t *out_len)
{
    char *e = malloc(n + 1);
    if (n) memcpy(e, k, n);
    for (size_t i = n; i-- > 0;) {
        if ((uint8_t)e[i] < 0xff) {
            e[i]++;
            *out_len = i + 1;
            return e;
        }
    }
    e[0] = 0;
    *out_len = 1;
    return e;
}

char *prefix_range(const char *key, ProtobufCBinaryData *k, ProtobufCBinaryData *end)
{
    if (!*key) {
        *k = (ProtobufCBinaryData){1, (uint8_t *)"\0"};
        *end = (ProtobufCBinaryData){1, (uint8_t *)"\0"};
        return NULL;
    }
    size_t l;
    char *e = prefix_end((const uint8_t *)key, strlen(key), &l);
    *k = (ProtobufCBinaryData){strlen(key), (uint8_t *)key};
    *end = (ProtobufCBinaryData){l, (uint8_t *)e};
    return e;
}


/* ---- get ---- */

static int get_op(int argc, char **argv, Etcdserverpb__RangeRequest *rr, bool *value_only)
{
    const char *consistency = "l", *order = "", *sort_by = "";
    int64_t limit = 0, rev = 0;
    bool prefix = false, from_key = false, keys_only = false, count_only = false, vo = false;
    struct flag fl[] = {
        {"consistency", 0, F_STR, &consistency, false},
        {"order", 0, F_STR, &order, false},
        {"sort-by", 0, F_STR, &sort_by, false},
        {"limit", 0, F_INT, &limit, false},
        {"prefix", 0, F_BOOL, &prefix, false},
        {"from-key", 0, F_BOOL, &from_key, false},
        {"rev", 0, F_INT, &rev, false},
        {"keys-only", 0, F_BOOL, &keys_only, false},
        {"count-only", 0, F_BOOL, &count_only, false},
        {"print-value-only", 0, F_BOOL, &vo, false},
        FEND,
    };
    int n = flags_no_global ? flags_parse(argc, argv, fl) : ctl_parse(argc, argv, fl);
    if (n < 0)
        return -1;
    if (value_only)
        *value_only = vo;
    if (n == 0)
        ctl_die(EXIT_BAD_ARGS, "get command needs one argument as key and an optional argument as range_end");
    if (prefix && from_key)
        ctl_die(EXIT_BAD_ARGS, "`--prefix` and `--from-key` cannot be set at the same time, choose one");
    etcdserverpb__range_request__init(rr);
    if (!strcmp(consistency, "s"))
        rr->serializable = true;
    else if (strcmp(consistency, "l"))
        ctl_die(EXIT_BAD_FEATURE, "unknown consistency flag \"%s\"", consistency);
    const char *key = argv[0];
    if (n > 1) {
        if (prefix || from_key)
            ctl_die(EXIT_BAD_ARGS, "too many arguments, only accept one argument when `--prefix` or `--from-key` is set");
        rr->range_end = bin(argv[1]);
    }
    rr->limit = limit;
    if (rev > 0)
        rr->revision = rev;
    char up[64];
    snprintf(up, sizeof up, "%s", order);
    for (char *p = up; *p; p++)
        *p = (char)toupper((unsigned char)*p);
    int so = 0;
    if (!strcmp(up, "ASCEND"))
        so = 1;
    else if (!strcmp(up, "DESCEND"))
        so = 2;
    else if (*up)
        ctl_die(EXIT_BAD_FEATURE, "bad sort order %s", order);
    snprintf(up, sizeof up, "%s", sort_by);
    for (char *p = up; *p; p++)
        *p = (char)toupper((unsigned char)*p);
    int st = 0;
    if (!strcmp(up, "CREATE"))
        st = 2;
    else if (!strcmp(up, "KEY"))
        st = 0;
    else if (!strcmp(up, "MODIFY"))
        st = 3;
    else if (!strcmp(up, "VALUE"))
        st = 4;
    else if (!strcmp(up, "VERSION"))
        st = 1;
    else if (*up)
        ctl_die(EXIT_BAD_FEATURE, "bad sort target %s", sort_by);
    if (st == 0 && so == 1)
        so = 0; /* clientv3.WithSort: keys come sorted ascending anyway */
    rr->sort_order = so;
    rr->sort_target = st;
    rr->key = bin(key);
    if (prefix)
        prefix_range(key, &rr->key, &rr->range_end);
    if (from_key) {
        if (!*key)
            rr->key = (ProtobufCBinaryData){1, (uint8_t *)"\0"};
        rr->range_end = (ProtobufCBinaryData){1, (uint8_t *)"\0"};
    }
    if (keys_only)
        rr->keys_only = true;
    if (count_only) {
        /* etcdctl 3.5 */
        if (keys_only)
            ctl_die(EXIT_BAD_ARGS, "`--keys-only` and `--count-only` cannot be set at the same time, choose one");
        rr->count_only = true;
    }
    return 0;
}

int cmd_get(int argc, char **argv)
{
    Etcdserverpb__RangeRequest rr;
    bool vo = false;
    get_op(argc, argv, &rr, &vo);
    ctl_init_display();
    if (rr.count_only && g.out != OUT_FIELDS)
        ctl_die(EXIT_BAD_ARGS, "--count-only is only for `--write-out=fields`");
    ProtobufCMessage *m =
        ctl_rpc("/etcdserverpb.KV/Range", &rr.base, &etcdserverpb__range_response__descriptor);
    if (vo) {
        if (g.out != OUT_SIMPLE)
            ctl_die(EXIT_BAD_ARGS, "print-value-only is only for `--write-out=simple`");
        g.value_only = true;
    }
    print_get((Etcdserverpb__RangeResponse *)m);
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}

/* ---- put ---- */

static int put_op(int argc, char **argv, Etcdserverpb__PutRequest *pr)
{
    const char *lease = "0";
    bool prev = false, ign_val = false, ign_lease = false;
    struct flag fl[] = {
        {"lease", 0, F_STR, &lease, false},
        {"prev-kv", 0, F_BOOL, &prev, false},
        {"ignore-value", 0, F_BOOL, &ign_val, false},
        {"ignore-lease", 0, F_BOOL, &ign_lease, false},
        FEND,
    };
    int n = flags_no_global ? flags_parse(argc, argv, fl) : ctl_parse(argc, argv, fl);
    if (n < 0)
        return -1;
    if (n == 0)
        ctl_die(EXIT_BAD_ARGS, "put command needs 1 argument and input from stdin or 2 arguments");
    etcdserverpb__put_request__init(pr);
    pr->key = bin(argv[0]);
    if (ign_val && n > 1)
        ctl_die(EXIT_BAD_ARGS, "put command needs only 1 argument when 'ignore-value' is set");
    if (!ign_val) {
        if (n > 1) {
            pr->value = bin(argv[1]);
        } else {
            size_t len;
            char *v = ctl_read_stdin(&len);
            if (!len)
                ctl_die(EXIT_BAD_ARGS, "put command needs 1 argument and input from stdin or 2 arguments");
            pr->value = (ProtobufCBinaryData){len, (uint8_t *)v};
        }
    }
    char *end;
    errno = 0;
    long long id = strtoll(lease, &end, 16);
    if (!*lease || *end || errno) {
        ctl_die(EXIT_BAD_ARGS, "bad lease ID (strconv.ParseInt: parsing \"%s\": %s), expecting ID in Hex",
                lease, errno ? "value out of range" : "invalid syntax");
    }
    pr->lease = id;
    pr->prev_kv = prev;
    pr->ignore_value = ign_val;
    pr->ignore_lease = ign_lease;
    return 0;
}

int cmd_put(int argc, char **argv)
{
    Etcdserverpb__PutRequest pr;
    put_op(argc, argv, &pr);
    ctl_init_display();
    ProtobufCMessage *m =
        ctl_rpc("/etcdserverpb.KV/Put", &pr.base, &etcdserverpb__put_response__descriptor);
    print_put((Etcdserverpb__PutResponse *)m);
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}

/* ---- del ---- */

static int del_op(int argc, char **argv, Etcdserverpb__DeleteRangeRequest *dr)
{
    bool prefix = false, prev = false, from_key = false;
    struct flag fl[] = {
        {"prefix", 0, F_BOOL, &prefix, false},
        {"prev-kv", 0, F_BOOL, &prev, false},
        {"from-key", 0, F_BOOL, &from_key, false},
        FEND,
    };
    int n = flags_no_global ? flags_parse(argc, argv, fl) : ctl_parse(argc, argv, fl);
    if (n < 0)
        return -1;
    if (n == 0 || n > 2)
        ctl_die(EXIT_BAD_ARGS, "del command needs one argument as key and an optional argument as range_end");
    if (prefix && from_key)
        ctl_die(EXIT_BAD_ARGS, "`--prefix` and `--from-key` cannot be set at the same time, choose one");
    etcdserverpb__delete_range_request__init(dr);
    const char *key = argv[0];
    dr->key = bin(key);
    if (n > 1) {
        if (prefix || from_key)
            ctl_die(EXIT_BAD_ARGS, "too many arguments, only accept one argument when `--prefix` or `--from-key` is set");
        dr->range_end = bin(argv[1]);
    }
    if (prefix)
        prefix_range(key, &dr->key, &dr->range_end);
    dr->prev_kv = prev;
    if (from_key) {
        if (!*key)
            dr->key = (ProtobufCBinaryData){1, (uint8_t *)"\0"};
        dr->range_end = (ProtobufCBinaryData){1, (uint8_t *)"\0"};
    }
    return 0;
}

int cmd_del(int argc, char **argv)
{
    Etcdserverpb__DeleteRangeRequest dr;
    del_op(argc, argv, &dr);
    ctl_init_display();
    ProtobufCMessage *m = ctl_rpc("/etcdserverpb.KV/DeleteRange", &dr.base,
                                  &etcdserverpb__delete_range_response__descriptor);
    print_del((Etcdserverpb__DeleteRangeResponse *)m);
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}

int kv_parse_op(int argc, char **argv, Etcdserverpb__RequestOp *op)
{
    etcdserverpb__request_op__init(op);
    if (argc < 1)
        return -1;
    if (!strcmp(argv[0], "get")) {
        Etcdserverpb__RangeRequest *r = malloc(sizeof *r);
        if (get_op(argc - 1, argv + 1, r, NULL) < 0)
            return -1;
        op->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
        op->request_range = r;
    } else if (!strcmp(argv[0], "put")) {
        Etcdserverpb__PutRequest *r = malloc(sizeof *r);
        if (put_op(argc - 1, argv + 1, r) < 0)
            return -1;
        op->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
        op->request_put = r;
    } else if (!strcmp(argv[0], "del")) {
        Etcdserverpb__DeleteRangeRequest *r = malloc(sizeof *r);
        if (del_op(argc - 1, argv + 1, r) < 0)
            return -1;
        op->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
        op->request_delete_range = r;
    } else {
        return -1;
    }
    return 0;
}

/* ---- txn ---- */

/* fmt.Sscanf's %q: a Go double-quoted (with escapes) or back-quoted string. */
static const char *scan_quoted(const char *p, struct buf *out)
{
    while (isspace((unsigned char)*p))
        p++;
    if (*p == '`') {
        const char *e = strchr(p + 1, '`');
        if (!e)
            return NULL;
        buf_put(out, p + 1, (size_t)(e - p - 1));
        return e + 1;
    }
    if (*p != '"')
        return NULL;
    for (p++; *p && *p != '"'; p++) {
        if (*p != '\\') {
            buf_put(out, p, 1);
            continue;
        }
        p++;
        char c;
        switch (*p) {
        case 'n': c = '\n'; break;
        case 't': c = '\t'; break;
        case 'r': c = '\r'; break;
        case 'a': c = '\a'; break;
        case 'b': c = '\b'; break;
        case 'f': c = '\f'; break;
        case 'v': c = '\v'; break;
        case '\\': c = '\\'; break;
        case '"': c = '"'; break;
        case '\'': c = '\''; break;
        case 'x': {
            char h[3] = {p[1], p[2], 0};
            if (!isxdigit((unsigned char)h[0]) || !isxdigit((unsigned char)h[1]))
                return NULL;
            c = (char)strtol(h, NULL, 16);
            p += 2;
            break;
        }
        default:
            return NULL;
        }
        buf_put(out, &c, 1);
    }
    if (*p != '"')
        return NULL;
    buf_put(out, "", 0);
    return p + 1;
}

static Etcdserverpb__Compare *parse_compare(const char *line)
{
    const char *lp = strchr(line, '(');
    if (!lp)
        ctl_die(EXIT_INVALID_INPUT, "malformed comparison: %s", line);
    char target[64];
    snprintf(target, sizeof target, "%.*s", (int)(lp - line), line);
    struct buf key = {0}, val = {0};
    buf_put(&key, "", 0);
    buf_put(&val, "", 0);
    const char *p = scan_quoted(lp + 1, &key);
    char op[16] = "";
    if (p && *p == ')') {
        p++;
        while (isspace((unsigned char)*p))
            p++;
        size_t n = 0;
        while (*p && !isspace((unsigned char)*p) && n + 1 < sizeof op)
            op[n++] = *p++;
        op[n] = 0;
        p = n ? scan_quoted(p, &val) : NULL;
    } else {
        p = NULL;
    }
    if (!p)
        ctl_die(EXIT_INVALID_INPUT, "malformed comparison: %s", line);
    Etcdserverpb__Compare *c = malloc(sizeof *c);
    etcdserverpb__compare__init(c);
    c->key = (ProtobufCBinaryData){key.len, (uint8_t *)key.p};
    if (!strcmp(op, "="))
        c->result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL;
    else if (!strcmp(op, "!="))
        c->result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__NOT_EQUAL;
    else if (!strcmp(op, ">"))
        c->result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__GREATER;
    else if (!strcmp(op, "<"))
        c->result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__LESS;
    else
        ctl_die(EXIT_INVALID_INPUT, "malformed comparison: %s (unknown op %s)", line, op);
    bool num = true;
    char *end;
    errno = 0;
    long long v = 0;
    if (!strcmp(target, "value") || !strcmp(target, "val")) {
        num = false;
        c->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE;
        c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE;
        c->value = (ProtobufCBinaryData){val.len, (uint8_t *)val.p};
    } else if (!strcmp(target, "lease")) {
        /* etcdctl 3.4 panics here; 3.5 compares the key's lease (hex ID) */
        v = strtoll(val.p, &end, 16);
        if (!*val.p || *end || errno)
            ctl_die(EXIT_INVALID_INPUT, "invalid txn compare request: %s", line);
        c->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__LEASE;
        c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_LEASE;
        c->lease = v;
        num = false;
    } else if (!strcmp(target, "ver") || !strcmp(target, "version")) {
        c->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__VERSION;
        c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VERSION;
    } else if (!strcmp(target, "c") || !strcmp(target, "create")) {
        c->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE;
        c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION;
    } else if (!strcmp(target, "m") || !strcmp(target, "mod")) {
        c->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD;
        c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
    } else {
        ctl_die(EXIT_INVALID_INPUT, "malformed comparison: %s (unknown target %s)", line, target);
    }
    if (num) {
        v = strtoll(val.p, &end, 10);
        if (!*val.p || *end || errno)
            ctl_die(EXIT_INVALID_INPUT, "invalid txn compare request: %s", line);
        c->version = v; /* the union's int64 members share storage */
        c->create_revision = v;
        c->mod_revision = v;
    }
    return c;
}

/* etcdctl's argify: "double quoted" (Go escapes), 'single quoted', words. */
static int argify(const char *s, char **out, int max)
{
    int n = 0;
    const char *p = s;
    while (*p && n < max) {
        while (isspace((unsigned char)*p))
            p++;
        if (!*p)
            break;
        if (*p == '"') {
            struct buf b = {0};
            buf_put(&b, "", 0);
            const char *e = scan_quoted(p, &b);
            if (!e)
                ctl_die(EXIT_INVALID_INPUT, "unexpected EOF");
            out[n++] = b.p;
            p = e;
        } else if (*p == '\'') {
            const char *e = strchr(p + 1, '\'');
            if (!e)
                e = p + strlen(p);
            out[n++] = strndup(p + 1, (size_t)(e - p - 1));
            p = *e ? e + 1 : e;
        } else {
            const char *e = p;
            while (*e && !isspace((unsigned char)*e))
                e++;
            out[n++] = strndup(p, (size_t)(e - p));
            p = e;
        }
    }
    return n;
}

/* bufio.Reader.ReadString('\n') + TrimSpace; EOF is an error (etcdctl). */
static char *read_line(void)
{
    struct buf b = {0};
    int c;
    while ((c = getchar()) != EOF) {
        char ch = (char)c;
        buf_put(&b, &ch, 1);
        if (c == '\n')
            break;
    }
    if (c == EOF)
        ctl_die(EXIT_INVALID_INPUT, "EOF");
    char *s = b.p, *e = s + b.len;
    while (s < e && isspace((unsigned char)*s))
        s++;
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = 0;
    return s;
}

static Etcdserverpb__RequestOp **read_ops(size_t *n)
{
    Etcdserverpb__RequestOp **ops = NULL;
    *n = 0;
    for (;;) {
        char *line = read_line();
        if (!*line)
            break;
        char *args[256];
        int na = argify(line, args, 256);
        if (na < 2)
            ctl_die(EXIT_INVALID_INPUT, "invalid txn compare request: %s", line);
        Etcdserverpb__RequestOp *op = malloc(sizeof *op);
        flags_no_global = flags_soft = true;
        int rc = kv_parse_op(na, args, op);
        flags_no_global = flags_soft = false;
        if (rc < 0)
            ctl_die(EXIT_INVALID_INPUT, "invalid txn request: %s", line);
        ops = realloc(ops, (*n + 1) * sizeof *ops);
        ops[(*n)++] = op;
    }
    return ops;
}

int cmd_txn(int argc, char **argv)
{
    bool interactive = false;
    struct flag fl[] = {{"interactive", 'i', F_BOOL, &interactive, false}, FEND};
    int n = ctl_parse(argc, argv, fl);
    if (n != 0)
        ctl_die(EXIT_BAD_ARGS, "txn command does not accept argument");
    ctl_init_display();
    Etcdserverpb__TxnRequest tr = ETCDSERVERPB__TXN_REQUEST__INIT;
    if (interactive) {
        puts("compares:");
        fflush(stdout);
    }
    for (;;) {
        char *line = read_line();
        if (!*line)
            break;
        tr.compare = realloc(tr.compare, (tr.n_compare + 1) * sizeof *tr.compare);
        tr.compare[tr.n_compare++] = parse_compare(line);
    }
    if (interactive) {
        puts("success requests (get, put, del):");
        fflush(stdout);
    }
    tr.success = read_ops(&tr.n_success);
    if (interactive) {
        puts("failure requests (get, put, del):");
        fflush(stdout);
    }
    tr.failure = read_ops(&tr.n_failure);
    ProtobufCMessage *m =
        ctl_rpc("/etcdserverpb.KV/Txn", &tr.base, &etcdserverpb__txn_response__descriptor);
    print_txn((Etcdserverpb__TxnResponse *)m);
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}

/* ---- compaction ---- */

int cmd_compaction(int argc, char **argv)
{
    bool physical = false;
    struct flag fl[] = {{"physical", 0, F_BOOL, &physical, false}, FEND};
    int n = ctl_parse(argc, argv, fl);
    if (n != 1)
        ctl_die(EXIT_BAD_ARGS, "compaction command needs 1 argument");
    char *end;
    errno = 0;
    long long rev = strtoll(argv[0], &end, 10);
    if (!*argv[0] || *end || errno)
        ctl_die(EXIT_ERR, "strconv.ParseInt: parsing \"%s\": %s", argv[0],
                errno ? "value out of range" : "invalid syntax");
    ctl_init_display();
    Etcdserverpb__CompactionRequest cr = ETCDSERVERPB__COMPACTION_REQUEST__INIT;
    cr.revision = rev;
    cr.physical = physical;
    protobuf_c_message_free_unpacked(ctl_rpc("/etcdserverpb.KV/Compact", &cr.base,
                                             &etcdserverpb__compaction_response__descriptor),
                                     NULL);
    printf("compacted revision %lld\n", rev);
    return 0;
}
