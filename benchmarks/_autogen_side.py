"""AutoGen 0.7.5 workloads: run with a python that has ``autogen-ext[grpc]==0.7.5``.

``python -m benchmarks._autogen_side WORKLOAD [--quick]`` prints one JSON result line (see
``benchmarks._common``). The workloads mirror ``benchmarks._agentwire_side`` one for one: same
payload, same counts and phase lengths, same measuring code.

Roles ``grpc-gateway`` and ``grpc-echo`` are the helper processes of the ``grpc``,
``grpc_flood`` and ``grpc_tls`` workloads; ``transport-server`` is grpcio's asyncio server
(AutoGen's transport) for the ``transport`` workload. AutoGen's workers dial plaintext only, so
its ``grpc_tls`` is its plaintext setup: that workload compares agentwire over TLS with it.
"""

from __future__ import annotations

import time

_SPAWN_TO_MAIN = time.monotonic()  # before the framework imports: start-up counts them

import asyncio  # noqa: E402
import contextlib  # noqa: E402
import sys  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

from autogen_core import (  # noqa: E402
    AgentId,
    MessageContext,
    RoutedAgent,
    SingleThreadedAgentRuntime,
    TopicId,
    TypeSubscription,
    message_handler,
    try_get_known_serializers_for_type,
)

from . import _ceiling  # noqa: E402
from . import _common as c  # noqa: E402

if TYPE_CHECKING:
    from autogen_ext.runtimes.grpc import GrpcWorkerAgentRuntime, GrpcWorkerAgentRuntimeHost

_IMPORTED = time.monotonic()  # the in-process imports; the gRPC runtime is imported on use


def _grpc_runtimes() -> Any:
    """``autogen_ext.runtimes.grpc``, imported by the workloads that use it."""
    import autogen_ext.runtimes.grpc

    return autogen_ext.runtimes.grpc


@dataclass
class Ping:
    n: int
    text: str


@dataclass
class Probe:
    n: int


COUNTER = c.Counter(asyncio.Event)


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


async def _concurrent(runtime: Any, target: AgentId, duration: float) -> dict[str, float]:
    latencies: list[int] = []
    msg = Ping(1, c.TEXT)
    started = time.perf_counter()

    async def one() -> int:
        return await c.sequential_loop(
            lambda: runtime.send_message(msg, target), duration, latencies
        )

    counts = await asyncio.gather(*(one() for _ in range(c.CONCURRENCY)))
    elapsed = time.perf_counter() - started
    return {"conc_msgs_per_s": c.rate(sum(counts), elapsed), **c.latency_summary("conc", latencies)}


async def _sequential(runtime: Any, target: AgentId, duration: float) -> dict[str, float]:
    msg = Ping(1, c.TEXT)
    return await c.sequential_figures(lambda: runtime.send_message(msg, target), duration)


async def inproc_rpc(duration: float) -> dict[str, float]:
    runtime = SingleThreadedAgentRuntime()
    await Echo.register(runtime, "echo", Echo)
    runtime.start()
    target = AgentId("echo", "default")
    await _sequential(runtime, target, duration / 5)  # warm-up
    result = await _sequential(runtime, target, duration)
    result.update(await _concurrent(runtime, target, duration))
    await runtime.stop()
    return result


async def flow(duration: float) -> dict[str, float]:
    """No flows in AutoGen: the flow workload's hand-written baselines only (the same sends)."""
    runtime = SingleThreadedAgentRuntime()
    await Echo.register(runtime, "echo", Echo)
    runtime.start()
    msg = Ping(1, c.TEXT)
    target = AgentId("echo", "default")

    async def by_hand(sends: int) -> None:
        for _ in range(sends):
            await runtime.send_message(msg, target)

    async def chains() -> None:
        sends = c.DAG_TASKS // c.DAG_WIDTH
        await asyncio.gather(*(by_hand(sends) for _ in range(c.DAG_WIDTH)))

    result = {
        "flow_baseline_step_us": await c.time_per_item(
            lambda: by_hand(c.FLOW_STEPS), c.FLOW_STEPS, duration
        ),
        "dag_baseline_task_us": await c.time_per_item(chains, c.DAG_TASKS, duration),
    }
    await runtime.stop()
    return result


