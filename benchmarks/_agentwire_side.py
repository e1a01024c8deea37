"""agentwire workloads: run with a python that has agentwire installed.

``python -m benchmarks._agentwire_side WORKLOAD [--quick]`` prints one JSON result line (see
``benchmarks._common``). The workloads mirror ``benchmarks._autogen_side`` one for one: same
payload, same counts and phase lengths, same measuring code; only the runtime differs.

The ``grpc``, ``grpc_flood`` and ``grpc_tls`` workloads run the gateway as the ``agentwire
gateway`` command and the echo worker as the ``grpc-echo`` role of this script, each its own
process; this process is the caller. ``grpc_tls`` puts all three on mutual TLS, with
certificates made for the run by ``trustme`` (AutoGen's side of it runs in plaintext). The
``transport`` workload runs agentwire's gRPC server (no agents, raw bytes) as the
``transport-server`` role; this process is the client.
"""

from __future__ import annotations

import time

_SPAWN_TO_MAIN = time.monotonic()  # before the framework imports: start-up counts them

import contextlib  # noqa: E402
import os  # noqa: E402
import pathlib  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import ssl  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from typing import Any  # noqa: E402

import attrs  # noqa: E402
import trio  # noqa: E402

import agentwire  # noqa: E402
from agentwire import (  # noqa: E402
    AgentId,
    MessageContext,
    RoutedAgent,
    TopicId,
    TypeSubscription,
    message_handler,
    open_runtime,
)

from . import _ceiling  # noqa: E402
from . import _common as c  # noqa: E402

_IMPORTED = time.monotonic()  # the in-process imports; agentwire loads the wire on first use


@attrs.define
class Ping:
    n: int
    text: str


@attrs.define
class Probe:
    n: int


COUNTER = c.Counter(trio.Event)


