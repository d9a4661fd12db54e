/* Token providers, as etcd's auth/simple_token.go and auth/jwt.go.
 *
 * Simple tokens are "<16 random letters>.<raft index>", known only to the
 * members that applied the Authenticate entry, in memory: they die with the
 * process and TTL seconds after their last use. JWT tokens carry the user
 * and the auth revision they were issued at, signed; any member with the
 * key can check them, and they expire at their "exp" claim. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include "auth/auth.h"
#include "server/config.h"

enum { NBUCKETS = 1024 };

struct stoken {
    char *token;
    char *user;
    uint64_t expires_ms;
    struct stoken *next;
};

enum jwt_alg { ALG_RS, ALG_PS, ALG_ES, ALG_HS };

struct auth_tokens {
    bool jwt;
    uint64_t ttl_ms;
    /* simple */
    struct stoken *buckets[NBUCKETS];
    size_t count, sweep_at;
    /* jwt */
    char alg_name[8];
    enum jwt_alg alg;
    const EVP_MD *md;
    EVP_PKEY *priv, *pub; /* RS/PS/ES: either may be NULL (not both) */
    unsigned char *secret; /* HS */
    size_t secret_len;
    int ec_size; /* ES: bytes of r and of s */
};

static uint32_t hash_str(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

/* ---- options ---- */

static int read_file(const char *path, unsigned char **buf, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) return -1;
    size_t cap = 4096, n = 0;
    unsigned char *b = malloc(cap);
    while (b != NULL) {
        size_t r = fread(b + n, 1, cap - n, f);
        n += r;
        if (n < cap) break;
        unsigned char *nb = realloc(b, cap * 2);
        if (nb == NULL) {
            free(b);
            b = NULL;
            break;
        }
        b = nb;
        cap *= 2;
    }
    fclose(f);
    if (b == NULL) return -1;
    *buf = b;
    *len = n;
    return 0;
}

static EVP_PKEY *load_key(const char *path, bool priv)
{
    unsigned char *b;
    size_t n;
    if (read_file(path, &b, &n) != 0) return NULL;
    BIO *bio = BIO_new_mem_buf(b, (int)n);
    EVP_PKEY *k = NULL;
    if (bio != NULL)
        k = priv ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL)
                 : PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    BIO_free(bio);
    OPENSSL_cleanse(b, n);
    free(b);
    return k;
}

