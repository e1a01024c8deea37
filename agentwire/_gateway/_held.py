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
G5  Subscribers settle first. A held event is retried no sooner than
    ``settle`` seconds after the latest AddSubscription; held requests are
    not delayed by it. AutoGen 0.7.5's worker adds a subscription to its own
    table only once the gateway's answer has arrived, and drops an event
    for a topic it does not know yet: released at once, the event could
    overtake the answer. While held events wait for the settle, its end is a
    deadline of the table, so they are retried without further traffic.
"""

from __future__ import annotations

import math
from collections.abc import Container

import attrs

from .._ids import TopicId
from .._proto import agent_worker_pb2 as pb
from .._wire import ErrorKind
from ._actions import error_response
from ._registry import Conn

__all__ = ["SUBSCRIPTION_SETTLE", "HeldEvent", "HeldRequest", "StartupHold"]

SUBSCRIPTION_SETTLE = 0.1
"""Seconds a held event waits after an AddSubscription (G5)."""


@attrs.define(slots=True, eq=False)
class HeldRequest:
    caller: Conn
    message: pb.Message  # the caller's request, its own request id still in it


@attrs.define(slots=True, eq=False)
class HeldEvent:
    topic: TopicId
    data: bytes


class StartupHold:
    """Held requests and events of one gateway (see G1-G5)."""

    __slots__ = (
        "events",
        "limit",
        "requests",
        "retry_events",
        "retry_requests",
        "settle",
        "settled_at",
        "until",
    )

    def __init__(self, until: float, limit: int, settle: float = SUBSCRIPTION_SETTLE) -> None:
        self.until = until
        self.limit = limit
        self.settle = settle
        self.requests: list[HeldRequest] = []
        self.events: list[HeldEvent] = []
        # Something arrived that held requests / events may wait for.
        self.retry_requests = False
        self.retry_events = False
        self.settled_at = -math.inf  # held events are not retried before (G5)

    def __len__(self) -> int:
        return len(self.requests) + len(self.events)

    def accepts(self, now: float) -> bool:
        """Whether one more message may be held now (G1, G2)."""
        return now < self.until and len(self) < self.limit

    def next_deadline(self, now: float) -> float:
        """When the grace ends (G2), or sooner the settle that held events
        wait for (G5)."""
        if self.retry_events and self.events and now < self.settled_at < self.until:
            return self.settled_at
        return self.until

    def arrived(self) -> None:
        """A registration or a data channel: every held message may be deliverable."""
        self.retry_requests = self.retry_events = True

    def subscribed(self, now: float) -> None:
        """An AddSubscription: held events may be deliverable once it settles (G5)."""
        self.retry_events = True
        self.settled_at = now + self.settle

    def wants_release(self, now: float) -> bool:
        """Whether a release at *now* has work: the grace is over, or a held
        message may be deliverable (G5: a held event only once settled)."""
        return (
            now >= self.until
            or (self.retry_requests and bool(self.requests))
            or (self.retry_events and bool(self.events) and now >= self.settled_at)
        )

    def forget_caller(self, conn: Conn) -> None:
        """*conn* disconnected: its held requests are gone with it (G3)."""
        if self.requests:
            self.requests = [held for held in self.requests if held.caller is not conn]

    def take(self, now: float | None = None) -> tuple[list[HeldRequest], list[HeldEvent]]:
        """What is to be retried at *now* (None: everything), taking it out of
        the hold; the table puts back what still waits."""
        requests: list[HeldRequest] = []
        events: list[HeldEvent] = []
        if now is None or now >= self.until or self.retry_requests:
            requests, self.requests = self.requests, []
            self.retry_requests = False
        if now is None or now >= self.until or (self.retry_events and now >= self.settled_at):
            events, self.events = self.events, []
            self.retry_events = False
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
