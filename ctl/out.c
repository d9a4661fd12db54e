/* Formatting exactly as the Go libraries etcdctl prints with: fmt's %q
 * (strconv.Quote), encoding/json strings and []byte (base64), go-humanize's
 * Bytes, time.Duration's String and olekukonko/tablewriter's tables. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

void buf_put(struct buf *b, const void *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->p = realloc(b->p, cap);
        if (!b->p) {
            fprintf(stderr, "ketchctl: out of memory\n");
            exit(1);
        }
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = 0;
}

void buf_puts(struct buf *b, const char *s)
{
    buf_put(b, s, strlen(s));
}

void buf_printf(struct buf *b, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < (int)sizeof tmp) {
        buf_put(b, tmp, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    buf_put(b, big, (size_t)n);
    free(big);
}

void buf_free(struct buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

void out_base64(struct buf *b, const uint8_t *p, size_t n)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        char o[4] = {t[v >> 18], t[(v >> 12) & 63], i + 1 < n ? t[(v >> 6) & 63] : '=',
                     i + 2 < n ? t[v & 63] : '='};
        buf_put(b, o, 4);
    }
}

/* Decodes one UTF-8 sequence; returns its length, or 0 if invalid. */
static size_t utf8_dec(const unsigned char *p, size_t n, uint32_t *cp)
{
    if (p[0] < 0x80) {
        *cp = p[0];
        return 1;
    }
    size_t len;
    uint32_t min;
    if ((p[0] & 0xe0) == 0xc0) {
        len = 2, *cp = p[0] & 0x1f, min = 0x80;
    } else if ((p[0] & 0xf0) == 0xe0) {
        len = 3, *cp = p[0] & 0x0f, min = 0x800;
    } else if ((p[0] & 0xf8) == 0xf0) {
        len = 4, *cp = p[0] & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        *cp = (*cp << 6) | (p[i] & 0x3f);
    }
    if (*cp < min || *cp > 0x10ffff || (*cp >= 0xd800 && *cp <= 0xdfff))
        return 0;
    return len;
}

void out_json_str(struct buf *b, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    static const char hx[] = "0123456789abcdef";
    buf_put(b, "\"", 1);
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        if (c < 0x80) {
            if (c == '"' || c == '\\') {
                char e[2] = {'\\', (char)c};
                buf_put(b, e, 2);
            } else if (c == '\n') {
                buf_puts(b, "\\n");
            } else if (c == '\r') {
                buf_puts(b, "\\r");
            } else if (c == '\t') {
                buf_puts(b, "\\t");
            } else if (c < 0x20 || c == '<' || c == '>' || c == '&') {
                char e[6] = {'\\', 'u', '0', '0', hx[c >> 4], hx[c & 15]};
                buf_put(b, e, 6);
            } else {
                buf_put(b, &c, 1);
            }
            i++;
            continue;
        }
        uint32_t cp;
        size_t l = utf8_dec(p + i, n - i, &cp);
        if (l == 0) {
            buf_puts(b, "\\ufffd");
            i++;
        } else if (cp == 0x2028 || cp == 0x2029) {
            buf_printf(b, "\\u%04x", cp);
            i += l;
        } else {
            buf_put(b, p + i, l);
            i += l;
        }
    }
    buf_put(b, "\"", 1);
}

/* unicode.IsPrint, approximated: what Go treats as printable among the
 * code points a key or value is likely to hold. */
static bool go_isprint(uint32_t cp)
{
    if (cp < 0x20 || cp == 0x7f)
        return false;
    if (cp >= 0x80 && cp < 0xa0)
        return false;
    if (cp == 0xad || cp == 0xfeff || (cp >= 0x200b && cp <= 0x200f) ||
        (cp >= 0x2028 && cp <= 0x202e) || (cp >= 0x2060 && cp <= 0x206f) ||
        (cp >= 0xfff9 && cp <= 0xfffb) || (cp >= 0xe000 && cp <= 0xf8ff) || cp >= 0xf0000)
        return false;
    if (cp == 0x00a0 || cp == 0x3000 || (cp >= 0x2000 && cp <= 0x200a))
        return false; /* spaces other than U+0020 are quoted by strconv */
    return true;
}

