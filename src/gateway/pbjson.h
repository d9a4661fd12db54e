/* Protobuf ↔ JSON as etcd's grpc-gateway does it (golang/protobuf jsonpb
 * with OrigName, EmitDefaults off), driven by protobuf-c descriptors so
 * every etcd message converts without per-message code:
 *
 *   field names     as declared in the .proto ("range_end", "dbSize", "TTL");
 *                   on input the lowerCamelCase form is accepted too
 *   int64, uint64   strings ("12"); on input strings or numbers
 *   bytes           standard base64 with padding
 *   enums           names ("DESCEND"); on input names or numbers
 *   zero values     left out (proto3), except a oneof member that is set
 *   unknown fields  ignored on input (as etcd's gateway) */
#ifndef KETCH_GATEWAY_PBJSON_H
#define KETCH_GATEWAY_PBJSON_H

#include <stddef.h>

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

#include "util/arena.h"

/* Builds a message of type `desc` from a JSON object into memory from
 * `a` (everything, nested messages and arrays included, lives until the
 * arena is freed; do not protobuf_c_message_free_unpacked it). Returns
 * the message, or NULL with a reason in err (Go-like wording). */
ProtobufCMessage *pbjson_from_json(const ProtobufCMessageDescriptor *desc, json_t *obj, arena *a,
                                   char *err, size_t errlen);

/* The JSON object for `msg` (new reference), or NULL if out of memory. */
json_t *pbjson_to_json(const ProtobufCMessage *msg);

/* Dumps as etcd's gateway prints: compact, keys in field order. malloc'd. */
char *pbjson_dump(const json_t *j);

#endif
