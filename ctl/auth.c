/* user, role and auth (etcdctl's user_command.go, role_command.go,
 * auth_command.go and their printers). Texts and exit codes as etcdctl. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.pb-c.h"
#include "ctl.h"

#define FEND {NULL, 0, 0, NULL, false}

/* ---- passwords ---- */

/* speakeasy.Ask: the prompt on stdout, the answer from the terminal. */
char *ctl_ask_password(const char *prompt)
{
    printf("%s", prompt);
    fflush(stdout);
    /* speakeasy turns echo off and on with stty, which complains when
     * stdin is not a terminal; the answer is read all the same */
    bool tty = isatty(0);
    if (!tty) {
        fflush(stdout);
        fputs("stty: 'standard input': Inappropriate ioctl for device\n", stderr);
    }
    char line[1024] = "";
    if (!fgets(line, sizeof line, stdin))
        line[0] = 0;
    line[strcspn(line, "\r\n")] = 0;
    if (!tty) {
        fflush(stdout);
        fputs("stty: 'standard input': Inappropriate ioctl for device\n", stderr);
    }
    printf("\n");
    return strdup(line);
}

static char *read_password_interactive(const char *name)
{
    char p[512];
    snprintf(p, sizeof p, "Password of %s: ", name);
    char *a = ctl_ask_password(p);
    if (!*a)
        ctl_die(EXIT_BAD_ARGS, "empty password");
    snprintf(p, sizeof p, "Type password of %s again for confirmation: ", name);
    char *b = ctl_ask_password(p);
    if (strcmp(a, b))
        ctl_die(EXIT_BAD_ARGS, "given passwords are different");
    free(b);
    return a;
}

/* fmt.Scanf("%s"): one whitespace-separated word from stdin. */
static char *scan_word(void)
{
    char w[1024] = "";
    if (scanf("%1023s", w) != 1)
        w[0] = 0;
    return strdup(w);
}

/* ---- role get (also user get --detail) ---- */

/* Writes raw bytes (keys may hold NUL, which %.*s would stop at). */
static void put_raw(const void *p, size_t n)
{
    if (n)
        fwrite(p, 1, n, stdout);
}

static void print_range(const Authpb__Permission *p)
{
    const char *e = (const char *)p->range_end.data;
    size_t el = p->range_end.len;
    printf("\t[");
    put_raw(p->key.data, p->key.len);
    if (!(el == 1 && e[0] == 0)) {
        printf(", ");
        put_raw(e, el);
        printf(")");
    } else {
        printf(", <open ended>");
    }
    size_t pl;
    char *pe = prefix_end(p->key.data, p->key.len, &pl);
    if (pl == el && !memcmp(pe, e, pl)) {
        printf(" (prefix ");
        put_raw(p->key.data, p->key.len);
        printf(")");
    }
    free(pe);
    printf("\n");
}

static void print_role_get(const char *role, const Etcdserverpb__AuthRoleGetResponse *r)
{
    if (print_generic(&r->base))
        return;
    if (g.out == OUT_FIELDS) {
        static const char *const names[] = {"READ", "WRITE", "READWRITE"};
        print_fields_header(r->header);
        for (size_t i = 0; i < r->n_perm; i++) {
            const Authpb__Permission *p = r->perm[i];
            printf("\"PermType\" :  %s\n\"Key\" : ",
                   p->permtype >= 0 && p->permtype <= 2 ? names[p->permtype] : "UNKNOWN");
            struct buf b = {0};
            out_goquote(&b, (const char *)p->key.data, p->key.len);
            buf_puts(&b, "\n\"RangeEnd\" : ");
            out_goquote(&b, (const char *)p->range_end.data, p->range_end.len);
            buf_puts(&b, "\n");
            fwrite(b.p, 1, b.len, stdout);
            buf_free(&b);
        }
        return;
    }
    printf("Role %s\nKV Read:\n", role);
    for (int pass = 0; pass < 2; pass++) {
        if (pass)
            printf("KV Write:\n");
        for (size_t i = 0; i < r->n_perm; i++) {
            const Authpb__Permission *p = r->perm[i];
            int want = pass ? AUTHPB__PERMISSION__TYPE__WRITE : AUTHPB__PERMISSION__TYPE__READ;
            if ((int)p->permtype != want && p->permtype != AUTHPB__PERMISSION__TYPE__READWRITE)
                continue;
            if (p->range_end.len == 0) {
                printf("\t");
                put_raw(p->key.data, p->key.len);
                printf("\n");
            } else
                print_range(p);
        }
    }
}

