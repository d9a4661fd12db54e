/* ketchctl: global flags (etcdctl's ctl.go), ETCDCTL_* environment
 * variables, and the command table. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

struct ctl_global g;
static const char *out_str = "simple";
static const char *endpoints_str = "127.0.0.1:2379";
static bool g_debug, g_insecure_discovery = true;
static int64_t g_keepalive_time = 2000, g_keepalive_timeout = 6000;
static const char *g_discovery_srv = "", *g_discovery_srv_name = "";
bool flags_no_global;  /* txn ops: only the command's own flags */
bool flags_soft;       /* txn ops: return -1 instead of exiting */

static struct flag global_flags[] = {
    {"endpoints", 0, F_STR, &endpoints_str, false},
    {"debug", 0, F_BOOL, &g_debug, false},
    {"write-out", 'w', F_STR, &out_str, false},
    {"hex", 0, F_BOOL, &g.hex, false},
    {"dial-timeout", 0, F_DUR, &g.dial_timeout_ms, false},
    {"command-timeout", 0, F_DUR, &g.command_timeout_ms, false},
    {"keepalive-time", 0, F_DUR, &g_keepalive_time, false},
    {"keepalive-timeout", 0, F_DUR, &g_keepalive_timeout, false},
    {"insecure-transport", 0, F_BOOL, &g.insecure_transport, false},
    {"insecure-discovery", 0, F_BOOL, &g_insecure_discovery, false},
    {"insecure-skip-tls-verify", 0, F_BOOL, &g.skip_verify, false},
    {"cert", 0, F_STR, &g.cert, false},
    {"key", 0, F_STR, &g.key, false},
    {"cacert", 0, F_STR, &g.cacert, false},
    {"user", 0, F_STR, &g.user, false},
    {"password", 0, F_STR, &g.password, false},
    {"discovery-srv", 'd', F_STR, &g_discovery_srv, false},
    {"discovery-srv-name", 0, F_STR, &g_discovery_srv_name, false},
    {NULL, 0, 0, NULL, false},
};

_Noreturn void ctl_die(int code, const char *fmt, ...)
{
    fflush(stdout);
    va_list ap;
    va_start(ap, fmt);
    fputs("Error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs("\n", stderr);
    va_end(ap);
    exit(code);
}

static int flag_fail(const char *fmt, const char *a, const char *b)
{
    if (flags_soft)
        return -1;
    fflush(stdout);
    fputs("Error: ", stderr);
    fprintf(stderr, fmt, a, b);
    fputs("\n", stderr);
    exit(EXIT_ERR);
}

/* Sets one flag from its text value (pflag's parsing). */
static int flag_set(struct flag *f, const char *v, const char *shown)
{
    char err[512];
    switch (f->type) {
    case F_BOOL:
        if (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "t") || !strcmp(v, "T") ||
            !strcmp(v, "TRUE") || !strcmp(v, "True"))
            *(bool *)f->ptr = true;
        else if (!strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "f") || !strcmp(v, "F") ||
                 !strcmp(v, "FALSE") || !strcmp(v, "False"))
            *(bool *)f->ptr = false;
        else {
            snprintf(err, sizeof err, "strconv.ParseBool: parsing \"%s\": invalid syntax", v);
            char m[700];
            snprintf(m, sizeof m, "invalid argument \"%s\" for \"%s\" flag: %%s", v, shown);
            return flag_fail(m, err, "");
        }
        break;
    case F_STR:
        *(const char **)f->ptr = v;
        break;
    case F_INT: {
        char *end;
        errno = 0;
        long long x = strtoll(v, &end, 0);
        if (!*v || *end || errno) {
            snprintf(err, sizeof err, "strconv.ParseInt: parsing \"%s\": %s", v,
                     errno ? "value out of range" : "invalid syntax");
            char m[700];
            snprintf(m, sizeof m, "invalid argument \"%s\" for \"%s\" flag: %%s", v, shown);
            return flag_fail(m, err, "");
        }
        *(int64_t *)f->ptr = x;
        break;
    }
    case F_DUR:
        if (!parse_duration(v, (int64_t *)f->ptr)) {
            snprintf(err, sizeof err, "time: invalid duration \"%s\"", v);
            char m[700];
            snprintf(m, sizeof m, "invalid argument \"%s\" for \"%s\" flag: %%s", v, shown);
            return flag_fail(m, err, "");
        }
        break;
    }
    f->set = true;
    return 0;
}

static struct flag *find_long(struct flag *flags, const char *name, size_t n)
{
    for (int pass = 0; pass < 2; pass++) {
        struct flag *t = pass ? (flags_no_global ? NULL : global_flags) : flags;
        for (; t && t->name; t++)
            if (strlen(t->name) == n && !strncmp(t->name, name, n))
                return t;
    }
    return NULL;
}

static struct flag *find_short(struct flag *flags, char c)
{
    for (int pass = 0; pass < 2; pass++) {
        struct flag *t = pass ? (flags_no_global ? NULL : global_flags) : flags;
        for (; t && t->name; t++)
            if (t->shorthand == c)
                return t;
    }
    return NULL;
}

