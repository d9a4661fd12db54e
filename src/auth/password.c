/* bcrypt through libxcrypt (crypt_r / crypt_gensalt_rn), as etcd's
 * golang.org/x/crypto/bcrypt. Passwords and hashes are never logged. */
#include <crypt.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "auth/auth.h"

char *auth_password_hash(const char *password, int cost)
{
    if (cost < AUTH_BCRYPT_MIN_COST || cost > AUTH_BCRYPT_MAX_COST)
        cost = AUTH_BCRYPT_DEFAULT_COST;
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    if (crypt_gensalt_rn("$2b$", (unsigned long)cost, NULL, 0, setting, sizeof setting) == NULL)
        return NULL;
    struct crypt_data *cd = calloc(1, sizeof *cd);
    if (cd == NULL) return NULL;
    char *out = NULL;
    const char *h = crypt_r(password, setting, cd);
    if (h != NULL && h[0] == '$') out = strdup(h);
    OPENSSL_cleanse(cd, sizeof *cd);
    free(cd);
    return out;
}

bool auth_password_check(const char *password, const char *hash)
{
    if (hash == NULL || hash[0] != '$') return false;
    struct crypt_data *cd = calloc(1, sizeof *cd);
    if (cd == NULL) return false;
    const char *h = crypt_r(password, hash, cd);
    bool ok = false;
    size_t n = strlen(hash);
    if (h != NULL && h[0] == '$' && strlen(h) == n) ok = CRYPTO_memcmp(h, hash, n) == 0;
    OPENSSL_cleanse(cd, sizeof *cd);
    free(cd);
    return ok;
}