class Echo(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("echo")

    @message_handler
    async def on_ping(self, message: Ping, ctx: MessageContext) -> Ping:
        return message


class Sink(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("sink")

    @message_handler
    async def on_ping(self, message: Ping, ctx: MessageContext) -> None:
        COUNTER.hit()


class ProbeAgent(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("probe")

    @message_handler
    async def on_probe(self, message: Probe, ctx: MessageContext) -> Probe:
        return Probe(COUNTER.count)


def _add_serializers(runtime: Any) -> None:
    for cls in (Ping, Probe):
        runtime.add_message_serializer(agentwire.try_get_known_serializers_for_type(cls))


async def _concurrent(runtime: Any, target: AgentId, duration: float) -> dict[str, float]:
    latencies: list[int] = []
    msg = Ping(1, c.TEXT)
    counts: list[int] = []

    async def one() -> None:
        counts.append(
            await c.sequential_loop(lambda: runtime.send_message(msg, target), duration, latencies)
        )

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(c.CONCURRENCY):
            nursery.start_soon(one)
    elapsed = time.perf_counter() - started
    return {"conc_msgs_per_s": c.rate(sum(counts), elapsed), **c.latency_summary("conc", latencies)}


async def _sequential(runtime: Any, target: AgentId, duration: float) -> dict[str, float]:
    msg = Ping(1, c.TEXT)
    return await c.sequential_figures(lambda: runtime.send_message(msg, target), duration)


async def inproc_rpc(duration: float) -> dict[str, float]:
    async with agentwire.open_runtime() as runtime:
        await Echo.register(runtime, "echo", Echo)
        target = AgentId("echo", "default")
        await _sequential(runtime, target, duration / 5)  # warm-up
        result = await _sequential(runtime, target, duration)
        result.update(await _concurrent(runtime, target, duration))
    return result


async def _publish_phase(runtime: Any, topic: TopicId, fanout: int, count: int) -> float:
    msg = Ping(1, c.TEXT)
    return await c.publish_and_wait(
        lambda: runtime.publish_message(msg, topic), COUNTER, count, fanout
    )


async def inproc_publish(duration: float) -> dict[str, float]:
    result: dict[str, float] = {}
    async with agentwire.open_runtime() as runtime:
        for i in range(10):
            await Sink.register(runtime, f"sink{i}", Sink)
            await runtime.add_subscription(TypeSubscription("bench10", f"sink{i}"))
        await runtime.add_subscription(TypeSubscription("bench1", "sink0"))
        for fanout in (1, 10):
            topic = TopicId(f"bench{fanout}", "default")
            pilot = 200
            seconds = await _publish_phase(runtime, topic, fanout, pilot)
            count = c.scale_count(pilot, seconds, duration, 500, 2_000_000)
            seconds = await _publish_phase(runtime, topic, fanout, count)
            result[f"pub{fanout}_delivered_per_s"] = c.rate(count * fanout, seconds)
    return result


async def activation(duration: float) -> dict[str, float]:
    msg = Ping(1, c.TEXT)
    n = c.ACTIVATIONS
    probe = c.MemoryProbe()
    async with agentwire.open_runtime() as runtime:
        await Echo.register(runtime, "echo", Echo)
        await runtime.send_message(msg, AgentId("echo", "warmup"))
        started = time.perf_counter()
        for i in range(n):
            await runtime.send_message(msg, AgentId("echo", f"a{i}"))
        elapsed = time.perf_counter() - started
        with probe.measure():
            for i in range(n):
                await runtime.send_message(msg, AgentId("echo", f"m{i}"))
            await trio.sleep(0.05)  # let finished handler tasks be dropped
    return {
        "activations_per_s": c.rate(n, elapsed),
        "bytes_per_agent": round(probe.traced_bytes / n, 1),
        "rss_bytes_per_agent": round(probe.rss_bytes / n, 1),
    }


async def _register_echo_side(runtime: Any) -> None:
    _add_serializers(runtime)
    await Echo.register(runtime, "echo", Echo)
    await Sink.register(runtime, "sink", Sink)
    await ProbeAgent.register(runtime, "probe", ProbeAgent)
    await runtime.add_subscription(TypeSubscription(c.TOPIC_TYPE, "sink"))


def _write_certificates(directory: pathlib.Path) -> pathlib.Path:
    """A CA, the gateway's certificate for 127.0.0.1 and a client certificate per worker."""
    import trustme  # only this workload needs it (the bench session installs it)

    ca = trustme.CA()
    ca.cert_pem.write_to_path(directory / "ca.pem")
    for name, identity in (("gateway", "127.0.0.1"), ("echo", "echo"), ("caller", "caller")):
        leaf = ca.issue_cert(identity)
        leaf.private_key_pem.write_to_path(directory / f"{name}-key.pem")
        for blob in leaf.cert_chain_pems:
            blob.write_to_path(directory / f"{name}.pem", append=True)
    return directory


def _gateway_tls_argv(tls_dir: pathlib.Path) -> list[str]:
    return [
        *("--tls-cert", str(tls_dir / "gateway.pem")),
        *("--tls-key", str(tls_dir / "gateway-key.pem")),
        *("--tls-client-ca", str(tls_dir / "ca.pem")),
    ]


def _worker_tls(tls_dir: str | None, name: str) -> ssl.SSLContext | None:
    """The client context of worker ``name`` (mutual TLS), or None for plaintext."""
    if tls_dir is None:
        return None
    from agentwire.security import client_ssl_context

    path = pathlib.Path(tls_dir)
    return client_ssl_context(
        ca=path / "ca.pem", cert=path / f"{name}.pem", key=path / f"{name}-key.pem"
    )


async def grpc_echo_role(address: str, tls_dir: str | None, shared: bool = False) -> None:
    tls = _worker_tls(tls_dir, "echo")
    async with agentwire.open_worker(address, ssl_context=tls, shared_types=shared) as runtime:
        await _register_echo_side(runtime)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            c.ready()
            async for _ in signals:  # a clean exit, so that a profiler can write its file
                return


async def _grpc_publish(runtime: Any, count: int, already: int) -> float:
    msg = Ping(1, c.TEXT)
    topic = TopicId(c.TOPIC_TYPE, "default")
    probe = AgentId("probe", "default")

    async def seen() -> int:
        answer: Probe = await runtime.send_message(Probe(0), probe)
        return answer.n

    return await c.publish_until_seen(
        lambda: runtime.publish_message(msg, topic), seen, count, already
    )


async def _flood(runtime: Any, target: AgentId, duration: float) -> dict[str, float]:
    """Sequential RPCs while another task of this worker publishes as fast as it can."""
    msg = Ping(1, c.TEXT)
    topic = TopicId(c.TOPIC_TYPE, "default")
    latencies: list[int] = []
    published: list[int] = []

    async def publisher() -> None:
        published.append(await c.flood_loop(lambda: runtime.publish_message(msg, topic), duration))

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(publisher)
        rpcs = await c.sequential_loop(
            lambda: runtime.send_message(msg, target), duration, latencies
        )
    elapsed = time.perf_counter() - started
    return c.flood_figures(rpcs, published[0], elapsed, latencies)


async def grpc_caller(
    address: str, duration: float, phases: str, tls_dir: str | None = None
) -> dict[str, float]:
    tls = _worker_tls(tls_dir, "caller")
    async with agentwire.open_worker(address, ssl_context=tls) as runtime:
        _add_serializers(runtime)
        target = AgentId("echo", "default")
        await _sequential(runtime, target, duration / 5)  # warm-up: connections, activation
        result: dict[str, float] = {}
        if "seq" in phases:
            result.update(await _sequential(runtime, target, duration))
        if "conc" in phases:
            result.update(await _concurrent(runtime, target, duration))
        if "pub" in phases:
            pilot = 200
            seconds = await _grpc_publish(runtime, pilot, 0)
            count = c.scale_count(pilot, seconds, duration, 500, 500_000)
            seconds = await _grpc_publish(runtime, count, pilot)
            result["pub_delivered_per_s"] = c.rate(count, seconds)
        if "flood" in phases:
            result.update(await _flood(runtime, target, duration))
    return result


_ADDRESS = re.compile(r"(127\.0\.0\.1:\d+)")


def _listening(line: str) -> str | None:
    match = _ADDRESS.search(line)
    return match.group(1) if match else None


def grpc_workload(duration: float, phases: str, *, tls: bool = False) -> dict[str, float]:
    """The gateway command, an echo worker, and this process as the caller; with ``tls``,
    every connection is mutual TLS (certificates made for this run, in a scratch directory)."""
    gateway_argv = [sys.executable, "-m", "agentwire", "gateway", "--address", "127.0.0.1:0"]
    me = [sys.executable, "-m", "benchmarks._agentwire_side"]
    with contextlib.ExitStack() as stack:
        tls_dir = None
        echo_tls: list[str] = []
        if tls:
            scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="agentwire-bench-"))
            tls_dir = str(_write_certificates(pathlib.Path(scratch)))
            gateway_argv += _gateway_tls_argv(pathlib.Path(tls_dir))
            echo_tls = ["--tls-dir", tls_dir]
        gateway = stack.enter_context(c.Helper(gateway_argv))
        address = gateway.start(_listening)
        port = address.rsplit(":", 1)[1]
        echo = stack.enter_context(c.Helper([*me, "grpc-echo", "--port", port, *echo_tls]))
        echo.start()
        before = c.cpu_snapshot(gateway, echo)
        result = trio.run(grpc_caller, address, duration, phases, tls_dir)
        after = c.cpu_snapshot(gateway, echo)
    result.update(c.cpu_figures(("gateway", "echo", "caller"), before, after))
    return result


async def _many_keys(runtime: Any, duration: float) -> float:
    """RPCs per second from ``SHARED_CALLERS`` tasks spread over ``SHARED_KEYS`` echo agents."""
    msg = Ping(1, c.TEXT)
    count = 0
    deadline = time.perf_counter() + duration

    async def caller(first: int) -> None:
        nonlocal count
        key = first
        while time.perf_counter() < deadline:
            await runtime.send_message(msg, AgentId("echo", f"k{key % c.SHARED_KEYS}"))
            count += 1
            key += c.SHARED_CALLERS

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for first in range(c.SHARED_CALLERS):
            nursery.start_soon(caller, first)
    return c.rate(count, time.perf_counter() - started)


async def shared_caller(address: str, duration: float, shared: bool) -> float:
    async with agentwire.open_worker(address, shared_types=shared) as runtime:
        _add_serializers(runtime)
        await _many_keys(runtime, duration / 3)  # warm-up: places and activates keys
        return await _many_keys(runtime, duration)


def grpc_shared_workload(duration: float) -> dict[str, float]:
    """One agent type served by 1, 2 and 4 echo workers through one gateway (placement
    on), and by one worker without placement (AutoGen's one-owner rule), as processes."""
    me = [sys.executable, "-m", "benchmarks._agentwire_side"]
    result: dict[str, float] = {}
    for workers, shared in ((1, False), (1, True), (2, True), (4, True)):
        gateway_argv = [sys.executable, "-m", "agentwire", "gateway", "--address", "127.0.0.1:0"]
        if shared:
            gateway_argv.append("--shared-agent-types")
        with contextlib.ExitStack() as stack:
            gateway = stack.enter_context(c.Helper(gateway_argv))
            address = gateway.start(_listening)
            port = address.rsplit(":", 1)[1]
            role = [*me, "grpc-echo", "--port", port, *(["--shared"] if shared else [])]
            for _ in range(workers):
                stack.enter_context(c.Helper(role)).start()
            rate = trio.run(shared_caller, address, duration, shared)
        result["single_owner_rpc_per_s" if not shared else f"shared{workers}_rpc_per_s"] = rate
    return result


async def transport_server_role() -> None:
    """agentwire's gRPC server with the echo and sink methods (raw bytes), until signalled."""
    from agentwire._transport import ServerStream, bidi, serve_grpc

    async def echo(stream: ServerStream) -> None:
        while (message := await stream.receive()) is not None:
            await stream.send(message)

    async def sink(stream: ServerStream) -> None:
        count = 0
        while await stream.receive() is not None:
            count += 1
        await stream.send(str(count).encode())

    methods = {c.ECHO_PATH: bidi(echo), c.SINK_PATH: bidi(sink)}
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_grpc, methods, "127.0.0.1", 0)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            c.ready(f"127.0.0.1:{server.port}")
            async for _ in signals:
                nursery.cancel_scope.cancel()
                return


