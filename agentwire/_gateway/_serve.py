"""``serve_gateway`` / ``open_gateway``: the hub plus the AgentRpc service on a socket.

Next to ``agents.AgentRpc`` the server answers the standard gRPC health
service (``grpc.health.v1.Health``): the server and ``agents.AgentRpc`` are
SERVING until shutdown begins. With ``metrics_address`` the gateway's
statistics are also served to Prometheus over HTTP (the ``metrics`` extra).
"""

from __future__ import annotations

import functools
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, TypedDict, Unpack, cast

import attrs
import trio

from .._address import parse_address
from .._errors import AgentwireError
from .._nursery import open_service_nursery, open_unwrapping_nursery
from .._observability._health import AGENT_RPC_SERVICE, HealthService, HealthStatus, HealthTable
from .._operator._status import OperatorService
from .._security import AccessGuard, Authenticator, GuardStatistics
from .._security._loopback import check_loopback_address, serve_loopback_listener
from .._transport import GrpcServer, serve_grpc
from .._wire import DEFAULT_MAX_MESSAGE_SIZE
from ._hub import GatewayConfig, GatewayHub, GatewayStatistics, open_hub
from ._placement import PlacementStrategy
from ._service import AgentRpcService

if TYPE_CHECKING:
    from .._cluster._node import ClusterNode
    from .._observability._metrics import MetricsServer
    from .._operator._ingress import HttpIngress
    from .._operator._webhook import Webhook, WebhookDelivery
    from ..state import StateStore
    from ._state import StateService

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "Gateway", "GatewayOptions", "open_gateway", "serve_gateway"]

METRICS_EXTRA = "pip install 'trio-agentwire[metrics]'"
HTTP_EXTRA = "pip install 'trio-agentwire[http]'"
CLUSTER_EXTRA = "pip install 'trio-agentwire[cluster]'"

logger = logging.getLogger("agentwire.gateway")


