/* Private to api/: the v3electionpb.Election service (election.c). */
#ifndef KETCH_API_ELECTION_H
#define KETCH_API_ELECTION_H

#include "api/api.h"

void election_campaign(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void election_proclaim(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void election_leader(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void election_observe(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);
void election_observe_close(grpc_call *call, void *ctx);
void election_resign(grpc_call *call, const uint8_t *msg, size_t len, void *ctx);

#endif