static Etcdserverpb__AuthRoleGetResponse *role_get_call(const char *role)
{
    Etcdserverpb__AuthRoleGetRequest req = ETCDSERVERPB__AUTH_ROLE_GET_REQUEST__INIT;
    req.role = (char *)role;
    return (Etcdserverpb__AuthRoleGetResponse *)ctl_rpc(
        "/etcdserverpb.Auth/RoleGet", &req.base, &etcdserverpb__auth_role_get_response__descriptor);
}

/* ---- user ---- */

int cmd_user(int argc, char **argv)
{
    if (argc < 1 || argv[0][0] == '-') {
        printf("user <subcommand>: add, delete, get, list, passwd, grant-role, revoke-role\n");
        return 0;
    }
    const char *sub = argv[0];
    bool interactive = true, detail = false, no_password = false;
    const char *new_pw = "";
    struct flag fl[] = {{"interactive", 0, F_BOOL, &interactive, false},
                        {"new-user-password", 0, F_STR, &new_pw, false},
                        {"no-password", 0, F_BOOL, &no_password, false},
                        {"detail", 0, F_BOOL, &detail, false},
                        FEND};
    /* each subcommand has only its own flags */
    if (!strcmp(sub, "get"))
        fl[0].name = "-", fl[1].name = "-", fl[2].name = "-";
    else if (!strcmp(sub, "add"))
        fl[3].name = "-";
    else if (!strcmp(sub, "passwd"))
        fl[1].name = "-", fl[2].name = "-", fl[3].name = "-";
    else
        fl[0].name = "-", fl[1].name = "-", fl[2].name = "-", fl[3].name = "-";
    int n = ctl_parse(argc - 1, argv + 1, fl);
    if (!strcmp(sub, "add")) {
        if (n != 1)
            ctl_die(EXIT_BAD_ARGS, "user add command requires user name as its argument");
        ctl_init_display();
        char *user = argv[1], *pw = NULL;
        if (no_password) {
            pw = "";
        } else if (*new_pw) {
            pw = (char *)new_pw;
        } else {
            char *colon = strchr(argv[1], ':');
            if (!colon) {
                pw = interactive ? read_password_interactive(user) : scan_word();
            } else {
                user = strndup(argv[1], (size_t)(colon - argv[1]));
                pw = colon + 1;
                if (!*user)
                    ctl_die(EXIT_BAD_ARGS, "empty user name is not allowed");
            }
        }
        Etcdserverpb__AuthUserAddRequest req = ETCDSERVERPB__AUTH_USER_ADD_REQUEST__INIT;
        Authpb__UserAddOptions opts = AUTHPB__USER_ADD_OPTIONS__INIT;
        req.name = user;
        req.password = pw;
        if (no_password) {
            opts.no_password = true;
            req.options = &opts;
        }
        ProtobufCMessage *m = ctl_rpc("/etcdserverpb.Auth/UserAdd", &req.base,
                                      &etcdserverpb__auth_user_add_response__descriptor);
        print_line(m, true, "User %s created", user);
        return 0;
    }
    if (!strcmp(sub, "delete")) {
        if (n != 1)
            ctl_die(EXIT_BAD_ARGS, "user delete command requires user name as its argument");
        ctl_init_display();
        Etcdserverpb__AuthUserDeleteRequest req = ETCDSERVERPB__AUTH_USER_DELETE_REQUEST__INIT;
        req.name = argv[1];
        ProtobufCMessage *m = ctl_rpc("/etcdserverpb.Auth/UserDelete", &req.base,
                                      &etcdserverpb__auth_user_delete_response__descriptor);
        print_line(m, true, "User %s deleted", argv[1]);
        return 0;
    }
    if (!strcmp(sub, "get")) {
        if (n != 1)
            ctl_die(EXIT_BAD_ARGS, "user get command requires user name as its argument");
        ctl_init_display();
        Etcdserverpb__AuthUserGetRequest req = ETCDSERVERPB__AUTH_USER_GET_REQUEST__INIT;
        req.name = argv[1];
        Etcdserverpb__AuthUserGetResponse *r = (Etcdserverpb__AuthUserGetResponse *)ctl_rpc(
            "/etcdserverpb.Auth/UserGet", &req.base, &etcdserverpb__auth_user_get_response__descriptor);
        if (detail) {
            printf("User: %s\n", argv[1]);
            for (size_t i = 0; i < r->n_roles; i++) {
                printf("\n");
                fflush(stdout);
                print_role_get(r->roles[i], role_get_call(r->roles[i]));
            }
            return 0;
        }
        if (print_rpc(&r->base, false))
            return 0;
        printf("User: %s\nRoles:", argv[1]);
        for (size_t i = 0; i < r->n_roles; i++)
            printf(" %s", r->roles[i]);
        printf("\n");
        return 0;
    }
    if (!strcmp(sub, "list")) {
        if (n != 0)
            ctl_die(EXIT_BAD_ARGS, "user list command requires no arguments");
        ctl_init_display();
        Etcdserverpb__AuthUserListRequest req = ETCDSERVERPB__AUTH_USER_LIST_REQUEST__INIT;
        Etcdserverpb__AuthUserListResponse *r = (Etcdserverpb__AuthUserListResponse *)ctl_rpc(
            "/etcdserverpb.Auth/UserList", &req.base,
            &etcdserverpb__auth_user_list_response__descriptor);
        if (print_rpc(&r->base, false))
            return 0;
        for (size_t i = 0; i < r->n_users; i++)
            printf("%s\n", r->users[i]);
        return 0;
    }
    if (!strcmp(sub, "passwd")) {
        if (n != 1)
            ctl_die(EXIT_BAD_ARGS, "user passwd command requires user name as its argument");
        ctl_init_display();
        char *pw = interactive ? read_password_interactive(argv[1]) : scan_word();
        Etcdserverpb__AuthUserChangePasswordRequest req =
            ETCDSERVERPB__AUTH_USER_CHANGE_PASSWORD_REQUEST__INIT;
        req.name = argv[1];
        req.password = pw;
        ProtobufCMessage *m = ctl_rpc("/etcdserverpb.Auth/UserChangePassword", &req.base,
                                      &etcdserverpb__auth_user_change_password_response__descriptor);
        print_line(m, true, "Password updated");
        return 0;
    }
    if (!strcmp(sub, "grant-role") || !strcmp(sub, "revoke-role")) {
        bool grant = sub[0] == 'g';
        if (n != 2)
            ctl_die(EXIT_BAD_ARGS, grant ? "user grant command requires user name and role name as its argument"
                                         : "user revoke-role requires user name and role name as its argument");
        ctl_init_display();
        ProtobufCMessage *m;
        if (grant) {
            Etcdserverpb__AuthUserGrantRoleRequest req = ETCDSERVERPB__AUTH_USER_GRANT_ROLE_REQUEST__INIT;
            req.user = argv[1];
            req.role = argv[2];
            m = ctl_rpc("/etcdserverpb.Auth/UserGrantRole", &req.base,
                        &etcdserverpb__auth_user_grant_role_response__descriptor);
            print_line(m, true, "Role %s is granted to user %s", argv[2], argv[1]);
        } else {
            Etcdserverpb__AuthUserRevokeRoleRequest req = ETCDSERVERPB__AUTH_USER_REVOKE_ROLE_REQUEST__INIT;
            req.name = argv[1];
            req.role = argv[2];
            m = ctl_rpc("/etcdserverpb.Auth/UserRevokeRole", &req.base,
                        &etcdserverpb__auth_user_revoke_role_response__descriptor);
            print_line(m, true, "Role %s is revoked from user %s", argv[2], argv[1]);
        }
        return 0;
    }
    ctl_die(EXIT_ERR, "unknown command \"%s\" for \"ketchctl user\"", sub);
}

