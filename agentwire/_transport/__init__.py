"""A small trio-native gRPC transport on h2 (bytes in, bytes out).

Speaks gRPC over HTTP/2 (h2c, or TLS with ALPN ``h2``) and reuses grpclib's
vocabulary: failures are ``grpclib.exceptions.GRPCError`` carrying a
``grpclib.const.Status``.
"""

from __future__ import annotations

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from ._client import (
    Channel,
    ChannelStatistics,
    ClientStream,
    open_channel,
    open_channel_over_stream,
    parse_address,
)
from ._framing import MessageDecoder, encode_message
from ._server import (
    GrpcServer,
    Method,
    ServerStatistics,
    ServerStream,
    StreamHandler,
    UnaryHandler,
    bidi,
    open_grpc_server,
    serve_grpc,
    unary,
)

__all__ = [
    "Channel",
    "ChannelStatistics",
    "ClientStream",
    "GRPCError",
    "GrpcServer",
    "MessageDecoder",
    "Method",
    "ServerStatistics",
    "ServerStream",
    "Status",
    "StreamHandler",
    "UnaryHandler",
    "bidi",
    "encode_message",
    "open_channel",
    "open_channel_over_stream",
    "open_grpc_server",
    "parse_address",
    "serve_grpc",
    "unary",
]