async def transport_client(address: str, seconds: float) -> dict[str, float]:
    """agentwire's gRPC client: the three patterns, each on a stream of its own."""
    from agentwire._transport import open_channel

    async with open_channel(address) as channel:
        async with channel.stream(c.ECHO_PATH) as stream:
            ping_pong = await c.ping_pong(stream.send, stream.receive, seconds)
        async with channel.stream(c.ECHO_PATH) as stream:
            pipelined = await _pipelined(stream, seconds)
        async with channel.stream(c.SINK_PATH) as stream:
            one_way = await c.one_way(stream.send, stream.end, stream.receive, seconds)
    return c.transport_figures(ping_pong, pipelined, one_way)


async def _pipelined(stream: Any, seconds: float) -> float:
    """Round trips per second with ``IN_FLIGHT`` messages outstanding."""
    slots = trio.Semaphore(c.IN_FLIGHT)
    received = 0
    start = time.perf_counter()
    deadline = start + seconds

    async def sender() -> None:
        while True:
            try:  # like asyncio.Semaphore: yield only when there is no slot
                slots.acquire_nowait()
            except trio.WouldBlock:
                await slots.acquire()
            await stream.send(c.TRANSPORT_PAYLOAD)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        while True:
            await stream.receive()
            slots.release()
            received += 1
            if received % 500 == 0 and time.perf_counter() >= deadline:
                nursery.cancel_scope.cancel()
                break
    return received / (time.perf_counter() - start)


