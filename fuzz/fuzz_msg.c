/* Fuzz target: request messages as they arrive from the network, in both
 * encodings the server decodes:
 *
 *   fuzz_proto  protobuf (gRPC message bodies): unpacked with protobuf-c
 *               as each etcd request type, packed again (the size must
 *               match), converted to JSON as the gateway answers, and
 *               stripped of unknown fields as api_propose does before a
 *               Raft proposal: then it must pack into bytes that unpack
 *   fuzz_json   the JSON gateway's request bodies (src/gateway/pbjson.c):
 *               parsed with jansson as the gateway does, converted to each
 *               request type with pbjson_from_json, packed, unpacked again
 *               and converted back with pbjson_to_json / pbjson_dump
 *
 * The first input byte picks the message type, the rest is the message.
 * FUZZ_MODE 1 = fuzz_proto, 2 = fuzz_json. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "v3election.pb-c.h"
#include "api/propose.h"
#include "gateway/pbjson.h"
#include "v3lock.pb-c.h"
#include "rpc.pb-c.h"

#ifndef FUZZ_MODE
#define FUZZ_MODE 1
#endif

static const ProtobufCMessageDescriptor *const types[] = {
    &etcdserverpb__range_request__descriptor,
    &etcdserverpb__put_request__descriptor,
    &etcdserverpb__delete_range_request__descriptor,
    &etcdserverpb__txn_request__descriptor,
    &etcdserverpb__compaction_request__descriptor,
    &etcdserverpb__hash_request__descriptor,
    &etcdserverpb__hash_kvrequest__descriptor,
    &etcdserverpb__snapshot_request__descriptor,
    &etcdserverpb__watch_request__descriptor,
    &etcdserverpb__lease_grant_request__descriptor,
    &etcdserverpb__lease_revoke_request__descriptor,
    &etcdserverpb__lease_keep_alive_request__descriptor,
    &etcdserverpb__lease_time_to_live_request__descriptor,
    &etcdserverpb__lease_leases_request__descriptor,
    &etcdserverpb__member_add_request__descriptor,
    &etcdserverpb__member_remove_request__descriptor,
    &etcdserverpb__member_update_request__descriptor,
    &etcdserverpb__member_list_request__descriptor,
    &etcdserverpb__member_promote_request__descriptor,
    &etcdserverpb__defragment_request__descriptor,
    &etcdserverpb__move_leader_request__descriptor,
    &etcdserverpb__alarm_request__descriptor,
    &etcdserverpb__status_request__descriptor,
    &etcdserverpb__authenticate_request__descriptor,
    &etcdserverpb__auth_user_add_request__descriptor,
    &etcdserverpb__auth_role_grant_permission_request__descriptor,
    &v3electionpb__campaign_request__descriptor,
    &v3electionpb__proclaim_request__descriptor,
    &v3lockpb__lock_request__descriptor,
    &v3lockpb__unlock_request__descriptor,
    /* responses too: the gateway converts them to JSON */
    &etcdserverpb__range_response__descriptor,
    &etcdserverpb__txn_response__descriptor,
    &etcdserverpb__watch_response__descriptor,
    &etcdserverpb__status_response__descriptor,
};
#define N_TYPES (sizeof types / sizeof types[0])

static void to_json(const ProtobufCMessage *m)
{
    json_t *j = pbjson_to_json(m);
    if (!j) return;
    char *s = pbjson_dump(j);
    free(s);
    json_decref(j);
}

/* Packs m; the packed size must be what protobuf-c predicted. */
static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(*len ? *len : 1);
    if (!buf) abort();
    if (protobuf_c_message_pack(m, buf) != *len) {
        fprintf(stderr, "fuzz: packed size differs from get_packed_size\n");
        abort();
    }
    return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const ProtobufCMessageDescriptor *d = types[data[0] % N_TYPES];
    data++, size--;
#if FUZZ_MODE == 1
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, size, data);
    if (!m) return 0;
    size_t len;
    uint8_t *buf = pack(m, &len);
    free(buf);
    to_json(m);
    /* What the server proposes through Raft (unknown fields dropped, as
     * api_propose does) must unpack again on every member. */
    api_strip_unknown(m);
    buf = pack(m, &len);
    protobuf_c_message_free_unpacked(m, NULL);
    m = protobuf_c_message_unpack(d, NULL, len, buf);
    if (!m) {
        fprintf(stderr, "fuzz: a packed message does not unpack\n");
        abort();
    }
    protobuf_c_message_free_unpacked(m, NULL);
    free(buf);
#else
    json_error_t jerr;
    json_t *j = json_loadb((const char *)data, size, 0, &jerr);
    if (!j) return 0;
    arena a = ARENA_INIT;
    char err[256];
    ProtobufCMessage *m = pbjson_from_json(d, j, &a, err, sizeof err);
    json_decref(j);
    if (m) {
        size_t len;
        uint8_t *buf = pack(m, &len);
        to_json(m);
        ProtobufCMessage *m2 = protobuf_c_message_unpack(d, NULL, len, buf);
        if (!m2) {
            fprintf(stderr, "fuzz: a message built from JSON does not unpack\n");
            abort();
        }
        to_json(m2);
        protobuf_c_message_free_unpacked(m2, NULL);
        free(buf);
    } else if (!memchr(err, '\0', sizeof err)) {
        abort(); /* the reason must be a string */
    }
    arena_free(&a);
#endif
    return 0;
}
