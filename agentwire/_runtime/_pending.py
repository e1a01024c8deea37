"""The pending-request map: callers waiting for the response to a request.

One map serves every RPC path: the in-process runtime keys it by a local
counter, the gRPC worker by the protocol's ``request_id``. A caller enters
``with pending.register(key) as waiter:``, sends its request, then
``await waiter.wait()``. Whoever gets the response calls
``pending.resolve(key, outcome)``.

Invariants (tests/test_pending.py drives random operations and checks them):

1. ``key in map`` iff exactly one caller is inside ``register(key)`` and no
   outcome has been delivered to it yet.
2. A caller leaves ``register`` exactly once, and leaving removes its key:
   whether it got a value, an error, was cancelled (cancel scope, deadline,
   KeyboardInterrupt) or raised before waiting. So the map is empty whenever
   no caller is inside ``register``: nothing in it can outlive its caller.
3. A caller that stops waiting before its outcome arrived is *abandoned*: its
   entry is removed at once (inside trio's abort callback, before the
   cancellation is delivered) and its ``on_abandon`` hook runs exactly once;
   the runtime uses the hook to cancel the handler's work for that request.
4. ``resolve`` for a key not in the map (a late or unknown response) changes
   nothing except the ``late`` counter, and returns ``False``.
5. ``fail_all`` delivers an error to every entry and empties the map;
   ``close`` does the same and makes every later ``register`` raise at once,
   so after close no caller can wait forever.
6. Counters only grow; ``registered == resolved + failed + abandoned +
   len(map)`` at every point between calls.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from types import TracebackType
from typing import Generic, TypeVar

import attrs
import outcome
import trio

__all__ = ["PendingMap", "PendingStatistics", "Waiter"]

logger = logging.getLogger("agentwire.runtime")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@attrs.frozen
class PendingStatistics:
    """Counters of a :class:`PendingMap` (see its invariants)."""

    pending: int
    """Callers waiting right now."""
    registered: int
    """Requests ever registered."""
    resolved: int
    """Outcomes delivered by ``resolve``."""
    failed: int
    """Callers failed by ``fail_all``/``close``."""
    abandoned: int
    """Callers that left before their outcome arrived (cancelled, or raised)."""
    late: int
    """Outcomes that arrived for a key no longer (or never) waiting: dropped."""
    closed: bool


class Waiter(Generic[K, V]):
    """One caller's slot in a :class:`PendingMap`; a context manager.

    Entering inserts the key; leaving removes it if it is still there.
    """

    __slots__ = ("_map", "_on_abandon", "_outcome", "_task", "done", "key")

    def __init__(
        self, pending: PendingMap[K, V], key: K, on_abandon: Callable[[], object] | None
    ) -> None:
        self._map = pending
        self.key = key
        self._on_abandon = on_abandon
        self._outcome: outcome.Outcome[V] | None = None
        self._task: trio.lowlevel.Task | None = None
        self.done = False
        """Whether an outcome was delivered (or the caller was abandoned)."""

    def __enter__(self) -> Waiter[K, V]:
        self._map._insert(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.done:
            self._map._abandon(self)

    def _deliver(self, result: outcome.Outcome[V]) -> None:
        # Called by the map after it removed our key.
        self.done = True
        task = self._task
        if task is None:
            self._outcome = result
        else:
            self._task = None
            trio.lowlevel.reschedule(task, result)

    async def wait(self) -> V:
        """Wait for the outcome: return the value or raise the error.

        Cancellation (a cancel scope, a deadline) removes the entry at once,
        runs the ``on_abandon`` hook, and raises ``trio.Cancelled`` as usual.
        """
        result = self._outcome
        if result is not None:
            self._outcome = None
            return result.unwrap()
        if self.done:
            raise RuntimeError("this waiter was already abandoned")
        self._task = trio.lowlevel.current_task()

        def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
            self._task = None
            self._map._abandon(self)
            return trio.lowlevel.Abort.SUCCEEDED

        value: V = await trio.lowlevel.wait_task_rescheduled(abort)
        return value


class PendingMap(Generic[K, V]):
    """Callers waiting for responses, keyed by request id. Not thread-safe.

    ``register(key, on_abandon=...)`` gives a :class:`Waiter`; ``resolve``
    delivers an ``outcome.Value``/``outcome.Error``; ``fail_all`` and
    ``close`` fail everyone. See the module invariants.
    """

    def __init__(self) -> None:
        self._entries: dict[K, Waiter[K, V]] = {}
        self._closed_error: Callable[[K], BaseException] | None = None
        self._registered = 0
        self._resolved = 0
        self._failed = 0
        self._abandoned = 0
        self._late = 0

    # -- callers ---------------------------------------------------------------

    def register(self, key: K, *, on_abandon: Callable[[], object] | None = None) -> Waiter[K, V]:
        """A waiter for *key*; use it as ``with pending.register(key) as w:``.

        *on_abandon* runs (once, synchronously) if the caller stops waiting
        before an outcome arrived. Entering raises the close error if the map
        is closed, and ``ValueError`` if *key* is already pending.
        """
        return Waiter(self, key, on_abandon)

    def _insert(self, waiter: Waiter[K, V]) -> None:
        if self._closed_error is not None:
            waiter.done = True
            raise self._closed_error(waiter.key)
        key = waiter.key
        if key in self._entries:
            waiter.done = True
            raise ValueError(f"request {key!r} is already pending")
        self._entries[key] = waiter
        self._registered += 1

    def _abandon(self, waiter: Waiter[K, V]) -> None:
        if waiter.done:
            return
        waiter.done = True
        if self._entries.get(waiter.key) is waiter:
            del self._entries[waiter.key]
        self._abandoned += 1
        hook = waiter._on_abandon
        if hook is not None:
            try:
                hook()
            except Exception:
                logger.exception("on_abandon hook for request %r failed", waiter.key)

    # -- responders ------------------------------------------------------------

    def resolve(self, key: K, result: outcome.Outcome[V]) -> bool:
        """Deliver *result* to the caller waiting on *key*.

        Returns ``False`` (and counts a late response) if nobody waits on it.
        """
        waiter = self._entries.pop(key, None)
        if waiter is None:
            self._late += 1
            return False
        self._resolved += 1
        waiter._deliver(result)
        return True

    def set_value(self, key: K, value: V) -> bool:
        """``resolve(key, outcome.Value(value))``."""
        return self.resolve(key, outcome.Value(value))

    def set_error(self, key: K, error: BaseException) -> bool:
        """``resolve(key, outcome.Error(error))``."""
        return self.resolve(key, outcome.Error(error))

    def fail_all(self, error: Callable[[K], BaseException]) -> int:
        """Fail every waiting caller with ``error(key)``; return how many."""
        entries = self._entries
        self._entries = {}
        for key, waiter in entries.items():
            waiter._deliver(outcome.Error(error(key)))
        self._failed += len(entries)
        return len(entries)

    def close(self, error: Callable[[K], BaseException]) -> int:
        """``fail_all(error)``, then make every later ``register`` raise ``error(key)``."""
        self._closed_error = error
        return self.fail_all(error)

    # -- introspection -----------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed_error is not None

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def keys(self) -> list[K]:
        return list(self._entries)

    def statistics(self) -> PendingStatistics:
        return PendingStatistics(
            pending=len(self._entries),
            registered=self._registered,
            resolved=self._resolved,
            failed=self._failed,
            abandoned=self._abandoned,
            late=self._late,
            closed=self._closed_error is not None,
        )