async def _publish_phase(runtime: Any, topic: TopicId, fanout: int, count: int) -> float:
    msg = Ping(1, c.TEXT)
    return await c.publish_and_wait(
        lambda: runtime.publish_message(msg, topic), COUNTER, count, fanout
    )


async def inproc_publish(duration: float) -> dict[str, float]:
    runtime = SingleThreadedAgentRuntime()
    for i in range(10):
        await Sink.register(runtime, f"sink{i}", Sink)
        await runtime.add_subscription(TypeSubscription("bench10", f"sink{i}"))
    await runtime.add_subscription(TypeSubscription("bench1", "sink0"))
    runtime.start()
    result: dict[str, float] = {}
    for fanout in (1, 10):
        topic = TopicId(f"bench{fanout}", "default")
        pilot = 200
        seconds = await _publish_phase(runtime, topic, fanout, pilot)
        count = c.scale_count(pilot, seconds, duration, 500, 2_000_000)
        seconds = await _publish_phase(runtime, topic, fanout, count)
        result[f"pub{fanout}_delivered_per_s"] = c.rate(count * fanout, seconds)
    await runtime.stop()
    return result


async def activation(duration: float) -> dict[str, float]:
    runtime = SingleThreadedAgentRuntime()
    await Echo.register(runtime, "echo", Echo)
    runtime.start()
    msg = Ping(1, c.TEXT)
    n = c.ACTIVATIONS
    await runtime.send_message(msg, AgentId("echo", "warmup"))
    started = time.perf_counter()
    for i in range(n):
        await runtime.send_message(msg, AgentId("echo", f"a{i}"))
    elapsed = time.perf_counter() - started
    probe = c.MemoryProbe()
    with probe.measure():
        for i in range(n):
            await runtime.send_message(msg, AgentId("echo", f"m{i}"))
        await asyncio.sleep(0.05)  # let finished handler tasks be dropped
    await runtime.stop()
    return {
        "activations_per_s": c.rate(n, elapsed),
        "bytes_per_agent": round(probe.traced_bytes / n, 1),
        "rss_bytes_per_agent": round(probe.rss_bytes / n, 1),
    }


def _worker(port: int) -> GrpcWorkerAgentRuntime:
    worker: GrpcWorkerAgentRuntime = _grpc_runtimes().GrpcWorkerAgentRuntime(
        host_address=f"127.0.0.1:{port}"
    )
    return worker


def _add_serializers(worker: GrpcWorkerAgentRuntime) -> None:
    worker.add_message_serializer(try_get_known_serializers_for_type(Ping))
    worker.add_message_serializer(try_get_known_serializers_for_type(Probe))


async def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 30.0
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.002)
            continue
        writer.close()
        return


async def _start_host(port: int) -> GrpcWorkerAgentRuntimeHost:
    host: GrpcWorkerAgentRuntimeHost = _grpc_runtimes().GrpcWorkerAgentRuntimeHost(
        address=f"127.0.0.1:{port}"
    )
    host.start()
    await _wait_listening(port)
    return host


async def _start_echo_worker(port: int) -> GrpcWorkerAgentRuntime:
    worker = _worker(port)
    await worker.start()
    _add_serializers(worker)
    await Echo.register(worker, "echo", Echo)
    await Sink.register(worker, "sink", Sink)
    await ProbeAgent.register(worker, "probe", ProbeAgent)
    await worker.add_subscription(TypeSubscription(c.TOPIC_TYPE, "sink"))
    return worker


async def grpc_gateway_role(port: int) -> None:
    await _start_host(port)
    c.ready(f"127.0.0.1:{port}")
    await asyncio.Event().wait()  # until SIGTERM


async def grpc_echo_role(port: int) -> None:
    await _start_echo_worker(port)
    c.ready()
    await asyncio.Event().wait()


async def _grpc_publish(worker: GrpcWorkerAgentRuntime, count: int, already: int) -> float:
    msg = Ping(1, c.TEXT)
    topic = TopicId(c.TOPIC_TYPE, "default")
    probe = AgentId("probe", "default")

    async def seen() -> int:
        answer: Probe = await worker.send_message(Probe(0), probe)
        return answer.n

    return await c.publish_until_seen(
        lambda: worker.publish_message(msg, topic), seen, count, already
    )


