"""``agents.ProtoMessage { string message = 1; }`` as test message types.

Two classes for one protobuf message, both compiled by ``nox -s proto`` from
``proto/examples/proto_message.proto``: the google protobuf class protoc writes
(what AutoGen agents use) and the dataclass betterproto2-compiler writes (what
agentwire recommends).
"""

from __future__ import annotations

from agentwire._examples.agents import ProtoMessage as BetterProtoMessage
from tests.examples_pb2.proto_message_pb2 import ProtoMessage as GoogleProtoMessage

__all__ = ["BetterProtoMessage", "GoogleProtoMessage"]
