"""``agents.ProtoMessage { string message = 1; }`` as test message types.

Two classes for one protobuf message: a google protobuf class built from a
descriptor (in a private pool, so it never clashes with other test protos),
and the dataclass betterproto2-compiler generates for it, registered in the
package's MessagePool as generated code does.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import betterproto2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory


def _google_proto_message() -> type[Any]:
    file = descriptor_pb2.FileDescriptorProto(
        name="agentwire_test_messages.proto", package="agents", syntax="proto3"
    )
    message = file.message_type.add(name="ProtoMessage")
    message.field.add(
        name="message",
        number=1,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("agents.ProtoMessage"))


GoogleProtoMessage = _google_proto_message()

message_pool = betterproto2.MessagePool()  # type: ignore[no-untyped-call]


@dataclasses.dataclass(eq=False, repr=False)
class BetterProtoMessage(betterproto2.Message):
    message: str = betterproto2.field(1, betterproto2.TYPE_STRING)


message_pool.register_message("agents", "ProtoMessage", BetterProtoMessage)
