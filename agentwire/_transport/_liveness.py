"""A connection's clocks: handshake deadline, idle timeout, keepalive (sans-IO).

:class:`ConnectionClock` is told what happens on the connection (streams
open and close, bytes arrive, PING ACKs arrive, the handshake completes) and,
polled with the current time, says what is due and when to poll next. The
connection's timer task acts on it: closes the connection, or sends a PING.

Invariants (tests/transport/test_liveness.py drives random events and checks
them):

1. ``idle_since`` is None exactly while streams are open; otherwise it is the
   time the last stream ended (or the connection began).
2. At most one PING is outstanding (``ping_sent_at``); anything received
   after it, or its ACK, ends it.
3. ``PING`` is due only with keepalive on, the handshake done, streams open,
   no PING outstanding and nothing received for ``keepalive_interval``.
4. ``PING_TIMEOUT`` is due only when a PING has been outstanding for
   ``keepalive_timeout`` with nothing received since it was sent.
5. ``IDLE`` is due only with ``idle_timeout`` set, the handshake done, and no
   stream open for ``idle_timeout``.
6. ``HANDSHAKE_TIMEOUT`` is due only before the handshake is done, once
   ``handshake_timeout`` has passed since the connection began.
7. When nothing is due, the next poll is strictly later than now (the timer
   task never spins), and no deadline that matters is later than it.
"""

from __future__ import annotations

import enum
import math

__all__ = ["ConnectionClock", "Due"]


class Due(enum.Enum):
    """What :meth:`ConnectionClock.poll` says the connection must do now."""

    NOTHING = "nothing"
    HANDSHAKE_TIMEOUT = "handshake-timeout"
    """Close: the peer did not complete the HTTP/2 handshake in time."""
    IDLE = "idle"
    """Close gracefully (GOAWAY): no stream for ``idle_timeout``."""
    PING = "ping"
    """Send a PING (the clock has recorded it as outstanding)."""
    PING_TIMEOUT = "ping-timeout"
    """The connection is lost: nothing came back within ``keepalive_timeout`` of a PING."""


class ConnectionClock:
    """The deadlines of one connection (see the module's invariants)."""

    __slots__ = (
        "handshake_done",
        "handshake_timeout",
        "idle_since",
        "idle_timeout",
        "keepalive_interval",
        "keepalive_timeout",
        "last_received",
        "ping_sent_at",
        "pings_acknowledged",
        "started",
    )

    def __init__(
        self,
        now: float,
        *,
        handshake_timeout: float | None = None,
        idle_timeout: float | None = None,
        keepalive_interval: float | None = None,
        keepalive_timeout: float = 20.0,
    ) -> None:
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.keepalive_interval = keepalive_interval
        self.keepalive_timeout = keepalive_timeout
        self.started = now
        self.handshake_done = False
        self.idle_since: float | None = now
        #: when bytes last arrived (kept up to date only with keepalive on)
        self.last_received = now
        self.ping_sent_at: float | None = None
        self.pings_acknowledged = 0

    @property
    def needed(self) -> bool:
        """Some clock is configured (else the connection needs no timer task)."""
        return (
            self.handshake_timeout is not None
            or self.idle_timeout is not None
            or self.keepalive_interval is not None
        )

    @property
    def awaiting_handshake(self) -> bool:
        """The handshake deadline is still running."""
        return self.handshake_timeout is not None and not self.handshake_done

    # -- events ----------------------------------------------------------------

    def stream_opened(self) -> None:
        self.idle_since = None

    def streams_all_closed(self, now: float) -> None:
        self.idle_since = now

    def received(self, now: float) -> None:
        self.last_received = now

    def ping_acknowledged(self) -> None:
        self.pings_acknowledged += 1
        self.ping_sent_at = None

    # -- polling ---------------------------------------------------------------

    def poll(self, now: float, streams_open: bool) -> tuple[Due, float]:
        """What is due at ``now``, and the time of the next poll."""
        if self.awaiting_handshake:
            assert self.handshake_timeout is not None
            deadline = self.started + self.handshake_timeout
            if now >= deadline:
                return Due.HANDSHAKE_TIMEOUT, math.inf
            return Due.NOTHING, deadline
        wake = math.inf
        if self.idle_timeout is not None:
            if self.idle_since is None:
                wake = now + self.idle_timeout  # no earlier end of idleness is possible
            elif now >= self.idle_since + self.idle_timeout:
                return Due.IDLE, math.inf
            else:
                wake = self.idle_since + self.idle_timeout
        interval = self.keepalive_interval
        if interval is None:
            return Due.NOTHING, wake
        sent_at = self.ping_sent_at
        if sent_at is not None and self.last_received > sent_at:
            sent_at = self.ping_sent_at = None  # the peer is alive
        if sent_at is not None:
            deadline = sent_at + self.keepalive_timeout
            if now >= deadline:
                return Due.PING_TIMEOUT, math.inf
            return Due.NOTHING, min(wake, deadline)
        if now < self.last_received + interval:
            return Due.NOTHING, min(wake, self.last_received + interval)
        if not streams_open:
            # nothing to keep alive: count the silence from now
            self.last_received = now
            return Due.NOTHING, min(wake, now + interval)
        self.ping_sent_at = now
        return Due.PING, min(wake, now + self.keepalive_timeout)

    def check_invariants(self, streams_open: bool) -> None:
        assert (self.idle_since is None) == streams_open, "invariant 1"
        if self.ping_sent_at is not None:
            assert self.keepalive_interval is not None, "invariant 3"
            assert self.ping_sent_at >= self.started
        assert self.last_received >= self.started
        assert self.pings_acknowledged >= 0
