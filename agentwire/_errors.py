"""The one exception hierarchy of agentwire.

Every error agentwire raises on purpose derives from :class:`AgentwireError`.
Errors about bad values also derive from :class:`ValueError` so callers that
already catch ``ValueError`` (as AutoGen's API teaches) keep working.
"""

from __future__ import annotations


class AgentwireError(Exception):
    """Base class of every error agentwire raises on purpose."""


class InvalidIdentifierError(AgentwireError, ValueError):
    """An agent type, agent id or topic id broke its validation rule.

    The message names the field, the offending value and the rule.
    """

    def __init__(self, field: str, value: object, rule: str) -> None:
        self.field = field
        self.value = value
        self.rule = rule
        super().__init__(f"invalid {field} {value!r}: {rule}")


class SerializationError(AgentwireError, ValueError):
    """A message could not be serialized or deserialized, or its type is unsupported."""


class CantHandleError(AgentwireError):
    """An agent or a subscription cannot handle the given message or topic."""


class UndeliverableError(AgentwireError):
    """A message could not be delivered: no agent of that type is known anywhere."""


class MessageDroppedError(AgentwireError):
    """An intervention handler dropped the message (or its response)."""


class RemoteError(AgentwireError):
    """A handler on another worker failed; carries the remote error text.

    ``type_name`` is the remote exception's class name when the peer told us
    (agentwire peers do, AutoGen peers send only ``str(exc)``), else ``None``.
    """

    def __init__(self, message: str, *, type_name: str | None = None) -> None:
        self.remote_message = message
        self.type_name = type_name
        super().__init__(f"{type_name}: {message}" if type_name else message)


class ConnectionLostError(AgentwireError):
    """The connection to the gateway (or to a worker) ended while a call was pending."""


class RuntimeClosedError(AgentwireError):
    """The runtime is closed (or closing) and cannot take this call."""


class GatewayRejectedError(AgentwireError, ValueError):
    """The gateway refused a registration (agent type, subscription) of a worker.

    ``status`` is the gRPC status name (e.g. ``"INVALID_ARGUMENT"``) and
    ``gateway_message`` the gateway's own text (AutoGen's host says, e.g.,
    ``"Agent type X already registered with client Y."``).
    """

    def __init__(self, what: str, status: str, gateway_message: str) -> None:
        self.status = status
        self.gateway_message = gateway_message
        super().__init__(f"the gateway rejected {what}: {status}: {gateway_message}")


class DuplicateSubscriptionError(AgentwireError, ValueError):
    """A subscription equal to the new one (same id, or same kind and content) exists.

    The message is exactly AutoGen's ("Subscription already exists"): peers see it.
    """

    def __init__(self, subscription: object = None, existing: object = None) -> None:
        self.subscription = subscription
        self.existing = existing
        super().__init__("Subscription already exists")


class UnknownSubscriptionError(AgentwireError, ValueError, LookupError):
    """No subscription has the given id (message exactly AutoGen's)."""

    def __init__(self, subscription_id: str = "") -> None:
        self.subscription_id = subscription_id
        super().__init__("Subscription does not exist")


class InvalidSubscriptionError(AgentwireError, ValueError):
    """A subscription cannot be converted to or from its protobuf form."""


class InvalidCloudEventError(AgentwireError, ValueError):
    """A received CloudEvent lacks a required attribute or has a bad one.

    ``attribute`` names the offending attribute (or field).
    """

    def __init__(self, attribute: str, problem: str) -> None:
        self.attribute = attribute
        self.problem = problem
        super().__init__(f"invalid CloudEvent: {attribute} {problem}")


class RequestCancelledError(AgentwireError):
    """The handler of an RPC was cancelled (its ``ctx.cancellation`` scope) before it
    returned, while the caller was still waiting; the caller gets this error."""


class RpcTimeoutError(AgentwireError):
    """An RPC got no answer before a deadline the system set (a gateway's or worker's
    ``rpc_timeout``), not one of the caller's own trio cancel scopes (those cancel
    the call as usual). Retry, or raise the timeout if the handler is slow by design."""


class MessageTooLargeError(AgentwireError, ValueError):
    """A message (request, response or event) is larger than the size limit on its way.

    ``size`` is the message's size in bytes (``None`` when the peer did not say) and
    ``limit`` the limit it broke; send smaller messages or raise ``max_message_size``.
    """

    def __init__(self, message: str, *, size: int | None, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(message)


class OverloadedError(AgentwireError):
    """No room for the message right now (too many requests in flight, or a queue at
    its bound); nothing was delivered to the recipients named. Retry later, or slow
    the producer down."""


class InvalidRequestError(AgentwireError, ValueError):
    """The gateway refused a request as malformed (e.g. an invalid target or source id)."""


class AuthenticationError(AgentwireError):
    """No or bad credentials (gRPC UNAUTHENTICATED). The message never holds a token."""


class PermissionDeniedError(AgentwireError):
    """The caller's principal lacks the right for what it asked (gRPC PERMISSION_DENIED)."""


class GatewayRefusedError(ConnectionLostError):
    """The gateway refused this worker's channel (UNAUTHENTICATED: no or a bad
    token or certificate; PERMISSION_DENIED: e.g. a client-id of another
    principal). Reconnecting cannot help: fix the worker's credentials or the
    gateway's access file."""
