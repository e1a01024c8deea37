"""ConnectionClock: random events against a model of its invariants (see _liveness)."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from agentwire._transport._liveness import ConnectionClock, Due

timeouts = st.one_of(st.none(), st.sampled_from([1.0, 5.0, 30.0]))


class ClockMachine(RuleBasedStateMachine):
    """Drives a clock as a connection would; a model says what may be due."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 100.0
        self.streams = 0
        self.empty_since: float | None = self.now  # the model's idle start
        self.heard = self.now  # the model's last receipt (or quiet restart)
        self.ping: float | None = None  # the model's outstanding PING
        self.handshake = False
        self.clock = ConnectionClock(self.now)

    @initialize(
        handshake=timeouts,
        idle=timeouts,
        interval=timeouts,
        timeout=st.sampled_from([1.0, 20.0]),
    )
    def configure(
        self, handshake: float | None, idle: float | None, interval: float | None, timeout: float
    ) -> None:
        self.clock = ConnectionClock(
            self.now,
            handshake_timeout=handshake,
            idle_timeout=idle,
            keepalive_interval=interval,
            keepalive_timeout=timeout,
        )

    @rule(dt=st.sampled_from([0.0, 0.5, 1.0, 4.0, 25.0, 400.0]))
    def time_passes(self, dt: float) -> None:
        self.now += dt

    @rule()
    def handshake_completes(self) -> None:
        self.handshake = self.clock.handshake_done = True

    @rule()
    def stream_opens(self) -> None:
        self.streams += 1
        self.empty_since = None
        self.clock.stream_opened()

    @rule()
    def stream_closes(self) -> None:
        if self.streams:
            self.streams -= 1
            if not self.streams:
                self.empty_since = self.now
                self.clock.streams_all_closed(self.now)

    @rule()
    def bytes_arrive(self) -> None:
        self.heard = self.now
        self.clock.received(self.now)
        if self.ping is not None and self.now > self.ping:
            self.ping = None

    @rule()
    def ping_ack_arrives(self) -> None:
        self.ping = None
        self.clock.ping_acknowledged()

    @rule()
    def poll(self) -> None:
        clock = self.clock
        due, wake = clock.poll(self.now, self.streams > 0)
        handshake_pending = clock.handshake_timeout is not None and not self.handshake
        if due is Due.HANDSHAKE_TIMEOUT:
            assert handshake_pending
            assert clock.handshake_timeout is not None
            assert self.now >= clock.started + clock.handshake_timeout
            return
        if due is Due.IDLE:
            assert not handshake_pending
            assert clock.idle_timeout is not None
            assert self.empty_since is not None
            assert self.now >= self.empty_since + clock.idle_timeout
            return
        if due is Due.PING_TIMEOUT:
            assert self.ping is not None
            assert self.now >= self.ping + clock.keepalive_timeout
            assert self.heard <= self.ping
            return
        if due is Due.PING:
            assert not handshake_pending
            assert clock.keepalive_interval is not None
            assert self.streams > 0
            assert self.ping is None, "at most one PING outstanding"
            assert self.now >= self.heard + clock.keepalive_interval
            self.ping = self.now
        else:
            assert wake > self.now, "the timer task would spin"
            if (
                clock.keepalive_interval is not None
                and not handshake_pending
                and self.ping is None
                and not self.streams
                and self.now >= self.heard + clock.keepalive_interval
            ):
                self.heard = self.now  # no call to keep alive: the quiet restarts
        self.check_nothing_overdue(due, wake)

    def check_nothing_overdue(self, due: Due, wake: float) -> None:
        """No deadline of the model falls before the next poll."""
        clock = self.clock
        if clock.handshake_timeout is not None and not self.handshake:
            assert wake <= clock.started + clock.handshake_timeout
            return
        if clock.idle_timeout is not None and self.empty_since is not None:
            assert wake <= self.empty_since + clock.idle_timeout
        if self.ping is not None:
            assert wake <= self.ping + clock.keepalive_timeout
        elif clock.keepalive_interval is not None and due is Due.NOTHING:
            assert wake <= self.heard + clock.keepalive_interval

    @invariant()
    def invariants_hold(self) -> None:
        self.clock.check_invariants(self.streams > 0)
        if self.ping is not None:  # (the clock forgets an answered PING when next polled)
            assert self.clock.ping_sent_at == self.ping


def test_the_clock_keeps_its_invariants() -> None:
    run_state_machine_as_test(
        ClockMachine, settings=settings(max_examples=150, stateful_step_count=40, deadline=None)
    )
