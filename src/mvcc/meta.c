/* Opaque records in the meta table for the layers above (the member table
 * of api/cluster.c), written in the open batch like everything mvcc_apply
 * writes, so they are as durable as the applied index next to them. */
#include <stdlib.h>

#include "mvcc/mvcc_int.h"
#include "util/errors.h"

/* Names of our own u64 records, which mvcc_meta_put must not overwrite. */
static int reserved(const char *name)
{
    static const char *const own[] = {"applied_index", "revision", "compact_rev", "next_kid"};
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
        if (strcmp(name, own[i]) == 0) return 1;
    return 0;
}

int mvcc_meta_put(mvcc_store *s, const char *name, const uint8_t *val, size_t len)
{
    if (reserved(name)) return KERR_INTERNAL;
    MDB_txn *batch;
    int rc = store_wtxn(s, &batch);
    if (rc != 0) return rc;
    if (s->defrag != NULL) defrag_log_meta(s, name, val, len);
    MDB_val k = {strlen(name), (void *)name}, d = {len, (void *)val};
    return mdb_to_kerr(mdb_put(batch, s->meta, &k, &d, 0));
}

int mvcc_meta_get(mvcc_store *s, const char *name, uint8_t **val, size_t *len)
{
    MDB_txn *txn;
    int rc = store_rtxn_begin(s, &txn);
    if (rc != 0) return rc;
    MDB_val k = {strlen(name), (void *)name}, d;
    rc = mdb_get(txn, s->meta, &k, &d);
    if (rc == MDB_NOTFOUND) {
        store_rtxn_end(s);
        return KERR_KEY_NOT_FOUND;
    }
    if (rc != 0) {
        store_rtxn_end(s);
        return mdb_to_kerr(rc);
    }
    *val = malloc(d.mv_size ? d.mv_size : 1);
    if (*val == NULL) {
        store_rtxn_end(s);
        return KERR_NOMEM;
    }
    memcpy(*val, d.mv_data, d.mv_size);
    *len = d.mv_size;
    store_rtxn_end(s);
    return 0;
}