def transport_workload(duration: float) -> dict[str, float]:
    with c.Helper([sys.executable, "-m", "benchmarks._agentwire_side", "transport-server"]) as srv:
        address = srv.start()
        return trio.run(transport_client, address, duration)


async def flow(duration: float) -> dict[str, float]:
    """StateFlow steps and DAG tasks that each send one Ping to an echo, against the same
    sends made by hand (a loop; a nursery of chains)."""
    from agentwire.flow import Dag, Send, State, StateFlow, Task, TaskContext, run_dag, run_flow

    msg = Ping(1, c.TEXT)
    target = AgentId("echo", "default")
    names = [f"s{index}" for index in range(c.FLOW_STEPS)]
    steps = StateFlow(
        "bench",
        [
            *(
                State(name, Send("echo", key=lambda ctx: "default"), after)
                for name, after in zip(names, [*names[1:], "end"], strict=True)
            ),
            State("end"),
        ],
        initial=names[0],
        final=["end"],
    )

    async def task(ctx: TaskContext) -> Any:
        return await ctx.send("echo", msg, key="default")

    width = c.DAG_WIDTH
    dag = Dag(
        "bench",
        [Task(f"t{i}", task, [f"t{i - width}"] if i >= width else []) for i in range(c.DAG_TASKS)],
    )

    async with open_runtime() as runtime:
        await Echo.register(runtime, "echo", Echo)

        async def by_hand(sends: int) -> None:
            for _ in range(sends):
                await runtime.send_message(msg, target)

        async def chains() -> None:
            async with trio.open_nursery() as nursery:
                for _ in range(width):
                    nursery.start_soon(by_hand, c.DAG_TASKS // width)

        return c.flow_figures(
            await c.time_per_item(lambda: run_flow(runtime, steps, msg), c.FLOW_STEPS, duration),
            await c.time_per_item(lambda: by_hand(c.FLOW_STEPS), c.FLOW_STEPS, duration),
            await c.time_per_item(
                lambda: run_dag(runtime, dag, max_concurrency=width), c.DAG_TASKS, duration
            ),
            await c.time_per_item(chains, c.DAG_TASKS, duration),
        )


async def inproc_startup(spawned_at: float) -> dict[str, float]:
    main_at = time.monotonic()
    async with open_runtime() as runtime:
        await Echo.register(runtime, "echo", Echo)
        await runtime.send_message(Ping(1, c.TEXT), AgentId("echo", "default"))
        answered = time.monotonic()
    return c.startup_figures("inproc_", spawned_at, _IMPORTED, main_at, answered)


async def startup(spawned_at: float) -> dict[str, float]:
    agentwire.open_gateway, agentwire.open_worker  # noqa: B018  (imports count as imports)
    main_at = time.monotonic()
    async with (
        agentwire.open_gateway("127.0.0.1:0") as gateway,
        agentwire.open_worker(gateway.address) as echo,
        agentwire.open_worker(gateway.address) as caller,
    ):
        await _register_echo_side(echo)
        _add_serializers(caller)
        await caller.send_message(Ping(1, c.TEXT), AgentId("echo", "default"))
        answered = time.monotonic()
    return c.startup_figures("", spawned_at, main_at, main_at, answered)


def payload(duration: float) -> dict[str, float]:
    """Serialize + parse per protobuf message, as a publish or an RPC does it on the wire.

    The same messages as betterproto2 dataclasses (what agentwire recommends) and as
    google protobuf classes (what AutoGen uses), each through agentwire's
    ``ProtobufSerializer`` (a ``google.protobuf.Any`` around the message).
    """
    from google.protobuf import json_format

    from agentwire import ProtobufSerializer
    from agentwire._examples.agents import ProtoMessage as BetterSmall
    from agentwire._examples.agentwire.examples import Order as BetterOrder
    from tests.examples_pb2.order_pb2 import Order as GoogleOrder
    from tests.examples_pb2.proto_message_pb2 import ProtoMessage as GoogleSmall

    google_rich = json_format.ParseDict(c.RICH_ORDER_JSON, GoogleOrder())
    samples: dict[str, Any] = {
        "bp2_small": BetterSmall(message=c.TEXT),
        "google_small": GoogleSmall(message=c.TEXT),
        "bp2_rich": BetterOrder.parse(google_rich.SerializeToString()),
        "google_rich": google_rich,
    }
    result: dict[str, float] = {}
    for name, message in samples.items():
        serializer: Any = ProtobufSerializer(type(message))
        wire = serializer.serialize(message)
        assert serializer.deserialize(wire) == message, name
        result[f"{name}_us"] = c.per_message_us(
            lambda s=serializer, m=message: s.deserialize(s.serialize(m)), duration / 4
        )
    return result


def main() -> None:
    args = c.parse_args()
    if os.environ.get("BENCH_PASSES_DIR"):
        from . import _passes

        _passes.record_from_env(f"{args.workload}-{os.getpid()}")
    duration = c.phase_seconds(args)
    result: dict[str, float]
    match args.workload:
        case "inproc_rpc":
            result = trio.run(inproc_rpc, duration)
        case "inproc_publish":
            result = trio.run(inproc_publish, duration)
        case "activation":
            result = trio.run(activation, duration)
        case "grpc" | "grpc_flood":
            result = grpc_workload(duration, c.grpc_phases(args))
        case "grpc_tls":
            result = grpc_workload(duration, c.grpc_phases(args), tls=True)
        case "transport":
            result = transport_workload(duration)
        case "ceiling":
            result = _ceiling.workload(duration)
        case "payload":
            result = payload(duration)
        case "grpc_shared":
            result = grpc_shared_workload(duration)
        case "flow":
            result = trio.run(flow, duration)
        case "stateful":
            from .stateful import run as run_stateful

            result = run_stateful(duration)
        case "cluster":
            from .cluster import run as run_cluster

            result = run_cluster(duration)
        case "startup":
            result = trio.run(startup, args.spawned_at or _SPAWN_TO_MAIN)
        case "inproc_startup":
            result = trio.run(inproc_startup, args.spawned_at or _SPAWN_TO_MAIN)
        case "grpc-echo":
            trio.run(grpc_echo_role, f"127.0.0.1:{args.port}", args.tls_dir, args.shared)
            return
        case "transport-server":
            trio.run(transport_server_role)
            return
        case other:
            raise SystemExit(f"unknown workload {other!r}")
    c.emit(result)


if __name__ == "__main__":
    main()
