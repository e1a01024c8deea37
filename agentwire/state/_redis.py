"""The Redis state store (coredis, imported only when a store is opened).

One hash per agent, ``<namespace><type>/<key>``: ``v`` (the version), ``sv``
(the snapshot's version), ``s`` (the snapshot's JSON) and ``d:<n>`` (the
JSON Patch of version *n*, for each version after the snapshot). One key per
agent, so every command touches one hash slot: the store works on a Redis
cluster as on one server.

A write is one round trip: a Lua script that reads ``v``, compares it with
the write's base version and appends the delta (or replaces the hash by the
snapshot) only if they are equal -- compare-and-set, atomically on the
server. A refused write returns the current version, and the Python side
turns it into the same :class:`~agentwire.state.StateConflictError` (or
:class:`~agentwire.state.StateError`) every store raises (``check_write``).
A load is one ``HGETALL``.

Every call is bounded by the store's ``command_timeout``: an unreachable server
raises :class:`StateStoreUnavailableError` to the caller within it, and the
next call connects again.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import trio

from .._errors import AgentwireError
from .._ids import AgentId
from ._log import Change, Snapshot, StateStoreUnavailableError, StoredState, check_write

if TYPE_CHECKING:
    import coredis

__all__ = ["RedisStateStore", "open_redis_store"]

logger = logging.getLogger("agentwire.state")

T = TypeVar("T")

CLUSTER_EXTRA = "pip install 'trio-agentwire[cluster]'"

# KEYS[1]: the agent's hash. ARGV: base version, "s" (snapshot) or "d" (delta), the JSON.
# Returns {1, new version} if written, else {0, current version}.
_COMPARE_AND_SET = """
local current = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
local base = tonumber(ARGV[1])
if current ~= base then
  return {0, current}
end
local version = base + 1
if ARGV[2] == 's' then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'v', version, 'sv', version, 's', ARGV[3])
elseif current == 0 then
  return {0, current}
else
  redis.call('HSET', KEYS[1], 'v', version, 'd:' .. version, ARGV[3])
end
return {1, version}
"""


class RedisStateStore:
    """A store on a Redis server or cluster; open it with :func:`open_redis_store`."""

    def __init__(self, client: coredis.Redis[bytes], namespace: str, timeout: float) -> None:
        self._client = client
        self._namespace = namespace
        self._timeout = timeout
        self._script = client.register_script(_COMPARE_AND_SET)
        self._where = client.connection_pool.location

    def key(self, agent_id: AgentId) -> str:
        """The hash holding *agent_id*'s state."""
        return f"{self._namespace}{agent_id}"

    async def load(self, agent_id: AgentId) -> StoredState:
        fields = await self._call(self._client.hgetall(self.key(agent_id)))
        if not fields:
            return StoredState()
        version = int(fields[b"v"])
        snapshot_version = int(fields[b"sv"])
        deltas = tuple(
            json.loads(fields[b"d:%d" % n]) for n in range(snapshot_version + 1, version + 1)
        )
        return StoredState(version, snapshot_version, json.loads(fields[b"s"]), deltas)

    async def commit(self, agent_id: AgentId, base_version: int, change: Change) -> int:
        if isinstance(change, Snapshot):
            kind, text = "s", json.dumps(change.state, separators=(",", ":"))
        else:
            kind, text = "d", json.dumps(change.patch, separators=(",", ":"))
        call: Awaitable[Any] = self._script(
            keys=[self.key(agent_id)], args=[base_version, kind, text]
        )
        written, version = await self._call(call)
        if not written:
            check_write(str(agent_id), int(version), base_version, change)  # raises
            raise AssertionError("the compare-and-set script refused a valid write")
        return int(version)

    async def _call(self, request: Awaitable[T]) -> T:
        import coredis.exceptions

        try:
            with trio.fail_after(self._timeout):
                return await request
        except (trio.TooSlowError, coredis.exceptions.ConnectionError) as exc:
            raise self._unavailable(exc) from None
        except BaseExceptionGroup as group:
            outage = (coredis.exceptions.ConnectionError, OSError)
            if group.split(outage)[1] is not None:
                raise
            raise self._unavailable(group.exceptions[0]) from None

    def _unavailable(self, exc: BaseException) -> StateStoreUnavailableError:
        reason = "no answer" if isinstance(exc, trio.TooSlowError) else str(exc) or repr(exc)
        return StateStoreUnavailableError(
            f"the Redis state store at {self._where} is unavailable ({reason}; a call waits "
            f"at most {self._timeout:g} s): the state may not be committed; retry once the "
            "server is back"
        )


@asynccontextmanager
async def open_redis_store(
    url: str,
    *,
    namespace: str = "agentwire:state:",
    command_timeout: float = 5.0,
    ssl_context: ssl.SSLContext | None = None,
    max_connections: int = 64,
) -> AsyncIterator[RedisStateStore]:
    """``async with open_redis_store("redis://:password@host:6379/0") as store:`` a
    store on that Redis server, its connections closed when the block ends.

    *url*: ``redis://`` or ``rediss://`` (TLS; *ssl_context* to trust a private
    CA), a user and password in it as usual. *namespace*: the prefix of every
    key (one hash per agent). *command_timeout*: seconds each load or commit may take
    before :class:`StateStoreUnavailableError` (the server is down or
    unreachable); the store connects again on the next call. Needs coredis
    (the ``cluster`` extra).
    """
    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "rediss"):
        raise ValueError(f"a Redis state store URL starts with redis:// or rediss://, not {url!r}")
    if not command_timeout > 0:
        raise ValueError(f"command_timeout must be positive, not {command_timeout!r}")
    try:
        import coredis
    except ModuleNotFoundError as exc:
        raise AgentwireError(
            f"the Redis state store needs {exc.name}, which is not installed: {CLUSTER_EXTRA}"
        ) from exc
    options: dict[str, Any] = {
        "stream_timeout": command_timeout,
        "connect_timeout": command_timeout,
        "max_connections": max_connections,
    }
    if ssl_context is not None:
        options["ssl_context"] = ssl_context
    client: coredis.Redis[bytes] = coredis.Redis.from_url(
        url, decode_responses=False, verify_version=False, **options
    )
    try:
        async with client:
            yield RedisStateStore(client, namespace, command_timeout)
    except BaseExceptionGroup as group:  # coredis's task group wraps what the body raised
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
