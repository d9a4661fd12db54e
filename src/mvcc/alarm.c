/* Alarms, as etcd's alarmStore (etcdserver/api/v3alarm) and its apply
 * (etcdserver/apply.go applierV3backend.Alarm), in the `alarm` table:
 *
 *   LMDB key  member ID u64 | alarm type u8   (9 bytes, big-endian)
 *   value     empty
 *
 * Written only by mvcc_apply, so every member holds the same alarms, and
 * they survive restarts (etcd keeps them in its `alarm` bucket). */
#include <stdlib.h>

#include "mvcc/mvcc_int.h"
#include "util/errors.h"

int alarm_load(MDB_txn *txn, mvcc_store *s)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, s->alarm, &cur);
    if (rc != 0) return mdb_to_kerr(rc);
    int nospace = 0, corrupt = 0;
    MDB_val k, d;
    for (rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
        if (k.mv_size != 9) continue;
        int t = ((uint8_t *)k.mv_data)[8];
        if (t == ETCDSERVERPB__ALARM_TYPE__NOSPACE) nospace++;
        if (t == ETCDSERVERPB__ALARM_TYPE__CORRUPT) corrupt++;
    }
    mdb_cursor_close(cur);
    if (rc != MDB_NOTFOUND) return mdb_to_kerr(rc);
    s->alarm_nospace = nospace;
    s->alarm_corrupt = corrupt;
    return 0;
}

int mvcc_alarm_count(const mvcc_store *s, Etcdserverpb__AlarmType type)
{
    switch (type) {
    case ETCDSERVERPB__ALARM_TYPE__NOSPACE:
        return s->alarm_nospace;
    case ETCDSERVERPB__ALARM_TYPE__CORRUPT:
        return s->alarm_corrupt;
    default:
        return s->alarm_nospace + s->alarm_corrupt;
    }
}

/* The alarms of `type` (all for NONE) in txn, ordered by (type, member). */
static int list(MDB_txn *txn, mvcc_store *s, int type, Etcdserverpb__AlarmMember **out,
                size_t *n)
{
    MDB_cursor *cur;
    *out = NULL;
    *n = 0;
    int rc = mdb_cursor_open(txn, s->alarm, &cur);
    if (rc != 0) return mdb_to_kerr(rc);
    size_t cap = 0;
    MDB_val k, d;
    int ret = 0;
    for (int t = 1; t <= 2 && ret == 0; t++) {
        if (type != ETCDSERVERPB__ALARM_TYPE__NONE && type != t) continue;
        for (rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
            if (k.mv_size != 9 || ((uint8_t *)k.mv_data)[8] != t) continue;
            if (*n == cap) {
                cap = cap ? cap * 2 : 4;
                Etcdserverpb__AlarmMember *m = realloc(*out, cap * sizeof *m);
                if (m == NULL) {
                    ret = KERR_NOMEM;
                    break;
                }
                *out = m;
            }
            Etcdserverpb__AlarmMember *m = &(*out)[(*n)++];
            etcdserverpb__alarm_member__init(m);
            m->memberid = get_be64(k.mv_data);
            m->alarm = (Etcdserverpb__AlarmType)t;
        }
        if (ret == 0 && rc != MDB_NOTFOUND) ret = mdb_to_kerr(rc);
    }
    mdb_cursor_close(cur);
    if (ret != 0) {
        free(*out);
        *out = NULL;
        *n = 0;
    }
    return ret;
}

int mvcc_alarm_list(mvcc_store *s, Etcdserverpb__AlarmMember **out, size_t *n)
{
    MDB_txn *txn;
    int rc = store_rtxn_begin(s, &txn);
    if (rc != 0) return rc;
    rc = list(txn, s, ETCDSERVERPB__ALARM_TYPE__NONE, out, n);
    store_rtxn_end(s);
    return rc;
}

/* The response's alarms, copied into the arena. */
static void answer(arena *a, Etcdserverpb__AlarmResponse *r, const Etcdserverpb__AlarmMember *ms,
                   size_t n)
{
    r->n_alarms = n;
    if (n == 0) return;
    r->alarms = arena_alloc(a, n * sizeof *r->alarms);
    for (size_t i = 0; i < n; i++) {
        r->alarms[i] = arena_alloc(a, sizeof *r->alarms[i]);
        *r->alarms[i] = ms[i];
    }
}

int alarm_exec(struct op_ctx *c, const Etcdserverpb__AlarmRequest *r, arena *a,
               struct mvcc_result *out)
{
    mvcc_store *s = c->s;
    Etcdserverpb__AlarmResponse *resp = arena_alloc(a, sizeof *resp);
    etcdserverpb__alarm_response__init(resp);
    uint8_t kb[9];
    put_be64(kb, r->memberid);
    kb[8] = (uint8_t)r->alarm;
    MDB_val k = {9, kb}, d = {0, ""};
    Etcdserverpb__AlarmMember m = ETCDSERVERPB__ALARM_MEMBER__INIT;
    m.memberid = r->memberid;
    m.alarm = r->alarm;
    int rc = 0;
    switch (r->action) {
    case ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__GET: {
        Etcdserverpb__AlarmMember *ms;
        size_t n;
        if ((rc = list(c->txn, s, r->alarm, &ms, &n)) != 0) return rc;
        answer(a, resp, ms, n);
        free(ms);
        break;
    }
    case ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__ACTIVATE:
        /* etcd: NONE raises nothing; a raised alarm is answered as is */
        if (r->alarm == ETCDSERVERPB__ALARM_TYPE__NONE) break;
        if (r->alarm != ETCDSERVERPB__ALARM_TYPE__NOSPACE &&
            r->alarm != ETCDSERVERPB__ALARM_TYPE__CORRUPT)
            return KERR_BAD_REQUEST; /* etcd panics: "unimplemented alarm activation" */
        rc = mdb_put(c->txn, s->alarm, &k, &d, 0);
        if (rc != 0) return mdb_to_kerr(rc);
        answer(a, resp, &m, 1);
        break;
    case ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__DEACTIVATE:
        rc = mdb_del(c->txn, s->alarm, &k, NULL);
        if (rc == MDB_NOTFOUND) break;
        if (rc != 0) return mdb_to_kerr(rc);
        answer(a, resp, &m, 1);
        break;
    default:
        return KERR_BAD_REQUEST;
    }
    out->alarm = resp;
    return 0;
}
