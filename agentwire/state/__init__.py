"""Versioned, durable agent state.

``class Counter(StatefulAgent)`` keeps ``self.state`` (a JSON object) in a
:class:`StateStore`: loaded before the agent's first message, committed after
each handled message (or on ``await self.checkpoint()``) as a JSON Patch
against the last committed version, or a whole snapshot. Every write names
the version it was based on; a store refuses a stale one with
:class:`StateConflictError`. Stores: :class:`MemoryStateStore` (tests),
:func:`open_sqlite_store` (one SQLite file, WAL mode) and
:func:`open_redis_store` (Redis; coredis is imported when it is opened). An
agent registered without a store on an agentwire worker keeps its state in
the gateway's (``open_gateway(state_store=...)``), over the control channel
(``agentwire.state.v1`` messages). See the README, "Agent state".
"""

from __future__ import annotations

from ._agent import StatefulAgent
from ._log import (
    Change,
    Delta,
    Snapshot,
    StateConflictError,
    StateError,
    StateStoreUnavailableError,
    StoredState,
)
from ._redis import RedisStateStore, open_redis_store
from ._stores import MemoryStateStore, SQLiteStateStore, StateStore, open_sqlite_store

__all__ = [
    "Change",
    "Delta",
    "MemoryStateStore",
    "RedisStateStore",
    "SQLiteStateStore",
    "Snapshot",
    "StateConflictError",
    "StateError",
    "StateStore",
    "StateStoreUnavailableError",
    "StatefulAgent",
    "StoredState",
    "open_redis_store",
    "open_sqlite_store",
]