class Gateway:
    """A running gateway (from :func:`serve_gateway`'s ``task_status`` or
    :func:`open_gateway`)."""

    def __init__(
        self,
        server: GrpcServer,
        hub: GatewayHub,
        grace_period: float,
        guard: AccessGuard | None = None,
        plaintext: tuple[str, trio.CancelScope] | None = None,
        health: HealthService | None = None,
        metrics: MetricsServer | None = None,
        http: HttpIngress | None = None,
        webhooks: list[WebhookDelivery] | None = None,
        cluster: ClusterNode | None = None,
    ) -> None:
        self._cluster = cluster
        self._http = http
        self._webhooks = webhooks or []
        self._server = server
        self._hub = hub
        self.grace_period = grace_period
        self._guard = AccessGuard() if guard is None else guard
        self._plaintext = plaintext
        self._health = health
        self._metrics = metrics

    @property
    def plaintext_address(self) -> str | None:
        """``host:port`` of the plaintext loopback listener, if there is one."""
        return None if self._plaintext is None else self._plaintext[0]

    def access_statistics(self) -> GuardStatistics:
        """Client-ids owned, principals, and refusals (UNAUTHENTICATED, PERMISSION_DENIED)."""
        return self._guard.statistics()

    @property
    def address(self) -> str:
        """``host:port`` the gateway listens on (the real port when 0 was asked)."""
        return self._server.address

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def metrics_address(self) -> str | None:
        """``host:port`` of the Prometheus endpoint (``/metrics``), if one was asked for."""
        return None if self._metrics is None else self._metrics.address

    @property
    def http_address(self) -> str | None:
        """``host:port`` CloudEvents may be POSTed to (``http://host:port/``), if asked for."""
        return None if self._http is None else self._http.address

    @property
    def http_ingress(self) -> HttpIngress | None:
        """The HTTP ingress (its ``accepted`` and ``refused`` counts), if there is one."""
        return self._http

    @property
    def webhooks(self) -> list[WebhookDelivery]:
        """The running webhooks (``delivered``, ``retried``, ``failed``, ``overflowed``)."""
        return self._webhooks

    @property
    def cluster(self) -> ClusterNode | None:
        """This gateway's membership of a cluster (``cluster=``; its
        ``statistics()`` and ``id``), or None."""
        return self._cluster

    @property
    def config(self) -> GatewayConfig:
        return self._hub.config

    def statistics(self) -> GatewayStatistics:
        return self._hub.statistics()

    async def wait_until(self, predicate: Callable[[GatewayStatistics], bool]) -> None:
        """Wait until ``predicate(gateway.statistics())`` holds, e.g.
        ``await gw.wait_until(lambda s: s.data_connections == 2)``. Re-checked
        on every change of connections, registrations and subscriptions and
        after every routed message; wrap it in ``trio.fail_after`` to bound it."""
        await self._hub.wait_until(predicate)

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop gracefully: refuse new calls, answer every pending RPC with an
        error, end every worker's stream (UNAVAILABLE) after its queue drains,
        and give calls *grace* seconds (default ``grace_period``) before
        cancelling what is left. Returns when the server has stopped.

        The health service answers NOT_SERVING from the start of it; the
        metrics endpoint stops with the server."""
        if self._health is not None:
            self._health.begin_shutdown()
        if self._http is not None:
            self._http.close()  # no new events once shutdown begins
        if self._plaintext is not None:
            self._plaintext[1].cancel()  # stop accepting; its connections shut down below
        self._hub.begin_shutdown()
        if self._cluster is not None:
            self._cluster.stop()  # leaves the cluster at once
        await self._server.shutdown(self.grace_period if grace is None else grace)
        if self._metrics is not None:
            self._metrics.close()


class GatewayOptions(TypedDict, total=False):
    """The options of :func:`serve_gateway` and :func:`open_gateway`: keywords,
    all optional.

    The hub's tuning is :class:`GatewayConfig`'s (each option and its default
    described there): ``max_message_size``, ``rpc_timeout``, ``queue_size``,
    ``max_in_flight``, ``send_timeout``, ``rpc_burst``, ``registration_grace``,
    ``max_agent_types_per_client``, ``max_subscriptions_per_client``,
    ``startup_grace``, ``max_held``, ``placement`` (shared agent types, see the
    README) and ``max_placed_keys``. The others:

    * ``grace_period`` (5 s): how long ``gateway.shutdown()`` gives calls to
      finish before cancelling what is left.
    * ``keepalive_interval`` (5 s) / ``keepalive_timeout`` (10 s): a worker
      that stops answering (a frozen process with its socket open) is found
      by HTTP/2 PINGs: once its connection has been silent for
      ``keepalive_interval`` seconds it is pinged, and if nothing arrives
      within ``keepalive_timeout`` its connection is dropped, so the callers
      of its agents get ``connection-lost`` answers within about the sum of
      the two instead of waiting for ``rpc_timeout`` (``keepalive_interval=None``
      turns this off). grpc-core clients answer PINGs from their own thread;
      an agentwire worker whose trio loop is blocked longer than the sum is
      dropped too (and reconnects).
    * ``handshake_timeout`` (10 s): a new connection must finish its TLS and
      HTTP/2 handshakes within it or it is closed (None: no bound), so
      half-open connections cannot hold connection slots.
    * Security (README, "Security"): ``ssl_context`` serves TLS (see
      :func:`agentwire.security.server_ssl_context`; ALPN ``h2``);
      ``authenticator`` authenticates every call and enforces its
      principal's rights (e.g. :class:`agentwire.security.AccessFileAuthenticator`);
      with neither, any peer may act as any client, as with AutoGen's host.
      ``plaintext_address`` (a loopback ``host:port``) adds a plaintext
      listener of the same gateway, for workers on this machine that cannot
      speak TLS.
    * ``metrics_address`` (``host:port``) also serves the gateway's metrics
      for Prometheus at ``http://host:port/metrics`` (needs the ``metrics``
      extra; see ``gateway.metrics_address``).
    * ``http_address`` (``host:port``) also accepts CloudEvents over HTTP at
      ``http://host:port/`` and publishes each to ``TopicId(type, source)``
      as a worker would (README, "Operating a gateway"; needs the ``http``
      extra; see ``gateway.http_address``). ``webhooks`` POST the events of
      their topic types to URLs as CloudEvents
      (:class:`agentwire._operator._webhook.Webhook`; the ``http`` extra; see
      ``gateway.webhooks``).
    * ``cluster`` (``redis://HOST:PORT/DB``) makes this gateway one of a
      cluster sharing that Redis 7: workers connected to any of them reach
      every agent type and subscriber of all (README, "A cluster of
      gateways"; needs the ``cluster`` extra). A gateway that stops renewing
      its lease for ``cluster_lease`` seconds (5) is dropped by the others
      (its types and subscriptions vanish, requests in flight to it are
      answered ``gateway-unreachable``); it renews every
      ``cluster_heartbeat`` seconds (default a fifth of the lease).
    * ``state_store`` (a :class:`~agentwire.state.StateStore`, or
      ``"memory"``, ``"sqlite:PATH"``, a ``redis://`` URL) keeps the state of
      workers' :class:`~agentwire.state.StatefulAgent` s registered without a
      store of their own (README, "Agent state"); a spec is opened for the
      gateway's lifetime, a store object stays the caller's. Not with an
      ``authenticator`` yet.
    """

    # the hub's (GatewayConfig)
    max_message_size: int
    rpc_timeout: float | None
    queue_size: int
    max_in_flight: int
    send_timeout: float
    rpc_burst: int
    registration_grace: float | None
    max_agent_types_per_client: int
    max_subscriptions_per_client: int
    startup_grace: float
    max_held: int
    placement: str | PlacementStrategy | None
    max_placed_keys: int
    # the server's
    grace_period: float
    keepalive_interval: float | None
    keepalive_timeout: float
    handshake_timeout: float | None
    ssl_context: ssl.SSLContext | None
    authenticator: Authenticator | None
    plaintext_address: str | None
    metrics_address: str | None
    http_address: str | None
    webhooks: Sequence[Webhook]
    cluster: str | None
    cluster_lease: float
    cluster_heartbeat: float | None
    state_store: StateStore | str | None


_HUB_OPTIONS = frozenset(field.name for field in attrs.fields(GatewayConfig))

GATEWAY_DEFAULTS: Final[GatewayOptions] = {
    **cast(GatewayOptions, attrs.asdict(GatewayConfig(), recurse=False)),
    "grace_period": 5.0,
    "keepalive_interval": 5.0,
    "keepalive_timeout": 10.0,
    "handshake_timeout": 10.0,
    "ssl_context": None,
    "authenticator": None,
    "plaintext_address": None,
    "metrics_address": None,
    "http_address": None,
    "webhooks": (),
    "cluster": None,
    "cluster_lease": 5.0,
    "cluster_heartbeat": None,
    "state_store": None,
}
"""Every option with its default (the hub's are :class:`GatewayConfig`'s)."""


def _check_options(function: str, options: GatewayOptions) -> None:
    """TypeError, as for any function, for a keyword that is no option."""
    for name in options:
        if name not in GatewayOptions.__optional_keys__:
            raise TypeError(f"{function}() got an unexpected keyword argument {name!r}")


def _hub_config(options: GatewayOptions) -> GatewayConfig:
    """The hub's part of *options*, every option given."""
    given: dict[str, Any] = dict(options)
    return GatewayConfig(**{name: given[name] for name in _HUB_OPTIONS})


async def serve_gateway(
    address: str,
    *,
    task_status: trio.TaskStatus[Gateway] = trio.TASK_STATUS_IGNORED,
    **options: Unpack[GatewayOptions],
) -> None:
    """Run an AutoGen-compatible gateway on *address* (``host:port``,
    ``localhost:PORT``, ``[::1]:PORT``; port 0 picks a free one; an invalid
    one raises :class:`~agentwire._address.InvalidAddressError`), with the
    keyword *options* of :class:`GatewayOptions`.

    ``task_status.started(gateway)`` reports the :class:`Gateway` once it
    listens. Returns after ``gateway.shutdown()``. Cancelling it stops at once:
    connections are dropped without answers (use ``shutdown`` to be polite).
    A lone failure (e.g. the ``OSError`` of a port in use) comes out bare,
    not in a group.
    """
    _check_options("serve_gateway", options)
    settings: GatewayOptions = {**GATEWAY_DEFAULTS, **options}
    grace_period = settings["grace_period"]
    authenticator = settings["authenticator"]
    plaintext_address = settings["plaintext_address"]
    metrics_address = settings["metrics_address"]
    http_address = settings["http_address"]
    webhooks = settings["webhooks"]
    cluster = settings["cluster"]
    state_store = settings["state_store"]
    if state_store is not None and authenticator is not None:
        raise ValueError(
            "a gateway-hosted state_store cannot be combined with an authenticator yet: "
            "give the workers' agents a store of their own"
        )
    host, port = parse_address(address)
    serve_cluster = None
    if cluster is not None:
        if settings["placement"] is not None:
            raise AgentwireError("a cluster of gateways does not take shared agent types yet")
        serve_cluster = load_cluster(
            cluster, settings["cluster_lease"], settings["cluster_heartbeat"]
        )
    serve_metrics = None if metrics_address is None else load_metrics_server(metrics_address)
    serve_ingress = None if http_address is None else load_http_ingress(http_address)
    config = _hub_config(settings)
    if plaintext_address is not None:
        check_loopback_address(plaintext_address)
    async with open_hub(config) as hub, open_unwrapping_nursery() as nursery:
        guard = AccessGuard(authenticator, is_known=hub.has_client)
        if authenticator is not None:
            hub.set_message_policy(guard)
        node = None
        if serve_cluster is not None:
            node = await nursery.start(serve_cluster, hub)
        if state_store is not None:
            await nursery.start(_serve_state_store, hub, guard, state_store)
        service = AgentRpcService(hub, guard)
        operator = OperatorService(hub, guard)
        health = HealthService(HealthTable({AGENT_RPC_SERVICE: HealthStatus.SERVING}))
        server: GrpcServer = await nursery.start(
            functools.partial(
                serve_grpc,
                {**service.methods(), **health.methods(), **operator.methods()},
                host,
                port,
                max_message_size=config.max_message_size,
                grace_period=grace_period,
                keepalive_interval=settings["keepalive_interval"],
                keepalive_timeout=settings["keepalive_timeout"],
                handshake_timeout=settings["handshake_timeout"],
                ssl_context=settings["ssl_context"],
            )
        )
        await nursery.start(operator.run)
        plaintext = None
        if plaintext_address is not None:
            accepting = trio.CancelScope()
            shown = await nursery.start(_accept_plaintext, accepting, server, plaintext_address)
            plaintext = (shown, accepting)
        metrics = None
        if serve_metrics is not None:
            metrics = await nursery.start(serve_metrics, hub, metrics_address)
            logger.info("gateway metrics on http://%s/metrics", metrics.address)
        http = None
        if serve_ingress is not None:
            http = await nursery.start(serve_ingress, hub, guard, http_address)
            logger.info("gateway takes CloudEvents at http://%s/", http.address)
        deliveries = None
        if webhooks:
            from .._operator._webhook import serve_webhooks

            deliveries = await nursery.start(serve_webhooks, hub, guard, webhooks)
        gateway = Gateway(
            server, hub, grace_period, guard, plaintext, health, metrics, http, deliveries, node
        )
        logger.info("gateway listening on %s", gateway.address)
        task_status.started(gateway)


async def _serve_state_store(
    hub: GatewayHub,
    guard: AccessGuard,
    store: StateStore | str,
    *,
    task_status: trio.TaskStatus[StateService] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The state service on *store* (opened here if it is a spec), until cancelled."""
    from ..state._stores import open_state_store
    from ._state import serve_state_service

    if isinstance(store, str):
        async with open_state_store(store) as opened:
            await serve_state_service(hub, guard, opened, task_status=task_status)
    else:
        await serve_state_service(hub, guard, store, task_status=task_status)


async def _accept_plaintext(
    scope: trio.CancelScope,
    server: GrpcServer,
    address: str,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The plaintext loopback listener, until *scope* is cancelled (at shutdown);
    its connections live in their own nursery until the server ends them."""
    async with trio.open_nursery() as connections:
        with scope:
            await serve_loopback_listener(server, address, connections, task_status=task_status)


def load_cluster(url: str, lease: float, heartbeat: float | None) -> Any:
    """``serve_cluster_node`` bound to its configuration, or a precise error
    (a bad option; the ``cluster`` extra missing)."""
    try:
        from .._cluster._node import ClusterConfig, serve_cluster_node
    except ModuleNotFoundError as exc:
        raise AgentwireError(
            f"a cluster of gateways needs {exc.name}, which is not installed: {CLUSTER_EXTRA}"
        ) from exc
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise AgentwireError(f"cluster must be a redis://HOST:PORT/DB URL, got {url!r}")
    try:
        config = ClusterConfig(url, lease, lease / 5 if heartbeat is None else heartbeat)
    except ValueError as exc:
        raise AgentwireError(f"cluster options: {exc}") from None
    return functools.partial(serve_cluster_node, config=config)


def load_metrics_server(address: str) -> Any:
    """``serve_gateway_metrics``, or a precise error if the ``metrics`` extra is missing."""
    parse_address(address)
    try:
        from .._observability._metrics import serve_gateway_metrics
    except ModuleNotFoundError as exc:
        raise AgentwireError(
            f"serving metrics needs {exc.name}, which is not installed: {METRICS_EXTRA}"
        ) from exc
    return serve_gateway_metrics


def load_http_ingress(address: str) -> Any:
    """``serve_http_ingress``, or a precise error if the ``http`` extra is missing."""
    parse_address(address)
    try:
        from .._operator._ingress import serve_http_ingress
    except ModuleNotFoundError as exc:
        raise AgentwireError(
            f"taking CloudEvents over HTTP needs {exc.name}, which is not installed: {HTTP_EXTRA}"
        ) from exc
    return serve_http_ingress


def load_webhooks(specs: Sequence[str]) -> list[Webhook]:
    """The ``--webhook TOPIC_TYPE=URL`` options as webhooks; AgentwireError for a
    bad one, or if the ``http`` extra is missing."""
    if not specs:
        return []
    try:
        from .._operator._webhook import parse_webhook
    except ModuleNotFoundError as exc:
        raise AgentwireError(
            f"webhooks need {exc.name}, which is not installed: {HTTP_EXTRA}"
        ) from exc
    return [parse_webhook(spec) for spec in specs]


@asynccontextmanager
async def open_gateway(
    address: str = "127.0.0.1:0", **options: Unpack[GatewayOptions]
) -> AsyncIterator[Gateway]:
    """Run a gateway for the duration of the block::

        async with agentwire.open_gateway("127.0.0.1:0") as gw:
            print(gw.address)

    Leaving the block normally shuts down gracefully (``grace_period``);
    leaving it with an exception stops the gateway at once and re-raises.
    The *options* are :func:`serve_gateway`'s (:class:`GatewayOptions`).
    """
    _check_options("open_gateway", options)
    serve = functools.partial(serve_gateway, address, **options)
    async with open_service_nursery() as services:
        gateway: Gateway = await services.start(serve)
        yield gateway
        await gateway.shutdown()
