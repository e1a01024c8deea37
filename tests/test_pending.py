"""The pending-request map: examples, and a stateful model check of its invariants."""

from __future__ import annotations

import math
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import outcome
import pytest
import trio
import trio.testing
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from agentwire import RuntimeClosedError
from agentwire._runtime._pending import PendingMap

# -- examples ------------------------------------------------------------------


async def test_resolve_value_reaches_waiter() -> None:
    pending: PendingMap[int, str] = PendingMap()
    results: list[str] = []

    async def caller() -> None:
        with pending.register(1) as waiter:
            results.append(await waiter.wait())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller)
        await trio.testing.wait_all_tasks_blocked()
        assert 1 in pending
        assert pending.set_value(1, "hello")
    assert results == ["hello"]
    assert len(pending) == 0
    assert pending.statistics().resolved == 1


async def test_resolve_before_wait_is_kept() -> None:
    pending: PendingMap[str, int] = PendingMap()
    with pending.register("r") as waiter:
        assert pending.set_value("r", 7)
        assert await waiter.wait() == 7
    assert len(pending) == 0


async def test_error_outcome_is_raised() -> None:
    pending: PendingMap[int, int] = PendingMap()
    with pending.register(1) as waiter:
        pending.resolve(1, outcome.Error(KeyError("boom")))
        with pytest.raises(KeyError, match="boom"):
            await waiter.wait()


async def test_cancel_removes_entry_at_once_and_runs_hook(autojump_clock: trio.abc.Clock) -> None:
    pending: PendingMap[int, int] = PendingMap()
    abandoned: list[int] = []
    seen_inside_hook: list[bool] = []

    def hook() -> None:
        seen_inside_hook.append(1 in pending)
        abandoned.append(1)

    with trio.move_on_after(5) as scope:
        with pending.register(1, on_abandon=hook) as waiter:
            await waiter.wait()
    assert scope.cancelled_caught
    assert abandoned == [1]
    assert seen_inside_hook == [False]
    assert len(pending) == 0
    # the late response is dropped and counted
    assert not pending.set_value(1, 3)
    stats = pending.statistics()
    assert (stats.abandoned, stats.late, stats.pending) == (1, 1, 0)


async def test_leaving_without_waiting_abandons() -> None:
    pending: PendingMap[int, int] = PendingMap()
    hooks: list[str] = []
    with (
        pytest.raises(OSError, match="send failed"),
        pending.register(9, on_abandon=lambda: hooks.append("x")),
    ):
        raise OSError("send failed")
    assert hooks == ["x"]
    assert 9 not in pending


async def test_duplicate_key_is_refused() -> None:
    pending: PendingMap[int, int] = PendingMap()
    with pending.register(1):
        with pytest.raises(ValueError, match="already pending"), pending.register(1):
            pass  # pragma: no cover
        assert 1 in pending
    assert len(pending) == 0


async def test_close_fails_waiters_and_refuses_new_ones() -> None:
    pending: PendingMap[int, int] = PendingMap()
    errors: list[BaseException] = []

    async def caller(key: int) -> None:
        try:
            with pending.register(key) as waiter:
                await waiter.wait()
        except RuntimeClosedError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        for key in range(3):
            nursery.start_soon(caller, key)
        await trio.testing.wait_all_tasks_blocked()
        assert pending.close(lambda k: RuntimeClosedError(f"closed while {k} pending")) == 3
    assert len(errors) == 3
    assert len({id(e) for e in errors}) == 3  # a fresh exception per caller
    with pytest.raises(RuntimeClosedError), pending.register(5):
        pass  # pragma: no cover
    assert pending.statistics().failed == 3
    assert pending.closed


async def test_failing_hook_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    pending: PendingMap[int, int] = PendingMap()

    def bad_hook() -> None:
        raise RuntimeError("hook broke")

    with trio.CancelScope() as scope:
        scope.cancel()
        with pending.register(1, on_abandon=bad_hook) as waiter:
            await waiter.wait()
    assert "on_abandon hook" in caplog.text
    assert len(pending) == 0


# -- stateful model ---------------------------------------------------------------