void out_goquote(struct buf *b, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    static const char hx[] = "0123456789abcdef";
    buf_put(b, "\"", 1);
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        uint32_t cp;
        size_t l = utf8_dec(p + i, n - i, &cp);
        if (l == 0) {
            char e[4] = {'\\', 'x', hx[c >> 4], hx[c & 15]};
            buf_put(b, e, 4);
            i++;
            continue;
        }
        if (cp == '"' || cp == '\\') {
            char e[2] = {'\\', (char)cp};
            buf_put(b, e, 2);
        } else if (go_isprint(cp)) {
            buf_put(b, p + i, l);
        } else if (cp == '\a') {
            buf_puts(b, "\\a");
        } else if (cp == '\b') {
            buf_puts(b, "\\b");
        } else if (cp == '\f') {
            buf_puts(b, "\\f");
        } else if (cp == '\n') {
            buf_puts(b, "\\n");
        } else if (cp == '\r') {
            buf_puts(b, "\\r");
        } else if (cp == '\t') {
            buf_puts(b, "\\t");
        } else if (cp == '\v') {
            buf_puts(b, "\\v");
        } else if (cp < 0x20 || cp == 0x7f) {
            char e[4] = {'\\', 'x', hx[cp >> 4], hx[cp & 15]};
            buf_put(b, e, 4);
        } else if (cp < 0x10000) {
            buf_printf(b, "\\u%04x", cp);
        } else {
            buf_printf(b, "\\U%08x", cp);
        }
        i += l;
    }
    buf_put(b, "\"", 1);
}

void out_hex(struct buf *b, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        buf_printf(b, "\\x%02x", p[i]);
}

void out_humanize(struct buf *b, uint64_t s)
{
    static const char *const units[] = {"B", "kB", "MB", "GB", "TB", "PB", "EB"};
    if (s < 10) {
        buf_printf(b, "%d B", (int)s);
        return;
    }
    double e = floor(log((double)s) / log(1000.0));
    double val = floor((double)s / pow(1000.0, e) * 10 + 0.5) / 10;
    buf_printf(b, val < 10 ? "%.1f %s" : "%.0f %s", val, units[(int)e]);
}

/* time.Duration.String. */
void out_duration(struct buf *b, int64_t ns)
{
    char tmp[64];
    uint64_t u = ns < 0 ? (uint64_t)-ns : (uint64_t)ns;
    const char *sign = ns < 0 ? "-" : "";
    if (u == 0) {
        buf_puts(b, "0s");
        return;
    }
    if (u < 1000000000ull) {
        const char *unit;
        uint64_t div;
        if (u < 1000) {
            buf_printf(b, "%s%lluns", sign, (unsigned long long)u);
            return;
        } else if (u < 1000000) {
            unit = "µs", div = 1000;
        } else {
            unit = "ms", div = 1000000;
        }
        snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)(u % div));
        /* fraction with trailing zeros removed, width = digits of div - 1 */
        int w = div == 1000 ? 3 : 6;
        char frac[16];
        snprintf(frac, sizeof frac, "%0*llu", w, (unsigned long long)(u % div));
        int fl = w;
        while (fl > 0 && frac[fl - 1] == '0')
            fl--;
        frac[fl] = 0;
        buf_printf(b, "%s%llu%s%s%s", sign, (unsigned long long)(u / div), fl ? "." : "", frac,
                   unit);
        return;
    }
    uint64_t secs = u / 1000000000ull, fracns = u % 1000000000ull;
    uint64_t h = secs / 3600, m = (secs / 60) % 60, s = secs % 60;
    char frac[16];
    snprintf(frac, sizeof frac, "%09llu", (unsigned long long)fracns);
    int fl = 9;
    while (fl > 0 && frac[fl - 1] == '0')
        fl--;
    frac[fl] = 0;
    buf_puts(b, sign);
    if (h)
        buf_printf(b, "%lluh", (unsigned long long)h);
    if (h || m)
        buf_printf(b, "%llum", (unsigned long long)m);
    buf_printf(b, "%llu%s%ss", (unsigned long long)s, fl ? "." : "", frac);
}