/* ---- role ---- */

static bool perm_prefix, perm_from_key;

/* permRange / rangeEndFromPermFlags of role_command.go. */
static void perm_range(char **args, int n, char **key, size_t *klen, char **end, size_t *elen)
{
    *key = args[0];
    *klen = strlen(args[0]);
    *end = "";
    *elen = 0;
    if (!*klen) {
        if (perm_prefix && perm_from_key)
            ctl_die(EXIT_BAD_ARGS, "--from-key and --prefix flags are mutually exclusive");
        *key = "";
        *klen = 1; /* "\x00": the empty prefix as an interval */
        if (perm_prefix || perm_from_key) {
            *end = "";
            *elen = 1;
        }
        return;
    }
    if (n == 1) {
        if (perm_prefix) {
            if (perm_from_key)
                ctl_die(EXIT_BAD_ARGS, "--from-key and --prefix flags are mutually exclusive");
            *end = prefix_end((const uint8_t *)*key, *klen, elen);
        } else if (perm_from_key) {
            *end = "";
            *elen = 1;
        }
        return;
    }
    if (perm_prefix)
        ctl_die(EXIT_BAD_ARGS, "unexpected endkey argument with --prefix flag");
    if (perm_from_key)
        ctl_die(EXIT_BAD_ARGS, "unexpected endkey argument with --from-key flag");
    *end = args[1];
    *elen = strlen(args[1]);
}