async def _flood(
    worker: GrpcWorkerAgentRuntime, target: AgentId, duration: float
) -> dict[str, float]:
    """Sequential RPCs while another task of this worker publishes as fast as it can."""
    msg = Ping(1, c.TEXT)
    topic = TopicId(c.TOPIC_TYPE, "default")
    latencies: list[int] = []
    started = time.perf_counter()
    published, rpcs = await asyncio.gather(
        c.flood_loop(lambda: worker.publish_message(msg, topic), duration),
        c.sequential_loop(lambda: worker.send_message(msg, target), duration, latencies),
    )
    elapsed = time.perf_counter() - started
    return c.flood_figures(rpcs, published, elapsed, latencies)


async def grpc_caller(port: int, duration: float, phases: str) -> dict[str, float]:
    worker = _worker(port)
    await worker.start()
    _add_serializers(worker)
    target = AgentId("echo", "default")
    await _sequential(worker, target, duration / 5)  # warm-up: connections, activation
    result: dict[str, float] = {}
    if "seq" in phases:
        result.update(await _sequential(worker, target, duration))
    if "conc" in phases:
        result.update(await _concurrent(worker, target, duration))
    if "pub" in phases:
        pilot = 200
        seconds = await _grpc_publish(worker, pilot, 0)
        count = c.scale_count(pilot, seconds, duration, 500, 500_000)
        seconds = await _grpc_publish(worker, count, pilot)
        result["pub_delivered_per_s"] = c.rate(count, seconds)
    if "flood" in phases:
        result.update(await _flood(worker, target, duration))
    with contextlib.suppress(Exception):  # the peers are torn down next; nothing to report
        await asyncio.wait_for(worker.stop(), 5)
    return result


def grpc_workload(duration: float, phases: str) -> dict[str, float]:
    port = c.free_port()
    me = [sys.executable, "-m", "benchmarks._autogen_side"]
    with c.Helper([*me, "grpc-gateway", "--port", str(port)]) as gateway:
        gateway.start()
        with c.Helper([*me, "grpc-echo", "--port", str(port)]) as echo:
            echo.start()
            before = c.cpu_snapshot(gateway, echo)
            result = asyncio.run(grpc_caller(port, duration, phases))
            after = c.cpu_snapshot(gateway, echo)
    result.update(c.cpu_figures(("gateway", "echo", "caller"), before, after))
    return result


