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
    "OPERATOR_ADD_SUBSCRIPTION_METHOD",
    "OPERATOR_CLIENT_ID",
    "OPERATOR_REMOVE_SUBSCRIPTION_METHOD",
    "OPERATOR_STATUS_METHOD",
    "RELEASE_DESTINATION",
    "SERVICE_PREFIX",
    "STATE_CLIENT_ID",
    "STATE_DESTINATION",
    "TIMEOUT_METADATA_KEY",
    "ErrorKind",
    "StateErrorKind",
]

SERVICE_PREFIX = "/agents.AgentRpc/"
"""The path prefix of the Agent Worker Protocol's methods (``/agents.AgentRpc/OpenChannel``)."""

OPERATOR_STATUS_METHOD = "/agentwire.Operator/Status"
"""An agentwire-only, read-only unary method of the gateway: an empty request, a UTF-8 JSON
answer (connected clients, their agent types, subscriptions and counters; ``agentwire status``)."""

OPERATOR_ADD_SUBSCRIPTION_METHOD = "/agentwire.Operator/AddSubscription"
"""An agentwire-only unary method of the gateway: an ``agents.AddSubscriptionRequest``
whose subscription the gateway itself keeps (it outlives the caller's connection;
``agentwire subscriptions add``); the answer is an empty ``AddSubscriptionResponse``."""

OPERATOR_REMOVE_SUBSCRIPTION_METHOD = "/agentwire.Operator/RemoveSubscription"
"""An agentwire-only unary method of the gateway: an ``agents.RemoveSubscriptionRequest``
for any subscription the caller may see (``agentwire subscriptions remove``); the answer
is an empty ``RemoveSubscriptionResponse``, NOT_FOUND for an unknown id."""

OPERATOR_CLIENT_ID = "agentwire-operator"
"""The client-id of the gateway's own client that keeps the subscriptions made with
:data:`OPERATOR_ADD_SUBSCRIPTION_METHOD` (with an access file, one per principal:
``agentwire-operator/<principal>``). Workers may not use it or any ``agentwire-operator/...``."""

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

STATE_CLIENT_ID = "agentwire-state"
"""The client-id of the agentwire gateway's state service (``open_gateway(state_store=...)``):
it holds a control connection of the gateway under this id, like a worker."""

STATE_DESTINATION = f"clientid={STATE_CLIENT_ID}"
"""ControlMessage destination: an agentwire worker's ``agentwire.state.v1.StateSyncRequest``
(``agentwire_state.proto``) for the gateway's state store; the answer (same ``rpc_id``) is a
``StateSyncResponse``. Only agentwire workers send one, and the service only answers, so
AutoGen peers never see these messages; a gateway without a state store (or AutoGen's host)
has no such client: the agentwire gateway answers with an error response, AutoGen's drops it."""

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
    GATEWAY_UNREACHABLE = "gateway-unreachable"
    """The target is served through another gateway of a cluster, and that gateway left
    or cannot be reached (it or Redis is down) before answering."""


class StateErrorKind(enum.StrEnum):
    """The values of ``StateSyncResponse.error_kind`` (``agentwire_state.proto``)."""

    CONFLICT = "conflict"
    """The write's base version is not the stored one (``current_version`` holds it)."""
    INVALID = "invalid"
    """The request was malformed (no agent id, not a JSON object or patch)."""
    UNAVAILABLE = "unavailable"
    """The store failed or could not be reached, or there is none: retry later."""
