"""v3lockpb / v3electionpb messages and stubs for the tests, built at run
time from descriptors (Debian has no python stubs for them and no
grpc_tools): field numbers and names as proto/v3lock.proto and
proto/v3election.proto (etcd's)."""

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from etcd3.etcdrpc import rpc_pb2, kv_pb2  # noqa: F401  (registers rpc.proto, kv.proto)

F = descriptor_pb2.FieldDescriptorProto
_SCALAR = {"bytes": F.TYPE_BYTES, "int64": F.TYPE_INT64}


def _file(name, package, deps, messages, services):
    fd = descriptor_pb2.FileDescriptorProto(name=name, package=package, syntax="proto3")
    fd.dependency.extend(deps)
    for mname, fields in messages:
        m = fd.message_type.add(name=mname)
        for num, (fname, ftype) in enumerate(fields, 1):
            f = m.field.add(name=fname, number=num, label=F.LABEL_OPTIONAL)
            if ftype in _SCALAR:
                f.type = _SCALAR[ftype]
            else:
                f.type = F.TYPE_MESSAGE
                f.type_name = ftype
    for sname, methods in services:
        s = fd.service.add(name=sname)
        for mname, inp, out, stream in methods:
            s.method.add(name=mname, input_type=inp, output_type=out, server_streaming=stream)
    return fd


_HDR = ".etcdserverpb.ResponseHeader"
_LOCK = _file("v3lock.proto", "v3lockpb", ["rpc.proto"], [
    ("LockRequest", [("name", "bytes"), ("lease", "int64")]),
    ("LockResponse", [("header", _HDR), ("key", "bytes")]),
    ("UnlockRequest", [("key", "bytes")]),
    ("UnlockResponse", [("header", _HDR)]),
], [])
_ELECTION = _file("v3election.proto", "v3electionpb", ["rpc.proto", "kv.proto"], [
    ("CampaignRequest", [("name", "bytes"), ("lease", "int64"), ("value", "bytes")]),
    ("CampaignResponse", [("header", _HDR), ("leader", ".v3electionpb.LeaderKey")]),
    ("LeaderKey", [("name", "bytes"), ("key", "bytes"), ("rev", "int64"), ("lease", "int64")]),
    ("LeaderRequest", [("name", "bytes")]),
    ("LeaderResponse", [("header", _HDR), ("kv", ".mvccpb.KeyValue")]),
    ("ResignRequest", [("leader", ".v3electionpb.LeaderKey")]),
    ("ResignResponse", [("header", _HDR)]),
    ("ProclaimRequest", [("leader", ".v3electionpb.LeaderKey"), ("value", "bytes")]),
    ("ProclaimResponse", [("header", _HDR)]),
], [])

_pool = descriptor_pool.Default()
for _fd in (_LOCK, _ELECTION):
    try:
        _pool.FindFileByName(_fd.name)
    except KeyError:
        _pool.Add(_fd)
_factory = message_factory.MessageFactory(_pool)


def _msg(full_name):
    d = _pool.FindMessageTypeByName(full_name)
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(d)
    return _factory.GetPrototype(d)


class _Msgs(dict):
    def __missing__(self, k):
        return _msg(k)


_msgs = _Msgs()

LockRequest = _msgs["v3lockpb.LockRequest"]
LockResponse = _msgs["v3lockpb.LockResponse"]
UnlockRequest = _msgs["v3lockpb.UnlockRequest"]
UnlockResponse = _msgs["v3lockpb.UnlockResponse"]
CampaignRequest = _msgs["v3electionpb.CampaignRequest"]
CampaignResponse = _msgs["v3electionpb.CampaignResponse"]
LeaderKey = _msgs["v3electionpb.LeaderKey"]
LeaderRequest = _msgs["v3electionpb.LeaderRequest"]
LeaderResponse = _msgs["v3electionpb.LeaderResponse"]
ResignRequest = _msgs["v3electionpb.ResignRequest"]
ResignResponse = _msgs["v3electionpb.ResignResponse"]
ProclaimRequest = _msgs["v3electionpb.ProclaimRequest"]
ProclaimResponse = _msgs["v3electionpb.ProclaimResponse"]


def _uu(ch, path, req, resp):
    return ch.unary_unary(path, request_serializer=req.SerializeToString,
                          response_deserializer=resp.FromString)


class LockStub:
    def __init__(self, ch):
        self.Lock = _uu(ch, "/v3lockpb.Lock/Lock", LockRequest, LockResponse)
        self.Unlock = _uu(ch, "/v3lockpb.Lock/Unlock", UnlockRequest, UnlockResponse)


class ElectionStub:
    def __init__(self, ch):
        p = "/v3electionpb.Election/"
        self.Campaign = _uu(ch, p + "Campaign", CampaignRequest, CampaignResponse)
        self.Proclaim = _uu(ch, p + "Proclaim", ProclaimRequest, ProclaimResponse)
        self.Leader = _uu(ch, p + "Leader", LeaderRequest, LeaderResponse)
        self.Resign = _uu(ch, p + "Resign", ResignRequest, ResignResponse)
        self.Observe = ch.unary_stream(p + "Observe",
                                       request_serializer=LeaderRequest.SerializeToString,
                                       response_deserializer=LeaderResponse.FromString)