static int parse_jwt(auth_tokens *t, const char *spec, char *err, size_t errlen)
{
    size_t n;
    char **opts = config_split(spec, &n);
    const char *method = NULL, *pub = NULL, *priv = NULL, *ttl = NULL;
    int rv = -1;
    if (opts == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 1; i < n; i++) {
        char *eq = strchr(opts[i], '=');
        if (eq == NULL) {
            snprintf(err, errlen, "invalid auth token option %s", opts[i]);
            goto out;
        }
        *eq = 0;
        const char *v = eq + 1;
        if (!strcmp(opts[i], "sign-method")) method = v;
        else if (!strcmp(opts[i], "pub-key")) pub = v;
        else if (!strcmp(opts[i], "priv-key")) priv = v;
        else if (!strcmp(opts[i], "ttl")) ttl = v;
        else {
            snprintf(err, errlen, "unknown token option: %s", opts[i]);
            goto out;
        }
    }
    t->ttl_ms = 5 * 60 * 1000;
    if (ttl != NULL && (config_parse_duration_ms(ttl, &t->ttl_ms) != 0 || t->ttl_ms == 0)) {
        snprintf(err, errlen, "invalid ttl %s", ttl);
        goto out;
    }
    if (method == NULL || strlen(method) != 5) goto bad_method;
    int bits = atoi(method + 2);
    if (bits == 256) t->md = EVP_sha256();
    else if (bits == 384) t->md = EVP_sha384();
    else if (bits == 512) t->md = EVP_sha512();
    else goto bad_method;
    if (!strncmp(method, "RS", 2)) t->alg = ALG_RS;
    else if (!strncmp(method, "PS", 2)) t->alg = ALG_PS;
    else if (!strncmp(method, "ES", 2)) t->alg = ALG_ES;
    else if (!strncmp(method, "HS", 2)) t->alg = ALG_HS;
    else goto bad_method;
    snprintf(t->alg_name, sizeof t->alg_name, "%s", method);
    if (t->alg == ALG_HS) {
        if (priv == NULL || read_file(priv, &t->secret, &t->secret_len) != 0 ||
            t->secret_len == 0) {
            snprintf(err, errlen, "auth: missing key data");
            goto out;
        }
        rv = 0;
        goto out;
    }
    if (priv != NULL && (t->priv = load_key(priv, true)) == NULL) {
        snprintf(err, errlen, "cannot read the private key %s", priv);
        goto out;
    }
    if (pub != NULL && (t->pub = load_key(pub, false)) == NULL) {
        snprintf(err, errlen, "cannot read the public key %s", pub);
        goto out;
    }
    if (t->priv == NULL && t->pub == NULL) {
        snprintf(err, errlen, "auth: missing key data");
        goto out;
    }
    EVP_PKEY *k = t->priv ? t->priv : t->pub;
    int id = EVP_PKEY_get_base_id(k);
    if ((t->alg == ALG_ES) != (id == EVP_PKEY_EC) ||
        (t->alg != ALG_ES && id != EVP_PKEY_RSA)) {
        snprintf(err, errlen, "the key does not fit sign-method %s", method);
        goto out;
    }
    if (t->priv != NULL && t->pub != NULL && EVP_PKEY_eq(t->priv, t->pub) != 1) {
        snprintf(err, errlen, "auth: key mismatch");
        goto out;
    }
    if (t->alg == ALG_ES) t->ec_size = (EVP_PKEY_get_bits(k) + 7) / 8;
    rv = 0;
    goto out;
bad_method:
    snprintf(err, errlen, "auth: invalid auth signature method");
out:
    config_strv_free(opts);
    return rv;
}

