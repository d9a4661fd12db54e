/* Results: etcd benchmark's text summary (Summary, Response time histogram,
 * Latency distribution) with p50/p90/p99/p99.9/max per operation, or one
 * JSON object with --json. Latencies are printed in milliseconds. */
#include <math.h>
#include <string.h>

#include "bench.h"

#define NBINS 10
#define BAR 40

static double ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void json_hist(FILE *f, const struct client_hist *h, double secs)
{
    fprintf(f,
            "{\"count\":%llu,\"throughput\":%.1f,\"min_ms\":%.3f,\"mean_ms\":%.3f,"
            "\"stddev_ms\":%.3f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,"
            "\"p999_ms\":%.3f,\"max_ms\":%.3f}",
            (unsigned long long)h->count, secs > 0 ? (double)h->count / secs : 0, ms(h->min),
            client_hist_mean(h) / 1e6, client_hist_stddev(h) / 1e6,
            ms(client_hist_quantile(h, 0.5)), ms(client_hist_quantile(h, 0.9)),
            ms(client_hist_quantile(h, 0.99)), ms(client_hist_quantile(h, 0.999)), ms(h->max));
}

static void text_hist(FILE *f, const struct client_hist *h)
{
    double bounds[NBINS];
    uint64_t counts[NBINS], most = 0;
    unsigned n = client_hist_bins(h, NBINS, bounds, counts);
    for (unsigned i = 0; i < n; i++)
        if (counts[i] > most)
            most = counts[i];
    for (unsigned i = 0; i < n; i++) {
        fprintf(f, "  %10.3f [%llu]\t|", bounds[i] / 1e6, (unsigned long long)counts[i]);
        int bar = most ? (int)((double)counts[i] * BAR / (double)most + 0.5) : 0;
        for (int j = 0; j < bar; j++)
            fputs("\u220e", f);
        fputc('\n', f);
    }
}

static void text_summary(FILE *f, const char *name, const struct client_hist *h, double secs)
{
    fprintf(f, "\n%s:\n", name);
    fprintf(f, "  Count:\t%llu\n", (unsigned long long)h->count);
    fprintf(f, "  Requests/sec:\t%.1f\n", secs > 0 ? (double)h->count / secs : 0);
    if (!h->count)
        return;
    fprintf(f, "  Slowest:\t%.3f ms\n  Fastest:\t%.3f ms\n", ms(h->max), ms(h->min));
    fprintf(f, "  Average:\t%.3f ms\n  Stddev:\t%.3f ms\n", client_hist_mean(h) / 1e6,
            client_hist_stddev(h) / 1e6);
    fprintf(f, "  Latency:\tp50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f ms\n",
            ms(client_hist_quantile(h, 0.5)), ms(client_hist_quantile(h, 0.9)),
            ms(client_hist_quantile(h, 0.99)), ms(client_hist_quantile(h, 0.999)), ms(h->max));
}

void bench_report(struct bench *b, FILE *f)
{
    const struct workload_ops *w = b->w;
    double secs = (double)(b->t_end - b->t_start) / 1e9;
    /* "all" merges the recorded request types; the k8s "list" (whole
     * paginated lists) is a sum of list-pages, so it is left out. */
    static struct client_hist all;
    client_hist_reset(&all);
    for (int i = 0; i < w->nops; i++)
        if (strcmp(w->ops[i], "list") != 0)
            client_hist_merge(&all, &b->hist[i]);
    double tput = secs > 0 ? (double)all.count / secs : 0;

    if (b->o->json) {
        fprintf(f, "{\"workload\":");
        json_str(f, b->o->workload_name);
        fprintf(f, ",\"endpoints\":");
        json_str(f, b->o->endpoints[0]);
        fprintf(f, ",\"conns\":%d,\"clients\":%d,\"seconds\":%.3f,\"requests\":%llu,"
                   "\"ok\":%llu,\"errors\":%llu,\"throughput\":%.1f",
                b->o->conns, b->o->clients, secs, (unsigned long long)b->requests,
                (unsigned long long)all.count, (unsigned long long)b->errors, tput);
        fprintf(f, ",\"latency\":");
        json_hist(f, &all, secs);
        fprintf(f, ",\"ops\":{");
        int first = 1;
        for (int i = 0; i < w->nops; i++) {
            if (!b->hist[i].count && w->nops > 1)
                continue;
            fprintf(f, "%s", first ? "" : ",");
            first = 0;
            json_str(f, w->ops[i]);
            fputc(':', f);
            json_hist(f, &b->hist[i], secs);
        }
        fprintf(f, "},\"error_summary\":[");
        for (int i = 0; i < b->nerrs; i++) {
            fprintf(f, "%s{\"status\":%d,\"message\":", i ? "," : "", b->errs[i].status);
            json_str(f, b->errs[i].message);
            fprintf(f, ",\"count\":%llu}", (unsigned long long)b->errs[i].count);
        }
        fprintf(f, "]");
        if (b->o->workload == W_K8S)
            fprintf(f, ",\"update_conflicts\":%llu", (unsigned long long)b->conflicts);
        if (b->note[0]) {
            fprintf(f, ",\"note\":");
            json_str(f, b->note);
        }
        fprintf(f, "}\n");
        return;
    }

    fprintf(f, "Summary (%s against %s, %d conns, %d clients):\n", b->o->workload_name,
            b->o->endpoints[0], b->o->conns, b->o->clients);
    fprintf(f, "  Total:\t%.4f secs.\n", secs);
    fprintf(f, "  Requests:\t%llu (%llu ok, %llu errors)\n", (unsigned long long)b->requests,
            (unsigned long long)all.count, (unsigned long long)b->errors);
    fprintf(f, "  Requests/sec:\t%.1f\n", tput);
    if (all.count) {
        fprintf(f, "  Slowest:\t%.3f ms\n  Fastest:\t%.3f ms\n  Average:\t%.3f ms\n"
                   "  Stddev:\t%.3f ms\n",
                ms(all.max), ms(all.min), client_hist_mean(&all) / 1e6,
                client_hist_stddev(&all) / 1e6);
        fprintf(f, "\nResponse time histogram (ms):\n");
        text_hist(f, &all);
        fprintf(f, "\nLatency distribution:\n");
        static const double qs[] = {0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999};
        for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++)
            fprintf(f, "  %g%% in %.3f ms.\n", qs[i] * 100, ms(client_hist_quantile(&all, qs[i])));
        fprintf(f, "  max    %.3f ms.\n", ms(all.max));
    }
    if (w->nops > 1)
        for (int i = 0; i < w->nops; i++)
            text_summary(f, w->ops[i], &b->hist[i], secs);
    if (b->o->workload == W_K8S)
        fprintf(f, "\n  update conflicts (retried): %llu\n", (unsigned long long)b->conflicts);
    if (b->nerrs || b->err_other) {
        fprintf(f, "\nErrors:\n");
        for (int i = 0; i < b->nerrs; i++)
            fprintf(f, "  %8llu  status %d: %s\n", (unsigned long long)b->errs[i].count,
                    b->errs[i].status, b->errs[i].message);
        if (b->err_other)
            fprintf(f, "  %8llu  other\n", (unsigned long long)b->err_other);
    }
    if (b->note[0])
        fprintf(f, "\nNote: %s\n", b->note);
}
