"""Gateway metrics: scraped over real HTTP, parsed with prometheus_client's own parser."""

from __future__ import annotations

import functools
import http.client
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from agentwire import (
    AgentId,
    TopicId,
    TypeSubscription,
    open_gateway,
    open_worker,
    serializers_for_type,
)
from agentwire._observability._http import HttpServer, serve_http
from agentwire._observability._metrics import (
    GatewayCollector,
    MetricsServer,
    serve_gateway_metrics,
)
from agentwire.state import MemoryStateStore, Snapshot, StateConflictError
from agentwire.state._remote import GatewayStateStore
from tests.cluster.helpers import cluster_gateway, converged
from tests.worker.messages import Echo, EchoBase, Inbox, Ping, Pong

GUARD = 20.0  # seconds: a hang guard, never a synchronisation
AGENT = AgentId("counter", "one")


@asynccontextmanager
async def metrics_for(gateway: Any, address: str = "127.0.0.1:0") -> AsyncIterator[MetricsServer]:
    async with trio.open_nursery() as nursery:
        server: MetricsServer = await nursery.start(serve_gateway_metrics, gateway, address)
        yield server
        server.close()


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=GUARD) as response:
            return response.status, response.headers["content-type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["content-type"], exc.read().decode()


async def scrape(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    return await trio.to_thread.run_sync(_get, url, headers)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_a_scrape_reports_the_gateways_workers_and_traffic() -> None:
    EchoBase.inbox = inbox = Inbox()
    with trio.fail_after(GUARD):
        async with (
            open_gateway("127.0.0.1:0") as gw,
            metrics_for(gw) as server,
            open_worker(gw.address) as a,
            open_worker(gw.address) as b,
        ):
            await Echo.register(a, "a", Echo)
            await Echo.register(b, "b", Echo)
            a.add_message_serializer(serializers_for_type(Pong))
            await b.add_subscription(TypeSubscription("news", "b"))
            assert await a.send_message(Ping("hi"), AgentId("b", "k")) == Pong("b/k:hi")
            await a.publish_message(Ping("extra"), TopicId("news", "s"))
            await inbox.wait_for(1)
            await gw.wait_until(lambda s: s.event_deliveries == 1)
            status, content_type, text = await scrape(server.url)
            stats = gw.statistics()
    assert status == 200
    assert content_type.startswith("text/plain; version=")
    got = samples(text)
    assert got[("agentwire_gateway_workers", ())] == 2
    assert got[("agentwire_gateway_clients", ())] == 2
    assert got[("agentwire_gateway_agent_types", ())] == 2
    assert got[("agentwire_gateway_subscriptions", ())] == stats.subscriptions > 0
    assert got[("agentwire_gateway_rpcs_total", (("outcome", "answered"),))] == 1
    assert got[("agentwire_gateway_rpcs_total", (("outcome", "failed"),))] == 0
    assert got[("agentwire_gateway_rpc_requests_forwarded_total", ())] == 1
    assert got[("agentwire_gateway_publishes_total", ())] == 1
    assert got[("agentwire_gateway_event_deliveries_total", ())] == 1
    assert got[("agentwire_gateway_rpcs_in_flight", ())] == 0
    assert got[("agentwire_gateway_queued_messages", ())] == stats.queued_messages
    assert got[("agentwire_gateway_held_messages", ())] == stats.held_messages
    assert got[("agentwire_gateway_registrations_expired_total", ())] == 0
    assert got[("agentwire_gateway_slow_consumer_disconnects_total", ())] == 0


async def test_an_rpc_the_gateway_answers_with_an_error_counts_as_failed() -> None:
    with trio.fail_after(GUARD):
        async with (
            open_gateway("127.0.0.1:0") as gw,
            metrics_for(gw) as server,
            open_worker(gw.address) as a,
        ):
            with pytest.raises(Exception, match="nobody"):
                await a.send_message(Ping("hi"), AgentId("nobody", "k"))
            _, _, text = await scrape(server.url)
    assert samples(text)[("agentwire_gateway_rpcs_total", (("outcome", "failed"),))] == 1


@attrs.frozen
class FakeStatistics:
    clients: int = 3
    rpcs_failed: int = 5
    auth_refusals: int = 7


def test_fields_the_statistics_lack_are_left_out_and_auth_refusals_show_when_present() -> None:
    families = {f.name: f for f in GatewayCollector(FakeStatistics).collect()}
    assert set(families) == {
        "agentwire_gateway_clients",
        "agentwire_gateway_rpcs",
        "agentwire_gateway_auth_refusals",
    }
    [failed] = families["agentwire_gateway_rpcs"].samples
    assert (failed.name, failed.labels, failed.value) == (
        "agentwire_gateway_rpcs_total",
        {"outcome": "failed"},
        5,
    )
    [refusals] = families["agentwire_gateway_auth_refusals"].samples
    assert refusals.value == 7


async def test_openmetrics_is_served_to_a_scraper_that_asks_for_it() -> None:
    async with metrics_for(_Fixed()) as server:
        status, content_type, text = await scrape(
            server.url, {"Accept": "application/openmetrics-text; version=1.0.0"}
        )
    assert status == 200
    assert content_type.startswith("application/openmetrics-text")
    [family] = [f for f in openmetrics_families(text) if f.name == "agentwire_gateway_clients"]
    assert family.samples[0].value == 3


class _Fixed:
    def statistics(self) -> FakeStatistics:
        return FakeStatistics()


async def test_other_paths_are_not_found_and_other_methods_not_allowed() -> None:
    async with metrics_for(_Fixed()) as server:
        status, _, body = await scrape(f"http://{server.address}/nope")
        assert (status, body) == (404, "no such path: /nope\n")

        def post() -> tuple[int, str | None]:
            conn = http.client.HTTPConnection(server.address, timeout=GUARD)
            conn.request("POST", "/metrics", body=b"x")
            response = conn.getresponse()
            response.read()
            conn.close()
            return response.status, response.getheader("allow")

        assert await trio.to_thread.run_sync(post) == (405, "GET, HEAD")


async def test_one_connection_serves_several_scrapes_and_head_has_no_body() -> None:
    async with metrics_for(_Fixed()) as server:

        def three_requests() -> list[tuple[int, int]]:
            conn = http.client.HTTPConnection(server.address, timeout=GUARD)
            results = []
            for method in ("GET", "HEAD", "GET"):
                conn.request(method, "/metrics")
                response = conn.getresponse()
                results.append((response.status, len(response.read())))
            conn.close()
            return results

        results = await trio.to_thread.run_sync(three_requests)
    [(s1, n1), (s2, n2), (s3, n3)] = results
    assert (s1, s2, s3) == (200, 200, 200)
    assert n1 == n3 > 0
    assert n2 == 0


async def test_a_malformed_request_gets_400_and_the_server_keeps_serving() -> None:
    async with metrics_for(_Fixed()) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
            reply = await _read_all(stream)
        assert reply.startswith(b"HTTP/1.1 400 ")
        status, _, _ = await scrape(server.url)
        assert status == 200


async def _read_all(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


@asynccontextmanager
async def plain_http(**options: Any) -> AsyncIterator[HttpServer]:
    """``serve_http`` with one fixed route, closed on the way out."""
    routes = {"/metrics": lambda accept: (b"x", "text/plain")}
    async with trio.open_nursery() as nursery:
        server: HttpServer = await nursery.start(
            functools.partial(serve_http, routes, "127.0.0.1", 0, **options)
        )
        yield server
        server.close()


async def test_an_idle_connection_is_closed_after_the_idle_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with plain_http(idle_timeout=5.0) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            with trio.move_on_after(4.0):
                assert await stream.receive_some(10) == b""
                raise AssertionError("closed before the idle timeout")
            assert await stream.receive_some(10) == b""  # the next deadline is the server's
            assert trio.current_time() >= 5.0


async def test_connections_over_the_limit_are_closed_at_once() -> None:
    async with plain_http(max_connections=2) as server:
        first = await trio.open_tcp_stream("127.0.0.1", server.port)
        second = await trio.open_tcp_stream("127.0.0.1", server.port)
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(GUARD):
            async with await trio.open_tcp_stream("127.0.0.1", server.port) as third:
                assert await third.receive_some(10) == b""
        assert server.connections == 2
        await first.aclose()
        await second.aclose()


async def test_the_port_is_closed_once_the_server_is_cancelled() -> None:
    with trio.CancelScope() as scope:
        async with plain_http() as server:
            scope.cancel()
            await trio.sleep_forever()
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", server.port)


async def test_gateways_of_a_cluster_report_their_peers_and_cluster_traffic(
    redis_url: str,
) -> None:
    EchoBase.inbox = Inbox()
    with trio.fail_after(GUARD):
        async with (
            cluster_gateway(redis_url, metrics_address="127.0.0.1:0") as first,
            cluster_gateway(redis_url, metrics_address="127.0.0.1:0") as second,
            open_worker(first.address) as a,
            open_worker(second.address) as b,
        ):
            for gateway in (first, second):
                await gateway.wait_until(lambda s: s.cluster.peers == 1)
            await Echo.register(b, "b", Echo)
            await converged([first, second], agent_types=1, subscriptions=1)
            a.add_message_serializer(serializers_for_type(Pong))
            # through the first gateway to the second: one message each way at least
            assert await a.send_message(Ping("hi"), AgentId("b", "k")) == Pong("b/k:hi")
            texts = [
                (await scrape(f"http://{gateway.metrics_address}/metrics"))[2]
                for gateway in (first, second)
            ]
    for got in map(samples, texts):
        # each gateway counts its one worker, not the other gateway's connection
        assert got[("agentwire_gateway_workers", ())] == 1
        assert got[("agentwire_gateway_clients", ())] == 1
        assert got[("agentwire_gateway_peer_connections", ())] == 1
        assert got[("agentwire_gateway_cluster_peers", ())] == 1
        assert got[("agentwire_gateway_cluster_redis_reachable", ())] == 1
        assert got[("agentwire_gateway_cluster_joins_total", ())] == 1
        assert got[("agentwire_gateway_cluster_messages_lost_total", ())] == 0
    sent = samples(texts[0])[("agentwire_gateway_cluster_messages_total", (("direction", "sent"),))]
    received = samples(texts[1])[
        ("agentwire_gateway_cluster_messages_total", (("direction", "received"),))
    ]
    assert sent >= 1
    assert received >= 1
    batches = ("agentwire_gateway_cluster_batches_total", (("direction", "sent"),))
    assert 1 <= samples(texts[0])[batches] <= sent


async def test_a_gateway_without_cluster_state_or_placement_has_none_of_their_metrics() -> None:
    with trio.fail_after(GUARD):
        async with open_gateway("127.0.0.1:0") as gw, metrics_for(gw) as server:
            _, _, text = await scrape(server.url)
    absent = (
        "agentwire_gateway_cluster_",
        "agentwire_gateway_state_",
        "agentwire_gateway_placement_",
    )
    assert not [name for name, _ in samples(text) if name.startswith(absent)]
    assert ("agentwire_gateway_peer_connections", ()) in samples(text)


async def test_the_state_service_reports_requests_served_and_failed() -> None:
    store = MemoryStateStore()
    with trio.fail_after(GUARD):
        async with (
            open_gateway("127.0.0.1:0", state_store=store) as gw,
            metrics_for(gw) as server,
            open_worker(gw.address) as runtime,
        ):
            remote = GatewayStateStore(runtime._worker.link)
            assert await remote.commit(AGENT, 0, Snapshot({"count": 1})) == 1
            with pytest.raises(StateConflictError):
                await remote.commit(AGENT, 0, Snapshot({"count": 2}))
            _, _, text = await scrape(server.url)
            state = gw.statistics().state
    got = samples(text)
    outcome = "agentwire_gateway_state_requests_total"
    assert got[(outcome, (("outcome", "served"),))] == 1
    assert got[(outcome, (("outcome", "failed"),))] == 1
    assert got[(outcome, (("outcome", "refused"),))] == 0
    assert got[("agentwire_gateway_state_requests_waiting", ())] == 0
    assert state is not None
    assert (state.served, state.failed, state.refused, state.waiting) == (1, 1, 0, 0)


async def test_shared_agent_types_report_their_workers_and_placed_agents() -> None:
    EchoBase.inbox = Inbox()
    with trio.fail_after(GUARD):
        async with (
            open_gateway("127.0.0.1:0", placement="hash", startup_grace=0) as gw,
            metrics_for(gw) as server,
            open_worker(gw.address) as a,
            open_worker(gw.address) as b,
            open_worker(gw.address) as caller,
        ):
            await Echo.register(a, "shared", Echo)
            await Echo.register(b, "shared", Echo)
            caller.add_message_serializer(serializers_for_type(Pong))
            for key in ("k1", "k2", "k3"):
                assert await caller.send_message(Ping("hi"), AgentId("shared", key)) == Pong(
                    f"shared/{key}:hi"
                )
            _, _, text = await scrape(server.url)
    got = samples(text)
    shared = (("agent_type", "shared"),)
    assert got[("agentwire_gateway_placement_workers", shared)] == 2
    assert got[("agentwire_gateway_placement_draining", shared)] == 0
    assert got[("agentwire_gateway_placement_keys", shared)] == 3
    assert got[("agentwire_gateway_placed_agents", ())] == 3
