/* ketchctl k8s: Kubernetes encryption at rest (k8s.io/apiserver
 * storage/value/encrypt). A value is "k8s:enc:<provider>:v1:<key name>:"
 * followed by:
 *   aescbc     16-byte IV + AES-CBC ciphertext, PKCS#7 padded;
 *   aesgcm     12-byte nonce + AES-GCM ciphertext + 16-byte tag, the etcd key
 *              as additional authenticated data;
 *   secretbox  24-byte nonce + NaCl secretbox (XSalsa20-Poly1305: tag, then
 *              ciphertext);
 *   kms v1/v2  an envelope only the KMS plugin can open (labelled, not
 *              decrypted).
 * Keys come from kube-apiserver's EncryptionConfiguration file. */
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "k8s.h"

static struct k8s_key keys[64];
static size_t nkeys;

size_t k8s_crypt_nkeys(void)
{
    return nkeys;
}

const struct k8s_key *k8s_crypt_key(size_t i)
{
    return i < nkeys ? &keys[i] : NULL;
}

static const char *scalar(yaml_document_t *doc, yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static yaml_node_t *map_get(yaml_document_t *doc, yaml_node_t *m, const char *key)
{
    if (!m || m->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        const char *k = scalar(doc, yaml_document_get_node(doc, p->key));
        if (k && !strcmp(k, key))
            return yaml_document_get_node(doc, p->value);
    }
    return NULL;
}

static int unbase64(const char *s, uint8_t *out, size_t cap)
{
    size_t n = strlen(s);
    uint8_t tmp[128];
    if (n > 4 * sizeof tmp / 3)
        return -1;
    int l = EVP_DecodeBlock(tmp, (const unsigned char *)s, (int)n);
    if (l < 0)
        return -1;
    while (n && s[n - 1] == '=') /* EVP_DecodeBlock counts padding as zero bytes */
        n--, l--;
    if ((size_t)l > cap)
        return -1;
    memcpy(out, tmp, (size_t)l);
    return l;
}

static void load(yaml_parser_t *p, const char *path);

void k8s_crypt_load(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        ctl_die(EXIT_ERR, "open %s: cannot read the encryption configuration", path);
    yaml_parser_t p;
    yaml_parser_initialize(&p);
    yaml_parser_set_input_file(&p, f);
    load(&p, path);
    fclose(f);
}

void k8s_crypt_load_text(const char *text, const char *name)
{
    yaml_parser_t p;
    yaml_parser_initialize(&p);
    yaml_parser_set_input_string(&p, (const unsigned char *)text, strlen(text));
    load(&p, name);
}

static void load(yaml_parser_t *pp, const char *path)
{
    yaml_document_t doc;
    if (!yaml_parser_load(pp, &doc))
        ctl_die(EXIT_ERR, "%s: not a valid YAML file (%s, line %zu)", path,
                pp->problem ? pp->problem : "parse error", pp->problem_mark.line + 1);
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    yaml_node_t *res = map_get(&doc, root, "resources");
    if (!res || res->type != YAML_SEQUENCE_NODE)
        ctl_die(EXIT_ERR, "%s: no resources list: not an EncryptionConfiguration", path);
    for (yaml_node_item_t *r = res->data.sequence.items.start; r < res->data.sequence.items.top; r++) {
        yaml_node_t *provs = map_get(&doc, yaml_document_get_node(&doc, *r), "providers");
        if (!provs || provs->type != YAML_SEQUENCE_NODE)
            continue;
        for (yaml_node_item_t *pi = provs->data.sequence.items.start;
             pi < provs->data.sequence.items.top; pi++) {
            yaml_node_t *pm = yaml_document_get_node(&doc, *pi);
            static const char *const names[] = {"aescbc", "aesgcm", "secretbox"};
            for (size_t k = 0; k < 3; k++) {
                yaml_node_t *ks = map_get(&doc, map_get(&doc, pm, names[k]), "keys");
                if (!ks || ks->type != YAML_SEQUENCE_NODE)
                    continue;
                for (yaml_node_item_t *ki = ks->data.sequence.items.start;
                     ki < ks->data.sequence.items.top; ki++) {
                    yaml_node_t *km = yaml_document_get_node(&doc, *ki);
                    const char *name = scalar(&doc, map_get(&doc, km, "name"));
                    const char *secret = scalar(&doc, map_get(&doc, km, "secret"));
                    if (!name || !secret)
                        ctl_die(EXIT_ERR, "%s: a %s key needs a name and a secret", path, names[k]);
                    if (nkeys == sizeof keys / sizeof keys[0])
                        ctl_die(EXIT_ERR, "%s: too many keys", path);
                    struct k8s_key *key = &keys[nkeys];
                    snprintf(key->provider, sizeof key->provider, "%s", names[k]);
                    snprintf(key->name, sizeof key->name, "%s", name);
                    int l = unbase64(secret, key->secret, sizeof key->secret);
                    bool ok = k == 2 ? l == 32 : (l == 16 || l == 24 || l == 32);
                    if (!ok)
                        ctl_die(EXIT_ERR, "%s: %s key %s: the secret must be base64 of %s bytes",
                                path, names[k], name, k == 2 ? "32" : "16, 24 or 32");
                    key->len = (size_t)l;
                    nkeys++;
                }
            }
        }
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(pp);
}

size_t k8s_enc_prefix(const uint8_t *v, size_t n, char *provider, size_t pcap, char *name,
                      size_t ncap)
{
    if (n < 8 || memcmp(v, "k8s:enc:", 8))
        return 0;
    const char *p = (const char *)v + 8;
    size_t rest = n - 8, parts[3], start[3], np = 0, s = 0;
    for (size_t i = 0; i < rest && np < 3 && i < 300; i++)
        if (p[i] == ':') {
            start[np] = s;
            parts[np++] = i - s;
            s = i + 1;
        }
    if (np < 2) {
        snprintf(provider, pcap, "%.*s", (int)(np ? parts[0] : 0), p);
        if (ncap)
            name[0] = 0;
        return np ? 8 + s : n;
    }
    snprintf(provider, pcap, "%.*s-%.*s", (int)parts[0], p, (int)parts[1], p + start[1]);
    if (np < 3) {
        if (ncap)
            name[0] = 0;
        return 8 + s;
    }
    snprintf(name, ncap, "%.*s", (int)parts[2], p + start[2]);
    return 8 + s;
}

static const EVP_CIPHER *aes(const char *mode, size_t len)
{
    bool cbc = !strcmp(mode, "cbc");
    if (len == 16)
        return cbc ? EVP_aes_128_cbc() : EVP_aes_128_gcm();
    if (len == 24)
        return cbc ? EVP_aes_192_cbc() : EVP_aes_192_gcm();
    return cbc ? EVP_aes_256_cbc() : EVP_aes_256_gcm();
}

int k8s_decrypt(const char *etcd_key, const uint8_t *v, size_t n, uint8_t **out, size_t *outlen,
                char *why, size_t cap)
{
    char prov[64], name[160];
    size_t off = k8s_enc_prefix(v, n, prov, sizeof prov, name, sizeof name);
    if (!off) {
        snprintf(why, cap, "not an encrypted value");
        return -1;
    }
    if (!strncmp(prov, "kms", 3)) {
        snprintf(why, cap, "%s: only the KMS plugin can decrypt this value", prov);
        return -1;
    }
    char base[64];
    snprintf(base, sizeof base, "%s", prov);
    char *dash = strchr(base, '-');
    if (dash)
        *dash = 0;
    const struct k8s_key *k = NULL;
    for (size_t i = 0; i < nkeys; i++)
        if (!strcmp(keys[i].provider, base) && !strcmp(keys[i].name, name))
            k = &keys[i];
    if (!k) {
        if (!nkeys)
            snprintf(why, cap, "encrypted with %s key \"%s\": give --encryption-config to decrypt", base, name);
        else
            snprintf(why, cap, "no %s key \"%s\" in the encryption configuration", base, name);
        return -1;
    }
    const uint8_t *c = v + off;
    size_t cl = n - off;
    if (!strcmp(base, "secretbox")) {
        if (sodium_init() < 0 || cl < crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES) {
            snprintf(why, cap, "secretbox: the value is too short (corrupted)");
            return -1;
        }
        *outlen = cl - crypto_secretbox_NONCEBYTES - crypto_secretbox_MACBYTES;
        *out = malloc(*outlen + 1);
        if (crypto_secretbox_open_easy(*out, c + crypto_secretbox_NONCEBYTES,
                                       cl - crypto_secretbox_NONCEBYTES, c, k->secret)) {
            free(*out);
            snprintf(why, cap, "secretbox key \"%s\": decryption failed (wrong key or corrupted value)", name);
            return -1;
        }
        return 0;
    }
    bool cbc = !strcmp(base, "aescbc");
    if (!cbc && strcmp(base, "aesgcm")) {
        snprintf(why, cap, "unknown encryption provider %s", prov);
        return -1;
    }
    size_t ivl = cbc ? 16 : 12, tagl = cbc ? 0 : 16;
    if (cl < ivl + tagl + (cbc ? 16 : 0) || (cbc && (cl - ivl) % 16)) {
        snprintf(why, cap, "%s: the ciphertext is truncated (corrupted value)", base);
        return -1;
    }
    EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
    int l1 = 0, l2 = 0;
    size_t body = cl - ivl - tagl;
    *out = malloc(body + 32);
    bool ok = EVP_DecryptInit_ex(x, aes(cbc ? "cbc" : "gcm", k->len), NULL, NULL, NULL) == 1;
    if (ok && !cbc)
        ok = EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_SET_IVLEN, (int)ivl, NULL) == 1;
    ok = ok && EVP_DecryptInit_ex(x, NULL, NULL, k->secret, c) == 1;
    if (ok && !cbc && etcd_key)
        ok = EVP_DecryptUpdate(x, NULL, &l1, (const uint8_t *)etcd_key, (int)strlen(etcd_key)) == 1;
    ok = ok && EVP_DecryptUpdate(x, *out, &l1, c + ivl, (int)body) == 1;
    if (ok && !cbc)
        ok = EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_SET_TAG, 16, (void *)(c + cl - 16)) == 1;
    ok = ok && EVP_DecryptFinal_ex(x, *out + l1, &l2) == 1;
    EVP_CIPHER_CTX_free(x);
    if (!ok) {
        free(*out);
        snprintf(why, cap, "%s key \"%s\": decryption failed (wrong key or corrupted value)", base, name);
        return -1;
    }
    *outlen = (size_t)(l1 + l2);
    /* CBC has no integrity check: a wrong key mostly fails the padding, but
     * not always; a plaintext that is no Kubernetes value tells the rest */
    if (cbc && !(*outlen >= 4 && !memcmp(*out, "k8s\0", 4)) && !(*outlen && (*out)[0] == '{')) {
        free(*out);
        snprintf(why, cap, "%s key \"%s\": decryption failed (wrong key or corrupted value)", base, name);
        return -1;
    }
    return 0;
}

