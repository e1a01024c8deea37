"""A small trio-native gRPC transport on h2 (bytes in, bytes out).

Speaks gRPC over HTTP/2 (h2c, or TLS with ALPN ``h2``) and reuses grpclib's
vocabulary: failures are ``grpclib.exceptions.GRPCError`` carrying a
``grpclib.const.Status``; ``grpc-timeout`` and ``grpc-message`` use
``grpclib.metadata``'s encoders.

Client: ``async with open_channel("host:port") as channel`` then
``await channel.unary(path, request)`` or ``async with channel.stream(path) as
stream`` (``send``/``end``/``receive``). Every call failure is a ``GRPCError``
(the server's status, DEADLINE_EXCEEDED for ``timeout=``, UNAVAILABLE once the
connection is gone); the caller's own cancellation propagates as
``trio.Cancelled`` and resets the stream. The caller's trio deadline travels as
``grpc-timeout``.

Server: ``serve_grpc(methods, host, port, task_status=...)`` or ``async with
open_grpc_server(...)``, with ``methods = {"/pkg.Service/Method": unary(fn) |
bidi(fn)}``. Handlers raise ``GRPCError`` to choose the status; any other
exception ends the call with UNKNOWN ``"Unexpected <class 'X'>: msg"``.

Both ends: bounded buffers and HTTP/2 flow control (a sender waits), 4 MiB
default message limit (RESOURCE_EXHAUSTED for that call only), optional gzip,
keepalive pings only when asked for. ``open_channel_over_stream`` and
``GrpcServer.serve_connection`` run either end over any ``trio.abc.Stream``.
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
)
from ._framing import MessageDecoder, encode_message
from ._server import GrpcServer, ServerStatistics, open_grpc_server, serve_grpc
from ._server_call import Method, ServerStream, StreamHandler, UnaryHandler, bidi, unary

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
    "serve_grpc",
    "unary",
]
