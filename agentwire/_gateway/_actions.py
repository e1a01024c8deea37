"""What the routing core tells the I/O layer to do, and what it counts.

:class:`Deliver` and :class:`Close` are the actions of ``_routing.py``;
:func:`error_response` builds every error ``RpcResponse`` the gateway sends.
"""

from __future__ import annotations

import attrs
from grpclib.const import Status

from .._proto import agent_worker_pb2 as pb
from .._wire import ERROR_KIND_KEY, ErrorKind
from ._placement import TypePlacement
from ._registry import Conn

__all__ = ["ERROR_PREFIX", "Action", "Close", "Deliver", "RouterStatistics", "error_response"]

ERROR_PREFIX = "agentwire gateway: "


@attrs.define(slots=True)  # not frozen: made for every routed message, frozen init costs more
class Deliver:
    """Send *data* (a serialized Message or ControlMessage) to *conn*.

    ``answer`` is true for an RpcResponse that settles one of *conn*'s pending
    requests: those never wait for queue space (I6) and, once consumed, must be
    reported with :meth:`~._routing.RoutingTable.answer_consumed`.
    """

    conn: Conn
    data: bytes
    answer: bool = False
    event: bool = False  # a CloudEvent (the I/O layer queues it in the event lane)


@attrs.frozen(slots=True)
class Close:
    """End *conn*'s stream with *status* (it broke the protocol)."""

    conn: Conn
    status: Status
    message: str


Action = Deliver | Close


@attrs.frozen(slots=True)
class RouterStatistics:
    clients: int
    data_connections: int
    control_connections: int
    agent_types: int
    subscriptions: int
    rpcs_in_flight: int
    rpcs_forwarded: int
    rpcs_failed: int  # answered with an error by the gateway itself
    responses_forwarded: int
    responses_dropped: int  # late (caller gone, timed out) or unknown
    events_received: int
    event_deliveries: int
    events_dropped: int  # invalid topic
    control_forwarded: int
    control_undeliverable: int
    protocol_errors: int  # malformed messages: the sender's stream was ended
    registrations_expired: int  # clients whose records expired without a channel
    held_messages: int  # requests and events held during the start-up grace
    # Shared agent types: workers and placed agents per worker, by type.
    placement: dict[str, TypePlacement] = attrs.field(factory=dict, kw_only=True)
    placed_agents: int = attrs.field(default=0, kw_only=True)


def error_response(request_id: str, kind: ErrorKind, error: str) -> bytes:
    """A serialized error RpcResponse: AutoGen's ``error`` text, and the kind
    (``ERROR_KIND_KEY`` metadata) for agentwire workers."""
    response = pb.RpcResponse(
        request_id=request_id, error=ERROR_PREFIX + error, metadata={ERROR_KIND_KEY: kind}
    )
    return pb.Message(response=response).SerializeToString()