int k8s_encrypt(const struct k8s_key *k, const char *etcd_key, const uint8_t *p, size_t n,
                struct buf *out)
{
    buf_printf(out, "k8s:enc:%s:v1:%s:", k->provider, k->name);
    if (!strcmp(k->provider, "secretbox")) {
        if (sodium_init() < 0)
            return -1;
        uint8_t nonce[crypto_secretbox_NONCEBYTES];
        randombytes_buf(nonce, sizeof nonce);
        uint8_t *c = malloc(n + crypto_secretbox_MACBYTES);
        crypto_secretbox_easy(c, p, n, nonce, k->secret);
        buf_put(out, nonce, sizeof nonce);
        buf_put(out, c, n + crypto_secretbox_MACBYTES);
        free(c);
        return 0;
    }
    bool cbc = !strcmp(k->provider, "aescbc");
    uint8_t iv[16];
    size_t ivl = cbc ? 16 : 12;
    if (RAND_bytes(iv, (int)ivl) != 1)
        return -1;
    EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
    uint8_t *c = malloc(n + 32);
    int l1 = 0, l2 = 0;
    bool ok = EVP_EncryptInit_ex(x, aes(cbc ? "cbc" : "gcm", k->len), NULL, NULL, NULL) == 1;
    if (ok && !cbc)
        ok = EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_SET_IVLEN, (int)ivl, NULL) == 1;
    ok = ok && EVP_EncryptInit_ex(x, NULL, NULL, k->secret, iv) == 1;
    if (ok && !cbc)
        ok = EVP_EncryptUpdate(x, NULL, &l1, (const uint8_t *)etcd_key, (int)strlen(etcd_key)) == 1;
    ok = ok && EVP_EncryptUpdate(x, c, &l1, p, (int)n) == 1;
    ok = ok && EVP_EncryptFinal_ex(x, c + l1, &l2) == 1;
    uint8_t tag[16];
    if (ok && !cbc)
        ok = EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_GET_TAG, 16, tag) == 1;
    EVP_CIPHER_CTX_free(x);
    if (ok) {
        buf_put(out, iv, ivl);
        buf_put(out, c, (size_t)(l1 + l2));
        if (!cbc)
            buf_put(out, tag, 16);
    }
    free(c);
    return ok ? 0 : -1;
}
