"""The RPCs the gateway forwarded and has not settled, for ``_routing.py``.

Sans-IO bookkeeping behind the routing table's I4 and I5 (see there): the
entries by gateway request id, an index by connection, and a heap of
deadlines with lazy deletion (a heap entry is live while its request is
pending with that deadline; the heap is rebuilt when it is more than twice
the size it needs). Gateway request ids (``gw1``, ``gw2``...) come from a
counter and are never reused.
"""

from __future__ import annotations

import heapq
import math

import attrs

from .._proto import agent_worker_pb2 as pb
from .._wire import TIMEOUT_METADATA_KEY
from ._registry import Conn, ConnKind

__all__ = ["InFlight", "Pending", "earlier", "request_timeout"]


@attrs.define(slots=True, eq=False)
class Pending:
    caller: Conn
    caller_request_id: str
    target: Conn
    target_agent: str  # "type/key", for error messages
    deadline: float | None
    timeout: float = math.inf
    callers_timeout: bool = False  # the caller asked for less than rpc_timeout


class InFlight:
    """Forwarded, unsettled RPCs: ``entries`` by gateway id, by connection, by deadline."""

    def __init__(self) -> None:
        self.entries: dict[str, Pending] = {}
        self._by_conn: dict[Conn, set[str]] = {}
        self._deadlines: list[tuple[float, int, str]] = []  # (deadline, seq, gid) heap
        self._next = 0

    def __len__(self) -> int:
        return len(self.entries)

    def new_id(self) -> str:
        self._next += 1
        return f"gw{self._next}"

    def add(self, gid: str, p: Pending) -> None:
        self.entries[gid] = p
        if p.deadline is not None:
            heapq.heappush(self._deadlines, (p.deadline, int(gid[2:]), gid))  # _id_order
            if len(self._deadlines) > 2 * len(self.entries) + 64:  # (no call per request)
                self._compact()
        self._by_conn.setdefault(p.caller, set()).add(gid)
        self._by_conn.setdefault(p.target, set()).add(gid)

    def settle(self, gid: str, p: Pending) -> None:
        """*p* (pending as *gid*) got its answer: forget it."""
        del self.entries[gid]
        self._unindex(p.caller, gid)
        self._unindex(p.target, gid)
        if len(self._deadlines) > 2 * len(self.entries) + 64:
            self._compact()

    def drop_conn(self, conn: Conn) -> list[Pending]:
        """Forget every request *conn* sent or serves; those it serves for
        another caller are returned (in id order) to be failed."""
        stranded: list[Pending] = []
        for gid in sorted(self._by_conn.pop(conn, ()), key=_id_order):
            p = self.entries.pop(gid)
            self._unindex(p.caller if p.target == conn else p.target, gid)
            if p.target == conn and p.caller != conn:
                stranded.append(p)
        if len(self._deadlines) > 2 * len(self.entries) + 64:
            self._compact()
        return stranded

    def take_all(self) -> list[Pending]:
        """Forget and return every pending request, in id order."""
        taken = [self.entries[gid] for gid in sorted(self.entries, key=_id_order)]
        self.entries.clear()
        self._by_conn.clear()
        self._deadlines.clear()
        return taken

    def next_deadline(self) -> float | None:
        """The earliest live deadline (drops stale heap entries)."""
        heap = self._deadlines
        while heap:
            deadline, _, gid = heap[0]
            p = self.entries.get(gid)
            if p is not None and p.deadline == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    def pop_expired(self, now: float) -> list[Pending]:
        """Forget and return every request whose deadline is at or before *now*."""
        expired: list[Pending] = []
        while (deadline := self.next_deadline()) is not None and deadline <= now:
            _, _, gid = heapq.heappop(self._deadlines)
            p = self.entries[gid]
            self.settle(gid, p)
            expired.append(p)
        return expired

    def _unindex(self, conn: Conn, gid: str) -> None:
        gids = self._by_conn.get(conn)
        if gids is not None:
            gids.discard(gid)
            if not gids:
                del self._by_conn[conn]

    def _compact(self) -> None:
        """Rebuild the heap from the live deadlines (called when it holds more
        than ``2 * len(entries) + 64`` entries)."""
        self._deadlines = [
            (p.deadline, _id_order(gid), gid)
            for gid, p in self.entries.items()
            if p.deadline is not None
        ]
        heapq.heapify(self._deadlines)

    def check_invariants(self, conns: set[Conn]) -> None:
        """I4 and the heap half of I5 (``conns``: the live connections)."""
        index: dict[Conn, set[str]] = {}
        assert len(self._deadlines) <= 2 * len(self.entries) + 64
        for gid, p in self.entries.items():
            assert p.caller in conns
            assert p.target in conns
            assert p.caller.kind is ConnKind.DATA
            assert p.target.kind is ConnKind.DATA
            index.setdefault(p.caller, set()).add(gid)
            index.setdefault(p.target, set()).add(gid)
            if p.deadline is not None:
                assert (p.deadline, _id_order(gid), gid) in self._deadlines
        assert index == self._by_conn


def earlier(a: float | None, b: float | None) -> float | None:
    """The earlier of two deadlines, either of which may be None (none).

    Called after every routed message: plain comparisons, no list or ``min()``.
    """
    if a is None or (b is not None and b < a):
        return b
    return a


def request_timeout(request: pb.RpcRequest, rpc_timeout: float | None) -> tuple[float, bool]:
    """How long the gateway waits for the answer to *request* (``inf``: for
    ever), and whether that is the caller's own time (``TIMEOUT_METADATA_KEY``,
    sooner than *rpc_timeout*) rather than the gateway's."""
    timeout = math.inf if rpc_timeout is None else rpc_timeout
    asked = request.metadata.get(TIMEOUT_METADATA_KEY)
    if asked is None:
        return timeout, False
    try:
        seconds = float(asked)
    except ValueError:
        return timeout, False  # not ours to judge; keep the gateway's own timeout
    if not seconds > 0.0:  # (negative or NaN: none left; no max() call per request)
        seconds = 0.0
    return (seconds, True) if seconds < timeout else (timeout, False)


def _id_order(gid: str) -> int:
    return int(gid[2:])