int auth_tokens_new(auth_tokens **out, const char *spec, uint64_t ttl_s, char *err,
                    size_t errlen)
{
    auth_tokens *t = calloc(1, sizeof *t);
    if (t == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    t->ttl_ms = (ttl_s ? ttl_s : 300) * 1000;
    t->sweep_at = 64;
    if (spec == NULL || spec[0] == 0 || !strcmp(spec, "simple")) {
        *out = t;
        return 0;
    }
    if (strncmp(spec, "jwt", 3) != 0 || (spec[3] != 0 && spec[3] != ',')) {
        snprintf(err, errlen, "unknown token type: %s", spec);
        free(t);
        return -1;
    }
    t->jwt = true;
    if (parse_jwt(t, spec, err, errlen) != 0) {
        auth_tokens_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

void auth_tokens_free(auth_tokens *t)
{
    if (t == NULL) return;
    auth_tokens_clear(t);
    EVP_PKEY_free(t->priv);
    EVP_PKEY_free(t->pub);
    if (t->secret) OPENSSL_cleanse(t->secret, t->secret_len);
    free(t->secret);
    free(t);
}

bool auth_tokens_is_jwt(const auth_tokens *t) { return t->jwt; }

void auth_token_prefix(char out[17])
{
    static const char letters[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    unsigned char r[16];
    if (RAND_bytes(r, sizeof r) != 1) {
        for (int i = 0; i < 16; i++) r[i] = (unsigned char)rand();
    }
    for (int i = 0; i < 16; i++) out[i] = letters[r[i] % 52];
    out[16] = 0;
}

/* ---- simple tokens ---- */

static void stoken_free(struct stoken *e)
{
    OPENSSL_cleanse(e->token, strlen(e->token));
    free(e->token);
    free(e->user);
    free(e);
}

static void sweep(auth_tokens *t, uint64_t now_ms)
{
    for (size_t i = 0; i < NBUCKETS; i++) {
        struct stoken **pp = &t->buckets[i];
        while (*pp) {
            struct stoken *e = *pp;
            if (e->expires_ms <= now_ms) {
                *pp = e->next;
                stoken_free(e);
                t->count--;
            } else {
                pp = &e->next;
            }
        }
    }
    t->sweep_at = t->count * 2 > 64 ? t->count * 2 : 64;
}

static char *simple_assign(auth_tokens *t, const char *user, const char *prefix, uint64_t index,
                           uint64_t now_ms)
{
    if (t->count >= t->sweep_at) sweep(t, now_ms);
    struct stoken *e = calloc(1, sizeof *e);
    char buf[64];
    snprintf(buf, sizeof buf, "%.16s.%" PRIu64, prefix, index);
    if (e == NULL || (e->token = strdup(buf)) == NULL || (e->user = strdup(user)) == NULL) {
        if (e) {
            free(e->token);
            free(e);
        }
        return NULL;
    }
    char *ret = strdup(buf);
    if (ret == NULL) {
        stoken_free(e);
        return NULL;
    }
    e->expires_ms = now_ms + t->ttl_ms;
    uint32_t b = hash_str(buf) % NBUCKETS;
    e->next = t->buckets[b];
    t->buckets[b] = e;
    t->count++;
    return ret;
}

static bool simple_info(auth_tokens *t, const char *token, uint64_t now_ms, char **user)
{
    uint32_t b = hash_str(token) % NBUCKETS;
    for (struct stoken **pp = &t->buckets[b]; *pp; pp = &(*pp)->next) {
        struct stoken *e = *pp;
        if (strcmp(e->token, token) != 0) continue;
        if (e->expires_ms <= now_ms) {
            *pp = e->next;
            stoken_free(e);
            t->count--;
            return false;
        }
        e->expires_ms = now_ms + t->ttl_ms; /* as etcd's resetSimpleToken */
        *user = strdup(e->user);
        return *user != NULL;
    }
    return false;
}

void auth_tokens_invalidate_user(auth_tokens *t, const char *user)
{
    for (size_t i = 0; i < NBUCKETS; i++) {
        struct stoken **pp = &t->buckets[i];
        while (*pp) {
            struct stoken *e = *pp;
            if (!strcmp(e->user, user)) {
                *pp = e->next;
                stoken_free(e);
                t->count--;
            } else {
                pp = &e->next;
            }
        }
    }
}

void auth_tokens_clear(auth_tokens *t)
{
    for (size_t i = 0; i < NBUCKETS; i++) {
        while (t->buckets[i]) {
            struct stoken *e = t->buckets[i];
            t->buckets[i] = e->next;
            stoken_free(e);
        }
    }
    t->count = 0;
}

/* ---- JWT ---- */

static char *b64url(const unsigned char *p, size_t n)
{
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    if (out == NULL) return NULL;
    int len = EVP_EncodeBlock((unsigned char *)out, p, (int)n);
    while (len > 0 && out[len - 1] == '=') len--;
    out[len] = 0;
    for (int i = 0; i < len; i++) {
        if (out[i] == '+') out[i] = '-';
        else if (out[i] == '/') out[i] = '_';
    }
    return out;
}

/* Decodes base64url (no padding) into a malloc'd buffer. */
static unsigned char *b64url_dec(const char *s, size_t sl, size_t *n)
{
    size_t pl = (sl + 3) / 4 * 4;
    char *tmp = malloc(pl + 1);
    unsigned char *out = malloc(pl / 4 * 3 + 1);
    if (tmp == NULL || out == NULL || sl % 4 == 1) goto fail;
    for (size_t i = 0; i < sl; i++) {
        char c = s[i];
        if (c == '-') c = '+';
        else if (c == '_') c = '/';
        else if (c == '+' || c == '/' || c == '=') goto fail;
        tmp[i] = c;
    }
    for (size_t i = sl; i < pl; i++) tmp[i] = '=';
    int len = EVP_DecodeBlock(out, (unsigned char *)tmp, (int)pl);
    if (len < 0) goto fail;
    len -= (int)(pl - sl); /* EVP_DecodeBlock counts padding as zero bytes */
    free(tmp);
    *n = (size_t)len;
    return out;
fail:
    free(tmp);
    free(out);
    return NULL;
}

/* Signs `in` into a raw JWS signature (malloc'd, *n bytes). */
static unsigned char *jwt_sign(auth_tokens *t, const char *in, size_t inl, size_t *n)
{
    if (t->alg == ALG_HS) {
        unsigned char *mac = malloc(EVP_MAX_MD_SIZE);
        unsigned int ml = 0;
        if (mac == NULL ||
            HMAC(t->md, t->secret, (int)t->secret_len, (const unsigned char *)in, inl, mac,
                 &ml) == NULL) {
            free(mac);
            return NULL;
        }
        *n = ml;
        return mac;
    }
    if (t->priv == NULL) return NULL;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    unsigned char *sig = NULL, *raw = NULL;
    size_t sl = 0;
    if (ctx == NULL || EVP_DigestSignInit(ctx, &pctx, t->md, NULL, t->priv) != 1) goto out;
    if (t->alg == ALG_PS && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
                             EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1))
        goto out;
    if (EVP_DigestSign(ctx, NULL, &sl, (const unsigned char *)in, inl) != 1) goto out;
    if ((sig = malloc(sl)) == NULL) goto out;
    if (EVP_DigestSign(ctx, sig, &sl, (const unsigned char *)in, inl) != 1) goto out;
    if (t->alg != ALG_ES) {
        *n = sl;
        raw = sig;
        sig = NULL;
        goto out;
    }
    /* ES: DER ECDSA-Sig-Value -> r || s, each ec_size bytes (RFC 7518) */
    const unsigned char *p = sig;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)sl);
    if (es == NULL) goto out;
    raw = calloc(2, (size_t)t->ec_size);
    if (raw != NULL) {
        const BIGNUM *r, *s;
        ECDSA_SIG_get0(es, &r, &s);
        if (BN_bn2binpad(r, raw, t->ec_size) < 0 ||
            BN_bn2binpad(s, raw + t->ec_size, t->ec_size) < 0) {
            free(raw);
            raw = NULL;
        } else {
            *n = 2 * (size_t)t->ec_size;
        }
    }
    ECDSA_SIG_free(es);
out:
    free(sig);
    EVP_MD_CTX_free(ctx);
    return raw;
}

static bool jwt_verify(auth_tokens *t, const char *in, size_t inl, const unsigned char *sig,
                       size_t sl)
{
    if (t->alg == ALG_HS) {
        size_t n;
        unsigned char *mac = jwt_sign(t, in, inl, &n);
        bool ok = mac != NULL && n == sl && CRYPTO_memcmp(mac, sig, n) == 0;
        free(mac);
        return ok;
    }
    EVP_PKEY *k = t->pub ? t->pub : t->priv;
    unsigned char *der = NULL;
    int derl = 0;
    if (t->alg == ALG_ES) {
        if (sl != 2 * (size_t)t->ec_size) return false;
        ECDSA_SIG *es = ECDSA_SIG_new();
        BIGNUM *r = BN_bin2bn(sig, t->ec_size, NULL), *s = BN_bin2bn(sig + t->ec_size, t->ec_size, NULL);
        if (es == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(es, r, s) != 1) {
            BN_free(r);
            BN_free(s);
            ECDSA_SIG_free(es);
            return false;
        }
        derl = i2d_ECDSA_SIG(es, &der);
        ECDSA_SIG_free(es);
        if (derl <= 0) return false;
        sig = der;
        sl = (size_t)derl;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    bool ok = false;
    if (ctx != NULL && EVP_DigestVerifyInit(ctx, &pctx, t->md, NULL, k) == 1 &&
        (t->alg != ALG_PS ||
         (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
          EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_AUTO) == 1)))
        ok = EVP_DigestVerify(ctx, sig, sl, (const unsigned char *)in, inl) == 1;
    EVP_MD_CTX_free(ctx);
    OPENSSL_free(der);
    return ok;
}

static char *jwt_assign(auth_tokens *t, const char *user, uint64_t rev, uint64_t now_ms)
{
    char hdr[64];
    int hl = snprintf(hdr, sizeof hdr, "{\"alg\":\"%s\",\"typ\":\"JWT\"}", t->alg_name);
    json_t *c = json_object();
    json_object_set_new(c, "exp", json_integer((json_int_t)((now_ms + t->ttl_ms) / 1000)));
    json_object_set_new(c, "revision", json_integer((json_int_t)rev));
    json_object_set_new(c, "username", json_string(user));
    char *claims = json_dumps(c, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(c);
    char *h64 = b64url((const unsigned char *)hdr, (size_t)hl);
    char *c64 = claims ? b64url((const unsigned char *)claims, strlen(claims)) : NULL;
    free(claims);
    char *out = NULL, *signing = NULL, *s64 = NULL;
    unsigned char *sig = NULL;
    size_t sl = 0;
    if (h64 == NULL || c64 == NULL) goto out;
    size_t n = strlen(h64) + 1 + strlen(c64);
    if ((signing = malloc(n + 1)) == NULL) goto out;
    snprintf(signing, n + 1, "%s.%s", h64, c64);
    if ((sig = jwt_sign(t, signing, n, &sl)) == NULL) goto out;
    if ((s64 = b64url(sig, sl)) == NULL) goto out;
    if ((out = malloc(n + 2 + strlen(s64))) == NULL) goto out;
    sprintf(out, "%s.%s", signing, s64);
out:
    free(h64);
    free(c64);
    free(signing);
    free(sig);
    free(s64);
    return out;
}

static bool jwt_info(auth_tokens *t, const char *token, uint64_t now_ms, char **user,
                     uint64_t *rev)
{
    const char *d1 = strchr(token, '.');
    const char *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    if (d2 == NULL || strchr(d2 + 1, '.') != NULL) return false;
    size_t hn, cn, sn;
    unsigned char *h = b64url_dec(token, (size_t)(d1 - token), &hn);
    unsigned char *c = b64url_dec(d1 + 1, (size_t)(d2 - d1 - 1), &cn);
    unsigned char *sig = b64url_dec(d2 + 1, strlen(d2 + 1), &sn);
    bool ok = false;
    json_t *hj = NULL, *cj = NULL;
    if (h == NULL || c == NULL || sig == NULL) goto out;
    hj = json_loadb((const char *)h, hn, 0, NULL);
    cj = json_loadb((const char *)c, cn, 0, NULL);
    if (!json_is_object(hj) || !json_is_object(cj)) goto out;
    /* the signer picks the algorithm, never the token */
    json_t *alg = json_object_get(hj, "alg");
    if (!json_is_string(alg) || strcmp(json_string_value(alg), t->alg_name) != 0) goto out;
    if (!jwt_verify(t, token, (size_t)(d2 - token), sig, sn)) goto out;
    json_t *u = json_object_get(cj, "username"), *r = json_object_get(cj, "revision"),
           *e = json_object_get(cj, "exp");
    if (!json_is_string(u) || !json_is_number(r)) goto out;
    if (e != NULL) {
        if (!json_is_number(e) || json_number_value(e) * 1000.0 <= (double)now_ms) goto out;
    }
    double rv = json_number_value(r);
    if (rv < 0) goto out;
    *user = strdup(json_string_value(u));
    *rev = (uint64_t)rv;
    ok = *user != NULL;
out:
    json_decref(hj);
    json_decref(cj);
    free(h);
    free(c);
    free(sig);
    return ok;
}

/* ---- API ---- */

char *auth_token_assign(auth_tokens *t, const char *user, uint64_t rev, const char *prefix,
                        uint64_t index, uint64_t now_ms)
{
    if (t->jwt) return jwt_assign(t, user, rev, now_ms);
    return simple_assign(t, user, prefix, index, now_ms);
}

bool auth_token_info(auth_tokens *t, const char *token, uint64_t now_ms, uint64_t cur_rev,
                     char **user, uint64_t *rev)
{
    if (t->jwt) return jwt_info(t, token, now_ms, user, rev);
    if (!simple_info(t, token, now_ms, user)) return false;
    *rev = cur_rev;
    return true;
}
