"""The cluster's shared state and traffic in Redis 7 (through coredis).

Keys, all under ``prefix`` (default ``agentwire:``):

* ``lease:<gateway>``: a gateway's lease, renewed by its heartbeat (PX TTL);
  ``gateways``: the set of gateway ids that joined and have not been cleaned up.
* ``types``: hash agent type -> owner (``gateway \\x1f client``).
* ``subs`` / ``subdata`` / ``subkeyof``: hashes subscription id -> owner,
  serialized ``agents.Subscription``, content key; ``subkeys``: content key
  -> id (AutoGen's duplicate rule: same id, or same kind, agent type and topic).
* ``version``: incremented by every change; ``changes``: a stream of the
  changes (field ``v`` the version each produced), trimmed to about 10,000.
* ``inbox:<gateway>``: a gateway's inbox stream (consumer group ``gw``, read
  without acknowledgement); each entry carries one batch of
  ``agents.Message`` s from one sender; the reader deletes what it read.

Every change of the shared state is one Lua script: it checks, writes,
increments ``version`` and appends to ``changes`` atomically. An owner whose
gateway has no lease counts as gone (its claims may be taken over); the first
gateway whose heartbeat finds a gateway without a lease removes everything of
it (``drop``), idempotently.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Sequence
from typing import Any

import coredis

from ._view import Change, Owner, Snapshot

__all__ = ["RedisBackend", "pack_batch", "unpack_batch"]

SEP = "\x1f"
GROUP = "gw"
MAX_CHANGES = 10_000

_HELPERS = """
local P = ARGV[1]
local function gw_of(owner) return string.match(owner, '^([^\\31]*)') end
local function alive(owner) return redis.call('EXISTS', P .. 'lease:' .. gw_of(owner)) == 1 end
local function change(...)
  local v = redis.call('INCR', P .. 'version')
  redis.call('XADD', P .. 'changes', 'MAXLEN', '~', MAX_CHANGES, '*', 'v', v, ...)
  return v
end
local function unsubscribe(id)
  local key = redis.call('HGET', P .. 'subkeyof', id)
  if key and redis.call('HGET', P .. 'subkeys', key) == id then
    redis.call('HDEL', P .. 'subkeys', key)
  end
  redis.call('HDEL', P .. 'subs', id)
  redis.call('HDEL', P .. 'subdata', id)
  redis.call('HDEL', P .. 'subkeyof', id)
end
local function drop(gw)
  local types = redis.call('HGETALL', P .. 'types')
  for i = 1, #types, 2 do
    if gw_of(types[i + 1]) == gw then redis.call('HDEL', P .. 'types', types[i]) end
  end
  local subs = redis.call('HGETALL', P .. 'subs')
  for i = 1, #subs, 2 do
    if gw_of(subs[i + 1]) == gw then unsubscribe(subs[i]) end
  end
  redis.call('SREM', P .. 'gateways', gw)
  redis.call('DEL', P .. 'inbox:' .. gw)
  change('op', 'drop', 'o', gw .. '\\31')
end
""".replace("MAX_CHANGES", str(MAX_CHANGES))

# ARGV: prefix, me, ttl ms. -> {lease was live (1/0), live gateways, version}
_HEARTBEAT = (
    _HELPERS
    + """
local me = ARGV[2]
local had = redis.call('SET', P .. 'lease:' .. me, '1', 'PX', ARGV[3], 'GET')
redis.call('SADD', P .. 'gateways', me)
local live = {}
for _, gw in ipairs(redis.call('SMEMBERS', P .. 'gateways')) do
  if redis.call('EXISTS', P .. 'lease:' .. gw) == 1 then table.insert(live, gw) else drop(gw) end
end
return {had and 1 or 0, live, tonumber(redis.call('GET', P .. 'version') or '0')}
"""
)

# ARGV: prefix, me. Leaves at once (a graceful shutdown).
_LEAVE = (
    _HELPERS
    + """
redis.call('DEL', P .. 'lease:' .. ARGV[2])
drop(ARGV[2])
return 0
"""
)

# ARGV: prefix, me, type, owner, expected owner ('' none). -> 0 ok, -1 not a member, or the owner
_CLAIM_TYPE = (
    _HELPERS
    + """
if redis.call('EXISTS', P .. 'lease:' .. ARGV[2]) == 0 then return -1 end
local cur = redis.call('HGET', P .. 'types', ARGV[3])
if cur and cur ~= ARGV[5] and alive(cur) then return cur end
redis.call('HSET', P .. 'types', ARGV[3], ARGV[4])
change('op', 'type+', 'k', ARGV[3], 'o', ARGV[4])
return 0
"""
)

# ARGV: prefix, type, owner. Removes the claim only if it is still *owner*'s.
_RELEASE_TYPE = (
    _HELPERS
    + """
