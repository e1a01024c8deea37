"""A frozen worker (process stopped, socket open) is found by PINGs and its callers answered."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import trio

import agentwire as aw

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs POSIX signals")

_WORKER = textwrap.dedent(
    """
    import dataclasses, sys, trio, agentwire as aw

    @dataclasses.dataclass
    class Ping:
        text: str

    async def main() -> None:
        async with aw.open_worker(sys.argv[1]) as runtime:
            async def echo(ctx: aw.ClosureContext, message: Ping, mctx: aw.MessageContext) -> Ping:
                return message

            await aw.ClosureAgent.register_closure(runtime, "echo", echo)
            print("ready", flush=True)
            await trio.sleep_forever()

    trio.run(main)
    """
)


@dataclasses.dataclass
class Ping:
    text: str


@contextmanager
def _worker_process(address: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _WORKER, address],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.wait()


async def test_the_callers_of_a_frozen_worker_are_answered_before_any_rpc_timeout() -> None:
    async with aw.open_gateway(
        "127.0.0.1:0", rpc_timeout=None, keepalive_interval=0.5, keepalive_timeout=1.0
    ) as gateway:
        with _worker_process(gateway.address) as proc:
            assert proc.stdout is not None
            ready = await trio.to_thread.run_sync(proc.stdout.readline)
            assert ready.strip() == "ready"
            async with aw.open_worker(gateway.address) as caller:
                caller.add_message_serializer(aw.serializers_for_type(Ping))
                target = aw.AgentId("echo", "1")
                with trio.fail_after(30):
                    assert await caller.send_message(Ping("hi"), target) == Ping("hi")
                os.kill(proc.pid, signal.SIGSTOP)
                # rpc_timeout=None: without the PINGs this call would wait forever.
                with trio.fail_after(30), pytest.raises(aw.ConnectionLostError):
                    await caller.send_message(Ping("still there?"), target)
                await gateway.wait_until(lambda s: s.data_connections == 1)