int cmd_role(int argc, char **argv)
{
    if (argc < 1 || argv[0][0] == '-') {
        printf("role <subcommand>: add, delete, get, list, grant-permission, revoke-permission\n");
        return 0;
    }
    const char *sub = argv[0];
    bool perm = !strcmp(sub, "grant-permission") || !strcmp(sub, "revoke-permission");
    struct flag fl[] = {{"prefix", 0, F_BOOL, &perm_prefix, false},
                        {"from-key", 0, F_BOOL, &perm_from_key, false},
                        FEND};
    if (!perm)
        fl[0].name = "-", fl[1].name = "-";
    int n = ctl_parse(argc - 1, argv + 1, fl);
    char **a = argv + 1;
    if (!strcmp(sub, "add") || !strcmp(sub, "delete")) {
        bool add = sub[0] == 'a';
        if (n != 1)
            ctl_die(EXIT_BAD_ARGS, "role %s command requires role name as its argument", sub);
        ctl_init_display();
        ProtobufCMessage *m;
        if (add) {
            Etcdserverpb__AuthRoleAddRequest req = ETCDSERVERPB__AUTH_ROLE_ADD_REQUEST__INIT;
            req.name = a[0];
            m = ctl_rpc("/etcdserverpb.Auth/RoleAdd", &req.base,
                        &etcdserverpb__auth_role_add_response__descriptor);
        } else {
            Etcdserverpb__AuthRoleDeleteRequest req = ETCDSERVERPB__AUTH_ROLE_DELETE_REQUEST__INIT;
            req.role = a[0];
            m = ctl_rpc("/etcdserverpb.Auth/RoleDelete", &req.base,
                        &etcdserverpb__auth_role_delete_response__descriptor);
        }
        print_line(m, true, "Role %s %s", a[0], add ? "created" : "deleted");
        return 0;
    }
    if (!strcmp(sub, "get")) {
        if (n != 1)
            ctl_die(EXIT_BAD_ARGS, "role get command requires role name as its argument");
        ctl_init_display();
        print_role_get(a[0], role_get_call(a[0]));
        return 0;
    }
    if (!strcmp(sub, "list")) {
        if (n != 0)
            ctl_die(EXIT_BAD_ARGS, "role list command requires no arguments");
        ctl_init_display();
        Etcdserverpb__AuthRoleListRequest req = ETCDSERVERPB__AUTH_ROLE_LIST_REQUEST__INIT;
        Etcdserverpb__AuthRoleListResponse *r = (Etcdserverpb__AuthRoleListResponse *)ctl_rpc(
            "/etcdserverpb.Auth/RoleList", &req.base,
            &etcdserverpb__auth_role_list_response__descriptor);
        if (print_generic(&r->base))
            return 0;
        if (g.out == OUT_FIELDS) {
            print_fields_header(r->header);
            struct buf b = {0};
            buf_puts(&b, "\"Roles\" :");
            for (size_t i = 0; i < r->n_roles; i++) {
                buf_puts(&b, " ");
                out_goquote(&b, r->roles[i], strlen(r->roles[i]));
            }
            buf_puts(&b, "\n");
            fwrite(b.p, 1, b.len, stdout);
            buf_free(&b);
            return 0;
        }
        for (size_t i = 0; i < r->n_roles; i++)
            printf("%s\n", r->roles[i]);
        return 0;
    }
    if (!strcmp(sub, "grant-permission")) {
        if (n < 3)
            ctl_die(EXIT_BAD_ARGS, "role grant command requires role name, permission type, and key [endkey] as its argument");
        int type;
        if (!strcasecmp(a[1], "read"))
            type = AUTHPB__PERMISSION__TYPE__READ;
        else if (!strcasecmp(a[1], "write"))
            type = AUTHPB__PERMISSION__TYPE__WRITE;
        else if (!strcasecmp(a[1], "readwrite"))
            type = AUTHPB__PERMISSION__TYPE__READWRITE;
        else
            ctl_die(EXIT_BAD_ARGS, "invalid permission type: %s", a[1]);
        char *key, *end;
        size_t kl, el;
        perm_range(a + 2, n - 2, &key, &kl, &end, &el);
        ctl_init_display();
        Etcdserverpb__AuthRoleGrantPermissionRequest req =
            ETCDSERVERPB__AUTH_ROLE_GRANT_PERMISSION_REQUEST__INIT;
        Authpb__Permission p = AUTHPB__PERMISSION__INIT;
        p.permtype = type;
        p.key = (ProtobufCBinaryData){kl, (uint8_t *)key};
        p.range_end = (ProtobufCBinaryData){el, (uint8_t *)end};
        req.name = a[0];
        req.perm = &p;
        ProtobufCMessage *m = ctl_rpc("/etcdserverpb.Auth/RoleGrantPermission", &req.base,
                                      &etcdserverpb__auth_role_grant_permission_response__descriptor);
        print_line(m, true, "Role %s updated", a[0]);
        return 0;
    }
    if (!strcmp(sub, "revoke-permission")) {
        if (n < 2)
            ctl_die(EXIT_BAD_ARGS, "role revoke-permission command requires role name and key [endkey] as its argument");
        char *key, *end;
        size_t kl, el;
        perm_range(a + 1, n - 1, &key, &kl, &end, &el);
        ctl_init_display();
        Etcdserverpb__AuthRoleRevokePermissionRequest req =
            ETCDSERVERPB__AUTH_ROLE_REVOKE_PERMISSION_REQUEST__INIT;
        req.role = a[0];
        req.key = (ProtobufCBinaryData){kl, (uint8_t *)key};
        req.range_end = (ProtobufCBinaryData){el, (uint8_t *)end};
        ProtobufCMessage *m = ctl_rpc("/etcdserverpb.Auth/RoleRevokePermission", &req.base,
                                      &etcdserverpb__auth_role_revoke_permission_response__descriptor);
        if (el == 0)
            print_line(m, true, "Permission of key %s is revoked from role %s", a[1], a[0]);
        else if (!(el == 1 && end[0] == 0))
            print_line(m, true, "Permission of range [%s, %.*s) is revoked from role %s", a[1],
                       (int)el, end, a[0]);
        else
            print_line(m, true, "Permission of range [%s, <open ended> is revoked from role %s",
                       a[1], a[0]);
        return 0;
    }
    ctl_die(EXIT_ERR, "unknown command \"%s\" for \"ketchctl role\"", sub);
}

