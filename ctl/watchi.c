/* watch -i (etcdctl's watchInteractiveFunc): watch requests read from
 * stdin, one per line ("watch <key> [range_end] [--prefix] [--rev N]
 * [--prev-kv]" or "progress"), all on one Watch stream; events are printed
 * as `watch` prints them. End of input ends the command, as etcdctl. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/client.h"
#include "ctl.h"

static struct client_stream *ws;
static size_t n_watchers;
static bool base_prefix, base_prev;
static int64_t base_rev;
static struct buf line;

static void on_msg(void *arg, const uint8_t *data, size_t len)
{
    Etcdserverpb__WatchResponse *w = etcdserverpb__watch_response__unpack(NULL, len, data);
    if (!w)
        return;
    if (w->created && !w->n_events) {
        etcdserverpb__watch_response__free_unpacked(w, NULL);
        return;
    }
    if (w->canceled) {
        const char *why = w->compact_revision ? "etcdserver: mvcc: required revision has been compacted"
                                              : (w->cancel_reason ? w->cancel_reason : "");
        fflush(stdout);
        fprintf(stderr, "watch was canceled (%s)\n", why);
    }
    /* a progress notification (watch ID -1) reaches every watcher */
    bool progress = !w->n_events && !w->canceled && !w->created && !w->compact_revision &&
                    w->header && w->header->revision;
    size_t times = progress && w->watch_id == -1 ? n_watchers : 1;
    for (size_t i = 0; i < times; i++) {
        if (progress)
            printf("progress notify: %" PRId64 "\n", w->header->revision);
        print_watch(w);
    }
    fflush(stdout);
    etcdserverpb__watch_response__free_unpacked(w, NULL);
}

static void on_close(void *arg, const struct client_reply *r)
{
    ctl_die(EXIT_INTERRUPTED, "watch is canceled by the server");
}

/* argify: words separated by spaces, "quoted" words kept whole. */
static size_t argify(char *s, char **v, size_t cap)
{
    size_t n = 0;
    while (*s && n < cap) {
        while (*s == ' ' || *s == '\t')
            s++;
        if (!*s)
            break;
        if (*s == '"') {
            char *e = strchr(s + 1, '"');
            if (e) {
                *e = 0;
                v[n++] = s + 1;
                s = e + 1;
                continue;
            }
        }
        v[n++] = s;
        while (*s && *s != ' ' && *s != '\t')
            s++;
        if (*s)
            *s++ = 0;
    }
    return n;
}

static void do_line(char *l)
{
    char *copy = strdup(l);
    char *v[64];
    size_t n = argify(copy, v, 64);
    fflush(stdout);
    if (n < 1) {
        fprintf(stderr, "Invalid command: %s (watch and progress supported)\n", l);
    } else if (!strcmp(v[0], "watch")) {
        if (n < 2) {
            fprintf(stderr, "Invalid command %s (command type or key is not provided)\n", l);
            free(copy);
            return;
        }
        bool prefix = base_prefix, prev = base_prev;
        int64_t rev = base_rev;
        char *pos[2];
        size_t np = 0;
        for (size_t i = 1; i < n; i++) {
            if (!strcmp(v[i], "--prefix"))
                prefix = true;
            else if (!strcmp(v[i], "--prev-kv"))
                prev = true;
            else if (!strncmp(v[i], "--rev=", 6))
                rev = strtoll(v[i] + 6, NULL, 10);
            else if (!strcmp(v[i], "--rev") && i + 1 < n)
                rev = strtoll(v[++i], NULL, 10);
            else if (np < 2)
                pos[np++] = v[i];
            else
                ctl_die(EXIT_BAD_ARGS, "bad number of arguments");
        }
        if (np < 1)
            ctl_die(EXIT_BAD_ARGS, "bad number of arguments");
        if (np == 2 && prefix)
            ctl_die(EXIT_BAD_ARGS, "`range_end` and `--prefix` are mutually exclusive");
        Etcdserverpb__WatchCreateRequest cr;
        char *e = ctl_watch_create(&cr, pos[0], np == 2 ? pos[1] : NULL, prefix, rev, prev);
        Etcdserverpb__WatchRequest wr = ETCDSERVERPB__WATCH_REQUEST__INIT;
        wr.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
        wr.create_request = &cr;
        client_stream_send(ws, &wr.base);
        n_watchers++;
        free(e);
    } else if (!strcmp(v[0], "progress")) {
        Etcdserverpb__WatchProgressRequest pr = ETCDSERVERPB__WATCH_PROGRESS_REQUEST__INIT;
        Etcdserverpb__WatchRequest wr = ETCDSERVERPB__WATCH_REQUEST__INIT;
        wr.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_PROGRESS_REQUEST;
        wr.progress_request = &pr;
        client_stream_send(ws, &wr.base);
    } else {
        fprintf(stderr, "Invalid command %s (only support watch)\n", l);
    }
    free(copy);
}

static void feed(const char *p, size_t n)
{
    buf_put(&line, p, n);
    for (;;) {
        char *nl = line.len ? memchr(line.p, '\n', line.len) : NULL;
        if (!nl)
            break;
        *nl = 0;
        do_line(line.p);
        size_t used = (size_t)(nl - line.p) + 1;
        memmove(line.p, line.p + used, line.len - used);
        line.len -= used;
    }
}

static void on_eof(void)
{
    ctl_die(EXIT_INVALID_INPUT, "Error reading watch request line: EOF");
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    static char mem[65536];
    b->base = mem;
    b->len = sizeof mem;
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    if (n < 0)
        on_eof();
    if (n > 0)
        feed(b->base, (size_t)n);
}

int ctl_watch_interactive(bool prefix, int64_t rev, bool prev)
{
    /* etcdctl parses each line's flags afresh: the command line's do not
     * carry over (checked: `watch -i --rev=2` then "watch k" replays nothing) */
    (void)prefix, (void)rev, (void)prev;
    uv_loop_t *loop = (uv_loop_t *)ctl_loop();
    struct client_conn *c = ctl_connect();
    if (client_stream_open(c, "/etcdserverpb.Watch/Watch", on_msg, on_close, NULL, &ws))
        ctl_die(EXIT_BAD_CONN, "connection closed");
    static uv_pipe_t in;
    if (uv_pipe_init(loop, &in, 0) == 0 && uv_pipe_open(&in, 0) == 0 &&
        uv_read_start((uv_stream_t *)&in, alloc_cb, read_cb) == 0) {
        uv_run(loop, UV_RUN_DEFAULT);
        on_eof();
    }
    /* stdin is a file: read it all, then it ends */
    char tmp[65536];
    ssize_t r;
    while ((r = read(0, tmp, sizeof tmp)) > 0)
        feed(tmp, (size_t)r);
    uv_run(loop, UV_RUN_NOWAIT);
    on_eof();
    return 0;
}
