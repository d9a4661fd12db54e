/* ketchctl k8s: internals shared by k8s.c (ls, summary, get, secrets,
 * seed), k8s_decode.c (typed decoding, JSON / YAML output), k8s_crypt.c
 * (encryption at rest), k8s_watch.c (watch) and migrate.c. */
#ifndef KETCH_CTL_K8S_H
#define KETCH_CTL_K8S_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ctl.h"

#ifndef FEND
#define FEND {NULL, 0, 0, NULL, false}
#endif

/* ---- k8s_decode.c ---- */

/* Decodes a "k8s\0" + runtime.Unknown value into a JSON object as the
 * Kubernetes JSON encoding would show it: apiVersion, kind, then the fields
 * of the object for the core kinds; for other kinds a generic dump of the
 * protobuf fields (keys are field numbers) under "protobuf". NULL with a
 * reason in why when the envelope or the object does not parse. */
json_t *k8s_pb_to_json(const uint8_t *v, size_t n, char *why, size_t cap);
/* True if apiVersion/kind is one of the kinds decoded field by field. */
bool k8s_kind_known(const char *api, const char *kind);
/* kubectl -o json (4-space indent) and -o yaml (keys sorted) to stdout. */
void k8s_print_json(const json_t *o);
void k8s_print_yaml(const json_t *o);
/* The Kubernetes protobuf encoding of a JSON object of a known kind
 * (apiVersion + kind + fields): "k8s\0" + runtime.Unknown. The seed uses it
 * to write values as kube-apiserver does. Returns false if the kind is not
 * known or a field does not fit its schema (message in why). */
bool k8s_json_to_pb(const json_t *o, struct buf *out, char *why, size_t cap);

/* ---- k8s_crypt.c ---- */

struct k8s_key {
    char provider[16]; /* aescbc, aesgcm, secretbox */
    char name[128];
    uint8_t secret[32];
    size_t len;
};
/* Loads an EncryptionConfiguration (kube-apiserver's YAML); exits with an
 * error message when the file cannot be read or parsed. */
void k8s_crypt_load(const char *path);
/* The same from text in memory (name is for messages). */
void k8s_crypt_load_text(const char *text, const char *name);
size_t k8s_crypt_nkeys(void);
const struct k8s_key *k8s_crypt_key(size_t i);
/* Parses the "k8s:enc:<provider>:v1:<name>:" prefix. Returns the offset of
 * the ciphertext (0 if v is not an encrypted value). provider/name are
 * filled ("kms-v2" style: provider with its version). */
size_t k8s_enc_prefix(const uint8_t *v, size_t n, char *provider, size_t pcap, char *name,
                      size_t ncap);
/* Decrypts an encrypted value stored under key. Returns 0 and a malloc'd
 * plaintext, or -1 with a reason in why (no key, wrong key, corrupted). */
int k8s_decrypt(const char *key, const uint8_t *v, size_t n, uint8_t **out, size_t *outlen,
                char *why, size_t cap);
/* Encrypts plaintext as kube-apiserver does with the given provider and key
 * (random IV / nonce). Appends prefix + ciphertext to out. */
int k8s_encrypt(const struct k8s_key *k, const char *etcd_key, const uint8_t *p, size_t n,
                struct buf *out);

/* ---- k8s.c ---- */
/* resource, namespace, name of a /registry key (empty strings if not). */
void k8s_key_parts(const char *key, char *res, size_t rcap, char *ns, size_t ncap, char *name,
                   size_t mcap);

/* A stored value (key, bytes, mod_revision) as kubectl shows the object:
 * decrypted with the loaded keys, decoded, metadata.resourceVersion set.
 * Returns a new reference, or NULL with the reason in why. */
json_t *k8s_value_json(const char *key, const uint8_t *v, size_t n, int64_t mod_revision, char *why,
                       size_t cap);

/* ---- k8s_watch.c, migrate.c ---- */
int k8s_watch(int argc, char **argv);
int k8s_seed(int argc, char **argv); /* k8s_seed.c */
int cmd_migrate(int argc, char **argv);

#endif
