"""The agentwire worker with real AutoGen 0.7.5 peers (subprocesses).

Two topologies, both payload formats:

* ``autogen-host``: AutoGen's host servicer in a subprocess, an AutoGen
  ``GrpcWorkerAgentRuntime`` in another, our ``open_worker`` in the test;
* ``agentwire-gateway``: our gateway in the test's trio loop, the AutoGen
  worker in a subprocess, our ``open_worker`` in the test.

The peers print a line per thing they did or received
(``autogen_peers/worker_peer.py``); those lines are the only synchronisation,
and every wait is bounded so a regression fails instead of hanging.
"""

from __future__ import annotations

import functools
import pathlib
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio

from agentwire import (
    AgentId,
    DuplicateSubscriptionError,
    GatewayRejectedError,
    RemoteError,
    TopicId,
    TypeSubscription,
    UndeliverableError,
    WorkerRuntime,
    open_gateway,
    open_worker,
    serializers_for_type,
)

from ..worker.messages import (
    BetterEcho,
    BetterProtoMessage,
    Echo,
    EchoBase,
    GoogleProtoMessage,
    Inbox,
    Ping,
    Pong,
)

pytestmark = pytest.mark.interop

PEER = pathlib.Path(__file__).parent / "autogen_peers" / "worker_peer.py"
WAIT = 60.0  # bound for any one expected line (cold AutoGen imports are slow)


