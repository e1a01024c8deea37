"""The start-up hold: messages the gateway keeps back while workers re-register.

Right after a gateway (re)starts, callers may reconnect before the workers
serving them. For ``startup_grace`` seconds from the start a request for an
agent type without a reachable owner, and an event for a topic without any
reachable subscriber, are *held* instead of failed or dropped; the routing
table retries them whenever a registration, subscription or data channel
arrives, and when the grace ends answers what is left with the usual error
(requests) or drops it (events). Sans-IO: the routing table drives it.

Invariants (checked by ``RoutingTable.check_invariants``):

G1  Bounded. At most ``limit`` messages are held in all (requests and events
    together); beyond that a message meets the usual fate at once.
G2  Only during the grace. Nothing new is held at or after ``until``; the
    first release at or after it empties the hold for good (so does the
    first expiry at or after it when nothing is held). ``until`` is a
    deadline of the table for as long as the hold exists, so the grace ends
    on time without traffic to notice it.
G3  Held requests are admitted. Each held request counts in its caller's
    in-flight total (the table's I6), so its eventual answer -- forwarded
    response or error -- has reserved space; a held request whose caller
    disconnects is forgotten with it.
G4  At most once. A held event is delivered at most once: to the subscribers
    reachable at the first retry that finds any, then forgotten (AutoGen's
    delivery guarantee for events is at-most-once as well).
"""

from __future__ import annotations

from collections.abc import Container

import attrs

from .._ids import TopicId
from .._proto import agent_worker_pb2 as pb
from .._wire import ErrorKind
from ._actions import error_response
from ._registry import Conn

__all__ = ["HeldEvent", "HeldRequest", "StartupHold"]


@attrs.define(slots=True, eq=False)
class HeldRequest:
    caller: Conn
    message: pb.Message  # the caller's request, its own request id still in it


@attrs.define(slots=True, eq=False)
class HeldEvent:
    topic: TopicId
    data: bytes


class StartupHold:
    """Held requests and events of one gateway (see G1-G4)."""

    __slots__ = ("events", "limit", "requests", "until")

    def __init__(self, until: float, limit: int) -> None:
        self.until = until
        self.limit = limit
        self.requests: list[HeldRequest] = []
        self.events: list[HeldEvent] = []

    def __len__(self) -> int:
        return len(self.requests) + len(self.events)

    def accepts(self, now: float) -> bool:
        """Whether one more message may be held now (G1, G2)."""
        return now < self.until and len(self) < self.limit

    def next_deadline(self) -> float:
        """When the grace ends (G2)."""
        return self.until

    def forget_caller(self, conn: Conn) -> None:
        """*conn* disconnected: its held requests are gone with it (G3)."""
        if self.requests:
            self.requests = [held for held in self.requests if held.caller is not conn]

    def take(self) -> tuple[list[HeldRequest], list[HeldEvent]]:
        """Everything held, emptying the hold (the table puts back what still waits)."""
        requests, events = self.requests, self.events
        self.requests, self.events = [], []
        return requests, events

    def refusals(self) -> list[tuple[Conn, bytes]]:
        """The gateway is shutting down: the error answer of every held
        request, per caller, emptying the hold (held events are dropped)."""
        requests, _ = self.take()
        answers = []
        for held in requests:
            request = held.message.request
            error = f"the gateway is shutting down; {request.target.type}/{request.target.key}"
            answers.append(
                (held.caller, error_response(request.request_id, ErrorKind.SHUTTING_DOWN, error))
            )
        return answers

    def check_invariants(self, live: Container[Conn]) -> None:
        assert len(self) <= self.limit  # G1
        assert all(held.caller in live for held in self.requests)  # G3
