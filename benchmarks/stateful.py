"""Stateful agents (agentwire only: AutoGen has no versioned state).

In-process RPCs, one at a time, to a counter agent that adds one to its state
and commits it after each message (``agentwire.state``), with each store:
memory, SQLite (a temporary file, WAL, ``synchronous=normal``) and Redis (a
``redis-server`` this script starts on a free port, persistence off; the row
is empty if ``redis-server`` or coredis is missing), against the same agent
keeping its count in a plain attribute. Then an agent whose state is a list
that grows by one item per message, at 1,000 items: its cost per message
(memory store) and the bytes it writes per commit against the state's size.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import attrs
import trio

from agentwire import AgentId, MessageContext, RoutedAgent, open_runtime, rpc
from agentwire.state import (
    Change,
    MemoryStateStore,
    Snapshot,
    StatefulAgent,
    StateStore,
    StoredState,
    open_sqlite_store,
)

from . import _common as c

BATCH = 200  # messages per timed call
LIST_ITEMS = 1000
ITEM = {"id": 0, "text": "an item of a growing list"}


@attrs.define
class Bump:
    pass


class PlainCounter(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("a counter without durable state")
        self.count = 0

    @rpc
    async def bump(self, message: Bump, ctx: MessageContext) -> int:
        self.count += 1
        return self.count


class Counter(StatefulAgent):
    def initial_state(self) -> dict[str, Any]:
        return {"count": 0}

    @rpc
    async def bump(self, message: Bump, ctx: MessageContext) -> int:
        self.state["count"] += 1
        count: int = self.state["count"]
        return count


def list_state() -> dict[str, Any]:
    return {"items": [dict(ITEM, id=n) for n in range(LIST_ITEMS)], "next": LIST_ITEMS}


class GrowingList(StatefulAgent):
    """A list state of LIST_ITEMS items; each message appends one (and, every
    LIST_ITEMS messages, drops the oldest LIST_ITEMS)."""

    def initial_state(self) -> dict[str, Any]:
        return list_state()

    @rpc
    async def bump(self, message: Bump, ctx: MessageContext) -> int:
        n: int = self.state["next"]
        self.state["items"].append(dict(ITEM, id=n))
        self.state["next"] = n + 1
        if len(self.state["items"]) > 2 * LIST_ITEMS:
            del self.state["items"][:LIST_ITEMS]  # keep it about LIST_ITEMS long
        return n


@attrs.define
class Recording:
    """A store that counts the bytes of what is written to the one beneath."""

    inner: StateStore
    commits: int = 0
    written: int = 0
    deltas: int = 0
    delta_bytes: int = 0

    async def load(self, agent_id: AgentId) -> StoredState:
        return await self.inner.load(agent_id)

    async def commit(self, agent_id: AgentId, base_version: int, change: Change) -> int:
        value = change.state if isinstance(change, Snapshot) else change.patch
        size = len(json.dumps(value, separators=(",", ":")))
        self.commits += 1
        self.written += size
        if not isinstance(change, Snapshot):
            self.deltas += 1
            self.delta_bytes += size
        return await self.inner.commit(agent_id, base_version, change)


async def per_message_us(register: Any, duration: float) -> float:
    async with open_runtime() as runtime:
        await register(runtime)
        target = AgentId("counter", "k")

        async def batch() -> None:
            for _ in range(BATCH):
                await runtime.send_message(Bump(), target)

        return await c.time_per_item(batch, BATCH, duration)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def redis_server() -> Iterator[str | None]:
    """A local redis-server's URL for the block, or None if it cannot be had."""
    executable = shutil.which("redis-server")
    try:
        import coredis  # noqa: F401
    except ModuleNotFoundError:
        executable = None
    if executable is None:
        yield None
        return
    port = _free_port()
    argv = [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    with tempfile.TemporaryDirectory() as directory:
        argv += ["--appendonly", "no", "--dir", directory]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)  # a process start, outside any event loop
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait()


@contextlib.asynccontextmanager
async def _store(kind: str, url: str | None) -> AsyncIterator[StateStore | None]:
    if kind == "memory":
        yield MemoryStateStore()
    elif kind == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            async with open_sqlite_store(f"{directory}/state.db") as store:
                yield store
    elif url is None:
        yield None
    else:
        from agentwire.state import open_redis_store

        async with open_redis_store(url) as redis:
            yield redis


async def measure(duration: float, redis_url: str | None) -> dict[str, float]:
    async def plain(runtime: Any) -> None:
        await PlainCounter.register(runtime, "counter", PlainCounter)

    result = {"stateless_us": await per_message_us(plain, duration)}
    for kind in ("memory", "sqlite", "redis"):
        async with _store(kind, redis_url) as store:
            if store is None:
                continue

            async def stateful(runtime: Any, store: StateStore = store) -> None:
                await Counter.register(runtime, "counter", lambda: Counter(store=store))

            result[f"{kind}_us"] = await per_message_us(stateful, duration)
    recording = Recording(MemoryStateStore())

    async def growing(runtime: Any) -> None:
        await GrowingList.register(runtime, "counter", lambda: GrowingList(store=recording))

    result["list1000_us"] = await per_message_us(growing, duration)
    result["list1000_state_bytes"] = len(json.dumps(list_state(), separators=(",", ":")))
    result["list1000_written_bytes"] = round(recording.written / recording.commits)
    result["list1000_delta_bytes"] = round(recording.delta_bytes / max(1, recording.deltas))
    return result


def run(duration: float) -> dict[str, float]:
    with redis_server() as url:
        return trio.run(measure, duration, url)