class _TrioThread:
    """A trio loop in a thread, so synchronous Hypothesis rules can drive it."""

    def __init__(self) -> None:
        self.clock = trio.testing.MockClock()
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._ready = threading.Event()
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _main(self) -> None:
        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            self._stop = trio.Event()
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._ready.set()
                await self._stop.wait()
                nursery.cancel_scope.cancel()

        trio.run(main, clock=self.clock)

    def run(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Run *fn* in the loop, let every task settle, return fn's result."""

        async def settled() -> Any:
            result = await fn()
            await trio.testing.wait_all_tasks_blocked()
            return result

        return trio.from_thread.run(settled, trio_token=self._token)

    def spawn(self, fn: Callable[[], Awaitable[None]]) -> None:
        async def start() -> None:
            assert self._nursery is not None
            self._nursery.start_soon(fn)

        self.run(start)

    def close(self) -> None:
        async def stop() -> None:
            assert self._stop is not None
            self._stop.set()

        trio.from_thread.run(stop, trio_token=self._token)
        self._thread.join()


class _Caller:
    def __init__(self, key: int, deadline: float | None) -> None:
        self.key = key
        self.scope = trio.CancelScope(deadline=math.inf if deadline is None else deadline)
        self.result: tuple[str, object] | None = None
        self.hooks = 0
        # What the on_abandon hook saw: whether its own entry was still in the map.
        self.entry_seen_by_hook: list[bool] = []


class PendingMachine(RuleBasedStateMachine):
    callers = Bundle("callers")

    def __init__(self) -> None:
        super().__init__()
        self.loop = _TrioThread()
        self.pending: PendingMap[int, int] = PendingMap()
        self.all: dict[int, _Caller] = {}
        self.next_key = 0
        self.closed = False
        self.late_expected = 0

    @initialize()
    def start(self) -> None:
        assert len(self.pending) == 0

    def waiting(self) -> set[int]:
        return {k for k, c in self.all.items() if c.result is None}

    @rule(target=callers, timeout=st.none() | st.floats(0.5, 10))
    def send(self, timeout: float | None) -> int:
        key = self.next_key
        self.next_key += 1
        deadline = None if timeout is None else self.loop.clock.current_time() + timeout
        caller = _Caller(key, deadline)
        self.all[key] = caller
        pending = self.pending

        def hook() -> None:
            # Only recorded here: the map logs (and swallows) a hook's exception,
            # so the invariant below checks it.
            caller.hooks += 1
            caller.entry_seen_by_hook.append(key in pending)

        async def run() -> None:
            with caller.scope:
                try:
                    with pending.register(key, on_abandon=hook) as waiter:
                        caller.result = ("value", await waiter.wait())
                except RuntimeClosedError:
                    caller.result = ("closed", None)
                except LookupError as exc:
                    caller.result = ("error", exc.args[0])
            if caller.result is None:
                caller.result = ("cancelled", None)

        self.loop.spawn(run)
        if self.closed:
            assert caller.result == ("closed", None)
        else:
            assert key in self.pending
        return key

    @rule(key=consumes(callers), value=st.integers())
    def respond(self, key: int, value: int) -> None:
        caller = self.all[key]
        was_waiting = caller.result is None
        delivered = self.loop.run(self._async(lambda: self.pending.set_value(key, value)))
        assert delivered == was_waiting
        if was_waiting:
            assert caller.result == ("value", value)
        else:
            self.late_expected += 1

    @rule(key=consumes(callers), message=st.text(max_size=5))
    def respond_error(self, key: int, message: str) -> None:
        caller = self.all[key]
        was_waiting = caller.result is None
        error = outcome.Error(LookupError(message))
        delivered = self.loop.run(self._async(lambda: self.pending.resolve(key, error)))
        assert delivered == was_waiting
        if was_waiting:
            assert caller.result == ("error", message)
        else:
            self.late_expected += 1

    @rule(key=st.integers(-5, -1))
    def respond_unknown(self, key: int) -> None:
        assert not self.pending.set_value(key, 0)
        self.late_expected += 1

    @rule(key=callers)
    def cancel(self, key: int) -> None:
        caller = self.all[key]
        was_waiting = caller.result is None
        self.loop.run(self._async(caller.scope.cancel))
        if was_waiting:
            assert caller.result == ("cancelled", None)
            assert caller.hooks == 1

    @rule(delta=st.floats(0.1, 5))
    def advance_time(self, delta: float) -> None:
        self.loop.run(self._async(lambda: self.loop.clock.jump(delta)))
        now = self.loop.clock.current_time()
        for caller in self.all.values():
            if caller.scope.deadline <= now and caller.result in (None, ("cancelled", None)):
                # a deadline that passed while waiting abandons the request
                assert caller.result == ("cancelled", None)

    @rule()
    def fail_all(self) -> None:
        waiting = self.waiting()
        count = self.loop.run(
            self._async(lambda: self.pending.fail_all(lambda k: RuntimeClosedError(str(k))))
        )
        assert count == len(waiting)
        for key in waiting:
            assert self.all[key].result == ("closed", None)

    @precondition(lambda self: not self.closed)
    @rule()
    def close(self) -> None:
        waiting = self.waiting()
        self.loop.run(self._async(lambda: self.pending.close(lambda k: RuntimeClosedError(str(k)))))
        self.closed = True
        for key in waiting:
            assert self.all[key].result == ("closed", None)

    @staticmethod
    def _async(fn: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
        async def run() -> Any:
            return fn()

        return run

    @invariant()
    def map_matches_model(self) -> None:
        assert set(self.pending.keys()) == self.waiting()
        stats = self.pending.statistics()
        assert stats.pending == len(self.waiting())
        assert stats.registered == stats.resolved + stats.failed + stats.abandoned + stats.pending
        assert stats.late == self.late_expected
        assert stats.closed == self.closed
        for caller in self.all.values():
            expected_hooks = 1 if caller.result == ("cancelled", None) else 0
            assert caller.hooks == expected_hooks
            # the entry is already gone when the hook runs
            assert caller.entry_seen_by_hook == [False] * expected_hooks

    def teardown(self) -> None:
        # Cancel everybody: at rest the map must be empty.
        for caller in self.all.values():
            self.loop.run(self._async(caller.scope.cancel))
        assert len(self.pending) == 0
        assert all(c.result is not None for c in self.all.values())
        self.loop.close()


PendingMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
TestPendingMachine = PendingMachine.TestCase