async def transport_server_role() -> None:
    """grpcio's asyncio server (AutoGen's transport) with the echo and sink methods."""
    import grpc

    async def echo(requests: Any, context: Any) -> Any:
        async for message in requests:
            yield message

    async def sink(requests: Any, context: Any) -> Any:
        count = 0
        async for _ in requests:
            count += 1
        yield str(count).encode()

    service, echo_name = c.ECHO_PATH[1:].split("/")
    sink_name = c.SINK_PATH.rpartition("/")[2]
    handler = grpc.method_handlers_generic_handler(
        service,
        {
            echo_name: grpc.stream_stream_rpc_method_handler(echo),
            sink_name: grpc.stream_stream_rpc_method_handler(sink),
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    c.ready(f"127.0.0.1:{port}")
    await server.wait_for_termination()


async def transport_client(address: str, seconds: float) -> dict[str, float]:
    """grpcio's asyncio client: the three patterns, each on a stream of its own."""
    import grpc

    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.stream_stream(c.ECHO_PATH)()
        ping_pong = await c.ping_pong(call.write, call.read, seconds)
        call.cancel()
        call = channel.stream_stream(c.ECHO_PATH)()
        pipelined = await _ceiling.pipelined(call, seconds, c.IN_FLIGHT)
        call = channel.stream_stream(c.SINK_PATH)()
        one_way = await c.one_way(call.write, call.done_writing, call.read, seconds)
    return c.transport_figures(ping_pong, pipelined, one_way)


def transport_workload(duration: float) -> dict[str, float]:
    with c.Helper([sys.executable, "-m", "benchmarks._autogen_side", "transport-server"]) as srv:
        address = srv.start()
        return asyncio.run(transport_client(address, duration))


async def inproc_startup(spawned_at: float) -> dict[str, float]:
    main_at = time.monotonic()
    runtime = SingleThreadedAgentRuntime()
    await Echo.register(runtime, "echo", Echo)
    runtime.start()
    await runtime.send_message(Ping(1, c.TEXT), AgentId("echo", "default"))
    answered = time.monotonic()
    await runtime.stop()
    return c.startup_figures("inproc_", spawned_at, _IMPORTED, main_at, answered)


async def startup(spawned_at: float) -> dict[str, float]:
    _grpc_runtimes()
    main_at = time.monotonic()
    port = c.free_port()
    host = await _start_host(port)
    echo = await _start_echo_worker(port)
    caller = _worker(port)
    await caller.start()
    _add_serializers(caller)
    await caller.send_message(Ping(1, c.TEXT), AgentId("echo", "default"))
    answered = time.monotonic()
    result = c.startup_figures("", spawned_at, main_at, main_at, answered)
    for worker in (caller, echo):
        with contextlib.suppress(Exception):
            await asyncio.wait_for(worker.stop(), 5)
    await host.stop(grace=0)
    return result


def payload(duration: float) -> dict[str, float]:
    """Serialize + parse per protobuf message with autogen-core's protobuf serializer.

    AutoGen has only the google protobuf classes (no betterproto2): the ``google_*``
    figures are the same messages as agentwire's side measures.
    """
    from autogen_core._serialization import ProtobufMessageSerializer
    from google.protobuf import json_format

    from tests.examples_pb2.order_pb2 import Order as GoogleOrder
    from tests.examples_pb2.proto_message_pb2 import ProtoMessage as GoogleSmall

    samples: dict[str, Any] = {
        "google_small": GoogleSmall(message=c.TEXT),
        "google_rich": json_format.ParseDict(c.RICH_ORDER_JSON, GoogleOrder()),
    }
    result: dict[str, float] = {}
    for name, message in samples.items():
        serializer: Any = ProtobufMessageSerializer(type(message))
        assert serializer.deserialize(serializer.serialize(message)) == message, name
        result[f"{name}_us"] = c.per_message_us(
            lambda s=serializer, m=message: s.deserialize(s.serialize(m)), duration / 4
        )
    return result


def main() -> None:
    args = c.parse_args()
    duration = c.phase_seconds(args)
    result: dict[str, float]
    match args.workload:
        case "inproc_rpc":
            result = asyncio.run(inproc_rpc(duration))
        case "inproc_publish":
            result = asyncio.run(inproc_publish(duration))
        case "activation":
            result = asyncio.run(activation(duration))
        case "grpc" | "grpc_flood" | "grpc_tls":  # AutoGen's workers dial plaintext only
            result = grpc_workload(duration, c.grpc_phases(args))
        case "transport":
            result = transport_workload(duration)
        case "ceiling":
            result = _ceiling.workload(duration)
        case "payload":
            result = payload(duration)
        case "grpc_shared":
            # AutoGen's host lets one worker own an agent type ("Agent type X already
            # registered"): there is nothing to measure on this side.
            result = {}
        case "flow":
            result = asyncio.run(flow(duration))
        case "stateful":
            result = {}  # AutoGen keeps no versioned agent state: nothing to compare
        case "cluster":
            result = {}  # AutoGen's host is one process: no cluster to compare
        case "startup":
            result = asyncio.run(startup(args.spawned_at or _SPAWN_TO_MAIN))
        case "inproc_startup":
            result = asyncio.run(inproc_startup(args.spawned_at or _SPAWN_TO_MAIN))
        case "grpc-gateway":
            asyncio.run(grpc_gateway_role(args.port))
            return
        case "grpc-echo":
            asyncio.run(grpc_echo_role(args.port))
            return
        case "transport-server":
            asyncio.run(transport_server_role())
            return
        case other:
            raise SystemExit(f"unknown workload {other!r}")
    c.emit(result)


if __name__ == "__main__":
    main()
