/* ketchctl k8s watch [resource] [-n ns] [--rev N] [-o json]
 * [--encryption-config FILE]: the /registry keyspace's changes as readable
 * lines, one per event:
 *   ADDED     pods   web/db-0   rev=42
 * ADDED when the key was created by this revision (create_revision ==
 * mod_revision), MODIFIED for later puts, DELETED for deletes. With -o json
 * one JSON object per line instead, as kubectl get -w --output-watch-events:
 *   {"type":"ADDED","object":{...}}  (DELETED carries the last version). */
#include <stdlib.h>
#include <string.h>

#include "k8s.h"

struct wfilter {
    const char *res, *ns;
    bool json;
};

static bool res_match(const char *want, const char *have)
{
    if (!want || !*want)
        return true;
    if (!strcmp(want, have))
        return true;
    size_t n = strlen(want); /* "deployments" matches "deployments.apps" */
    return !strncmp(have, want, n) && have[n] == '.';
}

static bool on_event(void *arg, const uint8_t *data, size_t len)
{
    const struct wfilter *f = arg;
    Etcdserverpb__WatchResponse *w = etcdserverpb__watch_response__unpack(NULL, len, data);
    if (!w)
        return true;
    if (w->compact_revision)
        ctl_die(EXIT_ERR, "watch: required revision %lld has been compacted",
                (long long)w->compact_revision);
    bool go_on = !w->canceled;
    for (size_t i = 0; i < w->n_events; i++) {
        const Mvccpb__Event *e = w->events[i];
        const Mvccpb__KeyValue *kv = e->kv;
        if (!kv)
            continue;
        char *key = strndup((const char *)kv->key.data, kv->key.len);
        char res[300], ns[256], name[512];
        k8s_key_parts(key, res, sizeof res, ns, sizeof ns, name, sizeof name);
        if (res_match(f->res, res) && (!f->ns || !*f->ns || !strcmp(f->ns, ns))) {
            const char *what = e->type == MVCCPB__EVENT__EVENT_TYPE__DELETE ? "DELETED"
                               : kv->create_revision == kv->mod_revision ? "ADDED"
                                                                          : "MODIFIED";
            if (f->json) {
                const Mvccpb__KeyValue *src = e->type == MVCCPB__EVENT__EVENT_TYPE__DELETE ? e->prev_kv : kv;
                char why[1024] = "the deleted version is not available (compacted)";
                json_t *obj = src ? k8s_value_json(key, src->value.data, src->value.len,
                                                   src->mod_revision, why, sizeof why)
                                  : NULL;
                if (!obj)
                    fprintf(stderr, "error: %s\n", why);
                json_t *ev = json_pack("{s:s,s:o}", "type", what, "object", obj ? obj : json_null());
                char *line = json_dumps(ev, JSON_COMPACT | JSON_PRESERVE_ORDER);
                printf("%s\n", line);
                free(line);
                json_decref(ev);
                fflush(stdout);
                free(key);
                continue;
            }
            char obj[800];
            snprintf(obj, sizeof obj, "%s%s%s", ns, *ns ? "/" : "", name);
            printf("%-9s %-40s %-50s rev=%lld\n", what, res, obj, (long long)kv->mod_revision);
            fflush(stdout);
        }
        free(key);
    }
    etcdserverpb__watch_response__free_unpacked(w, NULL);
    return go_on;
}

int k8s_watch(int argc, char **argv)
{
    const char *ns = "", *outf = "", *encf = "";
    int64_t rev = 0;
    struct flag fl[] = {{"namespace", 'n', F_STR, &ns, false},
                        {"rev", 0, F_INT, &rev, false},
                        {"output", 'o', F_STR, &outf, false},
                        {"encryption-config", 0, F_STR, &encf, false}, FEND};
    int n = ctl_parse(argc, argv, fl);
    if (*outf && strcmp(outf, "json"))
        ctl_die(EXIT_BAD_ARGS, "k8s watch: -o json is the only output format besides the default lines");
    ctl_init_display();
    if (*encf)
        k8s_crypt_load(encf);
    struct wfilter f = {n > 0 ? argv[0] : NULL, ns, *outf != 0};
    static const char pfx[] = "/registry/";
    size_t l;
    char *end = prefix_end((const uint8_t *)pfx, strlen(pfx), &l);
    Etcdserverpb__WatchCreateRequest cr = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
    cr.key = (ProtobufCBinaryData){strlen(pfx), (uint8_t *)pfx};
    cr.range_end = (ProtobufCBinaryData){l, (uint8_t *)end};
    cr.start_revision = rev;
    cr.prev_kv = f.json;
    Etcdserverpb__WatchRequest wr = ETCDSERVERPB__WATCH_REQUEST__INIT;
    wr.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
    wr.create_request = &cr;
    char *msg = NULL;
    int st = ctl_stream("/etcdserverpb.Watch/Watch", &wr.base, on_event, &f, 0, &msg);
    if (st == 4 && msg && !strcmp(msg, "context deadline exceeded"))
        ctl_die(EXIT_BAD_CONN, "context deadline exceeded");
    ctl_die(EXIT_INTERRUPTED, "watch is canceled by the server");
}