int flags_parse(int argc, char **argv, struct flag *flags)
{
    int npos = 0;
    char **pos = calloc((size_t)argc + 1, sizeof *pos);
    for (int i = 0; i < argc; i++) {
        char *a = argv[i];
        if (!strcmp(a, "--")) {
            for (i++; i < argc; i++)
                pos[npos++] = argv[i];
            break;
        }
        if (a[0] == '-' && a[1] == '-' && a[2]) {
            char *name = a + 2, *eq = strchr(name, '=');
            size_t n = eq ? (size_t)(eq - name) : strlen(name);
            struct flag *f = find_long(flags, name, n);
            char shown[256];
            snprintf(shown, sizeof shown, "--%.*s", (int)n, name);
            if (!f) {
                free(pos);
                return flag_fail("unknown flag: %s%s", shown, "");
            }
            const char *v;
            if (eq)
                v = eq + 1;
            else if (f->type == F_BOOL)
                v = "true";
            else if (i + 1 < argc)
                v = argv[++i];
            else {
                free(pos);
                return flag_fail("flag needs an argument: %s%s", shown, "");
            }
            if (flag_set(f, v, shown) < 0) {
                free(pos);
                return -1;
            }
        } else if (a[0] == '-' && a[1] && a[1] != '-') {
            for (char *c = a + 1; *c; c++) {
                struct flag *f = find_short(flags, *c);
                char shown[64];
                snprintf(shown, sizeof shown, "-%c", *c);
                if (!f) {
                    char m[128];
                    snprintf(m, sizeof m, "unknown shorthand flag: '%c' in %%s%%s", *c);
                    free(pos);
                    return flag_fail(m, a, "");
                }
                if (f->type == F_BOOL) {
                    if (flag_set(f, c[1] == '=' ? c + 2 : "true", shown) < 0) {
                        free(pos);
                        return -1;
                    }
                    if (c[1] == '=')
                        break;
                    continue;
                }
                const char *v = c[1] ? (c[1] == '=' ? c + 2 : c + 1) : (i + 1 < argc ? argv[++i] : NULL);
                if (!v) {
                    char m[128];
                    snprintf(m, sizeof m, "flag needs an argument: '%c' in %%s%%s", *c);
                    free(pos);
                    return flag_fail(m, a, "");
                }
                if (flag_set(f, v, shown) < 0) {
                    free(pos);
                    return -1;
                }
                break;
            }
        } else {
            pos[npos++] = a;
        }
    }
    if (npos) memcpy(argv, pos, (size_t)npos * sizeof *argv);
    free(pos);
    return npos;
}

