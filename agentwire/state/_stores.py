"""State stores: the protocol, the in-memory store and the SQLite store.

A store keeps, per agent, the last snapshot and the deltas written since
(:class:`~agentwire.state.StoredState`), and accepts a write only if it is
based on the current version (``check_write``), atomically.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Literal, Protocol, TypeVar, runtime_checkable

import trio

from .._ids import AgentId
from ._log import Change, Snapshot, StateLog, StoredState, check_write

__all__ = [
    "MemoryStateStore",
    "SQLiteStateStore",
    "StateStore",
    "open_sqlite_store",
    "open_state_store",
    "state_store_spec",
]

logger = logging.getLogger("agentwire.state")

T = TypeVar("T")


@runtime_checkable
class StateStore(Protocol):
    """Where agents' versioned state lives."""

    async def load(self, agent_id: AgentId) -> StoredState:
        """The agent's snapshot and the deltas since (version 0: never written)."""
        ...

    async def commit(self, agent_id: AgentId, base_version: int, change: Change) -> int:
        """Write *change* if *base_version* is still current; return the new version.

        Raises :class:`~agentwire.state.StateConflictError` (carrying the
        current version) if another write came first.
        """
        ...


class MemoryStateStore:
    """A store in this process's memory: for tests, and for state that need not
    outlive the process (it survives an agent's reactivation, not the process)."""

    def __init__(self) -> None:
        self._logs: dict[AgentId, StateLog] = {}

    async def load(self, agent_id: AgentId) -> StoredState:
        await trio.lowlevel.checkpoint()
        log = self._logs.get(agent_id)
        return StoredState() if log is None else log.stored

    async def commit(self, agent_id: AgentId, base_version: int, change: Change) -> int:
        await trio.lowlevel.checkpoint()
        log = self._logs.get(agent_id)
        if log is None:
            log = StateLog(str(agent_id))
            version = log.write(base_version, change)  # raises before the log is kept
            self._logs[agent_id] = log
            return version
        return log.write(base_version, change)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS agentwire_state (
    agent TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    snapshot_version INTEGER NOT NULL,
    snapshot TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS agentwire_state_delta (
    agent TEXT NOT NULL,
    version INTEGER NOT NULL,
    patch TEXT NOT NULL,
    PRIMARY KEY (agent, version)
);
"""


class SQLiteStateStore:
    """A store in one SQLite file (WAL mode), shared by every process that opens it.

    Open it with :func:`open_sqlite_store`. Each call runs on a worker thread
    (``trio.to_thread.run_sync``) with the store's one connection, one call at
    a time; a write is one ``BEGIN IMMEDIATE`` transaction, so two processes
    (or two stores on one file) never both accept a write based on the same
    version.
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self._lock = trio.Lock()

    async def _run(self, function: Callable[[], T]) -> T:
        async with self._lock:
            return await trio.to_thread.run_sync(function)

    async def load(self, agent_id: AgentId) -> StoredState:
        return await self._run(lambda: self._load(str(agent_id)))

    async def commit(self, agent_id: AgentId, base_version: int, change: Change) -> int:
        if isinstance(change, Snapshot):
            text = json.dumps(change.state, separators=(",", ":"))
        else:
            text = json.dumps(change.patch, separators=(",", ":"))
        return await self._run(lambda: self._commit(str(agent_id), base_version, change, text))

    def _load(self, agent: str) -> StoredState:
        c = self._connection
        c.execute("BEGIN")
        try:
            row = c.execute(
                "SELECT version, snapshot_version, snapshot FROM agentwire_state WHERE agent = ?",
                (agent,),
            ).fetchone()
            if row is None:
                return StoredState()
            deltas = c.execute(
                "SELECT patch FROM agentwire_state_delta WHERE agent = ? ORDER BY version",
                (agent,),
            ).fetchall()
        finally:
            c.execute("COMMIT")
        version, snapshot_version, snapshot = row
        return StoredState(
            version, snapshot_version, json.loads(snapshot), tuple(json.loads(d) for (d,) in deltas)
        )

    def _commit(self, agent: str, base_version: int, change: Change, text: str) -> int:
        c = self._connection
        c.execute("BEGIN IMMEDIATE")
        try:
            row = c.execute(
                "SELECT version FROM agentwire_state WHERE agent = ?", (agent,)
            ).fetchone()
            version = check_write(agent, 0 if row is None else row[0], base_version, change)
            if isinstance(change, Snapshot):
                c.execute(
                    "INSERT OR REPLACE INTO agentwire_state VALUES (?, ?, ?, ?)",
                    (agent, version, version, text),
                )
                c.execute("DELETE FROM agentwire_state_delta WHERE agent = ?", (agent,))
            else:
                c.execute(
                    "UPDATE agentwire_state SET version = ? WHERE agent = ?", (version, agent)
                )
                c.execute(
                    "INSERT INTO agentwire_state_delta VALUES (?, ?, ?)", (agent, version, text)
                )
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")
        return version

    def _close(self) -> None:
        self._connection.close()


def _connect(path: str, synchronous: str, busy_timeout: float) -> sqlite3.Connection:
    connection = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={synchronous}")
        connection.executescript(_SCHEMA)
    except BaseException:
        connection.close()
        raise
    return connection


@asynccontextmanager
async def open_sqlite_store(
    path: str | os.PathLike[str],
    *,
    synchronous: Literal["normal", "full"] = "normal",
    busy_timeout: float = 10.0,
) -> AsyncIterator[SQLiteStateStore]:
    """``async with open_sqlite_store("state.db") as store:`` a store in that file
    (created if missing), closed when the block ends.

    WAL mode. ``synchronous="normal"`` (default): an accepted write survives
    the process's death, not necessarily a power loss (the last writes may be
    lost then); ``"full"`` syncs each write to disk. *busy_timeout*: how long
    a write waits for another process's write transaction before failing with
    ``sqlite3.OperationalError``.
    """
    if synchronous not in ("normal", "full"):
        raise ValueError(f"synchronous must be 'normal' or 'full', not {synchronous!r}")
    connection = await trio.to_thread.run_sync(
        _connect, os.fspath(path), synchronous.upper(), busy_timeout
    )
    store = SQLiteStateStore(connection)
    try:
        yield store
    finally:
        with trio.CancelScope(shield=True):
            async with store._lock:
                await trio.to_thread.run_sync(store._close)


def state_store_spec(spec: str) -> str:
    """*spec* if it names a store (see :func:`open_state_store`), else ``ValueError``."""
    if (
        spec == "memory"
        or (spec.startswith("sqlite:") and len(spec) > len("sqlite:"))
        or spec.startswith(("redis://", "rediss://"))
    ):
        return spec
    raise ValueError(
        f"a state store is 'memory', 'sqlite:PATH' or a redis:// or rediss:// URL, not {spec!r}"
    )


@asynccontextmanager
async def open_state_store(spec: str) -> AsyncIterator[StateStore]:
    """The store *spec* names, open for the block: ``memory``, ``sqlite:PATH`` or a
    ``redis://`` / ``rediss://`` URL (what ``agentwire gateway --state-store`` takes)."""
    if state_store_spec(spec) == "memory":
        yield MemoryStateStore()
    elif spec.startswith("sqlite:"):
        async with open_sqlite_store(spec[len("sqlite:") :]) as sqlite_store:
            yield sqlite_store
    else:
        from ._redis import open_redis_store

        async with open_redis_store(spec) as redis_store:
            yield redis_store