class Peer:
    """A subprocess speaking in lines: commands in, result lines out."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._buffer = b""
        self._unread: list[str] = []

    async def send(self, line: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(line.encode() + b"\n")

    async def _read_line(self) -> str:
        assert self.process.stdout is not None
        while b"\n" not in self._buffer:
            chunk = await self.process.stdout.receive_some(65536)
            if not chunk:
                raise AssertionError(f"the peer exited; unread lines: {self._unread}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    async def expect(self, prefix: str) -> str:
        """The first line starting with *prefix* (other lines stay queued)."""
        with trio.fail_after(WAIT):
            for i, line in enumerate(self._unread):
                if line.startswith(prefix):
                    return self._unread.pop(i)
            while True:
                line = await self._read_line()
                if line.startswith(prefix):
                    return line
                self._unread.append(line)

    async def command(self, line: str, prefix: str) -> str:
        await self.send(line)
        return await self.expect(prefix)


@asynccontextmanager
async def open_peer(*args: str, script: pathlib.Path = PEER) -> AsyncIterator[Peer]:
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            functools.partial(
                trio.run_process,
                [sys.executable, str(script), *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                check=False,
            )
        )
        peer = Peer(process)
        try:
            yield peer
        finally:
            assert process.stdin is not None
            with trio.move_on_after(5) as scope:
                scope.shield = True
                await process.stdin.aclose()
                await process.wait()
            process.kill()


@asynccontextmanager
async def topology(
    kind: str, payload_format: str, agent: type[EchoBase] = Echo
) -> AsyncIterator[tuple[WorkerRuntime, Peer, str]]:
    """Our worker (agent type ``aw``, subscribed to ``interop``), an AutoGen
    worker, and the address of the host or gateway they share."""
    async with AsyncExitStack() as stack:
        if kind == "autogen-host":
            host = await stack.enter_async_context(open_peer("host"))
            address = f"127.0.0.1:{(await host.expect('READY')).split()[1]}"
        else:
            gateway = await stack.enter_async_context(open_gateway("127.0.0.1:0", grace_period=0.1))
            address = gateway.address
        ours = await stack.enter_async_context(
            open_worker(address, payload_format=payload_format, state_timeout=2)  # type: ignore[arg-type]
        )
        theirs = await stack.enter_async_context(open_peer("worker", address, payload_format))
        await theirs.expect("READY")
        await agent.register(ours, "aw", agent)
        await ours.add_subscription(TypeSubscription("interop", "aw"))
        ours.add_message_serializer(serializers_for_type(Pong))
        yield ours, theirs, address


KINDS = ["autogen-host", "agentwire-gateway"]
FORMATS = ["json", "protobuf"]


@pytest.fixture(autouse=True)
def fresh_inbox() -> Inbox:
    EchoBase.inbox = Inbox()
    return EchoBase.inbox


@pytest.mark.parametrize("payload_format", FORMATS)
@pytest.mark.parametrize("kind", KINDS)
async def test_rpc_both_directions_and_errors(kind: str, payload_format: str) -> None:
    with trio.fail_after(WAIT * 2):
        async with topology(kind, payload_format) as (ours, theirs, _):
            reply = await ours.send_message(Ping("hi"), AgentId("ag_echo", "k"))
            assert reply == Pong("ag:hi")
            reply = await ours.send_message(
                Ping("from"), AgentId("ag_echo", "k"), sender=AgentId("aw", "me")
            )
            assert reply == Pong("ag:from")
            assert await theirs.command("send aw/k yo", "REPLY") == "REPLY aw/k:yo"
            with pytest.raises(RemoteError) as info:
                await ours.send_message(Ping("fail"), AgentId("ag_echo", "k"))
            assert info.value.remote_message == "kaboom"
            assert await theirs.command("send aw/k fail", "ERROR") == "ERROR kaboom"


@pytest.mark.parametrize("payload_format", FORMATS)
@pytest.mark.parametrize("kind", KINDS)
async def test_publish_both_directions(kind: str, payload_format: str, fresh_inbox: Inbox) -> None:
    with trio.fail_after(WAIT * 2):
        async with topology(kind, payload_format) as (ours, theirs, _):
            message: object = (
                Ping("ours") if payload_format == "json" else GoogleProtoMessage(message="ours")
            )
            await ours.publish_message(message, TopicId("interop", "x"), sender=AgentId("aw", "p"))
            kind_name = "Ping" if payload_format == "json" else "ProtoMessage"
            assert await theirs.expect("EVENT") == f"EVENT {kind_name} ours aw/p"
            await theirs.command("publish interop theirs", "PUBLISHED")
            await fresh_inbox.wait_for(2)  # ours (local) and theirs
            # The host echoes our own event back to us; it is dropped, not delivered twice.
            await ours.wait_until(lambda _: ours.worker_statistics().echoes_dropped >= 1)
    text = "theirs" if payload_format == "json" else "proto:theirs"
    mine = "ours" if payload_format == "json" else "proto:ours"
    assert sorted(fresh_inbox.items) == sorted(
        [("aw/x", mine, "aw/p"), ("aw/ag", text, "ag_echo/pub")]
    )


@pytest.mark.parametrize("kind", KINDS)
async def test_subscriptions_removed(kind: str) -> None:
    with trio.fail_after(WAIT * 2):
        async with topology(kind, "json") as (ours, theirs, _):

            def topics(subs: list[object]) -> set[tuple[str, str]]:
                out = set()
                for sub in subs:
                    kind_ = sub.WhichOneof("subscription")  # type: ignore[attr-defined]
                    if kind_ == "typeSubscription":
                        t = sub.typeSubscription  # type: ignore[attr-defined]
                        out.add((t.topic_type, t.agent_type))
                return out

            assert ("interop", "ag_echo") in topics(await ours.gateway_subscriptions())
            await theirs.command("unsubscribe", "UNSUBSCRIBED")
            assert ("interop", "ag_echo") not in topics(await ours.gateway_subscriptions())
            mine = TypeSubscription("extra", "aw")
            await ours.add_subscription(mine)
            assert ("extra", "aw") in topics(await ours.gateway_subscriptions())
            await ours.remove_subscription(mine.id)
            assert ("extra", "aw") not in topics(await ours.gateway_subscriptions())
            # With its subscription gone, the AutoGen worker no longer gets our events;
            # a marker RPC afterwards proves the channel is alive.
            await ours.publish_message(Ping("nobody"), TopicId("interop", "x"))
            assert await theirs.command("send aw/k marker", "REPLY") == "REPLY aw/k:marker"


@pytest.mark.parametrize("kind", KINDS)
async def test_state_request_to_autogen_worker_times_out_clearly(kind: str) -> None:
    with trio.fail_after(WAIT * 2):
        async with topology(kind, "json") as (ours, _, _):
            with pytest.raises(RemoteError, match="ag_echo"):
                await ours.agent_save_state(AgentId("ag_echo", "k"))


@pytest.mark.parametrize("kind", KINDS)
async def test_betterproto2_events_with_autogen(kind: str, fresh_inbox: Inbox) -> None:
    with trio.fail_after(WAIT * 2):
        async with topology(kind, "protobuf", BetterEcho) as (ours, theirs, _):
            await ours.publish_message(
                BetterProtoMessage(message="bp"), TopicId("interop", "x"), sender=AgentId("aw", "p")
            )
            assert await theirs.expect("EVENT") == "EVENT ProtoMessage bp aw/p"
            await theirs.command("publish interop theirs", "PUBLISHED")
            await fresh_inbox.wait_for(2)
    assert ("aw/ag", "proto:theirs", "ag_echo/pub") in fresh_inbox.items


async def test_two_workers_calling_one_autogen_worker_through_the_autogen_host() -> None:
    """AutoGen's host keys pending responses by the raw request id (issue #7016);
    our ids are unique per worker, so concurrent callers never get crossed replies."""
    with trio.fail_after(WAIT * 2):
        async with (
            topology("autogen-host", "json") as (first, _, address),
            open_worker(address) as second,
        ):
            second.add_message_serializer(serializers_for_type(Pong))
            replies: list[tuple[int, object]] = []

            async def call(worker: WorkerRuntime, n: int) -> None:
                reply = await worker.send_message(Ping(str(n)), AgentId("ag_echo", "k"))
                replies.append((n, reply))

            async with trio.open_nursery() as nursery:
                for n in range(40):
                    nursery.start_soon(call, first if n % 2 else second, n)
    assert sorted(replies, key=lambda r: r[0]) == [(n, Pong(f"ag:{n}")) for n in range(40)]


async def test_autogen_host_rejections_are_agentwire_errors() -> None:
    with trio.fail_after(WAIT * 2):
        async with topology("autogen-host", "json") as (ours, _, _):
            before = [sub.id for sub in ours.get_subscriptions()]
            with pytest.raises(GatewayRejectedError, match="already registered") as info:
                await ours.register_factory("ag_echo", Echo)
            assert info.value.status == "INVALID_ARGUMENT"
            assert "ag_echo" not in ours.agent_types()  # rolled back locally
            with pytest.raises(DuplicateSubscriptionError):
                await ours.add_subscription(TypeSubscription("interop", "ag_echo"))
            assert [sub.id for sub in ours.get_subscriptions()] == before  # rolled back


async def test_unknown_target_through_autogen_host_is_bounded() -> None:
    """AutoGen's host drops a request for an agent type nobody registered; the
    caller still gets an error once rpc_timeout passes, not a hang."""
    with trio.fail_after(WAIT * 2):
        async with (
            topology("autogen-host", "json") as (_, _, address),
            open_worker(address, rpc_timeout=1.0) as ours,
        ):
            with pytest.raises(UndeliverableError, match="nobody/k"):
                await ours.send_message(Ping("x"), AgentId("nobody", "k"))
            assert ours.statistics().remote_pending_rpcs == 0


async def test_state_between_agentwire_workers_through_the_autogen_host() -> None:
    """AutoGen's host routes control messages; agentwire workers answer them."""
    with trio.fail_after(WAIT * 2):
        async with (
            topology("autogen-host", "json") as (first, _, address),
            open_worker(address) as second,
        ):
            second.add_message_serializer(serializers_for_type(Pong))
            await second.send_message(Ping("1"), AgentId("aw", "k"))
            assert await second.agent_save_state(AgentId("aw", "k")) == {"count": 1}
            await second.agent_load_state(AgentId("aw", "k"), {"count": 7})
            assert await first.agent_save_state(AgentId("aw", "k")) == {"count": 7}
