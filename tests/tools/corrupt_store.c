/* Test tool: damages a stopped member's store the way a bad disk would,
 * without going through Raft: the value of the newest put in the history
 * gets one byte flipped (its KeyValue still decodes). Used by
 * tests/integration/test_maintenance.py and test_peer_tls.py to see the
 * corruption checks raise CORRUPT.
 *
 *   corrupt_store <data-dir>/member/kv */
#include <stdio.h>
#include <stdlib.h>

#include "mvcc/mvcc_int.h"

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: corrupt_store <kv dir>\n");
        return 2;
    }
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi hist;
    MDB_cursor *cur;
    MDB_val k, d;
    if (mdb_env_create(&env) || mdb_env_set_maxdbs(env, 16) ||
        mdb_env_set_mapsize(env, (size_t)8 << 30) || mdb_env_open(env, argv[1], 0, 0600) ||
        mdb_txn_begin(env, NULL, 0, &txn) || mdb_dbi_open(txn, "hist", 0, &hist) ||
        mdb_cursor_open(txn, hist, &cur)) {
        fprintf(stderr, "corrupt_store: cannot open %s\n", argv[1]);
        return 1;
    }
    for (int rc = mdb_cursor_get(cur, &k, &d, MDB_LAST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &d, MDB_PREV)) {
        const uint8_t *v = d.mv_data;
        if (d.mv_size < 10 || v[0] != CH_PUT) continue;
        Mvccpb__KeyValue *kv = mvccpb__key_value__unpack(NULL, d.mv_size - 9, v + 9);
        if (kv == NULL || kv->value.len == 0) {
            if (kv) mvccpb__key_value__free_unpacked(kv, NULL);
            continue;
        }
        kv->value.data[0] ^= 0x20;
        size_t n = mvccpb__key_value__get_packed_size(kv);
        uint8_t *buf = malloc(9 + n);
        memcpy(buf, v, 9);
        mvccpb__key_value__pack(kv, buf + 9);
        MDB_val nd = {9 + n, buf};
        MDB_val kk = k;
        if (mdb_cursor_put(cur, &kk, &nd, MDB_CURRENT) || mdb_txn_commit(txn)) {
            fprintf(stderr, "corrupt_store: write failed\n");
            return 1;
        }
        printf("flipped a byte of the value of %.*s\n", (int)kv->key.len, kv->key.data);
        mvccpb__key_value__free_unpacked(kv, NULL);
        free(buf);
        mdb_env_close(env);
        return 0;
    }
    fprintf(stderr, "corrupt_store: no put with a value\n");
    return 1;
}
