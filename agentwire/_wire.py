"""Constants of the wire, defined once: paths, metadata keys, limits, error kinds.

Everything here is seen by peers. AutoGen's names (the ``agents.AgentRpc``
service) are fixed by AutoGen 0.7.5; the ``agentwire-*`` metadata keys are
extensions that AutoGen peers ignore.
"""

from __future__ import annotations

import enum

__all__ = [
    "CLOUD_EVENT_TAG",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DRAIN_DESTINATION",
    "ERROR_KIND_KEY",
    "ERROR_TYPE_KEY",
    "OPERATOR_STATUS_METHOD",
    "RELEASE_DESTINATION",
    "SERVICE_PREFIX",
    "TIMEOUT_METADATA_KEY",
    "ErrorKind",
]

SERVICE_PREFIX = "/agents.AgentRpc/"
"""The path prefix of the Agent Worker Protocol's methods (``/agents.AgentRpc/OpenChannel``)."""

OPERATOR_STATUS_METHOD = "/agentwire.Operator/Status"
"""An agentwire-only, read-only unary method of the gateway: an empty request, a UTF-8 JSON
answer (connected clients, their agent types, subscriptions and counters; ``agentwire status``)."""

DEFAULT_MAX_MESSAGE_SIZE = 4 * 2**20
"""The largest message sent or received by default: grpc-core's limit, which AutoGen keeps."""

CLOUD_EVENT_TAG = 0x1A
"""The first byte of a serialized ``agents.Message`` that carries a CloudEvent (field 3,
length-delimited; a request starts with 0x0A, a response with 0x12): the data stream's
*bulk* messages, which RPC traffic overtakes (the transport's ``set_bulk_tag``)."""

TIMEOUT_METADATA_KEY = "agentwire-timeout"
"""RpcRequest metadata: the seconds the agentwire caller will still wait (its trio deadline)."""

ERROR_KIND_KEY = "agentwire-error-kind"
"""RpcResponse metadata: why an RPC failed without reaching (or finishing in) a handler.

Set by the agentwire gateway and agentwire workers next to the ``error``
text; agentwire workers raise the matching exception class (the same one an
in-process runtime raises), AutoGen workers ignore it and see the text.
"""

DRAIN_DESTINATION = "agentwire-gateway=drain"
"""ControlMessage destination: the sending worker asks the agentwire gateway to
place no new agents of shared types on it. The request's ``rpcMessage`` is a
``google.protobuf.Empty``; the answer (same ``rpc_id``) a ``BoolValue``: false
when shared agent types are off or the worker serves none. AutoGen peers never
see it (an AutoGen host would not answer)."""

RELEASE_DESTINATION = "agentwire-gateway=release"
"""ControlMessage destination: the sending worker hands its agents of shared
types back; the gateway places each anew (on another worker) on its next
message and sends this worker no new request for them. Payloads as for
:data:`DRAIN_DESTINATION`."""

ERROR_TYPE_KEY = "agentwire-error-type"
"""RpcResponse metadata: the class name of the exception a failed handler raised.

Set by agentwire workers next to the ``error`` text (``str(exc)``, what AutoGen
peers raise); an agentwire caller's :class:`~agentwire.RemoteError` carries it
as ``type_name``.
"""


class ErrorKind(enum.StrEnum):
    """The values of :data:`ERROR_KIND_KEY`."""

    UNDELIVERABLE = "undeliverable"
    """No worker serves the target agent type (unknown, or its owner has no channel)."""
    CONNECTION_LOST = "connection-lost"
    """The worker serving the target disconnected (or froze) before answering."""
    TIMEOUT = "timeout"
    """The gateway's RPC timeout, or the caller's own deadline, passed."""
    SHUTTING_DOWN = "shutting-down"
    """The gateway is shutting down."""
    OVERLOADED = "overloaded"
    """Too many requests in flight, or no queue space: retry later."""
    INVALID_ARGUMENT = "invalid-argument"
    """The request itself was malformed (e.g. an invalid target or source id)."""
    TOO_LARGE = "too-large"
    """The request or its result is larger than the message size limit."""
    CANT_HANDLE = "cant-handle"
    """The target agent has no handler for the message's type."""
    PERMISSION_DENIED = "permission-denied"
    """The caller's principal may not call the target agent type (gateway access control)."""
