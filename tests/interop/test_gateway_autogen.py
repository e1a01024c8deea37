"""Real AutoGen 0.7.5 workers (GrpcWorkerAgentRuntime, in subprocesses)
against the agentwire gateway running in the test's trio loop.

The peers print one line per event (``tests/interop/autogen_peers/gateway_peer.py``);
those lines and the gateway's own ``wait_until`` are the only synchronisation.
Every wait is bounded by ``trio.fail_after`` so a regression fails instead of hanging.

The tests with two or more workers run twice (fixture ``hosts``): all workers on
one gateway, and the workers spread over two gateways of a cluster (the n-th on
``hosts.for_peer(n)``), where AutoGen's workers must see no difference.
"""

from __future__ import annotations

import functools
import json
import pathlib
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import attrs
import pytest
import trio

from agentwire import Gateway, GatewayStatistics, open_gateway

pytestmark = pytest.mark.interop

PEER = pathlib.Path(__file__).parent / "autogen_peers" / "gateway_peer.py"
WAIT = 60.0  # generous bound for any one expected line (cold AutoGen imports are slow)


class Peer:
    """One AutoGen worker process: send command lines, read result lines."""

    def __init__(self, process: trio.Process, name: str) -> None:
        self.process = process
        self.name = name
        self.client_id = ""
        self._buffer = b""
        self._lines: list[str] = []

    async def send(self, line: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(line.encode() + b"\n")

    async def _read_line(self) -> str:
        assert self.process.stdout is not None
        while b"\n" not in self._buffer:
            chunk = await self.process.stdout.receive_some(65536)
            if not chunk:
                raise AssertionError(f"peer {self.name} exited; unread: {self._lines}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    async def expect(self, *prefix: str) -> list[str]:
        """The next line (in order of arrival, skipping none already read)
        whose first words are *prefix*; other lines stay queued."""
        want = list(prefix)

        def matches(line: str) -> bool:
            return line.split()[: len(want)] == want

        with trio.fail_after(WAIT):
            for i, line in enumerate(self._lines):
                if matches(line):
                    del self._lines[i]
                    return line.split()
            while True:
                line = await self._read_line()
                if matches(line):
                    return line.split()
                self._lines.append(line)

    async def command(self, line: str, *prefix: str) -> list[str]:
        await self.send(line)
        return await self.expect(*prefix)

    async def register(self, agent_type: str, *subs: str) -> list[str]:
        words = await self.command(f"register {agent_type} {' '.join(subs)}", "REGISTERED")
        assert words[1] == agent_type
        return words[2:]

    def unread(self) -> list[str]:
        return list(self._lines)


@asynccontextmanager
async def spawn_peer(
    gateway: Gateway, name: str, payload_format: str = "json"
) -> AsyncIterator[Peer]:
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            functools.partial(
                trio.run_process,
                [sys.executable, str(PEER), gateway.address, payload_format],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                check=False,
            )
        )
        peer = Peer(process, name)
        try:
            words = await peer.expect("STARTED")
            peer.client_id = words[1]
            yield peer
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()


async def wait_stats(gateway: Gateway, predicate: Callable[[GatewayStatistics], bool]) -> None:
    with trio.fail_after(WAIT):
        await gateway.wait_until(predicate)


# No start-up grace: these tests expect "no such worker" answers at once.
GATEWAY_OPTIONS: dict[str, Any] = {"rpc_timeout": 120.0, "startup_grace": 0}


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    async with open_gateway("127.0.0.1:0", **GATEWAY_OPTIONS) as gw:
        yield gw


@attrs.frozen
class Hosts:
    """The gateways a test's workers connect to: one, or two of a cluster."""

    gateways: tuple[Gateway, ...]

    def for_peer(self, n: int) -> Gateway:
        """The gateway the *n*-th worker (from 0) connects to: they take turns."""
        return self.gateways[n % len(self.gateways)]

    async def converged(self, agent_types: int, subscriptions: int) -> None:
        """Every gateway routes the *agent_types* and *subscriptions* of all
        of them: a claim made through one has reached the others."""
        for gateway in self.gateways:
            await wait_stats(
                gateway,
                lambda s: (s.agent_types, s.subscriptions) == (agent_types, subscriptions),
            )

    def worker_connections(self) -> int:
        """The workers' data connections to all the gateways (a gateway of a
        cluster counts its connections from the other gateways apart)."""
        return sum(gateway.statistics().data_connections for gateway in self.gateways)


@pytest.fixture(params=["one-gateway", "cluster"])
async def hosts(request: pytest.FixtureRequest) -> AsyncIterator[Hosts]:
    if request.param == "one-gateway":
        async with open_gateway("127.0.0.1:0", **GATEWAY_OPTIONS) as gw:
            yield Hosts((gw,))
        return
    redis_url: str = request.getfixturevalue("redis_url")
    async with AsyncExitStack() as stack:
        gateways = [
            await stack.enter_async_context(
                open_gateway("127.0.0.1:0", cluster=redis_url, **GATEWAY_OPTIONS)
            )
            for _ in range(2)
        ]
        yield Hosts(tuple(gateways))


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def error_text(words: list[str]) -> str:
    text: str = json.loads(" ".join(words[2:]))
    return text


async def test_registration_and_duplicate_type(hosts: Hosts) -> None:
    async with (
        spawn_peer(hosts.for_peer(0), "w1") as w1,
        spawn_peer(hosts.for_peer(1), "w2") as w2,
    ):
        await w1.register("dup")
        words = await w2.command("register dup", "ERROR", "register")
        message = error_text(words)
        assert "StatusCode.INVALID_ARGUMENT" in message
        assert f"Agent type dup already registered with client {w1.client_id}." in message
        # One type and its direct-message subscription, seen by every gateway.
        await hosts.converged(agent_types=1, subscriptions=1)
        assert hosts.worker_connections() == 2
        # The AutoGen worker took our early OpenChannel headers in its stride.
        await w2.register("other")
        await hosts.converged(agent_types=2, subscriptions=2)


async def test_rpc_across_workers_results_and_errors(hosts: Hosts) -> None:
    async with (
        spawn_peer(hosts.for_peer(0), "caller") as caller,
        spawn_peer(hosts.for_peer(1), "server") as server,
    ):
        await server.register("echo")
        await hosts.converged(agent_types=1, subscriptions=1)
        words = await caller.command("send t1 echo/k1 hello", "REPLY", "t1")
        assert words[2] == "echo/k1:hello"
        words = await caller.command("send t2 echo/k2 fail", "ERROR", "t2")
        assert error_text(words) == "kaboom"
        # Same worker: a caller may target its own agents too.
        words = await server.command("send t3 echo/self ping", "REPLY", "t3")
        assert words[2] == "echo/self:ping"
        for gateway in hosts.gateways:
            assert gateway.statistics().rpcs_in_flight == 0
        # The server's gateway forwarded all three to it.
        assert hosts.for_peer(1).statistics().rpcs_forwarded == 3


async def test_unknown_target_gets_an_error_not_a_hang(hosts: Hosts) -> None:
    async with spawn_peer(hosts.for_peer(0), "caller") as caller:
        words = await caller.command("send t1 ghost/k hi", "ERROR", "t1")
        assert "no worker has registered agent type 'ghost'" in error_text(words)


async def test_after_a_restart_autogen_callers_wait_for_the_worker_to_re_register() -> None:
    # One gateway: the start-up grace and its held messages are one gateway's.
    # A generous start-up grace: cold AutoGen imports take seconds.
    async with (
        open_gateway("127.0.0.1:0", startup_grace=WAIT) as gw,
        spawn_peer(gw, "caller") as caller,
        spawn_peer(gw, "sub") as sub,
    ):
        await caller.send("send t1 late/k hi")
        await caller.command("publish news s1 json early", "PUBLISHED")
        await wait_stats(gw, lambda s: s.held_messages == 2)
        async with spawn_peer(gw, "server") as server:
            await server.register("late")
            words = await caller.expect("REPLY", "t1")
            assert words[2] == "late/k:hi"
        await sub.register("listener", "topic=news")
        assert (await sub.expect("EVENT", "listener/s1"))[3] == "early"
        assert gw.statistics().held_messages == 0


async def test_publish_default_type_and_prefix_subscriptions(hosts: Hosts) -> None:
    async with (
        spawn_peer(hosts.for_peer(0), "pub") as pub,
        spawn_peer(hosts.for_peer(1), "sub") as sub,
    ):
        await sub.register("listener", "topic=default", "topic=news", "prefix=alerts.")
        await hosts.converged(agent_types=1, subscriptions=4)
        for topic, source in [("default", "default"), ("news", "s1"), ("alerts.fire", "s2")]:
            await pub.command(f"publish {topic} {source} json {topic}-msg", "PUBLISHED")
            words = await sub.expect("EVENT", f"listener/{source}")
            assert words[2:] == ["json", f"{topic}-msg", "publisher/p1"]
        # Direct-message convention: the "listener:" prefix subscription.
        await pub.command("publish listener:x direct json hi", "PUBLISHED")
        assert (await sub.expect("EVENT", "listener/direct"))[3] == "hi"
        # Nobody subscribes to this one; the next event proves it was not delivered.
        await pub.command("publish elsewhere s json lost", "PUBLISHED")
        await pub.command("publish news s3 json after", "PUBLISHED")
        assert (await sub.expect("EVENT", "listener/s3"))[3] == "after"
        assert not any("lost" in line for line in sub.unread())


async def test_publisher_receives_its_own_subscribed_events(gateway: Gateway) -> None:
    async with spawn_peer(gateway, "both") as both:
        await both.register("selfish", "topic=loop")
        await both.command("publish loop src json me", "PUBLISHED")
        words = await both.expect("EVENT", "selfish/src")
        assert words[3] == "me"


async def test_remove_subscription(hosts: Hosts) -> None:
    async with (
        spawn_peer(hosts.for_peer(0), "pub") as pub,
        spawn_peer(hosts.for_peer(1), "sub") as sub,
    ):
        (news_id, other_id) = await sub.register("listener", "topic=news", "topic=other")
        await hosts.converged(agent_types=1, subscriptions=3)
        await pub.command("publish news a json first", "PUBLISHED")
        await sub.expect("EVENT", "listener/a")
        await sub.command(f"unsubscribe {news_id}", "UNSUBSCRIBED")
        await hosts.converged(agent_types=1, subscriptions=2)
        await pub.command("publish news b json second", "PUBLISHED")
        await pub.command("publish other c json third", "PUBLISHED")
        assert (await sub.expect("EVENT", "listener/c"))[3] == "third"
        assert not any("second" in line for line in sub.unread())
        words = await sub.command(f"unsubscribe {news_id}", "ERROR", "unsubscribe")
        message = error_text(words)
        assert "StatusCode.UNKNOWN" in message
        assert "Unexpected <class 'ValueError'>: Subscription does not exist" in message
        assert other_id


async def test_protobuf_mode_publish(hosts: Hosts) -> None:
    """agents.ProtoMessage / NestingProtoMessage in proto_data, forwarded unmodified."""
    async with (
        spawn_peer(hosts.for_peer(0), "pub", "protobuf") as pub,
        spawn_peer(hosts.for_peer(1), "sub") as sub,
    ):
        await sub.register("listener", "topic=proto")
        await hosts.converged(agent_types=1, subscriptions=2)
        await pub.command("publish proto a proto Hello!", "PUBLISHED")
        assert (await sub.expect("EVENT", "listener/a"))[2:4] == ["proto", "Hello!"]
        await pub.command("publish proto b nested outer", "PUBLISHED")
        assert (await sub.expect("EVENT", "listener/b"))[2:4] == ["nested", "outer+inner"]


async def test_disconnect_cleanup_and_reregistration(hosts: Hosts) -> None:
    gateway = hosts.for_peer(0)
    async with spawn_peer(gateway, "first") as first:
        await first.register("echo", "topic=default")
        await hosts.converged(agent_types=1, subscriptions=2)
        await first.send("quit")
        await first.expect("STOPPED")
    await hosts.converged(agent_types=0, subscriptions=0)
    assert hosts.worker_connections() == 0
    async with (
        spawn_peer(hosts.for_peer(1), "second") as second,
        spawn_peer(hosts.for_peer(0), "caller") as caller,
    ):
        await second.register("echo")
        await hosts.converged(agent_types=1, subscriptions=1)
        words = await caller.command("send t1 echo/k again", "REPLY", "t1")
        assert words[2] == "echo/k:again"


async def test_colliding_request_ids_from_two_workers(hosts: Hosts) -> None:
    """Both callers' first request has id "1"; AutoGen's host mixes them up (#7016).
    In a cluster, c1 calls across the gateways and c2 through the server's own."""
    async with (
        spawn_peer(hosts.for_peer(0), "server") as server,
        spawn_peer(hosts.for_peer(1), "c1") as c1,
        spawn_peer(hosts.for_peer(2), "c2") as c2,
    ):
        await server.register("echo")
        await hosts.converged(agent_types=1, subscriptions=1)
        await c1.send("send a echo/one hold-1")
        await server.expect("HELD", "echo/one")
        await c2.send("send b echo/two hold-2")
        await server.expect("HELD", "echo/two")
        assert hosts.for_peer(0).statistics().rpcs_in_flight == 2
        await server.command("release", "RELEASED", "2")
        assert (await c1.expect("REPLY", "a"))[2] == "echo/one:hold-1"
        assert (await c2.expect("REPLY", "b"))[2] == "echo/two:hold-2"
        for gateway in hosts.gateways:
            assert gateway.statistics().responses_dropped == 0


async def test_worker_killed_with_rpcs_in_flight(hosts: Hosts) -> None:
    async with spawn_peer(hosts.for_peer(0), "caller") as caller:
        async with spawn_peer(hosts.for_peer(1), "victim") as victim:
            await victim.register("fragile")
            await hosts.converged(agent_types=1, subscriptions=1)
            await caller.send("send a fragile/k1 hold-a")
            await caller.send("send b fragile/k2 hold-b")
            await victim.expect("HELD", "fragile/k1")
            await victim.expect("HELD", "fragile/k2")
            victim.process.kill()
        for tag in ("a", "b"):
            message = error_text(await caller.expect("ERROR", tag))
            assert "disconnected before answering" in message
        await hosts.converged(agent_types=0, subscriptions=0)
        for gateway in hosts.gateways:
            assert gateway.statistics().rpcs_in_flight == 0
        # The caller is unaffected.
        await caller.register("echo")
        assert (await caller.command("send c echo/x ok", "REPLY", "c"))[2] == "echo/x:ok"


async def test_rpc_timeout_answers_autogen_caller() -> None:
    # One gateway: the late answer's drop is counted where the timeout fired.
    async with (
        open_gateway("127.0.0.1:0", rpc_timeout=1.0) as gw,
        spawn_peer(gw, "server") as server,
        spawn_peer(gw, "caller") as caller,
    ):
        await server.register("slow")
        await caller.send("send a slow/k hold")
        await server.expect("HELD", "slow/k")
        message = error_text(await caller.expect("ERROR", "a"))
        assert "no response from slow/k within 1 s" in message
        await server.command("release", "RELEASED")
        # The late answer is dropped; the caller is fine.
        await wait_stats(gw, lambda s: s.responses_dropped == 1)
        words = await caller.command("send b slow/k quick", "REPLY", "b")
        assert words[2] == "slow/k:quick"


async def test_many_concurrent_rpcs(hosts: Hosts) -> None:
    async with (
        spawn_peer(hosts.for_peer(0), "server") as server,
        spawn_peer(hosts.for_peer(1), "caller") as caller,
    ):
        await server.register("echo")
        await hosts.converged(agent_types=1, subscriptions=1)
        for i in range(100):
            await caller.send(f"send t{i} echo/k{i % 7} m{i}")
        for i in range(100):
            assert (await caller.expect("REPLY", f"t{i}"))[2] == f"echo/k{i % 7}:m{i}"
        assert hosts.for_peer(0).statistics().rpcs_forwarded == 100


@pytest.mark.parametrize("host", ["localhost", "[::1]"])
async def test_autogen_worker_over_localhost_and_ipv6(host: str) -> None:
    if host == "[::1]" and not ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    async with (
        open_gateway(f"{host}:0") as gw,
        spawn_peer(gw, "server") as server,
        spawn_peer(gw, "caller") as caller,
    ):
        assert gw.address.startswith(host)
        await server.register("echo")
        assert (await caller.command("send t echo/k hi", "REPLY", "t"))[2] == "echo/k:hi"