/* ---- auth ---- */

int cmd_auth(int argc, char **argv)
{
    if (argc < 1 || argv[0][0] == '-') {
        printf("auth <subcommand>: enable, disable, status\n");
        return 0;
    }
    const char *sub = argv[0];
    int n = ctl_parse(argc - 1, argv + 1, (struct flag[]){FEND});
    if (!strcmp(sub, "enable")) {
        if (n)
            ctl_die(EXIT_BAD_ARGS, "auth enable command does not accept any arguments");
        ctl_init_display();
        /* as etcdctl: create the root role and grant it when missing */
        for (;;) {
            Etcdserverpb__AuthEnableRequest req = ETCDSERVERPB__AUTH_ENABLE_REQUEST__INIT;
            struct ctl_reply r;
            int st = ctl_call("/etcdserverpb.Auth/AuthEnable", &req.base, &r);
            if (st == 0)
                break;
            if (strcmp(r.message, "etcdserver: root user does not have root role"))
                ctl_die(EXIT_ERR, "%s", ctl_err_text(r.status, r.message));
            Etcdserverpb__AuthRoleAddRequest ra = ETCDSERVERPB__AUTH_ROLE_ADD_REQUEST__INIT;
            ra.name = "root";
            ctl_rpc("/etcdserverpb.Auth/RoleAdd", &ra.base,
                    &etcdserverpb__auth_role_add_response__descriptor);
            Etcdserverpb__AuthUserGrantRoleRequest gr = ETCDSERVERPB__AUTH_USER_GRANT_ROLE_REQUEST__INIT;
            gr.user = "root";
            gr.role = "root";
            ctl_rpc("/etcdserverpb.Auth/UserGrantRole", &gr.base,
                    &etcdserverpb__auth_user_grant_role_response__descriptor);
        }
        printf("Authentication Enabled\n");
        return 0;
    }
    if (!strcmp(sub, "disable")) {
        if (n)
            ctl_die(EXIT_BAD_ARGS, "auth disable command does not accept any arguments");
        ctl_init_display();
        Etcdserverpb__AuthDisableRequest req = ETCDSERVERPB__AUTH_DISABLE_REQUEST__INIT;
        ctl_rpc("/etcdserverpb.Auth/AuthDisable", &req.base,
                &etcdserverpb__auth_disable_response__descriptor);
        printf("Authentication Disabled\n");
        return 0;
    }
    if (!strcmp(sub, "status")) {
        if (n)
            ctl_die(EXIT_BAD_ARGS, "auth status command does not accept any arguments");
        ctl_init_display();
        Etcdserverpb__AuthStatusRequest req = ETCDSERVERPB__AUTH_STATUS_REQUEST__INIT;
        Etcdserverpb__AuthStatusResponse *r = (Etcdserverpb__AuthStatusResponse *)ctl_rpc(
            "/etcdserverpb.Auth/AuthStatus", &req.base,
            &etcdserverpb__auth_status_response__descriptor);
        if (print_generic(&r->base))
            return 0;
        if (g.out == OUT_FIELDS) {
            print_fields_header(r->header);
            printf("\"Enabled\" : %s\n\"AuthRevision\" : %" PRIu64 "\n",
                   r->enabled ? "true" : "false", r->authrevision);
            return 0;
        }
        printf("Authentication Status: %s\nAuthRevision: %" PRIu64 "\n",
               r->enabled ? "true" : "false", r->authrevision);
        return 0;
    }
    ctl_die(EXIT_ERR, "unknown command \"%s\" for \"ketchctl auth\"", sub);
}
