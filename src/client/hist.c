/* Log-linear latency histogram (the HdrHistogram idea, one significant
 * "binary digit" group of CLIENT_HIST_SUB_BITS bits).
 *
 * Values below CLIENT_HIST_SUB have a bucket each. A larger value v with
 * highest set bit e falls in group e - SUB_BITS + 1, which is split into SUB
 * equal buckets of width 2^(e - SUB_BITS); so a bucket's width is at most
 * 1/SUB of its lower edge. */
#include <math.h>
#include <string.h>

#include "client/client.h"

#define MAX_VALUE ((UINT64_C(1) << (CLIENT_HIST_MAX_EXP + 1)) - 1)

void client_hist_reset(struct client_hist *h)
{
    memset(h, 0, sizeof *h);
}

unsigned client_hist_index(uint64_t v)
{
    if (v > MAX_VALUE)
        v = MAX_VALUE;
    if (v < CLIENT_HIST_SUB)
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = e - CLIENT_HIST_SUB_BITS;
    return (shift + 1) * CLIENT_HIST_SUB + (unsigned)(v >> shift) - CLIENT_HIST_SUB;
}

uint64_t client_hist_bucket_max(unsigned i)
{
    if (i < CLIENT_HIST_SUB)
        return i;
    unsigned shift = i / CLIENT_HIST_SUB - 1;
    uint64_t sub = i % CLIENT_HIST_SUB + CLIENT_HIST_SUB;
    return ((sub + 1) << shift) - 1;
}

static uint64_t bucket_min(unsigned i)
{
    return i == 0 ? 0 : client_hist_bucket_max(i - 1) + 1;
}

void client_hist_record(struct client_hist *h, uint64_t v)
{
    if (h->count == 0 || v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
    h->count++;
    h->sum += (double)v;
    h->sumsq += (double)v * (double)v;
    h->buckets[client_hist_index(v)]++;
}

void client_hist_merge(struct client_hist *dst, const struct client_hist *src)
{
    if (src->count == 0)
        return;
    if (dst->count == 0 || src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
    dst->count += src->count;
    dst->sum += src->sum;
    dst->sumsq += src->sumsq;
    for (unsigned i = 0; i < CLIENT_HIST_BUCKETS; i++)
        dst->buckets[i] += src->buckets[i];
}

uint64_t client_hist_quantile(const struct client_hist *h, double q)
{
    if (h->count == 0)
        return 0;
    if (q <= 0)
        return h->min;
    if (q >= 1)
        return h->max;
    /* The rank of the value: the smallest r with r >= q * count. */
    uint64_t rank = (uint64_t)ceil(q * (double)h->count);
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < CLIENT_HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= rank) {
            uint64_t v = client_hist_bucket_max(i);
            if (v > h->max)
                v = h->max;
            if (v < h->min)
                v = h->min;
            return v;
        }
    }
    return h->max;
}

double client_hist_mean(const struct client_hist *h)
{
    return h->count ? h->sum / (double)h->count : 0;
}

double client_hist_stddev(const struct client_hist *h)
{
    if (h->count < 2)
        return 0;
    double m = client_hist_mean(h);
    double var = h->sumsq / (double)h->count - m * m;
    return var > 0 ? sqrt(var) : 0;
}

unsigned client_hist_bins(const struct client_hist *h, unsigned nbins, double *bounds,
                          uint64_t *counts)
{
    if (h->count == 0 || nbins == 0)
        return 0;
    if (h->min == h->max) {
        bounds[0] = (double)h->max;
        counts[0] = h->count;
        return 1;
    }
    double lo = (double)h->min, width = ((double)h->max - lo) / nbins;
    for (unsigned b = 0; b < nbins; b++) {
        bounds[b] = lo + width * (b + 1);
        counts[b] = 0;
    }
    for (unsigned i = 0; i < CLIENT_HIST_BUCKETS; i++) {
        if (!h->buckets[i])
            continue;
        /* Place the bucket by its midpoint, clamped to the exact range. */
        double mid = ((double)bucket_min(i) + (double)client_hist_bucket_max(i)) / 2;
        if (mid < lo)
            mid = lo;
        unsigned b = (unsigned)((mid - lo) / width);
        if (b >= nbins)
            b = nbins - 1;
        counts[b] += h->buckets[i];
    }
    return nbins;
}