/* Display width of a UTF-8 string (runes; no East Asian wide handling). */
static size_t dwidth(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80)
            w++;
    return w;
}

static void pad(FILE *f, size_t n)
{
    while (n--)
        fputc(' ', f);
}

static void border(FILE *f, const size_t *w, size_t ncol)
{
    for (size_t c = 0; c < ncol; c++) {
        fputc('+', f);
        for (size_t i = 0; i < w[c] + 2; i++)
            fputc('-', f);
    }
    fputs("+\n", f);
}

/* tablewriter.Title: upper case, '_' and '.' become spaces. */
static void title(const char *s, char *out, size_t cap)
{
    size_t i = 0;
    for (; s[i] && i + 1 < cap; i++) {
        char c = s[i];
        if (c == '_' || c == '.')
            c = ' ';
        out[i] = (c >= 'a' && c <= 'z') ? (char)(c - 32) : c;
    }
    out[i] = 0;
}

void out_table(FILE *f, const char *const *hdr, size_t ncol, char ***rows, size_t nrows, bool right)
{
    size_t *w = calloc(ncol, sizeof *w);
    char (*titles)[128] = calloc(ncol, sizeof *titles);
    for (size_t c = 0; c < ncol; c++) {
        title(hdr[c], titles[c], sizeof titles[c]);
        w[c] = dwidth(titles[c]);
    }
    for (size_t r = 0; r < nrows; r++)
        for (size_t c = 0; c < ncol; c++) {
            size_t d = dwidth(rows[r][c]);
            if (d > w[c])
                w[c] = d;
        }
    border(f, w, ncol);
    for (size_t c = 0; c < ncol; c++) {
        size_t d = dwidth(titles[c]), gap = w[c] - d, l = gap / 2;
        fputs("| ", f);
        pad(f, l);
        fputs(titles[c], f);
        pad(f, gap - l);
        fputc(' ', f);
    }
    fputs("|\n", f);
    border(f, w, ncol);
    for (size_t r = 0; r < nrows; r++) {
        for (size_t c = 0; c < ncol; c++) {
            size_t d = dwidth(rows[r][c]);
            fputs("| ", f);
            if (right)
                pad(f, w[c] - d);
            fputs(rows[r][c], f);
            if (!right)
                pad(f, w[c] - d);
            fputc(' ', f);
        }
        fputs("|\n", f);
    }
    border(f, w, ncol);
    free(w);
    free(titles);
}

bool parse_duration(const char *s, int64_t *ms)
{
    double total = 0;
    const char *p = s;
    bool neg = false;
    if (*p == '-' || *p == '+')
        neg = *p++ == '-';
    if (strcmp(p, "0") == 0) {
        *ms = 0;
        return true;
    }
    if (!*p)
        return false;
    while (*p) {
        char *end;
        if (!((*p >= '0' && *p <= '9') || *p == '.'))
            return false;
        double v = strtod(p, &end);
        if (end == p)
            return false;
        p = end;
        double mul;
        if (strncmp(p, "ns", 2) == 0)
            mul = 1e-6, p += 2;
        else if (strncmp(p, "us", 2) == 0)
            mul = 1e-3, p += 2;
        else if (strncmp(p, "µs", strlen("µs")) == 0)
            mul = 1e-3, p += strlen("µs");
        else if (strncmp(p, "ms", 2) == 0)
            mul = 1, p += 2;
        else if (*p == 's')
            mul = 1000, p++;
        else if (*p == 'm')
            mul = 60000, p++;
        else if (*p == 'h')
            mul = 3600000, p++;
        else
            return false;
        total += v * mul;
    }
    *ms = (int64_t)(neg ? -total : total);
    return true;
}
