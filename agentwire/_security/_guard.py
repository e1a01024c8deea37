"""The gateway's access decisions: who a caller is, which client-ids are
whose, and whether a principal holds the right for what it asks. Sans-IO:
every method is synchronous and either returns or raises
:class:`AuthenticationError` (UNAUTHENTICATED) or
:class:`PermissionDeniedError` (PERMISSION_DENIED) for the one caller
concerned.

The I/O layer calls :meth:`AccessGuard.authenticate` when a call or stream
opens, :meth:`check_client` before handing a call with a ``client-id`` to the
router, and :meth:`claim` once the router holds state for that client-id (a
stream, an agent type or a subscription). The router stays the one source of
truth for which client-ids exist: the guard asks it (``is_known``) instead of
being told about every way a client record ends (stream end, expiry, last
subscription removed).

Invariants (checked after every step by ``tests/security/test_guard_stateful.py``):

G1  Ownership. For a client-id ``c`` the router knows, ``_owners[c]`` is the
    name of the principal whose call first made the router hold state for
    ``c``; it never changes while the router knows ``c``.
G2  Exclusivity. A call carrying client-id ``c`` from any principal other
    than the owner of ``c`` is refused before it reaches the router: it can
    neither open a stream with ``c`` (which would supersede the owner's),
    nor register, subscribe, or remove subscriptions as ``c``.
G3  Bounded. An entry whose client-id the router forgot is stale: every
    decision ignores it (the client-id is free again), and stale entries are
    swept when the table reaches ``_sweep_at``, which is reset to
    ``max(sweep_floor, 2 * entries left)`` after each sweep. So the table never holds
    more than ``_sweep_at`` entries, at most twice the most client-ids the
    router ever held at once (or ``sweep_floor``, 64), at amortised O(1) per claim. With
    authentication off it stays empty.
G4  Discretion. A principal sees (GetSubscriptions), and removes, only
    subscriptions recorded by client-ids it owns; error messages name other
    principals' client-ids to nobody (and never a token).
G5  Counting. ``denials`` and ``unauthenticated`` count every refusal raised.
G6  Reserved. No caller acts as the gateway's own operator client
    (``agentwire-operator``, ``agentwire-operator/...``), with authentication
    on or off: its subscriptions outlive every caller's connection.

With authentication off every caller is :data:`ANONYMOUS` (one principal,
every right): G2 and G4 then hold trivially and the gateway behaves as
AutoGen's host, where any peer may act as any client-id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import attrs

from .._proto import agent_worker_pb2 as pb
from .._wire import OPERATOR_CLIENT_ID
from ._auth import AuthenticationError, Authenticator, Credentials
from ._rights import ANONYMOUS, NamePatterns, PermissionDeniedError, Principal

__all__ = ["AccessGuard", "GuardStatistics", "MessagePolicy", "is_operator_client"]

logger = logging.getLogger("agentwire.security")

_MAX_WARNED = 1024  # distinct refused (principal, right, name) logged at WARNING


class MessagePolicy(Protocol):
    """What the routing table asks per message (an :class:`AccessGuard` answers)."""

    def refuse_event(self, client_id: str, topic_type: str) -> str | None: ...

    def refuse_request(self, client_id: str, agent_type: str) -> str | None: ...

    def refuse_control(
        self, client_id: str, destination: str, *, request: bool = False
    ) -> str | None: ...


@attrs.frozen(slots=True)
class GuardStatistics:
    client_ids: int  # client-ids owned (G3: the router's clients)
    principals: int  # distinct principals owning them
    unauthenticated: int  # calls refused with UNAUTHENTICATED
    denials: int  # calls or messages refused with PERMISSION_DENIED


class AccessGuard:
    """The decisions of one gateway. ``authenticator=None``: authentication
    off, every caller is :data:`ANONYMOUS`. ``is_known(client_id)`` tells
    whether the router still holds state for a client-id (G3)."""

    def __init__(
        self,
        authenticator: Authenticator | None = None,
        *,
        is_known: Callable[[str], bool] = lambda client_id: True,
        sweep_floor: int = 64,
    ) -> None:
        self.authenticator = authenticator
        self._is_known = is_known
        self._owners: dict[str, Principal] = {}
        self._warned: set[tuple[str, str, str]] = set()  # (principal, right, name) logged
        self._sweep_floor = sweep_floor
        self._sweep_at = sweep_floor
        self._unauthenticated = 0
        self._denials = 0

    @property
    def enabled(self) -> bool:
        return self.authenticator is not None

    def statistics(self) -> GuardStatistics:
        owners = {c: p.name for c, p in self._owners.items() if self._is_known(c)}
        return GuardStatistics(
            client_ids=len(owners),
            principals=len(set(owners.values())),
            unauthenticated=self._unauthenticated,
            denials=self._denials,
        )

    def check_invariants(self, peak_client_ids: int = 0) -> None:
        """Assert G3, given the most client-ids the router ever held at once
        (G1, G2 and G4 are checked by the callers, who see the router)."""
        if self.authenticator is None:
            assert not self._owners
        assert len(self._owners) <= self._sweep_at, (len(self._owners), self._sweep_at)
        floor = self._sweep_floor
        assert floor <= self._sweep_at <= max(floor, 2 * peak_client_ids)
        assert all(isinstance(p, Principal) for p in self._owners.values())
        assert self._unauthenticated >= 0
        assert self._denials >= 0

    # ------------------------------------------------------------ identity

    def authenticate(self, credentials: Credentials) -> Principal:
        """The caller's principal (:data:`ANONYMOUS` when authentication is off)."""
        if self.authenticator is None:
            return ANONYMOUS
        try:
            return self.authenticator.authenticate(credentials)
        except AuthenticationError:
            self._unauthenticated += 1
            raise

    def _deny(self, message: str, key: tuple[str, str, str] | None = None) -> str:
        """Count a refusal and log it (per-message refusals once per key)."""
        self._denials += 1
        if key is None or key not in self._warned:
            if key is not None and len(self._warned) < _MAX_WARNED:
                self._warned.add(key)
            logger.warning("refused: %s", message)
        else:
            logger.debug("refused: %s", message)
        return message

    def owner_of(self, client_id: str) -> str | None:
        """The name of the principal owning *client_id*, if the router knows it."""
        owner = self._owners.get(client_id)  # always None with authentication off
        if owner is None:
            return None
        if not self._is_known(client_id):
            del self._owners[client_id]  # stale (G3): the client-id is free again
            return None
        return owner.name

    def owns(self, principal: Principal, client_id: str) -> bool:
        return self.owner_of(client_id) == principal.name

    def check_client(self, principal: Principal, client_id: str) -> None:
        """G2: refuse *principal* acting as a client-id another principal owns;
        G6: or as the gateway's operator client."""
        if is_operator_client(client_id):
            raise PermissionDeniedError(
                self._deny(
                    f"client-id {client_id!r} is reserved for the gateway's own operator "
                    "client; use another client-id"
                )
            )
        owner = self.owner_of(client_id)
        if owner is not None and owner != principal.name:
            raise PermissionDeniedError(
                self._deny(
                    f"principal {principal.name!r} may not use this client-id: it belongs to "
                    "another principal (every worker must use client-ids of its own)"
                )
            )

    def claim(self, principal: Principal, client_id: str) -> None:
        """Record that the router now holds state for *client_id* on behalf of
        *principal* (after :meth:`check_client` passed, with no await between).
        Nothing is recorded with authentication off. A later claim by the same
        principal refreshes its rights (an access file reloaded since)."""
        if self.authenticator is None:
            return
        owner = self.owner_of(client_id)
        if owner is None and len(self._owners) >= self._sweep_at:
            self._sweep()
        elif owner is not None and owner != principal.name:  # pragma: no cover
            raise RuntimeError(f"client-id claimed by {principal.name!r} belongs to {owner!r}")
        self._owners[client_id] = principal

    def _sweep(self) -> None:
        is_known = self._is_known
        self._owners = {c: p for c, p in self._owners.items() if is_known(c)}
        self._sweep_at = max(self._sweep_floor, 2 * len(self._owners))

    # ------------------------------------------------------------ rights

    def check_register(self, principal: Principal, agent_type: str) -> None:
        if not principal.rights.register.allows(agent_type):
            raise PermissionDeniedError(
                self._deny(
                    f"principal {principal.name!r} may not register agent type {agent_type!r} "
                    f"(its 'register' right allows: {principal.rights.register})"
                )
            )

    def check_subscription(self, principal: Principal, subscription: pb.Subscription) -> None:
        """A subscription names one of the principal's agent types (``register``
        right) and topic types it may subscribe to (``subscribe`` right; a prefix
        subscription needs a prefix right covering its prefix, except an agent
        type's own direct-message prefix ``"<agent type>:"``)."""
        parts = self._topics(principal, subscription, own_prefix=True)
        if parts is None:
            return  # malformed: the router answers INVALID_ARGUMENT
        agent_type, refusal = parts
        rights = principal.rights
        if not rights.register.allows(agent_type):
            raise PermissionDeniedError(
                self._deny(
                    f"principal {principal.name!r} may not subscribe agent type {agent_type!r}: "
                    "it is not one it may register "
                    f"(its 'register' right allows: {rights.register})"
                )
            )
        if refusal is not None:
            raise PermissionDeniedError(self._deny(refusal))

    def check_operator_subscription(
        self, principal: Principal, subscription: pb.Subscription
    ) -> None:
        """A subscription the gateway keeps for *principal*
        (``/agentwire.Operator/AddSubscription``): its topic types need the
        ``subscribe`` right (a prefix subscription a prefix right covering its
        prefix), its agent type the ``call`` right -- its events are messages
        to that type's agents, which another principal's worker may serve."""
        parts = self._topics(principal, subscription, own_prefix=False)
        if parts is None:
            return  # malformed: the router answers INVALID_ARGUMENT
        agent_type, refusal = parts
        if refusal is not None:
            raise PermissionDeniedError(self._deny(refusal))
        rights = principal.rights
        if not rights.call.allows(agent_type):
            raise PermissionDeniedError(
                self._deny(
                    f"principal {principal.name!r} may not subscribe agent type {agent_type!r}: "
                    f"its events would be calls it may not make "
                    f"(its 'call' right allows: {rights.call})"
                )
            )

    @staticmethod
    def _topics(
        principal: Principal, subscription: pb.Subscription, *, own_prefix: bool
    ) -> tuple[str, str | None] | None:
        """``(agent type, why the subscribe right refuses its topics or None)``
        of *subscription*, None if it is malformed. *own_prefix*: the agent
        type's direct-message prefix ``"<agent type>:"`` needs no right."""
        kind = subscription.WhichOneof("subscription")
        subscribe = principal.rights.subscribe
        if kind == "typeSubscription":
            agent_type = subscription.typeSubscription.agent_type
            topic = subscription.typeSubscription.topic_type
            allowed = subscribe.allows(topic)
            what = f"topic type {topic!r}"
        elif kind == "typePrefixSubscription":
            agent_type = subscription.typePrefixSubscription.agent_type
            topic = subscription.typePrefixSubscription.topic_type_prefix
            # "<agent type>:" is the direct-message subscription every agent type has
            allowed = (own_prefix and topic == f"{agent_type}:") or subscribe.allows_prefix(topic)
            what = f"every topic type starting with {topic!r}"
        else:
            return None
        if allowed:
            return agent_type, None
        return agent_type, (
            f"principal {principal.name!r} may not subscribe to {what} "
            f"(its 'subscribe' right allows: {subscribe})"
        )

    def refuse_event(self, client_id: str, topic_type: str) -> str | None:
        """Per CloudEvent from *client_id*'s data stream: why it may not be
        published (counted), or None. Costs a dict lookup with authentication on."""
        return self._refuse(client_id, "publish", "publish to topic type", topic_type)

    def refuse_request(self, client_id: str, agent_type: str) -> str | None:
        """Per RPC from *client_id*'s data stream: why it may not call an agent
        of *agent_type* (counted), or None."""
        return self._refuse(client_id, "call", "call agent type", agent_type)

    def refuse_control(
        self, client_id: str, destination: str, *, request: bool = False
    ) -> str | None:
        """Per ControlMessage: one for ``agentid=type/key`` needs the ``call``
        right on that type. One for ``clientid=...`` passes if it is an answer
        (no ``respond_to``: how answers find their requester); a *request* to a
        client-id passes only between client-ids of one principal -- a worker
        serves every request that reaches its control channel, so another
        principal's would bypass the ``call`` right."""
        if destination.startswith("agentid="):
            agent_type = destination[len("agentid=") :].partition("/")[0]
            return self._refuse(client_id, "call", "call agent type", agent_type)
        if not request or not destination.startswith("clientid=") or self.authenticator is None:
            return None
        principal = self._owners.get(client_id)
        if principal is None:
            return self._unowned(client_id)  # pragma: no cover - streams are claimed
        if self.owns(principal, destination[len("clientid=") :]):
            return None
        return self._deny(
            f"principal {principal.name!r} may not send a control request to a client-id "
            "it does not own: its 'call' right reaches agents (agentid=TYPE/KEY) only",
            (principal.name, "call", "clientid="),
        )

    def _refuse(self, client_id: str, right: str, action: str, name: str) -> str | None:
        principal = self._owners.get(client_id)
        if principal is None:
            return None if self.authenticator is None else self._unowned(client_id)
        patterns: NamePatterns = getattr(principal.rights, right)
        if patterns.everything or patterns.allows(name):
            return None
        return self._deny(
            f"principal {principal.name!r} may not {action} {name!r} "
            f"(its {right!r} right allows: {patterns})",
            (principal.name, right, name),
        )

    def _unowned(self, client_id: str) -> str:  # pragma: no cover - streams are claimed
        return self._deny(f"a message from an unclaimed client-id {client_id!r}")

    # ------------------------------------------------------------ discretion

    def may_see(self, principal: Principal, owner_client_id: str | None) -> bool:
        """G4: whether *principal* may see (or remove) what *owner_client_id* recorded."""
        if self.authenticator is None:
            return True
        return owner_client_id is not None and self.owns(principal, owner_client_id)

    def registration_conflict(
        self, principal: Principal, agent_type: str, owner_client_id: str
    ) -> str:
        """The error for registering a taken type: AutoGen's text (naming the
        owner's client-id) when the caller owns that client-id, else without it."""
        if self.may_see(principal, owner_client_id):
            return f"Agent type {agent_type} already registered with client {owner_client_id}."
        return f"Agent type {agent_type} already registered by another principal's worker."


def is_operator_client(client_id: str) -> bool:
    """Whether *client_id* is reserved for the gateway's operator client (G6)."""
    return client_id == OPERATOR_CLIENT_ID or client_id.startswith(OPERATOR_CLIENT_ID + "/")