if redis.call('HGET', P .. 'types', ARGV[2]) ~= ARGV[3] then return 0 end
redis.call('HDEL', P .. 'types', ARGV[2])
change('op', 'type-', 'k', ARGV[2])
return 1
"""
)

# ARGV: prefix, me, id, owner, data, content key ('' none), expected owner ('' none).
# -> 0 ok, -1 not a member, 1 duplicate
_ADD_SUB = (
    _HELPERS
    + """
if redis.call('EXISTS', P .. 'lease:' .. ARGV[2]) == 0 then return -1 end
local id, key = ARGV[3], ARGV[6]
local cur = redis.call('HGET', P .. 'subs', id)
if cur and cur ~= ARGV[7] and alive(cur) then return 1 end
if key ~= '' then
  local other = redis.call('HGET', P .. 'subkeys', key)
  if other and other ~= id then
    local o = redis.call('HGET', P .. 'subs', other)
    if o and alive(o) then return 1 end
  end
  redis.call('HSET', P .. 'subkeys', key, id)
  redis.call('HSET', P .. 'subkeyof', id, key)
end
redis.call('HSET', P .. 'subs', id, ARGV[4])
redis.call('HSET', P .. 'subdata', id, ARGV[5])
change('op', 'sub+', 'k', id, 'o', ARGV[4], 'd', ARGV[5])
return 0
"""
)

# ARGV: prefix, id, owner ('' any). -> 1 removed, 0 unknown
_REMOVE_SUB = (
    _HELPERS
    + """
local id = ARGV[2]
local cur = redis.call('HGET', P .. 'subs', id)
if not cur or (ARGV[3] ~= '' and cur ~= ARGV[3]) then return 0 end
unsubscribe(id)
change('op', 'sub-', 'k', id)
return 1
"""
)

# ARGV: prefix. -> {version, last change id, types (flat), subs (flat), subdata (flat)}
_SNAPSHOT = """
local P = ARGV[1]
local last = redis.call('XREVRANGE', P .. 'changes', '+', '-', 'COUNT', 1)
local last_id = '0-0'
if #last > 0 then last_id = last[1][1] end
return {tonumber(redis.call('GET', P .. 'version') or '0'), last_id,
        redis.call('HGETALL', P .. 'types'), redis.call('HGETALL', P .. 'subs'),
        redis.call('HGETALL', P .. 'subdata')}
"""

# ARGV: prefix, to, sender, batch. -> 1 sent, 0 the receiver has no lease
_SEND = """
local P = ARGV[1]
if redis.call('EXISTS', P .. 'lease:' .. ARGV[2]) == 0 then return 0 end
redis.call('XADD', P .. 'inbox:' .. ARGV[2], '*', 'g', ARGV[3], 'm', ARGV[4])
return 1
"""

_LENGTH = struct.Struct(">I")


def pack_batch(messages: Sequence[bytes]) -> bytes:
    """Messages as one blob: each a 4-byte big-endian length and the bytes."""
    return b"".join(_LENGTH.pack(len(m)) + m for m in messages)


def unpack_batch(blob: bytes) -> list[bytes]:
    """The messages of :func:`pack_batch`; ``struct.error`` if *blob* is cut short."""
    messages = []
    offset = 0
    view = memoryview(blob)
    while offset < len(blob):
        (length,) = _LENGTH.unpack_from(blob, offset)
        offset += 4
        if offset + length > len(blob):
            raise struct.error(f"a batch ends inside a message of {length} bytes")
        messages.append(bytes(view[offset : offset + length]))
        offset += length
    return messages


def encode_owner(owner: Owner) -> str:
    return owner.gateway + SEP + owner.client


def decode_owner(raw: bytes | str) -> Owner:
    text = raw.decode() if isinstance(raw, bytes) else raw
    gateway, _, client = text.partition(SEP)
    return Owner(gateway, client)


class NotAMember(Exception):
    """This gateway's lease is gone: it must re-join before it claims anything."""


