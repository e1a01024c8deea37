"""Retrying with exponential backoff: :class:`RetryPolicy`.

Invariants (tests/test_retry.py checks them as properties):

* ``delays()`` yields exactly ``max_attempts - 1`` numbers: the sleeps between
  attempts. Without jitter the i-th one (from 0) is
  ``min(initial_delay * multiplier**i, max_delay)``, so the sequence never
  decreases and never exceeds ``max_delay``.
* With ``jitter = j`` each delay ``d`` is drawn uniformly from
  ``[d * (1 - j), d]``: jitter only shortens a delay, so the cap and the total
  bound still hold.
* ``run(fn)`` calls *fn* at most ``max_attempts`` times, retries only errors
  for which ``is_retriable`` is true (anything else propagates at once, and
  so does ``trio.Cancelled``: cancelling ``run`` during a sleep stops it right
  there), sleeps at most the sum of ``delays()`` in total, and re-raises the
  last error when the attempts are used up.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import attrs
import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from ._errors import ConnectionLostError

__all__ = ["DEFAULT_RETRIABLE_STATUSES", "RetryPolicy"]

logger = logging.getLogger("agentwire.retry")

T = TypeVar("T")

DEFAULT_RETRIABLE_STATUSES: frozenset[Status] = frozenset(
    {
        Status.UNAVAILABLE,
        Status.DEADLINE_EXCEEDED,
        Status.ABORTED,
        Status.INTERNAL,
        Status.RESOURCE_EXHAUSTED,
    }
)
"""gRPC statuses worth another attempt: the peer may succeed later."""


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a positive finite number, got {value!r}")


def _check_max_delay(
    instance: RetryPolicy, attribute: attrs.Attribute[float], value: float
) -> None:
    _positive(instance, attribute, value)
    if value < instance.initial_delay:
        raise ValueError(f"max_delay ({value}) must be >= initial_delay ({instance.initial_delay})")


def _check_multiplier(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (value >= 1 and math.isfinite(value)):
        raise ValueError(f"multiplier must be a finite number >= 1, got {value!r}")


def _check_attempts(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ValueError(f"max_attempts must be >= 1, got {value!r}")


def _check_jitter(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"jitter must be within [0, 1], got {value!r}")


@attrs.frozen
class RetryPolicy:
    """Exponential backoff: 1 s, 2 s, 4 s, ... capped at 5 minutes, 10 attempts.

    ``jitter`` (0 to 1, default 0) shortens each delay by a random fraction of
    at most ``jitter``: a delay ``d`` becomes uniform in ``[d*(1-jitter), d]``.

    An error is retried if it is a :class:`grpclib.exceptions.GRPCError`
    whose status is in ``retriable_statuses``, or an instance of one of
    ``retry_on`` (by default connection problems: :class:`OSError` and
    :class:`~agentwire.ConnectionLostError`).
    """

    initial_delay: float = attrs.field(default=1.0, validator=_positive)
    max_delay: float = attrs.field(default=300.0, validator=_check_max_delay)
    multiplier: float = attrs.field(default=2.0, validator=_check_multiplier)
    max_attempts: int = attrs.field(default=10, validator=_check_attempts)
    jitter: float = attrs.field(default=0.0, validator=_check_jitter)
    retriable_statuses: frozenset[Status] = attrs.field(
        default=DEFAULT_RETRIABLE_STATUSES, converter=frozenset
    )
    retry_on: tuple[type[BaseException], ...] = (OSError, ConnectionLostError)

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The sleeps between attempts (``max_attempts - 1`` of them).

        *rng* is used for jitter (default: the ``random`` module's generator).
        """
        uniform = random.uniform if rng is None else rng.uniform
        delay = self.initial_delay
        for _ in range(self.max_attempts - 1):
            capped = min(delay, self.max_delay)
            if self.jitter:
                yield uniform(capped * (1 - self.jitter), capped)
            else:
                yield capped
            if delay < self.max_delay:
                delay *= self.multiplier

    def total_delay(self) -> float:
        """The longest total time ``run`` can spend sleeping."""
        return sum(attrs.evolve(self, jitter=0.0).delays())

    def is_retriable(self, error: BaseException) -> bool:
        """Whether *error* is worth another attempt under this policy."""
        if isinstance(error, GRPCError):
            return error.status in self.retriable_statuses
        return isinstance(error, self.retry_on)

    async def run(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        on_retry: Callable[[int, Exception, float], object] | None = None,
        rng: random.Random | None = None,
    ) -> T:
        """Call ``await fn()`` until it returns, retrying retriable errors.

        *on_retry(attempt, error, delay)* is called before each sleep (attempt
        counts from 1). The last error is re-raised once the attempts are used
        up; a non-retriable error is raised at once. Cancellation stops the
        loop immediately, also in the middle of a sleep.
        """
        delays = self.delays(rng)
        attempt = 0
        while True:
            attempt += 1
            try:
                return await fn()
            except Exception as error:
                if not self.is_retriable(error):
                    raise
                delay = next(delays, None)
                if delay is None:
                    logger.debug("giving up after %d attempts: %r", attempt, error)
                    raise
                logger.debug("attempt %d failed (%r); retrying in %.3f s", attempt, error, delay)
                if on_retry is not None:
                    on_retry(attempt, error, delay)
            await trio.sleep(delay)
