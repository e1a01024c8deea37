"""agentwire's generated protocol modules and autogen-ext's live in one process.

Both register the same files (``agent_worker.proto``, ``cloudevent.proto``) in
protobuf's default descriptor pool; that works only because the compiled
descriptors are identical, which is what ``proto/`` promises.
"""

from __future__ import annotations

from autogen_ext.runtimes.grpc.protos import agent_worker_pb2 as autogen_pb
from autogen_ext.runtimes.grpc.protos import cloudevent_pb2 as autogen_ce
from google.protobuf import descriptor_pb2

from agentwire._proto import agent_worker_pb2 as pb
from agentwire._proto import cloudevent_pb2 as ce


def _file_proto(module: object) -> bytes:
    proto = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(proto)  # type: ignore[attr-defined]
    return proto.SerializeToString(deterministic=True)


def test_descriptors_are_identical() -> None:
    assert _file_proto(pb) == _file_proto(autogen_pb)
    assert _file_proto(ce) == _file_proto(autogen_ce)


def test_messages_cross_between_the_two_modules() -> None:
    ours = pb.Message(
        request=pb.RpcRequest(
            request_id="7",
            target=pb.AgentId(type="echo", key="k"),
            payload=pb.Payload(data_type="Ping", data_content_type="application/json", data=b"{}"),
        )
    )
    theirs = autogen_pb.Message.FromString(ours.SerializeToString())
    assert theirs.request.request_id == "7"
    assert not theirs.request.HasField("source")
    assert pb.Message.FromString(theirs.SerializeToString()) == ours