class RedisBackend:
    """One gateway's commands to the cluster's Redis (see the module docstring).

    Raises coredis errors (``coredis.exceptions.ConnectionError``,
    ``TimeoutError``) when Redis cannot be reached.
    """

    def __init__(self, client: coredis.Redis[Any], me: str, prefix: str = "agentwire:") -> None:
        self.client = client
        self.me = me
        self.prefix = prefix
        self.inbox = f"{prefix}inbox:{me}"
        self._changes = f"{prefix}changes"
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._leave = client.register_script(_LEAVE)
        self._claim = client.register_script(_CLAIM_TYPE)
        self._release = client.register_script(_RELEASE_TYPE)
        self._add_sub = client.register_script(_ADD_SUB)
        self._remove_sub = client.register_script(_REMOVE_SUB)
        self._snapshot = client.register_script(_SNAPSHOT)
        self._send = client.register_script(_SEND)

    # ------------------------------------------------------------ membership

    async def heartbeat(self, lease: float) -> tuple[bool, list[str], int]:
        """Renew this gateway's lease (and clean up gateways without one).
        Returns (the lease was still live, the live gateways, the version)."""
        reply: Any = await self._heartbeat(args=[self.prefix, self.me, int(lease * 1000)])
        had, live, version = reply
        return bool(had), [g.decode() for g in live], int(version)

    async def leave(self) -> None:
        await self._leave(args=[self.prefix, self.me])

    async def ensure_inbox(self) -> None:
        """Create this gateway's inbox and its consumer group (idempotent)."""
        with contextlib.suppress(coredis.exceptions.StreamDuplicateConsumerGroupError):
            await self.client.xgroup_create(self.inbox, GROUP, "0", mkstream=True)

    # ------------------------------------------------------------ shared state

    async def snapshot(self) -> tuple[Snapshot, bytes]:
        """The whole shared state, and the id of the last change it includes."""
        reply: Any = await self._snapshot(args=[self.prefix])
        version, last_id, types, subs, subdata = reply
        data = dict(_pairs(subdata))
        snapshot = Snapshot(
            int(version),
            {k.decode(): decode_owner(v) for k, v in _pairs(types)},
            {k.decode(): (decode_owner(v), data.get(k, b"")) for k, v in _pairs(subs)},
        )
        return snapshot, last_id

    async def changes(self, after: bytes, block_ms: int) -> list[tuple[bytes, Change]]:
        """The changes after stream id *after*, waiting up to *block_ms* for one."""
        found: Any = await self.client.xread({self._changes: after}, count=1000, block=block_ms)
        if not found:
            return []
        out = []
        for entries in found.values():
            for entry in entries:
                fields = entry.field_values
                owner = fields.get(b"o")
                out.append(
                    (
                        entry.identifier,
                        Change(
                            int(fields[b"v"]),
                            fields[b"op"].decode(),
                            fields.get(b"k", b"").decode(),
                            None if owner is None else decode_owner(owner),
                            fields.get(b"d", b""),
                        ),
                    )
                )
        return out

    async def claim_type(
        self, agent_type: str, owner: Owner, expected: Owner | None
    ) -> Owner | None:
        """Claim *agent_type* for *owner*: None on success, else its live owner.
        *expected*: a claim that may be overwritten (this gateway's own)."""
        result: Any = await self._claim(
            args=[
                self.prefix,
                self.me,
                agent_type,
                encode_owner(owner),
                "" if expected is None else encode_owner(expected),
            ]
        )
        if result == 0:
            return None
        if result == -1:
            raise NotAMember()
        return decode_owner(result)

    async def release_type(self, agent_type: str, owner: Owner) -> None:
        await self._release(args=[self.prefix, agent_type, encode_owner(owner)])

    async def add_subscription(
        self, sub_id: str, owner: Owner, data: bytes, key: str, expected: Owner | None
    ) -> bool:
        """Record a subscription; False if it duplicates a live one (by id or content)."""
        result: Any = await self._add_sub(
            args=[
                self.prefix,
                self.me,
                sub_id,
                encode_owner(owner),
                data,
                key,
                "" if expected is None else encode_owner(expected),
            ]
        )
        if result == -1:
            raise NotAMember()
        return bool(result == 0)

    async def remove_subscription(self, sub_id: str, owner: Owner | None = None) -> bool:
        """Remove a subscription (only if *owner*'s, when given); False if unknown."""
        owner_text = "" if owner is None else encode_owner(owner)
        return bool(await self._remove_sub(args=[self.prefix, sub_id, owner_text]))

    # ------------------------------------------------------------ traffic

    async def send(self, gateway: str, batch: bytes) -> bool:
        """Append *batch* to *gateway*'s inbox; False if it has no lease (gone)."""
        sent: Any = await self._send(args=[self.prefix, gateway, self.me, batch])
        return bool(sent)

    async def read_inbox(
        self, count: int, block_ms: int, done: Sequence[bytes] = ()
    ) -> list[tuple[bytes, str, bytes]]:
        """Up to *count* batches (entry id, sender, batch), waiting up to
        *block_ms*; deletes the entries *done* first, in the same round trip.

        Entries are read without acknowledgement (``NOACK``): an inbox is
        deleted with its gateway, so nothing could ever claim a pending one,
        and each read is one reply (no separate reply for an acknowledgement
        waking the reader). The reader deletes what it read in batches."""
        try:
            if done:
                async with self.client.pipeline(transaction=False) as pipe:
                    pipe.xdel(self.inbox, done)
                    read = pipe.xreadgroup(
                        GROUP, "reader", {self.inbox: ">"}, count=count, block=block_ms, noack=True
                    )
                found: Any = await read
            else:
                found = await self.client.xreadgroup(
                    GROUP, "reader", {self.inbox: ">"}, count=count, block=block_ms, noack=True
                )
        except coredis.exceptions.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_inbox()  # cleaned up while this gateway was thought gone
            return []
        if not found:
            return []
        return [
            (e.identifier, e.field_values[b"g"].decode(), e.field_values[b"m"])
            for entries in found.values()
            for e in entries
        ]


def _pairs(flat: Sequence[Any]) -> list[tuple[Any, Any]]:
    return list(zip(flat[::2], flat[1::2], strict=True))
