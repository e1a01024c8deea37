"""A gateway hub's configuration (:class:`GatewayConfig`), the figures it
reports (:class:`GatewayStatistics` and its parts), and what it asks of the
services that plug into it (a cluster, the state service)."""

from __future__ import annotations

from typing import Any, Protocol

import attrs

from .._proto import agent_worker_pb2 as pb
from .._wire import DEFAULT_MAX_MESSAGE_SIZE
from ._placement import PlacementStrategy, placement_strategy
from ._routing import RouterStatistics

__all__ = [
    "ClusterMembership",
    "GatewayConfig",
    "GatewayStatistics",
    "QueueStatistics",
    "StateServiceCounters",
    "StateServiceStatistics",
]


def _positive(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


@attrs.frozen(slots=True)
class GatewayConfig:
    """Tuning knobs of a gateway.

    * ``rpc_timeout``: seconds a forwarded RPC may stay unanswered before the
      caller gets an error response (None: never; AutoGen never times out).
      A caller's shorter ``agentwire-timeout`` request metadata wins.
    * ``queue_size``: forwarded messages queued per client and lane (RPC
      traffic, events) before senders to that lane wait (until half of it is
      read).
    * ``max_in_flight``: unanswered requests per client; more are refused with
      an error response at once.
    * ``send_timeout``: how long a sender waits for a full client queue before
      that (slow) client is disconnected.
    * ``rpc_burst``: RPC-lane messages a client is sent, at most, between two
      events while both lanes hold some (RPC traffic goes first, events are
      never starved).
    * ``max_message_size``: the largest message forwarded; a request or
      response that would be larger is answered with an error (too-large).
    * ``registration_grace``: seconds the agent types and subscriptions of a
      client-id without a data channel are kept (AutoGen workers may register
      before they open it); then they are dropped (None: kept forever).
    * ``max_agent_types_per_client`` / ``max_subscriptions_per_client``: more
      are refused with RESOURCE_EXHAUSTED.
    * ``startup_grace``: seconds after the start during which a request for
      an agent type nobody serves yet, or an event no subscriber would get,
      is held (up to ``max_held`` in all) until a worker registers, instead
      of failing at once; what is still undeliverable when it ends meets the
      usual fate (error answer; event dropped). 0 disables it.
    * ``placement``: None (default) gives each agent type one worker, as
      AutoGen's host (a second RegisterAgent of a type is refused). A
      strategy (``"hash"``, ``"least-loaded"`` or a
      :class:`~._placement.PlacementStrategy`) turns on shared agent types:
      every worker registering a type serves it, each agent ``type/key``
      lives on one of them (see ``_placement.py``).
    * ``max_placed_keys``: agents placed at once with shared agent types; a
      message for a new agent beyond it is refused (overloaded).
    """

    rpc_timeout: float | None = attrs.field(default=300.0, validator=_positive)
    queue_size: int = attrs.field(default=100, validator=attrs.validators.ge(1))
    max_in_flight: int = attrs.field(default=1000, validator=attrs.validators.ge(1))
    send_timeout: float = attrs.field(default=30.0, validator=_positive)
    rpc_burst: int = attrs.field(default=8, validator=attrs.validators.ge(1))
    max_message_size: int = attrs.field(
        default=DEFAULT_MAX_MESSAGE_SIZE, validator=attrs.validators.ge(1)
    )
    registration_grace: float | None = attrs.field(default=30.0, validator=_positive)
    max_agent_types_per_client: int = attrs.field(default=1000, validator=attrs.validators.ge(1))
    max_subscriptions_per_client: int = attrs.field(
        default=10_000, validator=attrs.validators.ge(1)
    )
    startup_grace: float = attrs.field(default=5.0, validator=attrs.validators.ge(0))
    max_held: int = attrs.field(default=1000, validator=attrs.validators.ge(1))
    placement: str | PlacementStrategy | None = attrs.field(default=None)
    max_placed_keys: int = attrs.field(default=1_000_000, validator=attrs.validators.ge(1))

    @placement.validator
    def _known_strategy(self, _: object, value: str | PlacementStrategy | None) -> None:
        if value is not None:
            placement_strategy(value)


@attrs.frozen(slots=True)
class GatewayStatistics(RouterStatistics):
    """A snapshot of a gateway's state and counters: the router's, and the I/O layer's."""

    slow_disconnects: int
    queued_messages: int  # over all clients' outbound queues
    # Connections from the other gateways of a cluster: not in clients,
    # data_connections or control_connections, which count workers and the
    # gateway's own clients only (so they agree between the gateways of a cluster).
    peer_connections: int = attrs.field(default=0, kw_only=True)
    # ``gateway.cluster.statistics()`` (a ClusterStatistics), None if not in a cluster.
    cluster: Any = attrs.field(default=None, kw_only=True)
    # The gateway-hosted state service's counters, None without ``state_store``.
    state: StateServiceStatistics | None = attrs.field(default=None, kw_only=True)


@attrs.frozen(slots=True)
class StateServiceStatistics:
    """``statistics().state``: requests of the gateway's state service."""

    served: int  # answered with the store's result
    failed: int  # answered with the error the store raised
    refused: int  # answered at once with ``unavailable``: too many waiting
    waiting: int  # received and not answered yet (queued or being served)


class StateServiceCounters(Protocol):
    """What the hub reads of its state service (``_state.StateService``)."""

    def statistics(self) -> StateServiceStatistics: ...


@attrs.frozen(slots=True)
class QueueStatistics:
    """``Connection.from_gateway.statistics()``: one client's outgoing queue."""

    current_buffer_used: int  # messages queued, both lanes
    senders_waiting: int  # routing tasks waiting for a slot


class ClusterMembership(Protocol):
    """What a hub asks of the cluster it is part of (``agentwire._cluster``):
    agent types and subscriptions are claimed cluster-wide before they are
    recorded here. Each raises RoutingError to refuse."""

    async def register_agent(self, client_id: str, agent_type: str) -> None: ...

    async def add_subscription(
        self, client_id: str, subscription: pb.Subscription, relay: bool = False
    ) -> None: ...

    async def remove_subscription(self, client_id: str, subscription_id: str) -> None: ...

    def statistics(self) -> Any: ...
