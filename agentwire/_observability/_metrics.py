"""A gateway's statistics as Prometheus metrics, served over HTTP from trio.

:class:`GatewayCollector` is a ``prometheus_client`` collector that reads
``gateway.statistics()`` when it is scraped and at no other time, so the
gateway's hot path pays nothing for metrics: the counters it keeps anyway are
the metrics. :func:`serve_gateway_metrics` serves them at ``/metrics`` (text
exposition, or OpenMetrics when the scraper asks for it) with a small h11
server (``_http.py``).

Needs the ``metrics`` extra (``prometheus-client``, ``h11``); both are
imported only here.

The metrics (all ``agentwire_gateway_*``; counters end in ``_total``):

=======================================  ======================================================
``clients``, ``workers``                 clients known; workers with an open data channel
``control_channels``                     open control channels
``agent_types``, ``subscriptions``       registered agent types; subscriptions (all clients')
``rpcs_in_flight``                       RPCs forwarded and not yet answered
``rpcs_total{outcome}``                  RPCs answered: ``answered`` (by the target) or
                                         ``failed`` (with an error by the gateway: no owner,
                                         owner gone, timeout, shutdown, overload)
``rpc_requests_forwarded_total``         requests handed to the target's worker
``rpc_responses_dropped_total``          responses nobody waited for any more (late, unknown)
``publishes_total``                      CloudEvents received
``event_deliveries_total``               CloudEvents forwarded (one per subscribed client)
``events_dropped_total``                 CloudEvents dropped (invalid topic)
``control_messages_total{outcome}``      ``forwarded`` or ``undeliverable``
``protocol_errors_total``                malformed messages (the sender's stream was ended)
``queued_messages``                      messages waiting in all clients' outbound queues
``held_messages``                        requests and events held during the start-up grace
``slow_consumer_disconnects_total``      workers disconnected for not reading
``auth_refusals_total``                  calls refused by authentication (present when the
                                         gateway's statistics have ``auth_refusals``)
``registrations_expired_total``          client records expired without a channel (likewise)
``peer_connections``                     connections from the other gateways of a cluster (not
                                         in ``clients`` or ``workers``)
``cluster_peers``                        other gateways of the cluster connected (cluster only)
``cluster_redis_reachable``              1 while a session with the cluster's Redis is up
``cluster_batches_total{direction}``     batches ``sent`` to / ``received`` from peers
``cluster_messages_total{direction}``    messages ``sent`` to / ``received`` from peers
``cluster_messages_lost_total``          messages that could not reach or come from a peer
``cluster_joins_total``                  sessions with Redis begun (1 + re-joins)
``state_requests_total{outcome}``        state service (``state_store=``): ``served``,
                                         ``failed`` (the store's error) or ``refused`` (full)
``state_requests_waiting``               state requests received and not answered yet
``placed_agents``                        agents of shared types placed on a worker
                                         (``placement=``)
``placement_workers{agent_type}``        workers of a shared agent type
``placement_draining{agent_type}``       of them, draining
``placement_keys{agent_type}``           agents of the type placed
=======================================  ======================================================

A statistics field the gateway does not have is left out, not reported as 0:
the ``cluster_*`` metrics appear only on a gateway of a cluster, the ``state_*``
ones only with a state service, the ``placement_*`` ones per shared agent type.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any, Literal

import attrs
import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from .._address import parse_address
from ._http import HttpServer, serve_http

__all__ = ["METRICS_PATH", "GatewayCollector", "MetricsServer", "serve_gateway_metrics"]

METRICS_PATH = "/metrics"
PREFIX = "agentwire_gateway_"


@attrs.frozen
class _Spec:
    name: str
    kind: Literal["gauge", "counter"]
    help: str
    fields: tuple[tuple[str, str], ...]  # (statistics field, label value) or one ("x", "")
    label: str = ""


_SPECS = (
    _Spec("clients", "gauge", "Clients known to the gateway.", (("clients", ""),)),
    _Spec("workers", "gauge", "Workers with an open data channel.", (("data_connections", ""),)),
    _Spec("control_channels", "gauge", "Open control channels.", (("control_connections", ""),)),
    _Spec("agent_types", "gauge", "Registered agent types.", (("agent_types", ""),)),
    _Spec("subscriptions", "gauge", "Subscriptions of all clients.", (("subscriptions", ""),)),
    _Spec(
        "rpcs_in_flight",
        "gauge",
        "RPCs forwarded to their target and not answered yet.",
        (("rpcs_in_flight", ""),),
    ),
    _Spec(
        "rpcs",
        "counter",
        "RPCs answered, by the target (answered) or with an error by the gateway (failed).",
        (("responses_forwarded", "answered"), ("rpcs_failed", "failed")),
        label="outcome",
    ),
    _Spec(
        "rpc_requests_forwarded",
        "counter",
        "RPC requests handed to the target's worker.",
        (("rpcs_forwarded", ""),),
    ),
    _Spec(
        "rpc_responses_dropped",
        "counter",
        "RPC responses no caller waited for any more (late or unknown).",
        (("responses_dropped", ""),),
    ),
    _Spec("publishes", "counter", "CloudEvents received.", (("events_received", ""),)),
    _Spec(
        "event_deliveries",
        "counter",
        "CloudEvents forwarded, one per subscribed client.",
        (("event_deliveries", ""),),
    ),
    _Spec(
        "events_dropped",
        "counter",
        "CloudEvents dropped (invalid topic).",
        (("events_dropped", ""),),
    ),
    _Spec(
        "control_messages",
        "counter",
        "Control-channel messages, forwarded or undeliverable.",
        (("control_forwarded", "forwarded"), ("control_undeliverable", "undeliverable")),
        label="outcome",
    ),
    _Spec(
        "protocol_errors",
        "counter",
        "Malformed messages; the sender's stream was ended.",
        (("protocol_errors", ""),),
    ),
    _Spec(
        "queued_messages",
        "gauge",
        "Messages waiting in the clients' outbound queues.",
        (("queued_messages", ""),),
    ),
    _Spec(
        "held_messages",
        "gauge",
        "Requests and events held for workers that have not re-registered after a restart.",
        (("held_messages", ""),),
    ),
    _Spec(
        "slow_consumer_disconnects",
        "counter",
        "Workers disconnected because they did not read.",
        (("slow_disconnects", ""),),
    ),
    _Spec("auth_refusals", "counter", "Calls refused by authentication.", (("auth_refusals", ""),)),
    _Spec(
        "registrations_expired",
        "counter",
        "Client records that expired without a channel.",
        (("registrations_expired", ""),),
    ),
    _Spec(
        "peer_connections",
        "gauge",
        "Connections from the other gateways of the cluster (not counted as clients).",
        (("peer_connections", ""),),
    ),
    _Spec(
        "cluster_peers",
        "gauge",
        "Other gateways of the cluster connected.",
        (("cluster.peers", ""),),
    ),
    _Spec(
        "cluster_redis_reachable",
        "gauge",
        "1 while a session with the cluster's Redis is up, else 0.",
        (("cluster.joined", ""),),
    ),
    _Spec(
        "cluster_batches",
        "counter",
        "Batches of messages sent to and received from the other gateways.",
        (("cluster.batches_sent", "sent"), ("cluster.batches_received", "received")),
        label="direction",
    ),
    _Spec(
        "cluster_messages",
        "counter",
        "Messages sent to and received from the other gateways.",
        (("cluster.messages_sent", "sent"), ("cluster.messages_received", "received")),
        label="direction",
    ),
    _Spec(
        "cluster_messages_lost",
        "counter",
        "Messages that could not be delivered to or from another gateway.",
        (("cluster.messages_lost", ""),),
    ),
    _Spec(
        "cluster_joins",
        "counter",
        "Sessions with the cluster's Redis begun.",
        (("cluster.joins", ""),),
    ),
    _Spec(
        "state_requests",
        "counter",
        "State service requests: served, failed (the store's error) or refused (too many).",
        (("state.served", "served"), ("state.failed", "failed"), ("state.refused", "refused")),
        label="outcome",
    ),
    _Spec(
        "state_requests_waiting",
        "gauge",
        "State service requests received and not answered yet.",
        (("state.waiting", ""),),
    ),
    _Spec(
        "placed_agents",
        "gauge",
        "Agents of shared agent types placed on a worker.",
        (("placed_agents", ""),),
    ),
)

#: Per shared agent type (``statistics().placement``): metric, help, value of a TypePlacement.
_PLACEMENT: tuple[tuple[str, str, Callable[[Any], float]], ...] = (
    ("placement_workers", "Workers of a shared agent type.", lambda p: p.workers),
    ("placement_draining", "Workers of a shared agent type draining.", lambda p: len(p.draining)),
    ("placement_keys", "Agents of a shared agent type placed.", lambda p: sum(p.keys.values())),
)


def _field(stats: Any, path: str) -> Any:
    """``stats.a.b`` for ``"a.b"``; None if any step is missing or None."""
    value = stats
    for name in path.split("."):
        value = getattr(value, name, None)
        if value is None:
            return None
    return value


class GatewayCollector:
    """Reads *statistics* (e.g. ``gateway.statistics``) at each scrape; see the table above."""

    def __init__(self, statistics: Callable[[], Any]) -> None:
        self._statistics = statistics

    def collect(self) -> Iterator[Metric]:
        stats = self._statistics()
        for spec in _SPECS:
            values = [(label, _field(stats, field)) for field, label in spec.fields]
            present = [(label, value) for label, value in values if value is not None]
            if not present:
                continue
            labels = [spec.label] if spec.label else None
            family: GaugeMetricFamily | CounterMetricFamily
            if spec.kind == "gauge":
                family = GaugeMetricFamily(PREFIX + spec.name, spec.help, labels=labels)
            else:
                family = CounterMetricFamily(PREFIX + spec.name, spec.help, labels=labels)
            for label, value in present:
                family.add_metric([label] if spec.label else [], float(value))
            yield family
        placement = getattr(stats, "placement", None) or {}
        if placement:
            for name, help_text, value_of in _PLACEMENT:
                gauge = GaugeMetricFamily(PREFIX + name, help_text, labels=["agent_type"])
                for agent_type, type_placement in sorted(placement.items()):
                    gauge.add_metric([agent_type], float(value_of(type_placement)))
                yield gauge


def _render(registry: CollectorRegistry, accept: str) -> tuple[bytes, str]:
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


@attrs.define(eq=False)
class MetricsServer:
    """A running metrics endpoint: ``http://{address}/metrics``."""

    registry: CollectorRegistry
    _http: HttpServer

    @property
    def address(self) -> str:
        return self._http.address

    @property
    def port(self) -> int:
        return self._http.port

    @property
    def url(self) -> str:
        return f"http://{self.address}{METRICS_PATH}"

    def close(self) -> None:
        """Stop serving."""
        self._http.close()


async def serve_gateway_metrics(
    gateway: Any,
    address: str,
    *,
    task_status: trio.TaskStatus[MetricsServer] = trio.TASK_STATUS_IGNORED,
    registry: CollectorRegistry | None = None,
) -> None:
    """Serve *gateway*'s metrics at ``http://address/metrics`` until cancelled or
    ``server.close()``.

    *gateway* is anything with a ``statistics()`` (a :class:`~agentwire.Gateway`).
    *address* is ``host:port`` (port 0 picks a free one; see
    ``task_status.started(server).address``). Pass a *registry* to serve other
    collectors beside the gateway's (a new one is made otherwise)::

        server = await nursery.start(serve_gateway_metrics, gw, "127.0.0.1:9464")
    """
    host, port = parse_address(address)
    if registry is None:
        registry = CollectorRegistry()
    registry.register(GatewayCollector(gateway.statistics))
    routes = {METRICS_PATH: functools.partial(_render, registry)}
    async with trio.open_nursery() as nursery:
        http: HttpServer = await nursery.start(functools.partial(serve_http, routes, host, port))
        task_status.started(MetricsServer(registry, http))
