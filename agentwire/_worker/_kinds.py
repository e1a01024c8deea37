"""RPC error answers and exceptions: the ``agentwire-error-kind`` of a response, both ways.

An RPC that fails outside a handler (no such agent type, the serving worker
gone, a timeout, too large, ...) is answered with an ``RpcResponse`` whose
``error`` is a text for humans (and AutoGen peers) and whose metadata
:data:`~agentwire._wire.ERROR_KIND_KEY` says which failure it was. An
agentwire caller raises the exception class an in-process runtime raises for
the same failure (:func:`error_from_response`); a failure the worker answers
itself gets its kind from the exception (:func:`kind_of`).

========================  ==========================================
kind                      exception raised at an agentwire caller
========================  ==========================================
``undeliverable``         :class:`~agentwire.UndeliverableError`
``connection-lost``       :class:`~agentwire.ConnectionLostError`
``shutting-down``         :class:`~agentwire.ConnectionLostError`
``timeout``               :class:`~agentwire.RpcTimeoutError`
``overloaded``            :class:`~agentwire.OverloadedError`
``invalid-argument``      :class:`~agentwire.InvalidRequestError`
``too-large``             :class:`~agentwire.MessageTooLargeError`
``cant-handle``           :class:`~agentwire.CantHandleError`
``permission-denied``     :class:`~agentwire.security.PermissionDeniedError`
none, or unknown          :class:`~agentwire.RemoteError` (the handler's own failure)
========================  ==========================================
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import trio

from .._errors import (
    AgentwireError,
    CantHandleError,
    ConnectionLostError,
    InvalidRequestError,
    MessageTooLargeError,
    OverloadedError,
    PermissionDeniedError,
    RemoteError,
    RpcTimeoutError,
    RuntimeClosedError,
    UndeliverableError,
)
from .._proto import agent_worker_pb2 as pb
from .._wire import ERROR_KIND_KEY, ERROR_TYPE_KEY, TIMEOUT_METADATA_KEY, ErrorKind

__all__ = [
    "UnansweredError",
    "describe",
    "error_from_response",
    "error_response",
    "kind_of",
    "timed_out",
    "too_large_error",
    "too_large_response",
]

_SIZES = re.compile(r"(\d+) bytes\D+(\d+)-byte")


class UnansweredError(RpcTimeoutError, UndeliverableError):
    """No answer within the worker's own ``rpc_timeout``.

    An :class:`RpcTimeoutError`, and an :class:`UndeliverableError` too: an
    AutoGen host never answers a request for an agent type nobody registered,
    so silence is also how an undeliverable request looks there.
    """


def too_large_error(size: int, limit: int, what: str) -> MessageTooLargeError:
    """The error raised for a message of *size* bytes, over *limit*, that was not sent."""
    return MessageTooLargeError(
        f"{what} not sent: {size} bytes, over the {limit}-byte message size limit "
        "(send less, or raise max_message_size on both ends)",
        size=size,
        limit=limit,
    )


_EXCEPTIONS: dict[str, Callable[[str], AgentwireError]] = {
    ErrorKind.UNDELIVERABLE: UndeliverableError,
    ErrorKind.CONNECTION_LOST: ConnectionLostError,
    ErrorKind.GATEWAY_UNREACHABLE: ConnectionLostError,
    ErrorKind.SHUTTING_DOWN: ConnectionLostError,
    ErrorKind.TIMEOUT: RpcTimeoutError,
    ErrorKind.OVERLOADED: OverloadedError,
    ErrorKind.INVALID_ARGUMENT: InvalidRequestError,
    ErrorKind.CANT_HANDLE: CantHandleError,
    ErrorKind.PERMISSION_DENIED: PermissionDeniedError,
}


def error_from_response(response: pb.RpcResponse, *, limit: int) -> AgentwireError:
    """The exception an agentwire caller raises for an error response (see the table).

    *limit* is the caller's own message size limit, for a ``too-large`` answer
    whose text does not name the limit it broke.
    """
    text = response.error
    kind = response.metadata.get(ERROR_KIND_KEY, "")
    if kind == ErrorKind.TOO_LARGE:
        match = _SIZES.search(text)
        if match:
            return MessageTooLargeError(text, size=int(match[1]), limit=int(match[2]))
        return MessageTooLargeError(text, size=None, limit=limit)
    make = _EXCEPTIONS.get(kind)
    if make is not None:
        return make(text)
    return RemoteError(text, type_name=response.metadata.get(ERROR_TYPE_KEY))


def kind_of(error: BaseException) -> ErrorKind | None:
    """The kind a worker answers with when serving a request failed with *error*.

    ``None`` for a handler's own failure (the caller gets a :class:`RemoteError`).
    """
    if isinstance(error, RpcTimeoutError):
        return ErrorKind.TIMEOUT
    if isinstance(error, UndeliverableError):
        return ErrorKind.UNDELIVERABLE
    if isinstance(error, CantHandleError):
        return ErrorKind.CANT_HANDLE
    if isinstance(error, MessageTooLargeError):
        return ErrorKind.TOO_LARGE
    if isinstance(error, RuntimeClosedError):
        return ErrorKind.SHUTTING_DOWN
    if isinstance(error, OverloadedError):
        return ErrorKind.OVERLOADED
    return None


def error_response(error: BaseException) -> pb.RpcResponse:
    """The answer to a request whose serving failed with *error*: its text, class
    name (:data:`~agentwire._wire.ERROR_TYPE_KEY`) and kind, if it has one."""
    response = pb.RpcResponse(error=str(error) or type(error).__name__)
    response.metadata[ERROR_TYPE_KEY] = type(error).__name__
    kind = kind_of(error)
    if kind is not None:
        response.metadata[ERROR_KIND_KEY] = kind
    return response


def describe(error: BaseException) -> str:
    """``Type: message`` of *error*, looking inside exception groups for the causes."""
    if isinstance(error, BaseExceptionGroup):
        return "; ".join(describe(inner) for inner in error.exceptions)
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def too_large_response(response: pb.RpcResponse, size: int, limit: int) -> pb.RpcResponse:
    """The error response sent instead of *response*, which is *size* bytes, over *limit*."""
    answer = pb.RpcResponse(
        request_id=response.request_id,
        error=f"the result is too large to send: {size} bytes, over the {limit}-byte "
        "message size limit",
    )
    answer.metadata[ERROR_KIND_KEY] = ErrorKind.TOO_LARGE
    return answer


def timed_out(request_id: str) -> RpcTimeoutError:
    return RpcTimeoutError(f"no response to request {request_id} in time")


def request_deadline(request: pb.RpcRequest, now: Callable[[], float] = trio.current_time) -> float:
    """The trio time by which an agentwire caller wants *request* answered (``inf``: none).

    Its ``agentwire-timeout`` metadata holds the seconds the caller had left
    when it sent the request; anything else (absent, unreadable, negative)
    means no limit. ``now``: reads the trio clock (the run's clock's own
    ``current_time`` saves ``trio.current_time``'s two frames).
    """
    text = request.metadata.get(TIMEOUT_METADATA_KEY)
    if not text:
        return math.inf
    try:
        value = float(text)
    except ValueError:
        return math.inf
    return now() + value if value >= 0 else math.inf


def deadline_response(request: pb.RpcRequest) -> pb.RpcResponse:
    """The answer to *request* when its caller's deadline passed while it was being handled."""
    target = request.target
    response = pb.RpcResponse(
        error=f"deadline exceeded: the caller's deadline passed while {target.type}/"
        f"{target.key} was handling the request"
    )
    response.metadata[ERROR_KIND_KEY] = ErrorKind.TIMEOUT
    return response
