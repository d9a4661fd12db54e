/* The HTTP/1.1 side of the client port, as etcd serves it next to gRPC:
 *
 *   GET  /health    {"health":"true","reason":""} (503 and a reason when not)
 *   GET  /version   {"etcdserver":"3.5.0","etcdcluster":"3.5.0"}
 *   GET  /metrics   Prometheus text, etcd's metric names
 *   POST /v3/...    the JSON gateway (grpc-gateway's conventions, see
 *                   pbjson.h): the body is converted to the request
 *                   message and run through the very gRPC handler a gRPC
 *                   client reaches (grpc_server_call_local), the response
 *                   converted back; errors as {"error","message","code"}.
 *
 * Lives above grpc (which parses HTTP/1.1 and calls gateway_handle) and
 * api (whose state it reports). */
#ifndef KETCH_GATEWAY_GATEWAY_H
#define KETCH_GATEWAY_GATEWAY_H

#include "api/api.h"
#include "grpc/grpc.h"

struct gateway {
    grpc_server *grpc;
    api_server *api;
    const char *version;         /* "3.5.0" */
    const char *cluster_version; /* "3.5.0" */
};

/* Registers the gateway as `grpc`'s HTTP/1.1 handler. `gw` (and what it
 * points at) must outlive the gRPC server. */
void gateway_start(struct gateway *gw);

/* Serves only GET /metrics and /health (of gw's server) as `metrics_server`'s
 * HTTP/1.1 handler: etcd's --listen-metrics-urls. `gw` must outlive it. */
void gateway_start_metrics(struct gateway *gw, grpc_server *metrics_server);

#endif
