"""RetryPolicy: backoff shape, jitter bounds, attempts, retriable errors, cancellation."""

from __future__ import annotations

import itertools
import random

import pytest
import trio
import trio.testing
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from hypothesis import given
from hypothesis import strategies as st

from agentwire import ConnectionLostError
from agentwire._retry import DEFAULT_RETRIABLE_STATUSES, RetryPolicy

policies = st.builds(
    lambda initial, extra, multiplier, attempts, jitter: RetryPolicy(
        initial_delay=initial,
        max_delay=initial + extra,
        multiplier=multiplier,
        max_attempts=attempts,
        jitter=jitter,
    ),
    st.floats(0.001, 100),
    st.floats(0, 1000),
    st.floats(1, 10),
    st.integers(1, 30),
    st.floats(0, 1),
)


def test_defaults_match_the_documented_policy() -> None:
    policy = RetryPolicy()
    assert list(policy.delays()) == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert policy.max_attempts == 10
    assert policy.max_delay == 300
    assert policy.retriable_statuses == {
        Status.UNAVAILABLE,
        Status.DEADLINE_EXCEEDED,
        Status.ABORTED,
        Status.INTERNAL,
        Status.RESOURCE_EXHAUSTED,
    }
    assert list(RetryPolicy(max_attempts=12).delays())[-3:] == [256, 300, 300]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_delay": 0},
        {"initial_delay": 5, "max_delay": 1},
        {"multiplier": 0.5},
        {"max_attempts": 0},
        {"jitter": 1.5},
        {"initial_delay": float("inf")},
    ],
)
def test_invalid_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@given(policies)
def test_delays_capped_and_non_decreasing_without_jitter(policy: RetryPolicy) -> None:
    policy = RetryPolicy(
        initial_delay=policy.initial_delay,
        max_delay=policy.max_delay,
        multiplier=policy.multiplier,
        max_attempts=policy.max_attempts,
    )
    delays = list(policy.delays())
    assert len(delays) == policy.max_attempts - 1
    assert all(d <= policy.max_delay for d in delays)
    assert all(a <= b for a, b in itertools.pairwise(delays))
    if delays:
        assert delays[0] == policy.initial_delay


@given(policies, st.integers(0, 2**32))
def test_jitter_stays_within_documented_bounds(policy: RetryPolicy, seed: int) -> None:
    plain = list(RetryPolicy(**{**_fields(policy), "jitter": 0.0}).delays())
    jittered = list(policy.delays(random.Random(seed)))
    assert len(jittered) == len(plain)
    for base, got in zip(plain, jittered, strict=True):
        assert base * (1 - policy.jitter) - 1e-9 <= got <= base + 1e-9
    assert sum(jittered) <= policy.total_delay() + 1e-6


def _fields(policy: RetryPolicy) -> dict[str, object]:
    return {
        "initial_delay": policy.initial_delay,
        "max_delay": policy.max_delay,
        "multiplier": policy.multiplier,
        "max_attempts": policy.max_attempts,
    }


@pytest.mark.parametrize("status", list(Status))
def test_retriable_statuses(status: Status) -> None:
    policy = RetryPolicy()
    assert policy.is_retriable(GRPCError(status, "x")) == (status in DEFAULT_RETRIABLE_STATUSES)


def test_connection_errors_are_retriable_value_errors_are_not() -> None:
    policy = RetryPolicy()
    assert policy.is_retriable(ConnectionLostError("gone"))
    assert policy.is_retriable(ConnectionRefusedError())
    assert not policy.is_retriable(ValueError("bad"))


@given(
    attempts=st.integers(1, 8),
    failures=st.integers(0, 12),
    jitter=st.floats(0, 1),
    retriable=st.booleans(),
)
def test_run_attempts_sleep_and_errors(
    attempts: int, failures: int, jitter: float, retriable: bool
) -> None:
    policy = RetryPolicy(initial_delay=0.5, max_delay=3, max_attempts=attempts, jitter=jitter)
    calls = 0
    slept: list[float] = []
    outcome: list[object] = []

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls <= failures:
            if retriable:
                raise GRPCError(Status.UNAVAILABLE, "down")
            raise KeyError("not retriable")
        return "ok"

    async def main() -> None:
        start = trio.current_time()
        try:
            outcome.append(
                await policy.run(flaky, on_retry=lambda _a, _e, delay: slept.append(delay))
            )
        except (GRPCError, KeyError) as exc:
            outcome.append(exc)
        assert trio.current_time() - start <= policy.total_delay() + 1e-6
        assert trio.current_time() - start == pytest.approx(sum(slept))

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert calls <= attempts
    if failures == 0:
        assert outcome == ["ok"]
        assert calls == 1
    elif not retriable:
        assert isinstance(outcome[0], KeyError)
        assert calls == 1
        assert slept == []
    elif failures < attempts:
        assert outcome == ["ok"]
        assert calls == failures + 1
    else:
        assert isinstance(outcome[0], GRPCError)
        assert calls == attempts
    assert len(slept) == max(calls - 1, 0)


async def test_cancel_during_sleep_stops_at_once(autojump_clock: trio.abc.Clock) -> None:
    policy = RetryPolicy(initial_delay=100, max_delay=100)
    calls = 0

    async def failing() -> None:
        nonlocal calls
        calls += 1
        raise OSError("refused")

    start = trio.current_time()
    with trio.move_on_after(1) as scope:
        await policy.run(failing)
    assert scope.cancelled_caught
    assert calls == 1
    assert trio.current_time() - start == pytest.approx(1)


async def test_cancelled_is_never_retried() -> None:
    policy = RetryPolicy()
    calls = 0

    async def cancelled_inside() -> None:
        nonlocal calls
        calls += 1
        await trio.sleep_forever()

    with trio.CancelScope() as scope:
        scope.cancel()
        await policy.run(cancelled_inside)
    assert calls == 1