/* etcdctl's flags.SetPflagsFromEnv: ETCDCTL_<FLAG> for flags not given. */
static void flags_from_env(void)
{
    for (struct flag *f = global_flags; f->name; f++) {
        if (f->set)
            continue;
        char env[128] = "ETCDCTL_";
        size_t n = strlen(env);
        for (const char *p = f->name; *p && n + 1 < sizeof env; p++)
            env[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
        env[n] = 0;
        const char *v = getenv(env);
        if (v && *v) {
            char shown[160];
            snprintf(shown, sizeof shown, "--%s", f->name);
            flag_set(f, v, shown);
        }
    }
}

static void resolve_globals(void)
{
    flags_from_env();
    /* endpoints: comma list, spaces trimmed */
    char *s = strdup(endpoints_str);
    size_t cap = 4;
    g.endpoints = calloc(cap, sizeof *g.endpoints);
    for (char *tok = strtok(s, ","); tok; tok = strtok(NULL, ",")) {
        while (*tok == ' ')
            tok++;
        char *e = tok + strlen(tok);
        while (e > tok && e[-1] == ' ')
            *--e = 0;
        if (g.n_endpoints == cap)
            g.endpoints = realloc(g.endpoints, (cap *= 2) * sizeof *g.endpoints);
        g.endpoints[g.n_endpoints++] = tok;
    }
    if (!g.n_endpoints)
        g.endpoints[g.n_endpoints++] = "127.0.0.1:2379";
}

/* initDisplayFromCmd and the TLS / auth checks of clientConfigFromCmd. */
void ctl_init_display(void)
{
    static bool done;
    if (done)
        return;
    done = true;
    if (!strcmp(out_str, "simple"))
        g.out = OUT_SIMPLE;
    else if (!strcmp(out_str, "json"))
        g.out = OUT_JSON;
    else if (!strcmp(out_str, "fields"))
        g.out = OUT_FIELDS;
    else if (!strcmp(out_str, "table"))
        g.out = OUT_TABLE;
    else if (!strcmp(out_str, "protobuf"))
        g.out = OUT_PROTOBUF;
    else
        ctl_die(EXIT_BAD_FEATURE, "unsupported output format");
    for (struct flag *f = global_flags; f->name; f++)
        if ((f->ptr == &g.cert || f->ptr == &g.key || f->ptr == &g.cacert) && f->set &&
            !**(const char **)f->ptr)
            ctl_die(EXIT_BAD_ARGS, "empty string is passed to --%s option", f->name);
}

static int cmd_version(int argc, char **argv)
{
    argc = flags_parse(argc, argv, (struct flag[]){{NULL, 0, 0, NULL, false}});
    resolve_globals();
    printf("etcdctl version: 3.4.23\nAPI version: 3.4\n");
    return 0;
}

int cmd_migrate(int argc, char **argv); /* migrate.c */

static const struct {
    const char *name;
    int (*fn)(int, char **);
} commands[] = {
    {"migrate", cmd_migrate},
    {"get", cmd_get},           {"put", cmd_put},
    {"del", cmd_del},           {"txn", cmd_txn},
    {"compaction", cmd_compaction}, {"watch", cmd_watch},
    {"lease", cmd_lease},       {"member", cmd_member},
    {"endpoint", cmd_endpoint}, {"alarm", cmd_alarm},
    {"version", cmd_version},   {"k8s", cmd_k8s},
    {"snapshot", cmd_snapshot}, {"defrag", cmd_defrag},
    {"move-leader", cmd_move_leader}, {"make-mirror", cmd_make_mirror},
    {"lock", cmd_lock},
    {"elect", cmd_elect}, {"auth", cmd_auth},
    {"user", cmd_user},         {"role", cmd_role},
    {"check", cmd_check},
};

static void usage(void)
{
    printf("NAME:\n\tketchctl - etcdctl v3 compatible client for ketch (and etcd)\n\n"
           "USAGE:\n\tketchctl [global options] command [command options] [arguments...]\n\n"
           "COMMANDS:\n\tget put del txn compaction watch [-i] version\n"
           "\tlease grant|revoke|timetolive|list|keep-alive\n"
           "\tmember list|add|remove|update|promote   endpoint status|health|hashkv\n"
           "\talarm list|disarm   defrag   move-leader   check perf|datascale\n"
           "\tuser add|delete|get|list|passwd|grant-role|revoke-role\n"
           "\trole add|delete|get|list|grant-permission|revoke-permission\n"
           "\tauth enable|disable|status   lock   elect   make-mirror\n"
           "\tk8s ls|summary|get|secrets|seed\n\n"
           "GLOBAL OPTIONS:\n\t--endpoints --dial-timeout --command-timeout -w/--write-out\n"
           "\t--hex --cacert --cert --key --insecure-transport --insecure-skip-tls-verify\n"
           "\t--user --password (ETCDCTL_* variables too)\n");
}

/* The values of the global flags are known only after the command's own
 * flags are parsed; commands call this through flags_parse's users. */
void ctl_globals_ready(void)
{
    resolve_globals();
}

/* ketchctl is a short-lived command that leaves freeing to exit(), so a
 * leak report from LeakSanitizer (in the sanitized test build) would only
 * say that; the server, which must not leak, is checked in full. */
int __lsan_is_turned_off(void);
int __lsan_is_turned_off(void) { return 1; }

int main(int argc, char **argv)
{
    g.dial_timeout_ms = 2000;
    g.insecure_transport = true;
    g.command_timeout_ms = 5000;
    setvbuf(stdout, NULL, _IOFBF, 1 << 16);
    /* find the command word: skip global flags and their values */
    int i = 1;
    for (; i < argc; i++) {
        char *a = argv[i];
        if (a[0] != '-')
            break;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage();
            return 0;
        }
        if (!strcmp(a, "--version")) {
            printf("etcdctl version: 3.4.23\nAPI version: 3.4\n");
            return 0;
        }
        const char *name = a[1] == '-' ? a + 2 : a + 1;
        if (strchr(name, '='))
            continue;
        struct flag *f = a[1] == '-' ? find_long(NULL, name, strlen(name))
                                     : (name[0] && !name[1] ? find_short(NULL, name[0]) : NULL);
        if (f && f->type != F_BOOL)
            i++;
    }
    if (i >= argc) {
        usage();
        return 0;
    }
    for (size_t c = 0; c < sizeof commands / sizeof commands[0]; c++) {
        if (strcmp(argv[i], commands[c].name))
            continue;
        /* move the global flags before the command behind it */
        int n = argc - 1;
        char **args = calloc((size_t)argc + 1, sizeof *args);
        int k = 0;
        /* the global flags go after the command's words (subcommands look
         * at argv[0]) but before a "--" (lock's command line) */
        int dd = i + 1;
        while (dd < argc && strcmp(argv[dd], "--"))
            dd++;
        for (int j = i + 1; j < dd; j++)
            args[k++] = argv[j];
        for (int j = 1; j < i; j++)
            args[k++] = argv[j];
        for (int j = dd; j < argc; j++)
            args[k++] = argv[j];
        (void)n;
        char **with_name = calloc((size_t)argc + 2, sizeof *args);
        with_name[0] = argv[i];
        if (k) memcpy(with_name + 1, args, (size_t)k * sizeof *args);
        free(args);
        int rc = commands[c].fn(k, with_name + 1);
        fflush(stdout);
        return rc;
    }
    fprintf(stderr, "Error: unknown command \"%s\" for \"ketchctl\"\nRun 'ketchctl --help' for usage.\n",
            argv[i]);
    return EXIT_ERR;
}
